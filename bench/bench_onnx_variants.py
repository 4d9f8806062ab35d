"""Candidate ONNX variants of all-MiniLM-L6-v2 against the torch reference on msmarco-5k (issue 8).

For each candidate graph (a dynamic-quantization recipe applied to pgkb's fp32 export, see RECIPES):
  - speed: documents/s over the first --speed-docs documents, interleaved in slices with the torch
    reference (same run, so the ratio holds under the shared machine's load), and query p50 of
    embed_queries([q]) over the 43 judged queries x --rounds;
  - quality: cosine to the reference vectors over all 5,000 documents (mean, min); nDCG@10 by exact
    search (numpy), and through pgvector HNSW the way pgkb's Retrieve runs it (index created with the
    table and filled by COPY in corpus order, `hnsw.ef_search` 64 set in the query's own transaction),
    over --builds rebuilds of the index, since HNSW's level assignment is random.
The reference itself goes through the same HNSW rebuilds: its spread is what a 0.005 difference is
measured against. Documents are embedded in calls of 256, as ingestion does (int8's activation scales
are per batch, so batching is part of the result). Queries one at a time, as Retrieve does.

    python bench/bench_onnx_variants.py [--recipes int8,int8-matmul,...] [--builds 5] [--rounds 3]

Graphs are written to bench/out/onnx-variants/ (git-ignored), the reference vectors cached there too.
`--cos-only N` is a quick sensitivity sweep (cosine over the first N documents); `--shuffles N` embeds
the corpus in N random orders (the batch-dependence of int8's vectors); `--texts-per-run 1` runs
every candidate one text per run, as the default id does.

Figures of 2026-11-25 20:17-21:00 UTC (2 cores, load average 2-7, other jobs running; quality figures
do not depend on the load):
  recipe                     cos mean / min     exact nDCG@10   HNSW ef 64 over 5 builds
  reference                  1 / 1              0.7977          0.7977 every build
  int8 (registered)          0.99434 / 0.98166  +0.0001         +0.0001 every build
  int8-matmul                0.99464 / 0.98108  -0.0037         0.7768 in 2 of 5 builds (ef 400: -0.0037)
  int8-per-tensor            0.95764 / 0.8887   -0.0055
  int8-reduce-range          0.99323 / 0.98101  -0.0017
  int8-sym-act               0.99387 / 0.98241  -0.0041
  int8-uint8w                0.99449 / 0.98099  -0.0063
  int8-matmul-keep-ffn-out   0.99737 / 0.99244  -0.0005         -0.0005 every build
  --shuffles 4: int8 0.7937-0.7989, int8-matmul-keep-ffn-out 0.7942-0.8024 (exact nDCG@10 per batching)
  --texts-per-run 1: int8 0.99470 / 0.97702, +0.0012; int8-matmul-keep-ffn-out 0.99770 / 0.98178, -0.0022
  --cos-only 1000 --texts-per-run 1 (cos mean, docs/s at load ~3): int8 0.99471 (137), int8-matmul
  0.99504 (125), keep-ffn-out 0.99773 (79-90), keep-ffn-out-L0..L5 0.99606 / 0.99556 / 0.99583 /
  0.99525 / 0.99512 / 0.99509, keep-ffn-out-L0-L2 0.99740 (105), keep-ffn-in 0.99643 (77),
  keep-attn-out 0.99510, keep-qkv 0.99585 (96), int8-fused-keep-ffn-out 0.99772 (84).
Speed, first run (--speed-docs 500, load 6.8): reference 16.0 docs/s, query p50 116.9 ms; fp32 2.37x,
9.1 ms; int8 6.23x, 1.84 ms; int8-matmul 6.14x, 1.85 ms (torch suffers most under load).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

OUT = ROOT / "bench" / "out" / "onnx-variants"

import bench_data  # noqa: E402

from pgkb.embeddings import get_model, get_spec  # noqa: E402
from pgkb.embeddings.onnx import Quantization, Recipe, derive, ensure_graph  # noqa: E402
from pgkb.retrieval.evaluation import load_beir, ndcg_at  # noqa: E402

REF = "sentence-transformers.all-minilm-l6-v2"
FP32 = REF + "-onnx"
EMBED_CALL = 256  # texts per embed_documents call, like ingestion (pgkb/ingestion/sync.py EMBED_BATCH)
EF_SEARCH = 64  # what pgkb's Retrieve sets for k=10 (pgkb/retrieval/search.py EF_SEARCH)


def _layers(kind: str, layers: range = range(6)) -> tuple[str, ...]:
    paths = {
        "ffn_out": "output/dense", "ffn_in": "intermediate/dense", "attn_out": "attention/output/dense",
        "q": "attention/self/query", "k": "attention/self/key", "v": "attention/self/value",
    }
    return tuple(f"/bert/encoder/layer.{i}/{paths[kind]}/MatMul" for i in layers)


def _all_matmuls(layer: int) -> tuple[str, ...]:
    return sum((_layers(k, range(layer, layer + 1)) for k in ("q", "k", "v", "attn_out", "ffn_in", "ffn_out")), ())


MATMUL = ("MatMul",)
FUSED_MATMUL = ("MatMul", "Attention")  # after fusion, Q/K/V projections live inside Attention
Q = Quantization
RECIPES: dict[str, Recipe] = {
    "fp32": Recipe(),
    "int8": Recipe(quantization=Q()),  # the registered `-onnx-int8`: MatMul + Gather (embeddings), per channel
    "int8-matmul": Recipe(quantization=Q(op_types=MATMUL)),  # embeddings' Gather left in fp32
    "int8-per-tensor": Recipe(quantization=Q(per_channel=False)),
    "int8-reduce-range": Recipe(quantization=Q(reduce_range=True)),
    "int8-uint8w": Recipe(quantization=Q(weight_type="QUInt8")),
    "int8-sym-act": Recipe(quantization=Q(extra=(("ActivationSymmetric", True),))),
    "int8-matmul-keep-ffn-out": Recipe(quantization=Q(op_types=MATMUL, exclude=_layers("ffn_out"))),
    "int8-matmul-keep-ffn-in": Recipe(quantization=Q(op_types=MATMUL, exclude=_layers("ffn_in"))),
    "int8-matmul-keep-attn-out": Recipe(quantization=Q(op_types=MATMUL, exclude=_layers("attn_out"))),
    "int8-matmul-keep-qkv": Recipe(quantization=Q(op_types=MATMUL, exclude=_layers("q") + _layers("k") + _layers("v"))),
    **{f"int8-matmul-keep-L{i}": Recipe(quantization=Q(op_types=MATMUL, exclude=_all_matmuls(i))) for i in range(6)},
    **{f"int8-matmul-keep-ffn-out-L{i}": Recipe(quantization=Q(op_types=MATMUL, exclude=_layers("ffn_out", range(i, i + 1))))
       for i in range(6)},
    "int8-matmul-keep-ffn-out-L0-L1": Recipe(quantization=Q(op_types=MATMUL, exclude=_layers("ffn_out", range(2)))),
    "int8-matmul-keep-ffn-out-L0-L2": Recipe(quantization=Q(op_types=MATMUL, exclude=_layers("ffn_out", range(3)))),
    "int8-matmul-keep-ffn-out-L3-L5": Recipe(quantization=Q(op_types=MATMUL, exclude=_layers("ffn_out", range(3, 6)))),
    "fp32-fused": Recipe(fuse=True),
    "int8-fused": Recipe(fuse=True, quantization=Q()),
    "int8-fused-matmul": Recipe(fuse=True, quantization=Q(op_types=FUSED_MATMUL)),
    "int8-fused-keep-ffn-out": Recipe(fuse=True, quantization=Q(op_types=FUSED_MATMUL, exclude=_layers("ffn_out"))),
    **{f"int8-fused-keep-ffn-out-L{i}": Recipe(fuse=True, quantization=Q(
        op_types=FUSED_MATMUL, exclude=_layers("ffn_out", range(i, i + 1)))) for i in range(6)},
}


def build(name: str) -> Path:
    """The candidate's graph (built once), next to a copy of the tokenizer."""
    OUT.mkdir(parents=True, exist_ok=True)
    fp32 = ensure_graph("fp32")
    if name == "fp32":
        return fp32
    dest = OUT / f"{name}.onnx"
    if not dest.exists():
        derive(fp32, dest, RECIPES[name])
    if not (OUT / "tokenizer.json").exists():
        shutil.copyfile(fp32.parent / "tokenizer.json", OUT / "tokenizer.json")
    return dest


def embed_corpus(model, texts: list[str]) -> np.ndarray:
    return np.concatenate([model.embed_documents(texts[i : i + EMBED_CALL]) for i in range(0, len(texts), EMBED_CALL)])


def embed_queries(model, queries: list[str]) -> np.ndarray:
    return np.concatenate([model.embed_queries([q]) for q in queries])


def exact_ranking(docs: np.ndarray, queries: np.ndarray, ids: list[str]) -> list[list[str]]:
    scores = queries @ docs.T
    return [[ids[j] for j in np.argsort(-row, kind="stable")[:10]] for row in scores]


def mean_ndcg(rankings: list[list[str]], qids: list[str], qrels: dict[str, dict[str, int]]) -> float:
    return statistics.mean(ndcg_at(r, qrels[q], 10) for r, q in zip(rankings, qids, strict=True))


class Hnsw:
    """pgvector HNSW rankings, built like a pgkb knowledge-base table (index first, then COPY)."""

    def __init__(self, url: str) -> None:
        import psycopg
        from pgvector.psycopg import register_vector

        self.conn = psycopg.connect(url, autocommit=True)
        self.conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        register_vector(self.conn)

    def rankings(self, docs: np.ndarray, ids: list[str], queries: np.ndarray, ef: int) -> list[list[str]]:
        c = self.conn
        c.execute("DROP TABLE IF EXISTS variant_bench")
        c.execute("CREATE TABLE variant_bench (id text PRIMARY KEY, embedding vector(384))")
        c.execute("ALTER TABLE variant_bench ALTER COLUMN embedding SET STORAGE PLAIN")
        c.execute("CREATE INDEX ON variant_bench USING hnsw (embedding vector_cosine_ops)")
        with c.cursor() as cur, cur.copy("COPY variant_bench (id, embedding) FROM STDIN WITH (FORMAT BINARY)") as cp:
            cp.set_types(["text", "vector"])
            for i, v in zip(ids, docs, strict=True):
                cp.write_row((i, v))
        out = []
        with c.transaction():
            # Same transaction as the queries (a SET on another pooled connection would not apply).
            c.execute("SELECT set_config('hnsw.ef_search', %s, true)", (str(ef),))
            plan = c.execute("EXPLAIN SELECT id FROM variant_bench ORDER BY embedding <=> %s LIMIT 10",
                             (queries[0],)).fetchall()
            assert any("variant_bench_embedding_idx" in r[0] for r in plan), plan
            for q in queries:
                out.append([r[0] for r in c.execute(
                    "SELECT id FROM variant_bench ORDER BY embedding <=> %s LIMIT 10", (q,)).fetchall()])
        return out


def speed(models: dict[str, object], texts: list[str], queries: list[str], rounds: int) -> dict[str, tuple[float, float]]:
    """docs/s and query p50 (ms) per model, slices interleaved with rotating order."""
    names = list(models)
    spent = dict.fromkeys(names, 0.0)
    for k, start in enumerate(range(0, len(texts), EMBED_CALL)):
        part = texts[start : start + EMBED_CALL]
        for n in names[k % len(names):] + names[: k % len(names)]:
            t = time.perf_counter()
            models[n].embed_documents(part)
            spent[n] += time.perf_counter() - t
    lat: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for n in names[r % len(names):] + names[: r % len(names)]:
            models[n].embed_queries([queries[0]])
            time.sleep(0.2)  # torch's spinning OpenMP threads go idle before the next backend
            for q in queries:
                t = time.perf_counter()
                models[n].embed_queries([q])
                lat[n].append(1000 * (time.perf_counter() - t))
    return {n: (len(texts) / spent[n], statistics.median(lat[n])) for n in names}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipes", default="fp32,int8", help=f"comma-separated; known: {','.join(RECIPES)}")
    ap.add_argument("--builds", type=int, default=5, help="HNSW index rebuilds per variant")
    ap.add_argument("--speed-docs", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-speed", action="store_true")
    ap.add_argument("--ef", default=f"{EF_SEARCH},400", help="hnsw.ef_search values (the first is pgkb's)")
    ap.add_argument("--shuffles", type=int, default=0,
                    help="also embed the corpus N times in shuffled order: int8's activation scales are per "
                         "batch, so a document's vector depends on its batch; exact nDCG@10 per shuffle")
    ap.add_argument("--texts-per-run", type=int, default=None,
                    help="1: one text per session run (a text's int8 vector then does not depend on its batch)")
    ap.add_argument("--cos-only", type=int, default=0, metavar="N",
                    help="only cosine to the reference over the first N documents (a quick sensitivity sweep)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    names = args.recipes.split(",")
    efs = [int(x) for x in args.ef.split(",")]
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}  (cores: {os.cpu_count()})",
          flush=True)

    from pgkb.db.embedded import ensure_embedded, stop_embedded
    from pgkb.embeddings.onnx import OnnxModel

    data = load_beir(bench_data.find("msmarco-5k"))
    ids = list(data.corpus)
    texts = [data.corpus[i]["text"] for i in ids]
    qids = [q for q in data.qrels if q in data.queries]
    qtexts = [data.queries[q] for q in qids]

    ref_model = get_model(REF)
    cache = OUT / "reference.npz"
    OUT.mkdir(parents=True, exist_ok=True)
    if cache.exists():
        z = np.load(cache)
        ref_docs, ref_q = z["docs"], z["queries"]
    else:
        ref_docs, ref_q = embed_corpus(ref_model, texts), embed_queries(ref_model, qtexts)
        np.savez(cache, docs=ref_docs, queries=ref_q)

    spec = get_spec(FP32)
    models = {n: OnnxModel(spec, 384, path=build(n), texts_per_run=args.texts_per_run) for n in names}
    for m in models.values():
        m.embed_documents(texts[:32])
    if args.cos_only:
        for n, m in models.items():
            t = time.perf_counter()
            d = embed_corpus(m, texts[: args.cos_only])
            dps = args.cos_only / (time.perf_counter() - t)
            cos = (d * ref_docs[: args.cos_only]).sum(axis=1)
            print(f"{n:34s} cos mean {cos.mean():.5f} min {cos.min():.5f}  p1 {np.percentile(cos, 1):.5f}"
                  f"  ({dps:.0f} docs/s, load {os.getloadavg()[0]:.1f})", flush=True)
        return

    results: dict[str, dict[str, object]] = {}
    if not args.no_speed:
        ref_model.embed_documents(texts[:32])
        sp = speed({"reference": ref_model, **models}, texts[: args.speed_docs], qtexts, args.rounds)
        print(f"speed measured (load {' '.join(f'{x:.2f}' for x in os.getloadavg())})", flush=True)
        for n, (dps, p50) in sp.items():
            results[n] = {"docs_per_s": round(dps, 1), "x_ref": round(dps / sp["reference"][0], 2),
                          "query_p50_ms": round(p50, 2)}
    vectors = {"reference": (ref_docs, ref_q)}
    for n, m in models.items():
        vectors[n] = (embed_corpus(m, texts), embed_queries(m, qtexts))
        shuffled = []
        for seed in range(args.shuffles):
            perm = np.random.default_rng(seed).permutation(len(texts))
            d = np.empty_like(vectors[n][0])
            d[perm] = embed_corpus(m, [texts[i] for i in perm])
            shuffled.append(round(mean_ndcg(exact_ranking(d, vectors[n][1], ids), qids, data.qrels), 4))
            cos = (d * ref_docs).sum(axis=1)
            results.setdefault(n, {}).setdefault("shuffled_cos_min", []).append(round(float(cos.min()), 5))
        if shuffled:
            results[n]["ndcg_exact_shuffled"] = shuffled

    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"pgkb-variants-{os.getpid()}"
    url = ensure_embedded(work)
    try:
        hnsw = Hnsw(url)
        for n, (d, q) in vectors.items():
            r = results.setdefault(n, {})
            cos = (d * ref_docs).sum(axis=1)
            r["cos_mean"], r["cos_min"] = round(float(cos.mean()), 5), round(float(cos.min()), 5)
            r["ndcg_exact"] = round(mean_ndcg(exact_ranking(d, q, ids), qids, data.qrels), 4)
            for ef in efs:
                runs = [mean_ndcg(hnsw.rankings(d, ids, q, ef), qids, data.qrels) for _ in range(args.builds)]
                r[f"ndcg_hnsw{ef}"] = [round(x, 4) for x in runs]
            print(f"  {n}: {json.dumps(r)}", flush=True)
        hnsw.conn.close()
    finally:
        stop_embedded(work)
        shutil.rmtree(work, ignore_errors=True)

    ref = results["reference"]
    print(f"\n{'variant':28s} {'docs/s':>7} {'x ref':>6} {'q p50':>6} {'cos mean':>8} {'cos min':>7} "
          f"{'exact':>7} {'d':>7} " + " ".join(f"{'hnsw' + str(ef) + ' mean [min,max]':>26} {'d':>7}" for ef in efs))
    for n, r in results.items():
        row = (f"{n:28s} {r.get('docs_per_s', float('nan')):7.1f} {r.get('x_ref', float('nan')):6.2f} "
               f"{r.get('query_p50_ms', float('nan')):6.2f} {r['cos_mean']:8.5f} {r['cos_min']:7.4f} "
               f"{r['ndcg_exact']:7.4f} {r['ndcg_exact'] - ref['ndcg_exact']:+7.4f}")
        for ef in efs:
            xs, rs = r[f"ndcg_hnsw{ef}"], ref[f"ndcg_hnsw{ef}"]
            row += (f" {statistics.mean(xs):7.4f} [{min(xs):.4f},{max(xs):.4f}]   "
                    f"{statistics.mean(xs) - statistics.mean(rs):+7.4f}")
        print(row)
    for n, r in results.items():
        if "ndcg_exact_shuffled" in r:
            xs = r["ndcg_exact_shuffled"]
            print(f"{n:28s} exact nDCG@10 over {len(xs)} shuffled batchings: {statistics.mean(xs):.4f} "
                  f"[{min(xs):.4f}, {max(xs):.4f}] ({statistics.mean(xs) - ref['ndcg_exact']:+.4f}); "
                  f"cos min per batching {r['shuffled_cos_min']}")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
