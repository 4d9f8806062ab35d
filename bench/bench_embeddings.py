"""Embedding backends on msmarco-5k: reference (sentence-transformers/torch) vs ONNX fp32 vs ONNX int8.

Same run, same machine, interleaved so load from other processes hits every variant alike:
  - ingestion throughput: documents/s over the corpus (all 5,000 unless --limit)
  - query latency: p50/p95 of embed_queries([q]) (batch of 1) over the judged queries, repeated
  - quality: cosine to the reference vectors (mean, min), and nDCG@10 by brute-force cosine search
    (a proxy: pgkb's own retrieval is measured by the integration bench)

  python bench/bench_embeddings.py [--limit N] [--rounds R] [--json out.json]

Figures of 2026-11-25 21:16 UTC (`--rounds 3`, 2 cores, load average 1.5 at start and at end):
  variant              docs/s  x ref  p50 ms  cos mean / min     nDCG@10
  reference (torch)      70.0   1.00   11.90  1 / 1              0.7977
  onnx fp32              94.6   1.35    4.07  1.0000 / 1.0000    0.7977
  onnx int8             199.6   2.85    2.50  0.99433 / 0.98021  0.7955 (-0.0022)
  onnx int8-unbatched   261.2   3.73    2.40  0.99470 / 0.97702  0.7989 (+0.0012)  <- the default
int8-unbatched and int8 meet issue 8's bar here; fp32 misses both 2x and 3 ms. Through pgkb's own
Retrieve (bench_ingest_backends.py) batched int8 falls to -0.0066 and int8-unbatched stays at +0.0013.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import bench_data  # noqa: E402
import numpy as np  # noqa: E402

from pgkb.embeddings import get_model  # noqa: E402

DATA = bench_data.find("msmarco-5k")
VARIANTS = {
    "reference (torch)": "sentence-transformers.all-minilm-l6-v2",
    "onnx fp32": "sentence-transformers.all-minilm-l6-v2-onnx",
    "onnx int8": "sentence-transformers.all-minilm-l6-v2-onnx-int8",
    "onnx int8-unbatched": "sentence-transformers.all-minilm-l6-v2-onnx-int8-unbatched",
}
CHUNK = 250  # documents per interleaved slice


def load(limit: int | None) -> tuple[list[str], list[str], list[str], dict[str, dict[str, int]]]:
    ids, docs = [], []
    with open(DATA / "corpus.jsonl") as f:
        for line in f:
            d = json.loads(line)
            ids.append(d["_id"])
            docs.append((d.get("title", "") + " " + d["text"]).strip())
    qrels: dict[str, dict[str, int]] = defaultdict(dict)
    with open(DATA / "qrels" / "test.tsv") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2].isdigit():
                qrels[parts[0]][parts[1]] = int(parts[2])
    queries = {}
    with open(DATA / "queries.jsonl") as f:
        for line in f:
            q = json.loads(line)
            if q["_id"] in qrels:
                queries[q["_id"]] = q["text"]
    if limit:
        ids, docs = ids[:limit], docs[:limit]
    return ids, docs, list(queries), {**qrels, "__text__": queries}  # type: ignore[dict-item]


def ndcg_at_10(doc_vecs: np.ndarray, doc_ids: list[str], q_vecs: np.ndarray, q_ids: list[str],
               qrels: dict[str, dict[str, int]]) -> float:
    """trec_eval's ndcg_cut_10 (linear gains), brute-force cosine search."""
    scores = q_vecs @ doc_vecs.T
    total = 0.0
    for qi, qid in enumerate(q_ids):
        top = np.argsort(-scores[qi])[:10]
        rels = qrels[qid]
        dcg = sum(rels.get(doc_ids[d], 0) / math.log2(r + 2) for r, d in enumerate(top))
        ideal = sorted(rels.values(), reverse=True)[:10]
        idcg = sum(g / math.log2(r + 2) for r, g in enumerate(ideal))
        total += dcg / idcg if idcg else 0.0
    return total / len(q_ids)


def measure_latency(models: dict, queries: list[str], rounds: int) -> dict[str, list[float]]:
    """embed_queries([q]) wall time in ms. Each round runs one variant over all queries at a time
    (rotating which goes first): per-query interleaving in one process lets torch's OpenMP threads,
    still spinning after their call, steal the cores from the next variant."""
    lat: dict[str, list[float]] = {n: [] for n in models}
    names = list(models)
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            model = models[name]
            model.embed_queries([queries[0]])  # settle this backend's threads
            time.sleep(0.3)  # let the previous backend's spinning threads go idle
            for q in queries:
                t = time.perf_counter()
                model.embed_queries([q])
                lat[name].append((time.perf_counter() - t) * 1000)
    return lat


def latency_only(models: dict, queries: list[str], rounds: int) -> None:
    lat = measure_latency(models, queries, rounds)
    ref = statistics.median(next(iter(lat.values())))
    print(f"\n{'variant':<20} {'p50 ms':>7} {'p95 ms':>7} {'x ref':>6}")
    for name, v in lat.items():
        p = sorted(v)
        p50 = statistics.median(p)
        print(f"{name:<20} {p50:>7.2f} {p[int(0.95 * (len(p) - 1))]:>7.2f} {ref / p50:>6.2f}")
    print(f"load average at end {os.getloadavg()[0]:.1f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=None, help="first N documents only (default: all 5,000)")
    ap.add_argument("--rounds", type=int, default=5, help="passes over the queries for latency")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--latency-only", action="store_true", help="only single-query latency (quick)")
    args = ap.parse_args()

    doc_ids, docs, q_ids, extra = load(args.limit)
    qtext: dict[str, str] = extra.pop("__text__")  # type: ignore[assignment]
    qrels = extra
    queries = [qtext[q] for q in q_ids]
    print(f"msmarco-5k: {len(docs)} documents, {len(queries)} judged queries, {os.cpu_count()} cores, "
          f"load average at start {os.getloadavg()[0]:.1f}")

    names = list(VARIANTS)
    models, load_s = {}, {}
    for name, mid in VARIANTS.items():
        t = time.perf_counter()
        models[name] = get_model(mid)
        models[name].embed_documents(docs[:16])  # warm up
        load_s[name] = time.perf_counter() - t

    if args.latency_only:
        latency_only(models, queries, args.rounds)
        return

    # Ingestion: interleave slices, rotating the order, so background load is shared fairly.
    vecs: dict[str, list[np.ndarray]] = {n: [] for n in VARIANTS}
    spent = dict.fromkeys(VARIANTS, 0.0)
    for k, start in enumerate(range(0, len(docs), CHUNK)):
        part = docs[start : start + CHUNK]
        for name in names[k % len(names):] + names[: k % len(names)]:
            t = time.perf_counter()
            vecs[name].append(models[name].embed_documents(part))
            spent[name] += time.perf_counter() - t
        print(f"  {start + len(part)}/{len(docs)} documents", file=sys.stderr, end="\r")
    print(file=sys.stderr)
    doc_vecs = {n: np.concatenate(v) for n, v in vecs.items()}

    # Query latency, batch of 1, interleaved per query.
    lat = measure_latency(models, queries, args.rounds)
    # One query per call, as Retrieve embeds them (batched int8 scales activations over the whole batch).
    q_vecs = {n: np.vstack([models[n].embed_queries([q]) for q in queries]) for n in VARIANTS}

    ref = names[0]
    results = {}
    for name in names:
        cos = (doc_vecs[name] * doc_vecs[ref]).sum(axis=1)
        p = sorted(lat[name])
        results[name] = {
            "model_id": VARIANTS[name],
            "load_s": round(load_s[name], 2),
            "docs_per_s": round(len(docs) / spent[name], 1),
            "embed_s": round(spent[name], 2),
            "query_p50_ms": round(statistics.median(p), 2),
            "query_p95_ms": round(p[int(0.95 * (len(p) - 1))], 2),
            "cos_mean": round(float(cos.mean()), 5),
            "cos_min": round(float(cos.min()), 5),
            "ndcg10": round(ndcg_at_10(doc_vecs[name], doc_ids, q_vecs[name], q_ids, qrels), 4),
        }
    r0 = results[ref]
    print(f"\n{'variant':<20} {'docs/s':>8} {'x ref':>6} {'p50 ms':>7} {'p95 ms':>7} {'x ref':>6} "
          f"{'cos mean':>9} {'cos min':>8} {'nDCG@10':>8} {'d nDCG':>7} {'load s':>7}")
    for name, r in results.items():
        r["ingest_speedup"] = round(r["docs_per_s"] / r0["docs_per_s"], 2)
        r["query_speedup"] = round(r0["query_p50_ms"] / r["query_p50_ms"], 2)
        r["ndcg10_delta"] = round(r["ndcg10"] - r0["ndcg10"], 4)
        r["meets_issue_bar"] = bool(
            r["ingest_speedup"] >= 2 and r["query_p50_ms"] <= 3 and r["ndcg10_delta"] >= -0.005
        )
        print(f"{name:<20} {r['docs_per_s']:>8} {r['ingest_speedup']:>6} {r['query_p50_ms']:>7} "
              f"{r['query_p95_ms']:>7} {r['query_speedup']:>6} {r['cos_mean']:>9} {r['cos_min']:>8} "
              f"{r['ndcg10']:>8} {r['ndcg10_delta']:>7} {r['load_s']:>7}")
    print(f"load average at end {os.getloadavg()[0]:.1f} (other processes share these cores: compare ratios)")
    print("\nissue 8 bar (>=2x reference docs/s, p50 <= 3 ms, nDCG@10 within 0.005):")
    for name in names[1:]:
        print(f"  {name}: {'meets' if results[name]['meets_issue_bar'] else 'does not meet'}")
    if args.json:
        args.json.write_text(json.dumps({"documents": len(docs), "queries": len(queries), "results": results},
                                        indent=2))


if __name__ == "__main__":
    main()
