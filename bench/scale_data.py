"""Realistic synthetic data for bench_scale: text vectors of real text, neighbours mixed from them,
Zipfian chunk text, attributes of known selectivity. Benchmarks only (imports nothing of pgkb's
service layer).

Real vectors: msmarco-5k's passages (and queries) plus Python's own pydoc topics, split into
paragraphs, embedded once with the default model and cached in ~/.cache/pgkb-bench (outside the
repository). Synthetic vectors: a real vector moved towards a few of its real neighbours by a convex
combination, plus a little isotropic noise, renormalised, so every synthetic vector lies on the
manifold of real text vectors (a Gaussian mixture does not: its intrinsic dimension is ~4x text's).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

CACHE = Path(os.environ.get("PGKB_BENCH_CACHE", Path.home() / ".cache" / "pgkb-bench"))
DATASETS = Path(os.environ.get("PGKB_BENCH_DATASETS", Path(__file__).resolve().parent.parent.parent / "shared" / "datasets"))


def real_texts(datasets: Path = DATASETS) -> tuple[list[str], list[str]]:
    """(passages, queries): msmarco-5k's corpus and queries, plus pydoc topic paragraphs."""
    passages: list[str] = []
    queries: list[str] = []
    ms = datasets / "msmarco-5k"
    if (ms / "corpus.jsonl").exists():
        with open(ms / "corpus.jsonl") as f:
            for line in f:
                d = json.loads(line)
                passages.append(((d.get("title") or "") + " " + d["text"]).strip())
        with open(ms / "queries.jsonl") as f:
            queries = [json.loads(line)["text"] for line in f]
    import pydoc_data.topics as topics

    for text in topics.topics.values():
        passages += [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if len(p.split()) >= 20]
    return passages, queries


def real_vectors(datasets: Path = DATASETS) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(passage vectors, query vectors, passages), embedded once with the default model and cached."""
    from pgkb.embeddings.registry import DEFAULT_MODEL_ID, get_model

    passages, queries = real_texts(datasets)
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"real-{DEFAULT_MODEL_ID}-{len(passages)}-{len(queries)}.npz"
    if path.exists():
        z = np.load(path)
        return z["p"], z["q"], passages
    model = get_model(DEFAULT_MODEL_ID)
    p = np.vstack([model.embed_documents(passages[i : i + 256]) for i in range(0, len(passages), 256)])
    q = model.embed_queries(queries) if queries else np.zeros((0, p.shape[1]), np.float32)
    np.savez(path, p=p.astype(np.float32), q=np.asarray(q, np.float32))
    return p.astype(np.float32), np.asarray(q, np.float32), passages


def docstring_texts(limit: int) -> tuple[list[str], list[str]]:
    """(passages, queries) of real English technical prose from the Python installed here: the
    docstrings of the standard library and of every package in this environment (numpy, torch,
    botocore, ...), split into paragraphs of >= 80 characters that are mostly letters, deduplicated,
    in a fixed order. Modules whose path hashes to 0 mod 20 are held out: their docstrings' first
    sentences are the queries (questions about code whose answers are elsewhere in the corpus, never
    a copy of a passage)."""
    import ast
    import hashlib
    import sys
    import sysconfig

    roots = [Path(sysconfig.get_paths()["stdlib"]), Path(sysconfig.get_paths()["purelib"])]
    seen: set[str] = set()
    passages: list[str] = []
    queries: list[str] = []
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            rel = str(path.relative_to(root))
            if "/test" in rel or rel.startswith("test"):
                continue
            try:
                tree = ast.parse(path.read_text(errors="ignore"))
            except (SyntaxError, ValueError, RecursionError):
                continue
            held_out = int(hashlib.md5(rel.encode()).hexdigest(), 16) % 20 == 0
            for node in ast.walk(tree):
                if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)):
                    continue
                doc = ast.get_docstring(node)
                if not doc:
                    continue
                if held_out:
                    first = " ".join(doc.split("\n\n")[0].split()).split(". ")[0]
                    if 30 <= len(first) <= 200 and first not in seen:
                        seen.add(first)
                        queries.append(first)
                    continue
                for para in re.split(r"\n\s*\n", doc):
                    text = " ".join(para.split())[:1200]
                    if len(text) >= 80 and sum(c.isalpha() for c in text) > 0.7 * len(text) and text not in seen:
                        seen.add(text)
                        passages.append(text)
                        if len(passages) >= limit:
                            return passages, queries
    print(f"scale_data: only {len(passages)} docstring paragraphs here (asked {limit})", file=sys.stderr)
    return passages, queries


def real_corpus(n: int, datasets: Path = DATASETS) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], list[str]]:
    """n real text vectors with no synthetic ones: msmarco-5k + pydoc topics (real_vectors), then
    docstring paragraphs (docstring_texts) up to n; embedded once with the default model and cached.
    Returns (passage vectors, msmarco's real query vectors, held-out docstring query vectors, passages,
    the texts of both kinds of query: msmarco's, then the docstring ones)."""
    from pgkb.embeddings.registry import DEFAULT_MODEL_ID, get_model

    base, base_q, base_texts = real_vectors(datasets)
    need = max(0, n - len(base))
    path = CACHE / f"docstrings-{DEFAULT_MODEL_ID}-{need}.npz"
    texts, queries = docstring_texts(need)
    if path.exists():
        z = np.load(path)
        p, dq = z["p"], z["q"]
    else:
        model = get_model(DEFAULT_MODEL_ID)
        chunks = []
        for i in range(0, len(texts), 256):
            chunks.append(np.asarray(model.embed_documents(texts[i : i + 256]), np.float32))
            if i % 10240 == 0:
                print(f"scale_data: embedded {i:,} of {len(texts):,} docstring paragraphs", flush=True)
        p = np.vstack(chunks) if chunks else np.zeros((0, base.shape[1]), np.float32)
        dq = np.asarray(model.embed_queries(queries[:500]), np.float32)
        np.savez(path, p=p, q=dq)
    query_texts = real_texts(datasets)[1] + queries[: len(dq)]
    return np.vstack([base, p])[:n].astype(np.float32), base_q, dq, (base_texts + texts)[:n], query_texts


def neighbours(x: np.ndarray, base: np.ndarray, k: int, *, exclude_self: bool = False, block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by cosine (unit vectors): (indices, similarities), best first."""
    idx = np.empty((len(x), k), np.int64)
    sim = np.empty((len(x), k), np.float32)
    for i in range(0, len(x), block):
        s = x[i : i + block] @ base.T
        if exclude_self:
            s[s > 0.99999] = -2  # the point itself (and exact duplicates)
        part = np.argpartition(-s, k, axis=1)[:, :k]
        ps = np.take_along_axis(s, part, 1)
        order = np.argsort(-ps, axis=1)
        idx[i : i + block] = np.take_along_axis(part, order, 1)
        sim[i : i + block] = np.take_along_axis(ps, order, 1)
    return idx, sim


def realism(sample: np.ndarray, base: np.ndarray, k: int = 20) -> dict[str, float]:
    """Mean top-1 and top-10 neighbour cosine of `sample` within `base` (itself excluded), and the
    local intrinsic dimensionality: Levina-Bickel MLE over k=20 neighbours, averaged as MacKay and
    Ghahramani do (mean of the inverse estimates, inverted)."""
    _, sim = neighbours(sample, base, k, exclude_self=True)
    d = np.sqrt(np.clip(2 - 2 * sim.astype(np.float64), 1e-12, None))  # Euclidean distance of unit vectors
    inv = np.mean(np.log(d[:, -1:] / d[:, :-1]), axis=1)  # (1/(k-1)) sum log(r_k / r_j)
    return {"top1": float(sim[:, 0].mean()), "top10": float(sim[:, 9].mean()), "lid": float(1 / np.mean(inv))}


def synthesise(real: np.ndarray, n: int, rng: np.random.Generator, *, mix: int = 3, keep: float = 0.55,
               noise: float = 0.0175, real_nn: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """n vectors: each a real vector b moved towards `mix` of its 10 real neighbours (b keeps a weight
    drawn around `keep`), plus N(0, noise^2) per dimension, renormalised. Returns (vectors, base index)."""
    if real_nn is None:
        real_nn, _ = neighbours(real, real, 10, exclude_self=True)
    out = np.empty((n, real.shape[1]), np.float32)
    bases = rng.integers(0, len(real), n)
    for i in range(0, n, 50_000):
        b = bases[i : i + 50_000]
        m = len(b)
        pick = real_nn[b][np.arange(m)[:, None], rng.integers(0, real_nn.shape[1], (m, mix))]
        w_b = np.clip(rng.normal(keep, 0.15, m), 0.2, 0.95)
        w = rng.dirichlet(np.ones(mix), m) * (1 - w_b)[:, None]
        v = w_b[:, None] * real[b] + np.einsum("mj,mjd->md", w, real[pick])
        v += rng.normal(0, noise, v.shape)
        out[i : i + m] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out, bases


class TextMaker:
    """Chunk text with real words: half drawn from the base passage, half from a Zipfian vocabulary
    ranked by the real corpus's word frequencies; lengths log-normal around ~150 words (a
    FIXED_SIZE 300-token chunk of prose is 150-230 words; msmarco passages are ~60)."""

    def __init__(self, passages: list[str], rng: np.random.Generator) -> None:
        self.rng = rng
        self.words = [p.split() for p in passages]
        counts: dict[str, int] = {}
        for ws in self.words:
            for w in ws:
                counts[w] = counts.get(w, 0) + 1
        self.vocab = np.array(sorted(counts, key=counts.__getitem__, reverse=True))
        ranks = np.arange(1, len(self.vocab) + 1, dtype=np.float64)
        p = ranks ** -1.07  # Zipf's law, s slightly above 1 as in English prose
        self.cdf = np.cumsum(p / p.sum())

    def make(self, bases: np.ndarray) -> list[str]:
        n = len(bases)
        lengths = np.clip(self.rng.lognormal(np.log(150), 0.45, n), 20, 400).astype(int)
        # Ranks, not words: a numpy array of 10^8 fixed-width strings would need ~10 GB at 1M chunks.
        # (The same draws in the same order as before, so a given seed still makes the same text.)
        ranks = np.searchsorted(self.cdf, self.rng.random(int(lengths.sum())))
        np.minimum(ranks, len(self.vocab) - 1, out=ranks)
        vocab = self.vocab.tolist()
        out = []
        pos = 0
        for b, ln in zip(bases, lengths, strict=True):
            own = self.words[b]
            half = ln // 2
            mine = [own[j] for j in self.rng.integers(0, len(own), half)]
            out.append(" ".join(mine + [vocab[r] for r in ranks[pos : pos + ln - half].tolist()]))
            pos += ln - half
        return out


SELECTIVITY = {"a50": 0.5, "a5": 0.05, "a05": 0.005}


def attributes(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Boolean attributes matching 50 %, 5 % and 0.5 % of the rows, independently."""
    return {k: rng.random(n) < p for k, p in SELECTIVITY.items()}
