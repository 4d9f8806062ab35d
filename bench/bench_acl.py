"""Document-ACL retrieval at scale: recall@10 against an exact filtered scan, and latency against an
unfiltered search of the same table, for users who see 50%, 5% and 0.5% of the documents.

    python bench/bench_acl.py                       # 100,000 chunks, 1,000 users
    python bench/bench_acl.py --rows 20000 --users 200 --queries 30
    python bench/bench_acl.py --sweep 40,64,100,160,250   # recall@10 vs ef_search, per tier and scan order

Vectors (bench/scale_data.py, as bench_scale.py): real text vectors (msmarco-5k + pydoc topics,
embedded once with the default model, cached in ~/.cache/pgkb-bench) and synthetic neighbours mixed
from them, so the HNSW graph behaves as it does on text. Queries: msmarco-5k's 50 real query
vectors, then held-out synthetic vectors. Needs /work/shared/datasets (or PGKB_BENCH_DATASETS).
`--real`: no synthetic vectors at all: 100,000 real text vectors (msmarco-5k, pydoc topics and the
docstrings of this machine's Python and its packages, embedded once and cached), half the queries
msmarco's real ones, half held-out docstring first sentences (scale_data.real_corpus).

Layout: a MANAGED knowledge base's table (pgkb.store.acl: `acl_allow`/`acl_deny` int4[] with a GIN
index on `acl_allow`), one chunk per document. Documents sit in 200 folders; a third of the users are
granted 100 folders (50% of the documents), a third 10 folders (5%), a third 1 folder (0.5%); each
row's allow list names every user granted its folder (S3/Custom ACLs have no groups, so a row lists
users, about 185 per row here), as interned principal ids.

The query is the search statement Retrieve runs (pgkb.retrieval.search.search with the ACL predicate
of pgkb.retrieval.filters.acl_predicate), SEMANTIC, k=10. "before" is the same statement with the
settings pgkb used until issue 14's bench bar (ef_search 64, relaxed_order, for every filter);
"after" is pgkb's search() as it is. The reference "unfiltered" is the search without the ACL
predicate, interleaved query by query with the ACL searches. Ground truth: exact scan (numpy).
The embedded server and the table persist in bench/out/retrieval/ (shared with bench_retrieval.py).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
from bench_retrieval import MAPPING, NS, OUT, connect  # noqa: E402
from psycopg import sql  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scale_data  # noqa: E402

from pgkb.retrieval.bm25 import install_bm25  # noqa: E402
from pgkb.retrieval.evaluation import percentile  # noqa: E402
from pgkb.retrieval.filters import acl_predicate  # noqa: E402
from pgkb.retrieval.search import MAX_SCAN_TUPLES, build_query, search  # noqa: E402
from pgkb.store.acl import enable_acl, lookup_principal, principal_ids, principals  # noqa: E402
from pgkb.store.ddl import HNSW_EF_CONSTRUCTION, vector_indexes  # noqa: E402
from pgkb.store.vector_table import ChunkRow, TableRef, create_table, write_rows  # noqa: E402

FOLDERS = 200
TIERS = {"50%": 100, "5%": 10, "0.5%": 1}  # folders granted to each user of the tier
K = 10


def real_vectors(n: int, nq: int) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """(n real text vectors, nq query vectors, their passages, the queries' texts) with nothing
    synthetic: scale_data.real_corpus (msmarco-5k, pydoc topics, then docstring paragraphs of the
    Python installed here). Queries: half msmarco-5k's real queries, half first sentences of held-out
    modules' docstrings."""
    vecs, ms_q, doc_q, passages, query_texts = scale_data.real_corpus(n)
    if len(vecs) < n:
        raise SystemExit(f"bench_acl: only {len(vecs):,} real text vectors here; use --rows {len(vecs)}")
    half = min(len(ms_q), nq // 2)
    texts = query_texts[:half] + query_texts[len(ms_q):][: nq - half]
    return vecs, np.vstack([ms_q[:half], doc_q[: nq - half]]).astype(np.float32), passages, texts


def vectors(n: int, nq: int, rng: np.random.Generator, synthetic_queries: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(n chunk vectors, nq query vectors): scale_data's realistic vectors; queries are the real
    msmarco-5k query vectors first, then held-out synthetic ones (only those with `synthetic_queries`:
    chunk-like queries, which the graph serves better than real questions)."""
    real, real_q, _ = scale_data.real_vectors()
    nn, _ = scale_data.neighbours(real, real, 10, exclude_self=True)
    if synthetic_queries:
        real_q = real_q[:0]
    extra = max(0, nq - len(real_q))
    vecs, _ = scale_data.synthesise(real, n, rng, real_nn=nn)
    # Own generator: the rows, and the grants drawn after them, stay the same whatever the queries.
    held_out, _ = scale_data.synthesise(real, extra, np.random.default_rng(141), real_nn=nn)
    return vecs, np.vstack([real_q[:nq], held_out]).astype(np.float32)


def build(conn, n: int, users: int, rng: np.random.Generator, vecs: np.ndarray,
          prefix: str = "aclt", texts: list[str] | None = None) -> tuple[TableRef, list[set[int]], list[str], list[str]]:
    """The MANAGED-layout table (built once, kept), its visible rows per user, user names, tiers.
    `texts`: the chunks' real texts, with BM25 statistics (HYBRID); else placeholder texts."""
    dim = vecs.shape[1]
    names = [f"user{u:04d}@example.com" for u in range(users)]
    tier_of = [list(TIERS)[u * len(TIERS) // users] for u in range(users)]
    grants = [set(rng.choice(FOLDERS, TIERS[t], replace=False).tolist()) for t in tier_of]
    folder_users: list[list[int]] = [[] for _ in range(FOLDERS)]
    folder = np.arange(n) % FOLDERS
    table = TableRef("bench", f"{prefix}{n}_u{users}")
    conn.execute("CREATE SCHEMA IF NOT EXISTS bench")
    have = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (str(table),)).fetchone()[0]
    count = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table.ident)).fetchone()[0] if have else 0
    # A table built before the lists were kept in their rows (STORAGE MAIN) is rebuilt.
    current = have and conn.execute(
        "SELECT attstorage = 'm' FROM pg_attribute WHERE attrelid = %s::regclass AND attname = 'acl_allow'",
        (str(table),)).fetchone()[0]
    if count != n or not current:
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
                ChunkRow(uuid.uuid5(NS, f"aclt{i}"), texts[i] if texts else f"chunk {i}", vecs[i],
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
        for stmt in vector_indexes(table, MAPPING, ef_construction=HNSW_EF_CONSTRUCTION):  # as MANAGED KBs get
            conn.execute(stmt)  # type: ignore[arg-type]
        enable_acl(conn, table)  # its GIN index
        if texts:
            install_bm25(conn, table, MAPPING)  # HYBRID's statistics, from the rows
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(table.ident))
        print(f"indexes built in {time.perf_counter() - t0:.0f}s")
    size = conn.execute("SELECT pg_size_pretty(pg_total_relation_size(%s::regclass))", (str(table),)).fetchone()[0]
    print(f"table {table} with indexes: {size}")
    visible_rows = [set(np.flatnonzero(np.isin(folder, list(g))).tolist()) for g in grants]
    return table, visible_rows, names, tier_of


def fixed(conn, table: TableRef, q: np.ndarray, acl: tuple | None, ef: int, order: str = "relaxed_order",
          k: int = K) -> list[int]:
    """The search statement with explicit settings (the old rule, or a point of the sweep): row positions."""
    stmt, params = build_query(table, MAPPING, k=k, search_type="SEMANTIC", filter=None, attribute_cols={},
                               bm25_index=None, acl=acl)
    params.update(qvec="[" + ",".join(map(repr, q.tolist())) + "]", qtext="")
    settings: list[Any] = ["hnsw.ef_search", str(ef)]
    if acl is not None:
        settings += ["hnsw.iterative_scan", order, "hnsw.max_scan_tuples", str(MAX_SCAN_TUPLES),
                     "plan_cache_mode", "force_custom_plan"]
    with conn.transaction(), conn.pipeline():
        conn.execute("SELECT " + ", ".join(["set_config(%s, %s, true)"] * (len(settings) // 2)), settings)
        cur = conn.execute(stmt, params)
    return [int(r[3]["x-amz-bedrock-kb-source-uri"].rsplit("/", 1)[1]) for r in cur.fetchall()]


def pgkb(conn, table: TableRef, q: np.ndarray, acl: tuple | None, k: int = K, text: str | None = None) -> list[int]:
    """pgkb's search(): SEMANTIC, or HYBRID with the query's `text`."""
    hits = search(conn, table, MAPPING, query_embedding=q, query_text=text, k=k, acl=acl, attribute_cols={},
                  search_type="HYBRID" if text is not None else "SEMANTIC")
    return [int((h.source_uri or "").rsplit("/", 1)[1]) for h in hits]


def exact(vecs: np.ndarray, q: np.ndarray, rows: set[int] | None, k: int = K) -> set[int]:
    if rows is None:
        return set(np.argsort(-(vecs @ q))[:k].tolist())
    cand = np.fromiter(rows, dtype=np.int64)
    return set(cand[np.argsort(-(vecs[cand] @ q))[:k]].tolist())


def plan_of(conn, table: TableRef, q: np.ndarray, acl: tuple) -> str:
    stmt, params = build_query(table, MAPPING, k=K, search_type="SEMANTIC", filter=None, attribute_cols={},
                               bm25_index=None, acl=acl)
    params.update(qvec="[" + ",".join(map(repr, q.tolist())) + "]", qtext="")
    with conn.transaction():
        conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        text = "\n".join(r[0] for r in conn.execute(sql.SQL("EXPLAIN ") + stmt, params).fetchall())
    return "HNSW index scan" if "_embedding" in text and "Index Scan" in text and "Bitmap" not in text else (
        "GIN bitmap + exact sort" if "Bitmap" in text else "other")


def sweep(conn, table, vecs, cases, visible_rows, efs: list[int]) -> None:
    """recall@10 against exact per tier (filtered, both scan orders) and of the unfiltered index, per ef;
    also the unfiltered index's recall@20 (a 50% filter's top 10 are about the unfiltered top 20), and
    the p50 of the relaxed_order statement (one run per query, so a rough figure)."""
    print("\nrecall@10 vs hnsw.ef_search, p50 ms of relaxed_order (plans at ef 64):")
    for tier in TIERS:
        _, (_, acl), q = next(c for c in cases if c[0] == tier)
        print(f"  {tier}: {plan_of(conn, table, q, acl)}")
    print(f"{'ef':>5}{'unfilt@10':>10}{'@20':>7}{'ms':>7}"
          + "".join(f"{t + ' ' + o:>11}" for t in TIERS for o in ("rel", "strict", "ms")))
    for ef in efs:
        ms: list[float] = []
        un10, un20 = [], []
        for _, _, q in cases:
            t0 = time.perf_counter()
            got = fixed(conn, table, q, None, ef)
            ms.append((time.perf_counter() - t0) * 1000)
            un10.append(len(set(got) & exact(vecs, q, None)) / K)
            un20.append(len(set(fixed(conn, table, q, None, ef, k=20)) & exact(vecs, q, None, 20)) / 20)
        line = f"{ef:>5}{statistics.mean(un10):>10.3f}{statistics.mean(un20):>7.3f}{percentile(ms, 50):>7.1f}"
        for tier in TIERS:
            rs: dict[str, list[float]] = {"relaxed_order": [], "strict_order": []}
            ms = []
            for t, (u, acl), q in cases:
                if t != tier:
                    continue
                want = exact(vecs, q, visible_rows[u])
                for order in rs:
                    t0 = time.perf_counter()
                    got = fixed(conn, table, q, acl, ef, order)
                    if order == "relaxed_order":
                        ms.append((time.perf_counter() - t0) * 1000)
                    rs[order].append(len(set(got) & want) / K)
            line += f"{statistics.mean(rs['relaxed_order']):>11.3f}{statistics.mean(rs['strict_order']):>11.3f}{percentile(ms, 50):>11.1f}"
        print(line, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--queries", type=int, default=50, help="per tier")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--synthetic-queries", action="store_true", help="held-out synthetic vectors as queries")
    ap.add_argument("--real", action="store_true",
                    help="real text vectors only (msmarco-5k, pydoc, docstrings of this Python; embedded once, cached)")
    ap.add_argument("--hybrid", action="store_true", help="with --real: the chunks' real texts and BM25 statistics, and"
                    " HYBRID (a MANAGED knowledge base's default Retrieve) measured too, against unfiltered HYBRID")
    ap.add_argument("--sweep", default="", help="comma-separated ef_search values: print recall vs ef and stop")
    a = ap.parse_args()
    if not (scale_data.DATASETS / "msmarco-5k" / "corpus.jsonl").exists():
        print(f"bench_acl: msmarco-5k not found under {scale_data.DATASETS}; set PGKB_BENCH_DATASETS or place it there")
        return
    OUT.mkdir(parents=True, exist_ok=True)
    conn = connect()
    rng = np.random.default_rng(14)
    if a.hybrid and not a.real:
        raise SystemExit("bench_acl: --hybrid needs --real (synthetic vectors have no texts)")
    qtexts: list[str] = []
    texts: list[str] | None = None
    if a.real:
        vecs, qv, passages, qtexts = real_vectors(a.rows, a.queries)
        # Rows in a random order (the corpus comes source by source) so folders mix topics.
        order = np.random.default_rng(7).permutation(len(vecs))
        vecs = vecs[order]
        texts = [passages[i].replace("\x00", "") for i in order] if a.hybrid else None  # text cannot hold NUL
    else:
        vecs, qv = vectors(a.rows, a.queries, rng, a.synthetic_queries)
    prefix = ("aclh" if a.hybrid else "aclr") if a.real else "aclt"
    table, visible_rows, names, tier_of = build(conn, a.rows, a.users, rng, vecs, prefix, texts)
    cases: list[tuple[str, tuple[int, tuple], np.ndarray]] = []
    for tier in TIERS:
        members = [u for u, t in enumerate(tier_of) if t == tier]
        for q in range(a.queries):
            u = members[rng.integers(len(members))]
            cases.append((tier, (u, acl_predicate(lookup_principal(conn, table, names[u]))), qv[q]))
    cases_u = [(t, u, q) for t, (u, _), q in cases]
    # The query index of each case (cases are tier-major, a.queries each), for HYBRID's query texts.
    qtext_of = [qtexts[i % a.queries] if qtexts else "" for i in range(len(cases_u))]
    if a.sweep:
        sweep(conn, table, vecs, cases, visible_rows, [int(x) for x in a.sweep.split(",")])
        return

    def acl(u: int) -> tuple:
        # As Retrieve does: the user's principal id (one primary-key lookup), then the predicate.
        return acl_predicate(lookup_principal(conn, table, names[u]))

    for _, u, q in cases_u[:5]:  # warm caches, untimed
        fixed(conn, table, q, acl(u), 64)
        pgkb(conn, table, q, acl(u))
        pgkb(conn, table, q, None)
    lat: dict[tuple[str, str], list[float]] = {}
    rec: dict[tuple[str, str], list[float]] = {}
    for r in range(a.rounds):
        for ci, (tier, u, q) in enumerate(cases_u):  # interleaved: each ACL search next to its unfiltered reference
            runs = {
                ("unfiltered", ""): lambda q=q: pgkb(conn, table, q, None),
                (tier, "before"): lambda q=q, u=u: fixed(conn, table, q, acl(u), 64),
                (tier, "after"): lambda q=q, u=u: pgkb(conn, table, q, acl(u)),
            }
            if a.hybrid:
                qt = qtext_of[ci]
                runs[("unfiltered", "HYBRID")] = lambda q=q, qt=qt: pgkb(conn, table, q, None, text=qt)
                runs[(tier, "HYBRID")] = lambda q=q, u=u, qt=qt: pgkb(conn, table, q, acl(u), text=qt)
            for key, fn in runs.items():
                t0 = time.perf_counter()
                got = fn()
                lat.setdefault(key, []).append((time.perf_counter() - t0) * 1000)
                if r == 0:
                    visible = None if key[0] == "unfiltered" else visible_rows[u]
                    assert visible is None or set(got) <= visible, "a hidden row came back"
                    if key[1] != "HYBRID":  # recall against the exact vector scan: SEMANTIC's
                        rec.setdefault(key, []).append(len(set(got) & exact(vecs, q, visible)) / K)
    base = percentile(lat[("unfiltered", "")], 50)
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
    print(f"\nACL search over {a.rows:,} chunks, {a.users:,} users, {a.queries} queries per tier x {a.rounds} rounds, k={K}")
    print(f"unfiltered (pgkb): recall@10 {statistics.mean(rec[('unfiltered', '')]):.3f}, p50 {base:.2f} ms,"
          f" p95 {percentile(lat[('unfiltered', '')], 95):.2f} ms; query embedding p50 {e50:.2f} ms ({DEFAULT_MODEL_ID})")
    print(f"{'user sees':<10}{'rule':<8}{'recall@10':>10}{'p50 ms':>9}{'p95 ms':>9}{'stmt p50 ratio':>16}{'Retrieve p50 ratio':>20}")
    for tier in TIERS:
        for rule in ("before", "after"):
            xs = lat[(tier, rule)]
            p50 = percentile(xs, 50)
            print(f"{tier:<10}{rule:<8}{statistics.mean(rec[(tier, rule)]):>10.3f}{p50:>9.2f}{percentile(xs, 95):>9.2f}"
                  f"{p50 / base:>16.2f}{(p50 + e50) / (base + e50):>20.2f}")
    if a.hybrid:
        hbase = percentile(lat[("unfiltered", "HYBRID")], 50)
        print(f"HYBRID (a MANAGED knowledge base's default Retrieve; no recall: no exact HYBRID): unfiltered p50 {hbase:.2f} ms")
        for tier in TIERS:
            xs = lat[(tier, "HYBRID")]
            p50 = percentile(xs, 50)
            print(f"{tier:<10}{'HYBRID':<8}{'-':>10}{p50:>9.2f}{percentile(xs, 95):>9.2f}{p50 / hbase:>16.2f}"
                  f"{(p50 + e50) / (hbase + e50):>20.2f}")
    print("(bars: recall@10 >= 0.99 / 0.95 / 0.95; Retrieve p50 <= 1.5x unfiltered; before = ef_search 64 relaxed_order)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
