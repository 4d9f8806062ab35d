"""Document-ACL retrieval at scale: recall@10 against an exact filtered scan, and latency against an
unfiltered search of the same table, for users who see 50%, 5% and 0.5% of the documents.

    python bench/bench_acl.py                       # 100,000 chunks, 1,000 users
    python bench/bench_acl.py --rows 20000 --users 200 --queries 30

Layout: a MANAGED knowledge base's table (pgkb.store.acl: `acl_allow`/`acl_deny` text[] with a GIN
index on `acl_allow`), clustered random 384-d vectors (as in bench_retrieval.py), one chunk per
document. Documents sit in 200 folders; a third of the users are granted 100 folders (50% of the
documents), a third 10 folders (5%), a third 1 folder (0.5%); each row's allow list names every user
granted its folder (S3/Custom ACLs have no groups, so a row lists users, about 185 per row here),
as interned principal ids.
The query is the search statement Retrieve runs (pgkb.retrieval.search.search with the ACL
predicate of pgkb.retrieval.filters.acl_predicate), SEMANTIC, k=10. The reference "unfiltered" is
the same search without the ACL predicate, interleaved query by query with the ACL searches.
The embedded server and the table persist in bench/out/retrieval/ (shared with bench_retrieval.py).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
from bench_retrieval import CLUSTERS, MAPPING, NS, OUT, SPREAD, connect  # noqa: E402
from psycopg import sql  # noqa: E402

from pgkb.retrieval.evaluation import percentile  # noqa: E402
from pgkb.retrieval.filters import acl_predicate  # noqa: E402
from pgkb.retrieval.search import search  # noqa: E402
from pgkb.store.acl import enable_acl, lookup_principal, principal_ids, principals  # noqa: E402
from pgkb.store.ddl import vector_indexes  # noqa: E402
from pgkb.store.vector_table import ChunkRow, TableRef, create_table, write_rows  # noqa: E402

FOLDERS = 200
TIERS = {"50%": 100, "5%": 10, "0.5%": 1}  # folders granted to each user of the tier


def build(conn, n: int, users: int, rng: np.random.Generator) -> tuple[TableRef, np.ndarray, list[set[int]], list[str]]:
    dim = 384
    centers = rng.normal(size=(CLUSTERS, dim)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)

    def sample(count: int) -> np.ndarray:
        v = centers[rng.integers(CLUSTERS, size=count)] + rng.normal(scale=SPREAD, size=(count, dim)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    vecs = sample(n)
    names = [f"user{u:04d}@example.com" for u in range(users)]
    tier_of = [list(TIERS)[u * len(TIERS) // users] for u in range(users)]
    grants = [set(rng.choice(FOLDERS, TIERS[t], replace=False).tolist()) for t in tier_of]
    folder_users: list[list[int]] = [[] for _ in range(FOLDERS)]
    folder = np.arange(n) % FOLDERS
    table = TableRef("bench", f"acli{n}_u{users}_c{CLUSTERS}")
    conn.execute("CREATE SCHEMA IF NOT EXISTS bench")
    have = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (str(table),)).fetchone()[0]
    count = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table.ident)).fetchone()[0] if have else 0
    if count != n:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table.ident))
        with conn.transaction():
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(principals(table).ident))
            create_table(conn, table, MAPPING, dim)
            enable_acl(conn, table)
            ids = principal_ids(conn, table, names)  # user ids interned as Retrieve's writes do
            for u, folders in enumerate(grants):
                for f in folders:
                    folder_users[f].append(ids[names[u]])
            for (idx,) in conn.execute(
                "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = %s::regclass AND NOT indisprimary",
                (str(table),),
            ).fetchall():
                conn.execute(sql.SQL("DROP INDEX {}").format(sql.SQL(idx)))  # bulk load first, index after
        t0 = time.perf_counter()
        for start in range(0, n, 5000):
            rows = [
                ChunkRow(uuid.uuid5(NS, f"acl{i}"), f"chunk {i}", vecs[i],
                         {"x-amz-bedrock-kb-source-uri": f"s3://b/{i}", "x-amz-bedrock-kb-data-source-id": "SYN"},
                         {}, (folder_users[folder[i]], []))
                for i in range(start, min(n, start + 5000))
            ]
            with conn.transaction():
                write_rows(conn, table, MAPPING, rows, acl=True)
        print(f"loaded {n} rows in {time.perf_counter() - t0:.0f}s")
        t0 = time.perf_counter()
        conn.execute("SET maintenance_work_mem = '1GB'")
        conn.execute("SET max_parallel_maintenance_workers = 1")
        for stmt in vector_indexes(table, MAPPING):
            conn.execute(stmt)  # type: ignore[arg-type]
        enable_acl(conn, table)  # its GIN index
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(table.ident))
        print(f"indexes built in {time.perf_counter() - t0:.0f}s")
    size = conn.execute("SELECT pg_size_pretty(pg_total_relation_size(%s::regclass))", (str(table),)).fetchone()[0]
    print(f"table {table} with indexes: {size}")
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(TableRef("bench", f"acl{n}_u{users}_c{CLUSTERS}").ident))
    visible_rows = [set(np.flatnonzero(np.isin(folder, list(g))).tolist()) for g in grants]
    return table, vecs, visible_rows, names, tier_of, sample  # type: ignore[return-value]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--queries", type=int, default=50, help="per tier")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ef", type=int, default=None, help="hnsw.ef_search of the ACL searches (default: pgkb's)")
    a = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    conn = connect()
    rng = np.random.default_rng(14)
    table, vecs, visible_rows, names, tier_of, sample = build(conn, a.rows, a.users, rng)  # type: ignore[misc]
    pos = {f"s3://b/{i}": i for i in range(a.rows)}
    queries = sample(a.queries * len(TIERS))
    cases: list[tuple[str, int, np.ndarray]] = []
    for t_i, tier in enumerate(TIERS):
        members = [u for u, t in enumerate(tier_of) if t == tier]
        for q in range(a.queries):
            cases.append((tier, members[rng.integers(len(members))], queries[t_i * a.queries + q]))
    def acl(u: int) -> tuple:
        # As Retrieve does: the user's principal id (one primary-key lookup), then the predicate.
        return acl_predicate(lookup_principal(conn, table, names[u]))

    for _, u, q in cases[:5]:  # warm caches, untimed
        search(conn, table, MAPPING, query_embedding=q, query_text=None, k=10, acl=acl(u))
        search(conn, table, MAPPING, query_embedding=q, query_text=None, k=10)
    lat: dict[str, list[float]] = {}
    recall: dict[str, list[float]] = {}
    for r in range(a.rounds):
        for tier, u, q in cases:  # interleaved: each ACL search next to its unfiltered reference
            t0 = time.perf_counter()
            base_hits = search(conn, table, MAPPING, query_embedding=q, query_text=None, k=10)
            lat.setdefault("unfiltered", []).append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            hits = search(conn, table, MAPPING, query_embedding=q, query_text=None, k=10, acl=acl(u),
                          ef_search=a.ef)
            lat.setdefault(tier, []).append((time.perf_counter() - t0) * 1000)
            if r == 0:
                exact_all = set(np.argsort(-(vecs @ q))[:10].tolist())
                recall.setdefault("unfiltered", []).append(
                    len({pos[h.source_uri or ""] for h in base_hits} & exact_all) / 10)
                got = {pos[h.source_uri or ""] for h in hits}
                visible = visible_rows[u]
                assert got <= visible, "a hidden row came back"
                cand = np.fromiter(visible, dtype=np.int64)
                exact = set(cand[np.argsort(-(vecs[cand] @ q))[:10]].tolist())
                recall.setdefault(tier, []).append(len(got & exact) / len(exact))
    base = percentile(lat["unfiltered"], 50)
    print(f"\nACL search over {a.rows:,} chunks, {a.users:,} users, {a.queries} queries per tier x {a.rounds} rounds, k=10")
    print(f"{'user sees':<12}{'recall@10':>10}{'p50 ms':>9}{'p95 ms':>9}{'p50 / unfiltered':>18}")
    print(f"{'unfiltered':<12}{statistics.mean(recall['unfiltered']):>10.3f}{base:>9.2f}{percentile(lat['unfiltered'], 95):>9.2f}{1.0:>18.2f}")
    for tier in TIERS:
        p50 = percentile(lat[tier], 50)
        print(f"{tier:<12}{statistics.mean(recall[tier]):>10.3f}{p50:>9.2f}{percentile(lat[tier], 95):>9.2f}"
              f"{p50 / base:>18.2f}")
    print("(bars: recall@10 >= 0.99 / 0.95 / 0.95; p50 <= 1.5x unfiltered)")
    # A Retrieve also embeds its query: the ratios of whole Retrieves are those of statement + embedding.
    from pgkb.embeddings import DEFAULT_MODEL_ID, get_model

    m = get_model(DEFAULT_MODEL_ID)
    m.embed_queries(["warm up"])
    emb = []
    for i in range(50):
        t0 = time.perf_counter()
        m.embed_queries([f"what does the quarterly report {i} say about revenue?"])
        emb.append((time.perf_counter() - t0) * 1000)
    e50 = percentile(emb, 50)
    print(f"query embedding p50 ({DEFAULT_MODEL_ID}): {e50:.2f} ms; with it, p50 / unfiltered: "
          + ", ".join(f"{t} {(percentile(lat[t], 50) + e50) / (base + e50):.2f}" for t in TIERS))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
