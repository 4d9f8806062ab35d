"""HNSW build parameters on real text vectors only: recall@10 over an ef_search sweep for several
(m, ef_construction), on msmarco-5k's passages plus the pydoc topic paragraphs embedded with the
default model (bench/scale_data.py's cache), queried with msmarco-5k's 50 real queries and 200
held-out real passages. A check of pgkb's defaults on data they were not chosen on.

    python bench/bench_hnsw_real.py                      # m/ef_construction 16/64, 16/128, 32/128
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import numpy as np  # noqa: E402
from psycopg import sql  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scale_data  # noqa: E402
from bench_scale import connect, load, pct, recall, truth  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="16/64,16/128,32/128", help="m/ef_construction pairs")
    ap.add_argument("--ef", default="10,20,40,64,100")
    a = ap.parse_args()
    if not (scale_data.DATASETS / "msmarco-5k" / "corpus.jsonl").exists():
        print(f"bench_hnsw_real: msmarco-5k not found under {scale_data.DATASETS}; set PGKB_BENCH_DATASETS or place it there")
        return
    real, real_q, _ = scale_data.real_vectors()
    rng = np.random.default_rng(5)
    held = rng.choice(len(real), 200, replace=False)
    keep = np.setdiff1d(np.arange(len(real)), held)
    base, queries = real[keep], np.vstack([real_q, real[held]]).astype(np.float32)
    want = truth(base, queries)
    conn, _ = connect()
    t = sql.Identifier("bench", "real_hnsw")
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(t))
    conn.execute(sql.SQL("CREATE TABLE {} (i int PRIMARY KEY, v vector(384))").format(t))
    with conn.cursor() as cur, cur.copy(sql.SQL("COPY {} (i, v) FROM STDIN WITH (FORMAT BINARY)").format(t)) as cp:
        cp.set_types(["int4", "vector"])
        for i, v in enumerate(base):
            cp.write_row([i, v])
    print(f"real vectors: {len(base):,} passages, {len(queries)} queries (50 msmarco queries + 200 held-out passages); {load()}")
    efs = [int(x) for x in a.ef.split(",")]
    print(f"  {'m/efc':>7s} {'build s':>7s} " + " ".join(f"{'ef ' + str(e):>7s}" for e in efs) + "   (recall@10; p50 ms at the last ef)")
    for pair in a.params.split(","):
        m, efc = (int(x) for x in pair.split("/"))
        conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier("bench", "real_hnsw_v")))
        t0 = time.perf_counter()
        conn.execute(sql.SQL("CREATE INDEX real_hnsw_v ON {} USING hnsw (v vector_cosine_ops) WITH (m = {}, ef_construction = {})")
                     .format(t, sql.Literal(m), sql.Literal(efc)))
        build = time.perf_counter() - t0
        conn.execute(sql.SQL("ANALYZE {}").format(t))
        row = []
        lat: list[float] = []
        for ef in efs:
            got = []
            lat = []
            for q in queries:
                with conn.transaction():
                    conn.execute("SELECT set_config('hnsw.ef_search', %s, true)", (str(ef),))
                    t1 = time.perf_counter()
                    got.append([r[0] for r in conn.execute(sql.SQL("SELECT i FROM {} ORDER BY v <=> %s LIMIT 10").format(t), (q,))])
                    lat.append((time.perf_counter() - t1) * 1000)
            row.append(recall(got, want))
        print(f"  {pair:>7s} {build:7.1f} " + " ".join(f"{r:7.3f}" for r in row) + f"   p50 {pct(lat, 50):.2f} ms")
    print(f"  ({load()})")
    conn.execute(sql.SQL("DROP TABLE {}").format(t))


if __name__ == "__main__":
    main()
