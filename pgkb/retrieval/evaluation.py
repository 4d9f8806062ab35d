"""Retrieval evaluation on BEIR-format datasets: nDCG@10, recall@10/@100, MRR@10 and latency.

A dataset directory holds `corpus.jsonl` (`{"_id", "title", "text", "metadata"}`), `queries.jsonl`
(`{"_id", "text"}`) and `qrels/<split>.tsv` (`query-id <TAB> corpus-id <TAB> grade`, an optional
header line). Only queries with judgements are scored. nDCG uses graded, linear gains (as trec_eval
and BEIR do) and the ideal ranking of the query's judged documents.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pgkb.errors import PgkbError, ValidationError


@dataclass
class Dataset:
    name: str
    corpus: dict[str, dict[str, Any]]  # doc id -> {"title", "text", "metadata"}
    queries: dict[str, str]  # judged queries only: query id -> text
    qrels: dict[str, dict[str, int]]  # query id -> doc id -> grade

    def documents(self) -> Iterable[tuple[str, str]]:
        """(doc id, text) with the title prepended when there is one."""
        for doc_id, d in self.corpus.items():
            title, text = (d.get("title") or "").strip(), d.get("text") or ""
            yield doc_id, f"{title}\n{text}" if title else text


def _jsonl(path: Path) -> Iterable[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValidationError(f"{path}:{n}: not JSON ({exc.msg})") from None


def load_beir(path: str | Path, split: str = "test") -> Dataset:
    root = Path(path)
    files = {"corpus": root / "corpus.jsonl", "queries": root / "queries.jsonl", "qrels": root / "qrels" / f"{split}.tsv"}
    for what, f in files.items():
        if not f.is_file():
            raise ValidationError(f"{root} is not a BEIR dataset: missing {what} file {f}")
    corpus = {str(d["_id"]): d for d in _jsonl(files["corpus"])}
    queries = {str(q["_id"]): q.get("text", "") for q in _jsonl(files["queries"])}
    qrels: dict[str, dict[str, int]] = {}
    with files["qrels"].open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 3 or not line.strip():
                continue
            try:
                grade = int(float(parts[2]))
            except ValueError:
                if n == 1:  # header line
                    continue
                raise ValidationError(f"{files['qrels']}:{n}: grade {parts[2]!r} is not a number") from None
            qrels.setdefault(parts[0], {})[parts[1]] = grade
    judged = {q: qrels[q] for q in qrels if q in queries and any(g > 0 for g in qrels[q].values())}
    return Dataset(root.name, corpus, {q: queries[q] for q in judged}, judged)


# ------------------------------------------------------------------------------------------- metrics


def ndcg_at(ranked: Sequence[str], rels: dict[str, int], k: int = 10, *, exponential: bool = False) -> float:
    """Graded nDCG@k; gain = grade (trec_eval, BEIR) or 2^grade - 1 (`exponential`, Burges et al.)."""

    def gain(g: int) -> float:
        return (2.0**g - 1) if exponential else float(g)

    dcg = sum(gain(rels.get(d, 0)) / math.log2(i + 2) for i, d in enumerate(ranked[:k]) if rels.get(d, 0) > 0)
    ideal = sorted((g for g in rels.values() if g > 0), reverse=True)[:k]
    idcg = sum(gain(g) / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall_at(ranked: Sequence[str], rels: dict[str, int], k: int) -> float:
    relevant = {d for d, g in rels.items() if g > 0}
    return len(relevant & set(ranked[:k])) / len(relevant) if relevant else 0.0


def mrr_at(ranked: Sequence[str], rels: dict[str, int], k: int = 10) -> float:
    for i, d in enumerate(ranked[:k]):
        if rels.get(d, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def percentile(values: Sequence[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    pos = (len(s) - 1) * p / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


@dataclass
class Report:
    name: str
    queries: int
    ndcg_at_10: float
    recall_at_10: float
    recall_at_100: float
    mrr_at_10: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    ndcg_at_10_exp: float = 0.0  # with exponential gain
    per_query: dict[str, float] = field(default_factory=dict, repr=False)  # query id -> nDCG@10

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("per_query")
        return d


def _dedupe(ids: Iterable[str]) -> list[str]:
    """Chunk hits → document ranking: a document counts once, at its best chunk."""
    seen: set[str] = set()
    out = []
    for d in ids:
        if d not in seen:
            seen.add(d)
            out.append(d)
    return out


def evaluate(
    search_fn: Callable[[str], Sequence[str]],
    dataset: Dataset,
    k: int = 100,
    *,
    name: str = "",
    warmup: int = 2,
) -> Report:
    """Run every judged query through `search_fn(text) -> ranked document ids` (top `k`) and score it."""
    qids = sorted(dataset.queries)
    for q in qids[:warmup]:  # load models, warm caches: not timed, not scored twice
        search_fn(dataset.queries[q])
    ndcg, ndcg_exp, r10, r100, mrr, lat = [], [], [], [], [], []
    per: dict[str, float] = {}
    for q in qids:
        t0 = time.perf_counter()
        ranked = _dedupe(search_fn(dataset.queries[q]))[:k]
        lat.append((time.perf_counter() - t0) * 1000)
        rels = dataset.qrels[q]
        per[q] = ndcg_at(ranked, rels, 10)
        ndcg.append(per[q])
        ndcg_exp.append(ndcg_at(ranked, rels, 10, exponential=True))
        r10.append(recall_at(ranked, rels, 10))
        r100.append(recall_at(ranked, rels, 100))
        mrr.append(mrr_at(ranked, rels, 10))
    n = max(len(qids), 1)
    return Report(
        name or dataset.name, len(qids), sum(ndcg) / n, sum(r10) / n, sum(r100) / n, sum(mrr) / n,
        percentile(lat, 50), percentile(lat, 95), percentile(lat, 99), sum(ndcg_exp) / n, per,
    )


def format_reports(reports: Sequence[Report]) -> str:
    """A plain-text table, one column per report (for `pgkb eval --compare`)."""
    rows = [
        ("queries", "{:d}", "queries"), ("nDCG@10", "{:.4f}", "ndcg_at_10"),
        ("nDCG@10 exp", "{:.4f}", "ndcg_at_10_exp"), ("recall@10", "{:.4f}", "recall_at_10"),
        ("recall@100", "{:.4f}", "recall_at_100"), ("MRR@10", "{:.4f}", "mrr_at_10"),
        ("p50 ms", "{:.1f}", "p50_ms"), ("p95 ms", "{:.1f}", "p95_ms"), ("p99 ms", "{:.1f}", "p99_ms"),
    ]
    width = max([12, *(len(r.name) + 2 for r in reports)])
    out = ["metric".ljust(12) + "".join(r.name.rjust(width) for r in reports)]
    for label, fmt, attr in rows:
        out.append(label.ljust(12) + "".join(fmt.format(getattr(r, attr)).rjust(width) for r in reports))
    return "\n".join(out)


# ---------------------------------------------------------------------------------------- configurations

EVAL_SEARCH = ("semantic", "lexical", "hybrid")
_INT_KEYS = ("max_tokens", "overlap", "parent_tokens", "buffer_size", "breakpoint", "k")


def override_config(base: dict[str, Any], override: str | None) -> dict[str, Any]:
    """`"search=hybrid,chunking=fixed,max_tokens=200"` → `base` with those keys replaced; a bare search type
    (`lexical`) stands for `search=lexical`. The messages name `--compare`, the option users type this in."""
    cfg = dict(base)
    for part in filter(None, (p.strip() for p in (override or "").split(","))):
        key, sep, value = part.partition("=")
        if not sep and key.lower() in EVAL_SEARCH:
            key, sep, value = "search", "=", key
        key = key.strip().replace("-", "_")
        if not sep or key not in cfg:
            raise PgkbError(f"--compare: {part!r} is not key=value with key one of {', '.join(sorted(cfg))}")
        cfg[key] = int(value) if key in _INT_KEYS and value else value.strip()
    if str(cfg["search"]).lower() not in EVAL_SEARCH:
        raise PgkbError(f"--compare: search={cfg['search']!r} must be one of {', '.join(EVAL_SEARCH)}")
    cfg["search"] = str(cfg["search"]).lower()
    return cfg


def config_label(cfg: dict[str, Any]) -> str:
    return f"{cfg['search']}/{cfg['chunking']}" + (f"/{cfg['max_tokens']}" if cfg["max_tokens"] else "")


def write_corpus_folder(dataset: Dataset, dataset_path: str | Path, data_dir: Path) -> Path:
    """The corpus as a folder of text files under `data_dir/eval`, one per document (its id, percent-encoded,
    is the file name); unchanged files are left alone so a re-run ingests incrementally. Named after the
    dataset's folder, with a hash of its full path to keep two datasets apart (the name shows in source URIs)."""
    import hashlib
    from urllib.parse import quote

    where = Path(dataset_path).resolve()
    tag = hashlib.sha1(str(where).encode()).hexdigest()[:10]
    docs_dir = Path(data_dir) / "eval" / f"{quote(where.name, safe='')[:60]}-{tag}" / "docs"
    docs_dir.mkdir(parents=True, exist_ok=True)
    for doc_id, text in dataset.documents():
        f = docs_dir / (quote(doc_id, safe="") + ".txt")
        if not f.exists() or f.read_text(encoding="utf-8") != text:
            f.write_text(text, encoding="utf-8")
    return docs_dir


def doc_id_of(source_uri: str) -> str:
    """The dataset document id back from a source URI of `write_corpus_folder`'s files."""
    from urllib.parse import unquote, urlparse

    return unquote(unquote(urlparse(source_uri).path.rsplit("/", 1)[-1]).removesuffix(".txt"))
