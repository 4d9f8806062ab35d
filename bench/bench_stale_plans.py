"""A pooled connection's cached search plan made while its table was small, before and after
pgkb.store.planner_stats.refresh (what an ingestion job now runs at its end).

    python bench/bench_stale_plans.py                 # 30,000 rows
    python bench/bench_stale_plans.py --rows 100000

Steps: a Bedrock-layout table with its HNSW index and 20 rows; connection A runs SEMANTIC searches
until psycopg has prepared the statement and PostgreSQL uses its generic plan (made for 20 rows);
up to `--rows` rows are written by another connection (pgkb's write_rows, a later sync's path), with autovacuum off for the table (as if its
ANALYZE had not come yet) and a count(*) to set hint bits; then, interleaved query by query: A,
and B, a new connection that plans for the table as it is. Then `planner_stats.refresh` and the
same again. Prints p50s and A's ratio to B. The embedded server in bench/out/retrieval/ is shared
with bench_retrieval.py; the table is dropped at the end.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import psycopg
from pgvector.psycopg import register_vector

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_retrieval import MAPPING, connect  # noqa: E402

from pgkb.retrieval.search import search  # noqa: E402
from pgkb.store import planner_stats  # noqa: E402
from pgkb.store.vector_table import ChunkRow, TableRef, create_table, write_rows  # noqa: E402

DIM = 384
SMALL = 20  # rows of the knowledge base when A plans


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=30_000)
    ap.add_argument("--queries", type=int, default=60)
    a = ap.parse_args()
    rng = np.random.default_rng(3)
    conn = connect()
    url = conn.info.dsn
    table = TableRef("bench", "stale_plans")
    conn.execute("CREATE SCHEMA IF NOT EXISTS bench")
    conn.execute(f"DROP TABLE IF EXISTS {table.ident.as_string(conn)}")
    create_table(conn, table, MAPPING, DIM)
    conn.execute(f"ALTER TABLE {table.ident.as_string(conn)} SET (autovacuum_enabled = off)")

    def unit(n: int) -> np.ndarray:
        v = rng.normal(size=(n, DIM)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    def new_conn() -> psycopg.Connection:
        c = psycopg.connect(url, autocommit=True)
        register_vector(c)
        return c

    def one(c: psycopg.Connection, q: np.ndarray) -> float:
        t0 = time.perf_counter()
        search(c, table, MAPPING, query_embedding=q, query_text=None, k=10)
        return (time.perf_counter() - t0) * 1000

    vecs = unit(a.rows)

    def write(lo: int, hi: int) -> None:
        for start in range(lo, hi, 2000):
            rows = [ChunkRow(uuid.uuid4(), f"chunk {i} " + "words " * 60, vecs[i],
                             {"x-amz-bedrock-kb-source-uri": f"s3://b/{i}"}, {})
                    for i in range(start, min(hi, start + 2000))]
            with conn.transaction():
                write_rows(conn, table, MAPPING, rows)

    # A small knowledge base first. This write also creates the writer's temporary schema (its
    # staging table's), whose first creation resets every backend's cached plans: in a database in
    # use that happened long ago, so it must not happen between A's plan and the load.
    write(0, SMALL)
    stale = new_conn()
    for q in unit(12):  # prepared at the 5th run; generic plan from the 6th
        one(stale, q)

    t0 = time.perf_counter()
    write(SMALL, a.rows)
    conn.execute(f"SELECT count(*) FROM {table.ident.as_string(conn)}")  # hint bits, not pg_class
    print(f"{a.rows:,} rows written in {time.perf_counter() - t0:.0f} s")

    def measure(label: str) -> None:
        fresh = new_conn()
        qs = unit(a.queries + 5)
        for q in qs[:5]:
            one(fresh, q)
        lat: dict[str, list[float]] = {"A": [], "B": []}
        for i, q in enumerate(qs[5:]):
            for who, c in ((("A", stale), ("B", fresh)) if i % 2 else (("B", fresh), ("A", stale))):
                lat[who].append(one(c, q))
        fresh.close()
        pa, pb = statistics.median(lat["A"]), statistics.median(lat["B"])
        print(f"{label:<58} A p50 {pa:7.2f} ms   B p50 {pb:6.2f} ms   A/B {pa / pb:5.2f}")

    measure("before: A's plan made for 20 rows")
    t0 = time.perf_counter()
    ran = planner_stats.refresh(conn, table)
    print(f"planner_stats.refresh: ran={ran} in {time.perf_counter() - t0:.2f} s")
    measure("after planner_stats.refresh (A replans at its next use)")
    stale.close()
    conn.execute(f"DROP TABLE {table.ident.as_string(conn)}")


if __name__ == "__main__":
    main()
