"""Answer quality of the offline generator (pgkb.extractive) against the embedding-scored reference.

    python bench/bench_rag_quality.py                  # all 5,000 msmarco-5k passages, SEMANTIC and HYBRID
    python bench/bench_rag_quality.py --passages 1000 --search SEMANTIC

For each of msmarco-5k's judged queries, Retrieve (5 results) runs once through the service, and
two scorers choose answer sentences from the very same results:
- reference: the scorer pgkb shipped before (cosine of each sentence's vector from the knowledge base's
  embedding model to the question's vector, + 0.3 x the share of the question's words it holds,
  at most 12 sentences embedded, pre-selected by those words and the chunk's rank), kept here as the
  yardstick; it costs a model call over up to 12 sentences per answer;
- current: pgkb's ExtractiveGenerator (lexical support + chunk prior, no model call).
Figures per scorer, from the qrels (grade 0 = not judged):
- top in rel: how often the best-scored sentence comes from a passage of grade >= 2
- answer in rel: share of all answer sentences that come from a passage of grade >= 2
- mean grade: mean qrels grade of the passages the answer sentences come from
and between the two: how often the top sentence is the same, and the mean Jaccard overlap of the
answers' sentence sets. `ceiling` is the share of queries with any grade >= 2 passage in the results.
One query is 0.023 of "top in rel". The knowledge bases are bench_rag.py's (bench/out/rag/).

Measured 2026-11-25 (load average 2-3 from others' jobs; the ms/answer figures inflate with it):
    5,000 passages   SEMANTIC  reference top 0.698 answer 0.712   current top 0.674 answer 0.730
                               same top 0.651, Jaccard 0.586; 2.58 vs 2.67 sentences/answer
                     HYBRID    reference top 0.744 answer 0.718   current top 0.698 answer 0.739
                               same top 0.512, Jaccard 0.512
    1,000 passages   SEMANTIC  reference top 0.651 answer 0.636   current top 0.674 answer 0.653
                               same top 0.558, Jaccard 0.555
                     HYBRID    reference top 0.674 answer 0.651   current top 0.674 answer 0.673
                               same top 0.488, Jaccard 0.483
    scoring: current 0.4-0.8 ms/answer, reference 0.6-1.2 s/answer under that load
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench_rag import MSMARCO, OUT, knowledge_base  # noqa: E402

from pgkb.config import Settings  # noqa: E402
from pgkb.embeddings import DEFAULT_MODEL_ID, get_model  # noqa: E402
from pgkb.generation.extractive import (  # noqa: E402
    DEFAULT_SENTENCES,
    Candidate,
    candidates,
    choose,
    key_terms,
    support_scores,
)
from pgkb.service import KnowledgeBaseService  # noqa: E402

# the reference scorer's constants, as shipped before
REF_MAX_CANDIDATES = 12
REF_RANK_PRIOR = 0.2
REF_LEXICAL_WEIGHT = 0.3
REF_FLOOR = 0.15
_WORD = re.compile(r"[\w'-]+", re.UNICODE)


def ref_lexical_overlap(question: str, texts: list[str]) -> np.ndarray:
    terms = {t.lower() for t in key_terms(question)}
    if not terms or not texts:
        return np.zeros(len(texts), dtype=np.float32)
    words = [{w.lower() for w in _WORD.findall(t)} for t in texts]
    n = len(texts)
    idf = {t: math.log(1 + (n + 1) / (1 + sum(t in ws for ws in words))) for t in terms}
    total = sum(idf.values())
    return np.asarray([sum(idf[t] for t in terms if t in ws) / total for ws in words], dtype=np.float32)


def ref_scores(model: Any, question: str, cands: list[Candidate]) -> np.ndarray:
    """The embedding-scored reference; sentences left out by the pre-selection score -inf."""
    texts = [c.text for c in cands]
    keep = list(range(len(cands)))
    if len(cands) > REF_MAX_CANDIDATES:
        lex = ref_lexical_overlap(question, texts)
        keep = sorted(sorted(keep, key=lambda i: -(lex[i] + REF_RANK_PRIOR / (1 + cands[i].rank)))[:REF_MAX_CANDIDATES])
    kept = [texts[i] for i in keep]
    qvec = np.asarray(model.embed_queries([question])[0], dtype=np.float32)
    s = np.asarray(model.embed_documents(kept), dtype=np.float32) @ qvec
    s = s + REF_LEXICAL_WEIGHT * ref_lexical_overlap(question, kept)
    out = np.full(len(cands), -np.inf, dtype=np.float32)
    out[keep] = s
    return out


def judged(qrels_path: Path) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for line in qrels_path.read_text().splitlines():
        q, doc, grade = line.split("\t")[:3]
        if grade.isdigit():  # skips a header line if there is one
            out.setdefault(q, {})[doc] = int(grade)
    return out


def passage_id(result: dict[str, Any]) -> str:
    loc = result["location"]
    uri = json.dumps(loc)  # LOCAL/S3/CUSTOM locations all end in the file name
    m = re.search(r"([^/\"]+)\.txt", uri)
    return m.group(1) if m else ""


def evaluate(picks: list[tuple[int, list[int]]], per_query: list[tuple[list[Candidate], list[str], dict[str, int]]]) -> dict[str, float]:
    top_rel = ans_rel = n_ans = 0
    grades: list[int] = []
    for (top, chosen), (cands, pids, qrels) in zip(picks, per_query, strict=True):
        top_rel += qrels.get(pids[cands[top].rank], 0) >= 2
        for i in chosen:
            g = qrels.get(pids[cands[i].rank], 0)
            grades.append(g)
            ans_rel += g >= 2
            n_ans += 1
    return {"top in rel": top_rel / len(picks), "answer in rel": ans_rel / max(1, n_ans),
            "mean grade": statistics.mean(grades) if grades else 0.0, "sentences": n_ans / len(picks)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--passages", type=int, default=5000)
    ap.add_argument("--search", choices=["SEMANTIC", "HYBRID", "both"], default="both")
    ap.add_argument("--model", default=DEFAULT_MODEL_ID)
    args = ap.parse_args()
    qrels = judged(MSMARCO / "qrels" / "test.tsv")
    with open(MSMARCO / "queries.jsonl") as f:
        qs = [(q["_id"], q["text"]) for q in map(json.loads, f) if q["_id"] in qrels]
    model = get_model(args.model)
    with KnowledgeBaseService(Settings(data_dir=OUT / "data")) as svc:
        kb = knowledge_base(svc, args.passages, args.model)
        kinds = ["SEMANTIC", "HYBRID"] if args.search == "both" else [args.search]
        print(f"knowledge base {kb} ({args.model}): {args.passages} msmarco-5k passages, {len(qs)} judged queries, k=5")
        for kind in kinds:
            rc = {"vectorSearchConfiguration": {"numberOfResults": 5, "overrideSearchType": kind}}
            per_query = []
            ref: list[tuple[int, list[int]]] = []
            cur: list[tuple[int, list[int]]] = []
            t_ref = t_cur = 0.0
            for qid, text in qs:
                results = svc.retrieve(knowledgeBaseId=kb, retrievalQuery={"text": text},
                                       retrievalConfiguration=rc)["retrievalResults"]
                cands = candidates(results)
                if not cands:
                    continue
                per_query.append((cands, [passage_id(r) for r in results], qrels[qid]))
                t = time.perf_counter()
                rs = ref_scores(model, text, cands)
                t_ref += time.perf_counter() - t
                t = time.perf_counter()
                cs = support_scores(text, cands, results)
                t_cur += time.perf_counter() - t
                ref.append((int(np.argmax(rs)), choose(cands, rs, DEFAULT_SENTENCES, None, REF_FLOOR)))
                cur.append((int(np.argmax(cs)), choose(cands, cs, DEFAULT_SENTENCES, None)))
            n = len(per_query)
            ceiling = sum(any(qr.get(p, 0) >= 2 for p in pids) for _, pids, qr in per_query) / n
            print(f"\n{kind}: {n} queries; ceiling (any result of grade >= 2) {ceiling:.3f}")
            for label, picks, secs in (("reference (embedding)", ref, t_ref), ("current (lexical)", cur, t_cur)):
                m = evaluate(picks, per_query)
                print(f"  {label:22s} top in rel {m['top in rel']:.3f}   answer in rel {m['answer in rel']:.3f}   "
                      f"mean grade {m['mean grade']:.2f}   {m['sentences']:.2f} sentences/answer   "
                      f"scoring {secs / n * 1000:6.2f} ms/answer")
            same_top = sum(a[0] == b[0] for a, b in zip(ref, cur, strict=True)) / n
            jac = statistics.mean(len(set(a[1]) & set(b[1])) / len(set(a[1]) | set(b[1])) for a, b in zip(ref, cur, strict=True))
            print(f"  agreement: same top sentence {same_top:.3f}, mean Jaccard of answer sentence sets {jac:.3f}")


if __name__ == "__main__":
    main()
