"""Semantic, hybrid and lexical search against real tables on the embedded PostgreSQL."""

from __future__ import annotations

import importlib
import math
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector
from psycopg import sql

from pgkb.errors import ValidationError
from pgkb.retrieval import bm25
from pgkb.retrieval.search import SearchHit, search
from pgkb.store.vector_table import ChunkRow, FieldMapping, TableRef, create_table, write_rows

DIM = 8


def unit(v) -> np.ndarray:
    a = np.asarray(v, dtype=np.float32)
    return a / np.linalg.norm(a)


def axis(i: int, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    v = np.zeros(DIM, dtype=np.float32)
    v[i] = 1.0
    if noise:
        v += np.random.default_rng(seed).normal(scale=noise, size=DIM).astype(np.float32)
    return unit(v)


def md(name: str, **extra) -> dict:
    return {"x-amz-bedrock-kb-source-uri": f"s3://b/{name}", "x-amz-bedrock-kb-data-source-id": "DS1", **extra}


def write(conn: psycopg.Connection, table: TableRef, mapping: FieldMapping, rows: list[ChunkRow], cols=None) -> None:
    with conn.transaction():
        write_rows(conn, table, mapping, rows, attribute_cols=cols)
    conn.execute("DROP TABLE IF EXISTS pg_temp.pgkb_stage")


@pytest.fixture(scope="module")
def conn(session_db_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(session_db_url, autocommit=True) as c:
        c.execute("CREATE EXTENSION IF NOT EXISTS vector")
        register_vector(c)
        schema = "srch_" + uuid.uuid4().hex[:8]
        c.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        c.info_schema = schema  # type: ignore[attr-defined]
        yield c
        c.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def new_table(conn, name: str, mapping: FieldMapping | None = None, dim: int = DIM) -> tuple[TableRef, FieldMapping]:
    t, m = TableRef(conn.info_schema, name), mapping or FieldMapping()
    create_table(conn, t, m, dim)
    return t, m


def test_semantic_ranks_by_cosine_with_scores_and_metadata(conn) -> None:
    t, m = new_table(conn, "sem")
    ids = [uuid.uuid4() for _ in range(4)]
    rows = [
        ChunkRow(ids[0], "zero", axis(0), md("a.txt", **{"x-amz-bedrock-kb-document-page-number": 3}), {"year": 2020}),
        ChunkRow(ids[1], "near zero", unit([1, 0.3, 0, 0, 0, 0, 0, 0]), md("b.txt"), {"tags": ["x"]}),
        ChunkRow(ids[2], "one", axis(1), md("c.txt"), {}),
        ChunkRow(ids[3], "opposite", -axis(0), md("d.txt"), {}),
    ]
    write(conn, t, m, rows)
    hits = search(conn, t, m, query_embedding=axis(0), query_text="zero", k=4)
    assert [h.text for h in hits] == ["zero", "near zero", "one", "opposite"]
    assert hits[0].score == pytest.approx(1.0, abs=1e-6)
    assert hits[2].score == pytest.approx(0.5, abs=1e-6)  # orthogonal: (1 + 0) / 2
    assert hits[3].score == pytest.approx(0.0, abs=1e-6)
    assert hits[1].score == pytest.approx((1 + 1 / math.sqrt(1.09)) / 2, abs=1e-5)
    h = hits[0]
    assert h.id == str(ids[0]) and h.source_uri == "s3://b/a.txt" and h.data_source_id == "DS1" and h.page == 3
    assert h.metadata == {
        "x-amz-bedrock-kb-source-uri": "s3://b/a.txt", "x-amz-bedrock-kb-data-source-id": "DS1",
        "x-amz-bedrock-kb-document-page-number": 3, "year": 2020, "x-amz-bedrock-kb-chunk-id": str(ids[0]),
    }
    assert hits[1].metadata["tags"] == ["x"] and hits[1].page is None
    assert [h.text for h in search(conn, t, m, query_embedding=axis(1), query_text=None, k=1)] == ["one"]


def test_hybrid_reranks_candidates_toward_the_best_chunk(conn) -> None:
    """HYBRID's feedback round: candidates are re-ranked by closeness to the query and to the best
    chunk of the first fusion, so the chunk that resembles the best match outranks one that is a
    little nearer the query alone. SEMANTIC keeps plain cosine order."""
    t, m = new_table(conn, "feedback")
    best = unit([1, 0.3, 0, 0, 0, 0, 0, 0])  # cosine 0.958 to the query, and the only word match
    near_query = unit([1, 0, 0.45, 0, 0, 0, 0, 0])  # 0.912 to the query, 0.874 to `best`
    near_best = unit([1, 0.5, 0, 0, 0, 0, 0, 0])  # 0.894 to the query, 0.985 to `best`
    write(conn, t, m, [
        ChunkRow(uuid.uuid4(), "alpha", best, md("a.txt"), {}),
        ChunkRow(uuid.uuid4(), "bravo", near_query, md("b.txt"), {}),
        ChunkRow(uuid.uuid4(), "charlie", near_best, md("c.txt"), {}),
    ])
    with conn.transaction():
        bm25.install_bm25(conn, t, m)
    sem = search(conn, t, m, query_embedding=axis(0), query_text="alpha", k=3)
    assert [h.text for h in sem] == ["alpha", "bravo", "charlie"]
    hyb = search(conn, t, m, query_embedding=axis(0), query_text="alpha", k=3, search_type="HYBRID")
    assert [h.text for h in hyb] == ["alpha", "charlie", "bravo"]
    assert hyb[0].score == pytest.approx(1.0) and 0 < hyb[2].score < hyb[1].score < 1

def test_hybrid_is_the_documented_fusion_of_the_dense_and_lexical_rankings(conn) -> None:
    """HYBRID recomputed in Python from SEMANTIC's and LEXICAL's own top 50 and the stored vectors
    (search._hybrid_sql's formula), on more rows than candidates. The chunks only BM25 finds lie just
    beyond the dense top 50 but beside the first fusion's best chunk (the feedback vector), so the
    feedback round ranks them near the top by their own vectors: without those vectors they would
    fall out of it."""
    t, m = new_table(conn, "fusion_ref")
    rng = np.random.default_rng(7)

    def at(cos_q: float, side: np.ndarray) -> np.ndarray:  # cosine `cos_q` to the query (axis 0)
        return unit(cos_q * axis(0) + math.sqrt(1 - cos_q**2) * unit(side))

    rows, vecs = [], {}

    def add(text: str, v: np.ndarray) -> None:
        rid = uuid.uuid4()
        rows.append(ChunkRow(rid, text, v, md(f"{len(rows)}.txt"), {}))
        vecs[str(rid)] = v.astype(np.float64)

    for c in np.linspace(0.95, 0.5, 60):  # fillers, no query word, off in directions 2..7
        add(" ".join(rng.choice(["alpha", "bravo", "charlie", "delta"], size=6)), at(c, np.r_[0, 0, rng.normal(size=DIM - 2)]))
    add("zebra zebra zebra alpha", at(0.62, axis(1)))  # dense rank ~44, lexical rank 1: the first fusion's best
    for _ in range(5):  # beyond the dense top 50, 0.99 cosine to the best
        add("zebra bravo charlie", at(0.52, axis(1) + 0.05 * np.r_[0, 0, rng.normal(size=DIM - 2)]))
    write(conn, t, m, rows)
    with conn.transaction():
        bm25.install_bm25(conn, t, m)
    q, text = axis(0).astype(np.float64), "zebra"
    dense = [h.id for h in search(conn, t, m, query_embedding=q, query_text=None, k=50)]
    lexical = [h.id for h in search(conn, t, m, query_embedding=q, query_text=text, k=50, search_type="LEXICAL")]
    only_bm25 = set(lexical) - set(dense)
    assert len(only_bm25) == 5, "the case needs chunks that only BM25 ranks"

    def dist(a: np.ndarray, b: np.ndarray) -> float:
        return 1 - float(a @ b) / float(np.linalg.norm(a) * np.linalg.norm(b))

    dr = {d: r for r, d in enumerate(dense, 1)}
    lr = {d: r for r, d in enumerate(lexical, 1)}
    cands = set(dr) | set(lr)
    first = min(cands, key=lambda d: (-(1 / (10 + dr[d]) if d in dr else 0) - (1 / (10 + lr[d]) if d in lr else 0),
                                      dr.get(d, 10**9), uuid.UUID(d)))
    fb = vecs[first] if dist(vecs[first], q) < 1 else None
    fr_order = sorted(cands, key=lambda d: (dist(vecs[d], q) + (dist(vecs[d], fb) if fb is not None else 0), uuid.UUID(d)))
    fr = {d: r for r, d in enumerate(fr_order, 1) if r <= 50}
    fused = {d: (3 / (10 + fr[d]) if d in fr else 0) + (1 / (10 + lr[d]) if d in lr else 0) for d in set(fr) | set(lr)}
    want = sorted(fused, key=lambda d: (-fused[d], fr.get(d, 10**9), uuid.UUID(d)))[:10]

    hyb = search(conn, t, m, query_embedding=q, query_text=text, k=10, search_type="HYBRID")
    assert [h.id for h in hyb] == want
    for h in hyb:
        assert h.score == pytest.approx(fused[h.id] * 11 / 4, abs=1e-6)
    assert only_bm25 <= set(want), "BM25-only chunks ranked by their vectors in the feedback round"



@pytest.mark.parametrize("k", [0, 101, -1, True, 2.5])
def test_k_out_of_range(conn, k) -> None:
    t, m = TableRef(conn.info_schema, "sem"), FieldMapping()
    with pytest.raises(ValidationError, match="numberOfResults"):
        search(conn, t, m, query_embedding=axis(0), query_text="x", k=k)


def test_bad_requests(conn) -> None:
    t, m = TableRef(conn.info_schema, "sem"), FieldMapping()
    with pytest.raises(ValidationError, match="20000"):
        search(conn, t, m, query_embedding=axis(0), query_text="x" * 20_001, k=5)
    assert len(search(conn, t, m, query_embedding=axis(0), query_text="x" * 20_000, k=5, search_type="HYBRID")) == 4
    with pytest.raises(ValidationError, match="SEMANTIC or HYBRID"):
        search(conn, t, m, query_embedding=axis(0), query_text="x", k=5, search_type="FUZZY")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="query could not be run"):
        search(conn, t, m, query_embedding=np.ones(3), query_text="x", k=5)  # wrong dimension
    with pytest.raises(ValidationError, match="unknown filter operator"):
        search(conn, t, m, query_embedding=axis(0), query_text="x", k=5, filter={"nope": {"key": "a", "value": 1}})


def test_hierarchical_children_are_searched_and_parents_returned(conn) -> None:
    t, m = new_table(conn, "hier")
    p1, p2 = uuid.uuid4(), uuid.uuid4()
    rows = [
        ChunkRow(p1, "PARENT ONE full text", None, md("a.txt", **{"x-amz-bedrock-kb-document-page-number": 1}), {"doc": "a"}),
        ChunkRow(p2, "PARENT TWO full text", None, md("b.txt"), {"doc": "b"}),
        ChunkRow(uuid.uuid4(), "child 1a", axis(0), md("a.txt", **{"x-pgkb-parent-id": str(p1)}), {"doc": "a"}),
        ChunkRow(uuid.uuid4(), "child 1b", axis(0, 0.1, 1), md("a.txt", **{"x-pgkb-parent-id": str(p1)}), {"doc": "a"}),
        ChunkRow(uuid.uuid4(), "child 2a", axis(0, 0.5, 2), md("b.txt", **{"x-pgkb-parent-id": str(p2)}), {"doc": "b"}),
        ChunkRow(uuid.uuid4(), "flat", axis(1), md("c.txt"), {"doc": "c"}),
    ]
    write(conn, t, m, rows)
    bm25.install_bm25(conn, t, m)
    for st in ("SEMANTIC", "HYBRID"):
        hits = search(conn, t, m, query_embedding=axis(0), query_text="1b", k=3, search_type=st)
        texts = [h.text for h in hits]
        # 3 children requested: 1a, 1b (same parent) and 2a → two parents.
        assert texts == ["PARENT ONE full text", "PARENT TWO full text"], (st, texts)
        assert hits[0].id == str(p1) and hits[0].metadata["x-amz-bedrock-kb-chunk-id"] == str(p1)
        assert hits[0].page == 1 and "x-pgkb-parent-id" not in hits[0].metadata
    # Parents (NULL embedding) are never hits by themselves.
    hits = search(conn, t, m, query_embedding=axis(1), query_text="PARENT", k=10, search_type="HYBRID")
    assert [h.text for h in hits][0] == "flat"
    assert len(hits) == 3  # flat + two parents (via their children), never a parent row as such


@pytest.fixture(scope="module")
def big(conn) -> tuple[TableRef, FieldMapping, np.ndarray]:
    """3,000 random chunks; attribute `rare` on 1% of them, `never` on none."""
    t, m = new_table(conn, "big", dim=32)
    rng = np.random.default_rng(7)
    vecs = rng.normal(size=(3000, 32)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    rows = [
        ChunkRow(uuid.uuid4(), f"chunk {i}", vecs[i], md(f"{i}.txt"),
                 {"rare": i % 100 == 0, "bucket": i % 10, "group": "g" + str(i % 3)})
        for i in range(3000)
    ]
    write(conn, t, m, rows)
    conn.execute(sql.SQL("ANALYZE {}").format(t.ident))
    return t, m, vecs


def test_selective_filter_still_returns_k(conn, big) -> None:
    t, m, vecs = big
    q = vecs[1]
    f = {"equals": {"key": "rare", "value": True}}
    hits = search(conn, t, m, query_embedding=q, query_text=None, k=10, filter=f)
    assert len(hits) == 10 and all(h.metadata["rare"] is True for h in hits)
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    # Exactly the true top 10 of the 30 matching chunks.
    matching = np.arange(0, 3000, 100)
    exact = set(matching[np.argsort(-(vecs[matching] @ q))[:10]])
    assert {int(h.text.split()[1]) for h in hits} == exact
    # A range filter the GIN index cannot serve: still k rows.
    hits = search(conn, t, m, query_embedding=q, query_text=None, k=25,
                  filter={"andAll": [{"greaterThanOrEquals": {"key": "bucket", "value": 9}},
                                     {"equals": {"key": "group", "value": "g0"}}]})
    assert len(hits) == 25 and all(h.metadata["bucket"] == 9 and h.metadata["group"] == "g0" for h in hits)


def test_filter_matching_nothing_returns_empty(conn, big) -> None:
    t, m, vecs = big
    for st in ("SEMANTIC", "HYBRID"):
        f = {"equals": {"key": "never", "value": "x"}}
        assert search(conn, t, m, query_embedding=vecs[0], query_text="chunk", k=10, filter=f, search_type=st) == []
        f = {"greaterThan": {"key": "bucket", "value": 100}}
        assert search(conn, t, m, query_embedding=vecs[0], query_text="chunk", k=10, filter=f, search_type=st) == []


def test_attribute_columns_and_metadata_only_tables(conn) -> None:
    t, m = new_table(conn, "cols", FieldMapping(custom_metadata=None))
    conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN genre text, ADD COLUMN year integer").format(t.ident))
    cols = {"genre": "text", "year": "integer"}
    write(conn, t, m, [
        ChunkRow(uuid.uuid4(), "a", axis(0), md("a"), {"genre": "jazz", "year": 1959}),
        ChunkRow(uuid.uuid4(), "b", axis(0, 0.2), md("b"), {"genre": "rock"}),
    ], cols)
    for c in (cols, None):  # given, or discovered from the row
        hits = search(conn, t, m, query_embedding=axis(0), query_text=None, k=5, attribute_cols=c,
                      filter={"lessThan": {"key": "year", "value": 2000}})
        assert [h.text for h in hits] == ["a"]
        assert hits[0].metadata["genre"] == "jazz" and hits[0].metadata["year"] == 1959
    hits = search(conn, t, m, query_embedding=axis(0), query_text=None, k=5, attribute_cols=cols)
    assert "year" not in hits[1].metadata and hits[1].metadata["genre"] == "rock"

    t2, m2 = new_table(conn, "metaonly", FieldMapping(custom_metadata=None, metadata="AMAZON_BEDROCK_METADATA",
                                                       text="AMAZON_BEDROCK_TEXT", primary_key="pk"))
    write(conn, t2, m2, [
        ChunkRow(uuid.uuid4(), "x", axis(2), md("x", genre="jazz"), {}),
        ChunkRow(uuid.uuid4(), "y", axis(2, 0.2), md("y", genre="pop"), {}),
    ], {})
    hits = search(conn, t2, m2, query_embedding=axis(2), query_text="x", k=5, search_type="HYBRID",
                  filter={"equals": {"key": "genre", "value": "pop"}})
    assert [(h.text, h.metadata["genre"]) for h in hits] == [("y", "pop")]


def test_range_filters_fill_k_with_the_nearest_matches(conn, big) -> None:
    t, m, vecs = big
    q = vecs[5]
    buckets = np.arange(3000) % 10
    for lo in (9, 2):  # 300 and 2,400 matching chunks: no index serves a range on custom_metadata
        f = {"greaterThanOrEquals": {"key": "bucket", "value": lo}}
        hits = search(conn, t, m, query_embedding=q, query_text=None, k=10, filter=f)
        got = [int(h.text.split()[1]) for h in hits]
        assert len(got) == 10 and all(buckets[i] >= lo for i in got)
        matching = np.flatnonzero(buckets >= lo)
        exact = list(matching[np.argsort(-(vecs[matching] @ q))[:10]])
        assert len(set(got) & set(exact)) >= 8
        scores = [h.score for h in hits]
        assert scores == sorted(scores, reverse=True)
    f = {"lessThan": {"key": "bucket", "value": -1}}
    assert search(conn, t, m, query_embedding=q, query_text="chunk", k=10, filter=f, search_type="HYBRID") == []


def test_query_vector_is_sent_binary_when_the_connection_has_pgvector_adapters(conn, session_db_url) -> None:
    """Pooled connections have pgvector's dumpers: the query vector goes as the float32 array (binary),
    not as 384 floats formatted in Python; a connection without them still gets the text literal, and
    both rank and score alike."""
    search_mod = importlib.import_module("pgkb.retrieval.search")
    t, m = new_table(conn, "binvec")
    write(conn, t, m, [ChunkRow(uuid.uuid4(), f"row {i}", axis(i % DIM, noise=0.3, seed=i), md(f"{i}.txt"), {})
                       for i in range(12)])
    q = axis(2, noise=0.2, seed=99)
    assert isinstance(search_mod._vector_param(conn, q), np.ndarray)
    with psycopg.connect(session_db_url, autocommit=True) as plain:  # no register_vector
        assert isinstance(search_mod._vector_param(plain, q), str)
        as_text = search(plain, t, m, query_embedding=q, query_text="row", k=5)
        as_text_hybrid = search(plain, t, m, query_embedding=q, query_text="row 2", k=5, search_type="HYBRID")
    as_binary = search(conn, t, m, query_embedding=q, query_text="row", k=5)
    assert [(h.id, h.score) for h in as_binary] == [(h.id, h.score) for h in as_text]
    hybrid = search(conn, t, m, query_embedding=q, query_text="row 2", k=5, search_type="HYBRID")
    assert [(h.id, h.score) for h in hybrid] == [(h.id, h.score) for h in as_text_hybrid]
    with pytest.raises(ValidationError, match="finite"):
        search(conn, t, m, query_embedding=np.full(DIM, np.nan), query_text="x", k=5)


def test_unfiltered_statements_are_rendered_once_per_shape(conn, monkeypatch) -> None:
    """Composing and rendering the search statement is done once per shape (table, mapping, k, search
    type, ...) for searches without a filter: later ones reuse the text with their own values. Filtered
    searches, whose statement follows the filter, are built each time."""
    search_mod = importlib.import_module("pgkb.retrieval.search")
    built: list[str] = []
    real = search_mod.build_query

    def counting(*args, **kwargs):
        built.append(kwargs["search_type"])
        return real(*args, **kwargs)

    monkeypatch.setattr(search_mod, "build_query", counting)
    t, m = new_table(conn, "shapes")
    write(conn, t, m, [ChunkRow(uuid.uuid4(), f"chunk {i}", axis(i), md(f"{i}.txt", n=i), {"n": i})
                       for i in range(DIM)])
    for i in range(3):  # one shape, three queries: built once, each answered with its own vector
        assert search(conn, t, m, query_embedding=axis(i), query_text=None, k=2)[0].text == f"chunk {i}"
    assert built == ["SEMANTIC"]
    assert len(search(conn, t, m, query_embedding=axis(0), query_text=None, k=3)) == 3  # another k
    assert built == ["SEMANTIC", "SEMANTIC"]
    flt = {"greaterThan": {"key": "n", "value": 4}}
    for _ in range(2):
        hits = search(conn, t, m, query_embedding=axis(0), query_text=None, k=2, filter=flt)
        assert {h.text for h in hits} <= {"chunk 5", "chunk 6", "chunk 7"} and len(hits) == 2
    assert built == ["SEMANTIC"] * 4


def test_a_search_on_an_idle_connection_is_one_round_trip(conn, session_db_url) -> None:
    """On an idle connection (a pooled one) the statement's settings and the statement go in one
    pipeline with one Sync, their implicit transaction: psycopg's transaction block would wait for
    BEGIN's answer and for COMMIT's. An unfiltered search at the depth the session already has sends
    the statement alone (tests/test_filtered_ef.py). Afterwards the connection is as it was (not
    autocommit, idle), after an error too; inside a caller's transaction the search runs in a savepoint."""
    import tempfile

    t, m = new_table(conn, "onetrip")
    write(conn, t, m, [ChunkRow(uuid.uuid4(), f"c{i}", axis(i % DIM, 0.2, i), md(f"{i}.txt"), {}) for i in range(10)])
    expected = [h.id for h in search(conn, t, m, query_embedding=axis(3), query_text=None, k=4)]
    with psycopg.connect(session_db_url) as c:
        register_vector(c)
        search(c, t, m, query_embedding=axis(3), query_text=None, k=4)  # caches the table's index kind
        ef_before = c.execute("SHOW hnsw.ef_search").fetchone()[0]  # the unfiltered depth, on the session
        c.commit()

        def messages(**kw: Any) -> tuple[list[str], list[SearchHit]]:
            with tempfile.TemporaryFile("w+") as trace:
                c.pgconn.trace(trace.fileno())
                c.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS | psycopg.pq.Trace.REGRESS_MODE)
                hits = search(c, t, m, query_embedding=axis(3), query_text=None, k=4, **kw)
                c.pgconn.untrace()
                trace.seek(0)
                return [line.split("\t")[2] for line in trace.read().splitlines() if line.startswith("F\t")], hits

        sent, hits = messages()
        assert [h.id for h in hits] == expected
        assert sent.count("Sync") == 1 and "Query" not in sent  # one round trip, no simple-query BEGIN
        assert sent.count("Execute") == 1  # the statement alone: its depth is already the session's
        sent, hits = messages(filter={"notEquals": {"key": "nothing", "value": 1}})
        assert [h.id for h in hits] == expected
        assert sent.count("Sync") == 1 and "Query" not in sent
        assert sent.count("Execute") == 2  # the filtered settings and the statement: no BEGIN, no COMMIT
        assert (c.autocommit, c.info.transaction_status) == (False, psycopg.pq.TransactionStatus.IDLE)
        with pytest.raises(ValidationError, match="could not be run"):
            search(c, t, m, query_embedding=np.ones(3), query_text=None, k=4)
        assert (c.autocommit, c.info.transaction_status) == (False, psycopg.pq.TransactionStatus.IDLE)
        assert c.execute("SHOW hnsw.ef_search").fetchone()[0] == ef_before
        c.rollback()
        with c.transaction():
            c.execute("SELECT 1")
            assert [h.id for h in search(c, t, m, query_embedding=axis(3), query_text=None, k=4)] == expected
            assert c.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
