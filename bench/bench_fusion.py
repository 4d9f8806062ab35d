"""HYBRID against its own halves on every corpus, and its rule chosen by leave-one-corpus-out.

    python bench/bench_fusion.py                     # ../shared/datasets/* and bench/data/pgkb-docs
    python bench/bench_fusion.py --dataset DIR ...   # other BEIR folders as well
    python bench/bench_fusion.py --rounds 3          # latency rounds over each corpus's queries
    python bench/bench_fusion.py --postings-caps 1000,250,50,5   # only: nDCG per cap on BM25 postings read
    python bench/bench_fusion.py --candidates 50,30,20,10        # only: HYBRID nDCG per candidates per ranking

Per corpus (one table each in bench/out/retrieval's embedded server, schema `fusion`, default model,
one chunk per document): SEMANTIC, LEXICAL and HYBRID through pgkb's search() with the query
coverage Retrieve computes, nDCG@10 with linear and exponential gain, HYBRID / best half,
HYBRID / SEMANTIC, and p50 latency of embedding + search (Retrieve's path without HTTP), k = 10.

Then, offline over the same dense and BM25 top-100 lists (the fusion re-implemented in numpy,
checked against the SQL in the first table): every rule of the family HYBRID belongs to (coverage
thresholds x dense weight x feedback weight), chosen by leave-one-corpus-out: for each corpus, the
rule that maximises the worst HYBRID / best half on the other corpora (ties: the mean) is scored on
the held-out one. Fixed rules (no coverage) are listed for contrast.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import itertools
import re
import sys
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_retrieval as B  # noqa: E402
from psycopg import sql  # noqa: E402

from pgkb.embeddings import DEFAULT_MODEL_ID  # noqa: E402
from pgkb.embeddings.registry import get_model  # noqa: E402
from pgkb.retrieval import bm25, fusion  # noqa: E402
from pgkb.retrieval.evaluation import load_beir, ndcg_at, percentile  # noqa: E402
from pgkb.store.vector_table import ChunkRow, TableRef, create_table  # noqa: E402

S = importlib.import_module("pgkb.retrieval.search")  # the module (the package exports the function)
ROOT = Path(__file__).resolve().parent
SHARED = ROOT.parent.parent / "shared" / "datasets"
OWN = sorted(p for p in (ROOT / "data").iterdir() if (p / "corpus.jsonl").exists())
Ranking = list[tuple[str, float]]


class Corpus:
    """One dataset loaded into its own table, with its dense and BM25 lists per judged query."""

    def __init__(self, conn, model, path: Path) -> None:
        ds = load_beir(path)
        self.name, self.qrels = ds.name, ds.qrels
        docs = list(ds.documents())
        self.ids = [d for d, _ in docs]
        texts = [t for _, t in docs]
        digest = hashlib.sha1(("\x00".join(texts) + DEFAULT_MODEL_ID).encode()).hexdigest()[:12]
        cache = B.OUT / f"fusion-{ds.name}-{digest}.npy"
        if cache.exists():
            self.emb = np.load(cache)
        else:
            t0 = time.perf_counter()
            self.emb = np.asarray(model.embed_documents(texts), dtype=np.float32)
            np.save(cache, self.emb)
            print(f"{ds.name}: embedded {len(texts)} documents in {time.perf_counter() - t0:.0f}s")
        self.table = TableRef("fusion", re.sub(r"[^a-z0-9]+", "_", ds.name.lower())[:60])
        conn.execute("CREATE SCHEMA IF NOT EXISTS fusion")
        reg = f"fusion.{self.table.name}"
        have = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (reg,)).fetchone()[0]
        n = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(self.table.ident)).fetchone()[0] if have else -1
        if n != len(docs):
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self.table.ident))
            with conn.transaction():
                create_table(conn, self.table, B.MAPPING, self.emb.shape[1])
            B.load_rows(conn, self.table, [
                ChunkRow(uuid.uuid5(B.NS, d), t, self.emb[i], {"x-amz-bedrock-kb-source-uri": d}, {})
                for i, (d, t) in enumerate(docs)])
        bm25.install_bm25(conn, self.table, B.MAPPING)
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(self.table.ident))
        self.qs = sorted(ds.queries)
        self.qtext = [ds.queries[q] for q in self.qs]
        self.qv = np.asarray(model.embed_queries(self.qtext), dtype=np.float32)
        self.cov = [fusion.model_coverage(model, t) for t in self.qtext]
        self.to_doc = {str(uuid.uuid5(B.NS, d)): d for d in self.ids}
        self.index = {d: i for i, d in enumerate(self.ids)}
        self.en = self.emb / np.linalg.norm(self.emb, axis=1, keepdims=True)
        self.conn = conn
        self.dense = [self.run(i, "SEMANTIC") for i in range(len(self.qs))]
        self.lexical = [self.run(i, "LEXICAL") for i in range(len(self.qs))]

    def run(self, i: int, search_type: str, k: int = 100, vec=None) -> Ranking:
        hits = S.search(self.conn, self.table, B.MAPPING, query_embedding=self.qv[i] if vec is None else vec,
                        query_text=self.qtext[i], k=k, search_type=search_type,  # type: ignore[arg-type]
                        query_coverage=self.cov[i])
        if search_type == "SEMANTIC":
            return [(self.to_doc[h.id], 2 * h.score - 1) for h in hits]
        if search_type == "LEXICAL":
            return [(self.to_doc[h.id], h.score / max(1 - h.score, 1e-12)) for h in hits]
        return [(self.to_doc[h.id], h.score) for h in hits]

    def ndcg(self, runs: list[list[str]], exponential: bool = False) -> np.ndarray:
        return np.array([ndcg_at(r, self.qrels[q], 10, exponential=exponential) for r, q in zip(runs, self.qs, strict=True)])

    def fuse(self, i: int, trust: float, w1: float, wf: float, cand: int = S.HYBRID_CANDIDATES) -> list[str]:
        """search.py's HYBRID in numpy over this query's lists (the same ties, the same feedback);
        `wf` = 0: the first fusion's ranking alone (no feedback round)."""
        dn = [d for d, _ in self.dense[i][:cand]]
        lx = [d for d, _ in self.lexical[i][:cand]]
        dr = {d: r for r, d in enumerate(dn, 1)}
        lr = {d: r for r, d in enumerate(lx, 1)}
        union = list(dict.fromkeys(dn + lx))
        k = S.RRF_K

        def first(d: str) -> tuple:
            return (-((w1 * trust / (k + dr[d]) if d in dr else 0) + (1 / (k + lr[d]) if d in lr else 0)), dr.get(d, 1e9), d)

        top = min(union, key=first)
        if not wf:
            return sorted(union, key=first)
        e = self.en[[self.index[d] for d in union]]
        q = self.qv[i] / np.linalg.norm(self.qv[i])
        s = e @ q
        tv = self.en[self.index[top]]
        if tv @ q > 0:
            s = s + e @ tv
        order = sorted(range(len(union)), key=lambda j: (-s[j], union[j]))
        fr = {union[j]: r for r, j in enumerate(order, 1) if r <= cand}

        def second(d: str) -> tuple:
            f = (wf * trust / (k + fr[d]) if d in fr else 0) + (1 / (k + lr[d]) if d in lr else 0)
            return (-f, fr.get(d, 1e9), d)

        return sorted(union, key=second)


def postings_caps(corpora: list[Corpus], caps: list[int]) -> None:
    """LEXICAL and HYBRID nDCG@10 with every posting read, then with each cap (the corpus's own lists,
    the same queries): what reading only a term's best postings costs on real text."""
    default = S.MAX_POSTINGS_PER_TERM
    print("\nnDCG@10 (linear gain) by postings read per query term; 'all' = exact BM25;"
          f" pgkb reads {default:,}. The cap's share of the corpus is what compares across sizes.")
    print(f"{'corpus':<12}{'docs':>6}  {'cap':>6} {'cap/docs':>9}  {'LEXICAL':>8} {'HYBRID':>8}")
    try:
        for c in corpora:
            n = len(c.qs)
            for cap in [10**9, *caps]:
                S.MAX_POSTINGS_PER_TERM = cap
                lex = c.ndcg([[d for d, _ in c.run(i, "LEXICAL", k=10)] for i in range(n)]).mean()
                hyb = c.ndcg([[d for d, _ in c.run(i, "HYBRID", k=10)] for i in range(n)]).mean()
                label, share = ("all", "") if cap == 10**9 else (f"{cap:,}", f"{cap / len(c.ids):.2%}")
                print(f"{c.name:<12}{len(c.ids):>6}  {label:>6} {share:>9}  {lex:8.4f} {hyb:8.4f}", flush=True)
    finally:
        S.MAX_POSTINGS_PER_TERM = default


def candidates(corpora: list[Corpus], counts: list[int]) -> None:
    """HYBRID nDCG@10 (linear gain) through search() with each count of candidates per ranking."""
    default = S.HYBRID_CANDIDATES
    print(f"\nHYBRID nDCG@10 (linear gain) by candidates taken from each ranking (pgkb: {default}; filtered:"
          f" {S.FILTERED_HYBRID_CANDIDATES})")
    print(f"{'candidates':>10}  " + "".join(f"{c.name:>12}" for c in corpora))
    try:
        for n in counts:
            S.HYBRID_CANDIDATES = n
            row = [c.ndcg([[d for d, _ in c.run(i, "HYBRID", k=10)] for i in range(len(c.qs))]).mean() for c in corpora]
            print(f"{n:>10}  " + "".join(f"{x:>12.4f}" for x in row), flush=True)
    finally:
        S.HYBRID_CANDIDATES = default


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", action="append", default=[], help="another BEIR folder (repeatable)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--postings-caps", default="", help="only LEXICAL and HYBRID nDCG@10 per cap on the postings read"
                    " per query term (search.MAX_POSTINGS_PER_TERM): at 1M chunks the cap truncates far more than here,"
                    " so small caps on small corpora show what truncation costs on real text")
    ap.add_argument("--candidates", default="", help="only HYBRID nDCG@10 per count of candidates taken from each"
                    " ranking (search.HYBRID_CANDIDATES; FILTERED_HYBRID_CANDIDATES with a filter)")
    args = ap.parse_args()
    paths = sorted(p for p in SHARED.iterdir() if (p / "corpus.jsonl").exists()) if SHARED.is_dir() else []
    if not paths:
        print(f"no datasets under {SHARED}: pass --dataset DIR (BEIR layout); running bench/data corpora only")
    paths += OWN + [Path(p) for p in args.dataset]
    conn = B.connect()
    model = get_model(DEFAULT_MODEL_ID)
    corpora = [Corpus(conn, model, p) for p in paths]
    if args.postings_caps:
        postings_caps(corpora, [int(x) for x in args.postings_caps.split(",")])
        return
    if args.candidates:
        candidates(corpora, [int(x) for x in args.candidates.split(",")])
        return

    print(f"\nper corpus, {DEFAULT_MODEL_ID}, nDCG@10 linear gain (exponential gain in brackets)")
    print(f"{'corpus':<12}{'q':>4}  {'SEMANTIC':>16}{'LEXICAL':>16}{'HYBRID':>16}  hyb/best  hyb/sem"
          f"  p50 ms sem / lex / hyb  hyb/sem  (sim)")
    for c in corpora:
        n = len(c.qs)
        hyb = [c.run(i, "HYBRID") for i in range(n)]
        cols = {}
        for label, runs in (("sem", c.dense), ("lex", c.lexical), ("hyb", hyb)):
            ids = [[d for d, _ in r] for r in runs]
            cols[label] = (c.ndcg(ids).mean(), c.ndcg(ids, True).mean())
        sim = c.ndcg([c.fuse(i, fusion.dense_trust(c.cov[i]), S.DENSE_WEIGHT, S.FEEDBACK_WEIGHT) for i in range(n)]).mean()
        lat: dict[str, list[float]] = {"SEMANTIC": [], "LEXICAL": [], "HYBRID": []}
        for _ in range(args.rounds):
            for text in c.qtext:
                for st in lat:  # Retrieve's path: the query embedding (and HYBRID's coverage), then the statement
                    t0 = time.perf_counter()
                    v = model.embed_queries([text])[0] if st != "LEXICAL" else None
                    cov = fusion.model_coverage(model, text) if st == "HYBRID" else None
                    S.search(conn, c.table, B.MAPPING, query_embedding=v, query_text=text, k=10, search_type=st,  # type: ignore[arg-type]
                             query_coverage=cov)
                    lat[st].append((time.perf_counter() - t0) * 1000)
        p50 = {st: percentile(v, 50) for st, v in lat.items()}
        best = max(cols["sem"][0], cols["lex"][0])
        print(f"{c.name:<12}{n:>4}  " + "".join(f"{cols[x][0]:.4f} ({cols[x][1]:.4f})".rjust(16) for x in ("sem", "lex", "hyb"))
              + f"  {cols['hyb'][0] / best:8.3f} {cols['hyb'][0] / cols['sem'][0]:8.3f}"
              + f"  {p50['SEMANTIC']:6.2f} / {p50['LEXICAL']:5.2f} / {p50['HYBRID']:5.2f}"
              + f"  {p50['HYBRID'] / p50['SEMANTIC']:7.2f}  ({sim:.4f})")
    print("goals: hyb/best >= 0.98 everywhere, hyb/sem >= 1.03 on msmarco-5k, p50 hyb/sem <= 1.5;"
          " (sim): the numpy re-implementation of the same rule")

    # Leave-one-corpus-out over the rule family, offline.
    grid = list(itertools.product((0.1, 0.2, 0.3), (0.4, 0.5, 0.6), (1.0, 1.5, 2.0), (2.0, 3.0, 4.0)))
    fixed = {"fixed: the previous HYBRID (no coverage, dense 1.5)": (None, 1.5, 3.0),
             "fixed: no coverage, dense 1.0": (None, 1.0, 3.0), "fixed: no feedback round, dense 1.5": (None, 1.5, 0.0)}
    best_half = {c.name: max(c.ndcg([[d for d, _ in r] for r in c.dense]).mean(),
                             c.ndcg([[d for d, _ in r] for r in c.lexical]).mean()) for c in corpora}
    cache: dict[tuple, float] = {}

    def score(c: Corpus, rule: tuple) -> float:
        lo, hi, w1, wf = rule
        out = []
        for i in range(len(c.qs)):
            t = 1.0 if lo is None else float(np.clip((c.cov[i] - lo) / (hi - lo), 0, 1)) if c.cov[i] is not None else 1.0
            key = (c.name, i, round(w1 * t, 6), round(wf * t, 6))
            if key not in cache:
                cache[key] = ndcg_at(c.fuse(i, t, w1, wf), c.qrels[c.qs[i]], 10)
            out.append(cache[key])
        return float(np.mean(out)) / best_half[c.name]

    table = {(c.name, rule): score(c, rule) for c in corpora for rule in grid}
    print("\nleave-one-corpus-out: rule (trust from, trust full, dense weight, feedback weight) chosen on the others"
          " (the worst HYBRID / best half, then the mean); rules tied with it on the others: their held-out range")
    print(f"{'held out':<12} {'chosen rule':<24} {'worst on the others':>20} {'held-out HYBRID / best half':>28}"
          f" {'tied rules':>11} {'held-out range':>15}")
    names = [c.name for c in corpora]

    def crit(rule: tuple, among: list[str]) -> tuple[float, float]:
        return (min(table[(n, rule)] for n in among), float(np.mean([table[(n, rule)] for n in among])))

    for h in names:
        others = [n for n in names if n != h]
        if not others:
            break
        pick = max(grid, key=lambda r: crit(r, others))
        tied = [r for r in grid if np.allclose(crit(r, others), crit(pick, others), atol=1e-9)]
        span = [table[(h, r)] for r in tied]
        print(f"{h:<12} {str(pick):<24} {crit(pick, others)[0]:>20.3f} {table[(h, pick)]:>28.3f}"
              f" {len(tied):>11} {min(span):>7.3f}-{max(span):.3f}")
    # On every corpus at once: the best worst case, then the best second worst, and so on.
    allpick = max(grid, key=lambda r: sorted(table[(n, r)] for n in names))
    print(f"chosen on all corpora (lexicographic max-min): {allpick}")
    shipped = (fusion.TRUST_FROM, fusion.TRUST_FULL, S.DENSE_WEIGHT, S.FEEDBACK_WEIGHT)
    print(f"\nHYBRID / best half per corpus ({', '.join(names)}):")
    print(f"  shipped {shipped}: " + "  ".join(f"{table.get((n, shipped), score(cs, shipped)):.3f}" for n, cs in zip(names, corpora, strict=True)))
    for label, (lo, w1, wf) in fixed.items():
        print(f"  {label}: " + "  ".join(f"{score(c, (lo, None, w1, wf)):.3f}" for c in corpora))


if __name__ == "__main__":
    main()
