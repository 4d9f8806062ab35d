"""How far can fusing dense and BM25 rankings go on msmarco-5k? (issue 5's "hybrid >= 1.03 x dense")

    python bench/bench_fusion.py        # needs bench_retrieval.py's table: run `--only msmarco` first

Takes pgkb's own SEMANTIC and LEXICAL (BM25) top-100 lists for the 43 judged queries (the same
search() that Retrieve runs) and scores, offline, every fusion worth trying against dense alone:
- weighted reciprocal rank fusion, RRF k in {10, 60} x dense weight in {0.5 .. 3};
- convex combinations of min-max normalised scores over the union of both candidate lists;
- the per-query oracle: for each query the best of the RRF grid, a ceiling no fixed rule can pass;
- dense feedback (Rocchio): the candidates re-ranked by cosine to the query plus the round-1 top-m
  chunks, fused with BM25 again (what pgkb's HYBRID does with m = 1), and pgkb's HYBRID itself;
- leave-one-query-out cross-validation of the grid, the estimate of a tuned weight on new queries.
nDCG@10 with linear gain (as bench_retrieval.py's headline), ratios to dense in the same run.
"""

from __future__ import annotations

import itertools
import sys
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_retrieval as B  # noqa: E402

from pgkb.retrieval.evaluation import load_beir, ndcg_at  # noqa: E402
from pgkb.retrieval.search import search  # noqa: E402

Ranking = list[tuple[str, float]]  # (doc id, score), best first
DENSE_W = 1.5  # pgkb's round-1 dense weight


def rrf(lists: list[Ranking], weights: list[float], k: int, n: int = 50) -> list[str]:
    fused: dict[str, float] = {}
    for ranking, w in zip(lists, weights, strict=True):
        for r, (doc, _) in enumerate(ranking[:n], start=1):
            fused[doc] = fused.get(doc, 0.0) + w / (k + r)
    return sorted(fused, key=lambda d: -fused[d])


def convex(dense: Ranking, lexical: Ranking, alpha: float, n: int = 50) -> list[str]:
    def norm(ranking: Ranking) -> dict[str, float]:
        v = np.array([s for _, s in ranking[:n]], dtype=np.float64)
        if v.size == 0:
            return {}
        z = (v - v.min()) / (v.max() - v.min() + 1e-12)
        return {d: float(x) for (d, _), x in zip(ranking[:n], z, strict=True)}

    dn, ln = norm(dense), norm(lexical)
    fused = {d: alpha * dn.get(d, 0.0) + (1 - alpha) * ln.get(d, 0.0) for d in set(dn) | set(ln)}
    return sorted(fused, key=lambda d: -fused[d])


def main() -> None:
    conn = B.connect()
    ds = load_beir(B.MSMARCO)
    docs = list(ds.documents())
    ids = [d for d, _ in docs]
    emb = np.load(sorted(B.OUT.glob("msmarco5k-minilm-*.npy"))[0])
    table = B.TableRef("bench", "msmarco5k")
    if conn.execute("SELECT to_regclass('bench.msmarco5k') IS NULL").fetchone()[0]:
        sys.exit("run `python bench/bench_retrieval.py --only msmarco` first (it builds the table)")
    to_doc = {str(uuid.uuid5(B.NS, d)): d for d in ids}
    qs = sorted(q for q in ds.queries if q in ds.qrels)
    qvec = np.asarray(B.model().embed_queries([ds.queries[q] for q in qs]), dtype=np.float32)

    def ranking(q: int, search_type: str) -> Ranking:
        hits = search(conn, table, B.MAPPING, query_embedding=qvec[q], query_text=ds.queries[qs[q]], k=100,
                      search_type=search_type)  # type: ignore[arg-type]
        return [(to_doc[h.id], h.score) for h in hits]

    dense = [ranking(i, "SEMANTIC") for i in range(len(qs))]
    lexical = [ranking(i, "LEXICAL") for i in range(len(qs))]

    def per_query(run: list[list[str]]) -> np.ndarray:
        return np.array([ndcg_at(r, ds.qrels[q], 10) for r, q in zip(run, qs, strict=True)])

    base = per_query([[d for d, _ in r] for r in dense])
    d0 = base.mean()
    rows: list[tuple[str, np.ndarray]] = [("lexical (BM25) alone", per_query([[d for d, _ in r] for r in lexical]))]
    grid: dict[str, np.ndarray] = {}
    for k, w in itertools.product((10, 60), (0.5, 1.0, 1.5, 2.0, 3.0)):
        grid[f"RRF k={k}, dense weight {w}"] = per_query([rrf([a, b], [w, 1.0], k) for a, b in zip(dense, lexical, strict=True)])
    for alpha in (0.3, 0.5, 0.6, 0.7, 0.8, 0.9):
        grid[f"convex min-max, dense {alpha}"] = per_query([convex(a, b, alpha) for a, b in zip(dense, lexical, strict=True)])
    rows += list(grid.items())
    one_round = np.vstack(list(grid.values()))

    # Dense feedback (Rocchio): the query plus the top-m chunks of round 1 (RRF k=10, dense 1.5),
    # re-ranking the union of both candidate lists, fused again with BM25.
    index = {d: i for i, d in enumerate(ids)}
    first = [rrf([a, b], [DENSE_W, 1.0], 10) for a, b in zip(dense, lexical, strict=True)]
    for top, wf in itertools.product((1, 2, 3, 5), (1.5, 3.0)):
        fused = []
        for i, h in enumerate(first):
            q2 = qvec[i] / np.linalg.norm(qvec[i]) + emb[[index[d] for d in h[:top]]].mean(axis=0)
            cand = list(dict.fromkeys([d for d, _ in dense[i][:50]] + [d for d, _ in lexical[i][:50]]))
            s = emb[[index[d] for d in cand]] @ (q2 / np.linalg.norm(q2))
            feedback = [(cand[j], float(s[j])) for j in np.argsort(-s)]
            fused.append(rrf([feedback, lexical[i]], [wf, 1.0], 10))
        name = f"feedback from round-1 top {top}, feedback weight {wf}"
        grid[name] = per_query(fused)
        rows.append((name, grid[name]))
    rows.append(("pgkb HYBRID (round 1 + feedback from top 1, weight 3)",
                 per_query([[d for d, _ in ranking(i, "HYBRID")] for i in range(len(qs))])))

    g = np.vstack(list(grid.values()))
    rows.append(("per-query oracle over the one-round RRF/convex grid", one_round.max(axis=0)))
    loo = [g[np.delete(g, j, axis=1).mean(axis=1).argmax(), j] for j in range(len(qs))]
    rows.append(("any of the above chosen by leave-one-query-out CV", np.array(loo)))

    print(f"msmarco-5k, {len(qs)} judged queries, nDCG@10 (linear gain); dense (pgkb SEMANTIC) {d0:.4f}\n")
    width = max(len(name) for name, _ in rows)
    print(f"{'fusion':<{width}}  nDCG@10  / dense  queries better/worse")
    for name, v in rows:
        print(f"{name:<{width}}  {v.mean():.4f}   {v.mean() / d0:.3f}   {int((v > base + 1e-9).sum()):>3}/{int((v < base - 1e-9).sum())}")
    best = max(rows[:-2], key=lambda r: r[1].mean())
    print("(the CV row picks a weight on 42 queries and scores the 43rd: what tuning on this set is worth)")
    print(f"\nbest fixed rule: {best[0]}: {best[1].mean() / d0:.3f} x dense (bar 1.03)")


if __name__ == "__main__":
    main()
