"""BM25 statistics maintained by triggers: exact after inserts, upserts, deletes, truncates; exact scores."""

from __future__ import annotations

import importlib
import math
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector
from psycopg import sql

from pgkb.retrieval import bm25
from pgkb.retrieval.search import search
from pgkb.store.vector_table import ChunkRow, FieldMapping, TableRef, create_table, write_rows

DIM = 4
TEXTS = [
    "The quick brown fox jumps over the lazy dog",
    "Foxes are quick; dogs are lazy. Quick quick quick!",
    "PostgreSQL stores postings of terms for ranking",
    "Ranking with BM25 uses term frequencies and document lengths",
    "",
    "the and of",  # only stop words: a searchable chunk of length 0
]


def vec(i: int) -> np.ndarray:
    v = np.random.default_rng(i).normal(size=DIM).astype(np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture(scope="module")
def conn(session_db_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(session_db_url, autocommit=True) as c:
        c.execute("CREATE EXTENSION IF NOT EXISTS vector")
        register_vector(c)
        schema = "bm25_" + uuid.uuid4().hex[:8]
        c.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        c.info_schema = schema  # type: ignore[attr-defined]
        yield c
        c.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def write(conn, t, m, rows) -> None:
    with conn.transaction():
        write_rows(conn, t, m, rows)
    conn.execute("DROP TABLE IF EXISTS pg_temp.pgkb_stage")


def postings(conn, ix: bm25.Bm25Index) -> set[tuple]:
    return {tuple(r) for r in conn.execute(sql.SQL("SELECT term, doc, tf, dl FROM {}").format(ix.postings))}


def expected_postings(conn, t: TableRef, m: FieldMapping, config: str = "english") -> set[tuple]:
    rows = conn.execute(
        sql.SQL(
            "WITH tok AS (SELECT {pk} AS doc, u.lexeme AS term, cardinality(u.positions) AS tf FROM {t},"
            " unnest(to_tsvector(%s::regconfig, {txt})) u WHERE {vec} IS NOT NULL)"
            " SELECT term, doc, tf, sum(tf) OVER (PARTITION BY doc)::int FROM tok"
        ).format(pk=sql.Identifier(m.primary_key), t=t.ident, txt=sql.Identifier(m.text), vec=sql.Identifier(m.vector)),
        (config,),
    )
    return {tuple(r) for r in rows}


def stats(conn, ix: bm25.Bm25Index) -> tuple[int, int]:
    n, total = conn.execute(sql.SQL("SELECT coalesce(sum(n), 0), coalesce(sum(total), 0) FROM {}").format(ix.stats)).fetchone()
    return int(n), int(total)


def expected_stats(conn, t: TableRef, m: FieldMapping) -> tuple[int, int]:
    n, total = conn.execute(
        sql.SQL(
            "SELECT count(*), coalesce(sum(length(to_tsvector('english', {txt}))), 0) FROM {t}"
            " WHERE {vec} IS NOT NULL AND {txt} IS NOT NULL"
        ).format(t=t.ident, txt=sql.Identifier(m.text), vec=sql.Identifier(m.vector))
    ).fetchone()
    # length(tsvector) counts lexemes, not occurrences: recompute occurrences.
    occ = conn.execute(
        sql.SQL(
            "SELECT coalesce(sum(cardinality(u.positions)), 0) FROM {t}, unnest(to_tsvector('english', {txt})) u"
            " WHERE {vec} IS NOT NULL"
        ).format(t=t.ident, txt=sql.Identifier(m.text), vec=sql.Identifier(m.vector))
    ).fetchone()[0]
    assert total <= occ
    return int(n), int(occ)


def df_of(conn, ix: bm25.Bm25Index) -> dict[str, int]:
    rows = conn.execute(sql.SQL("SELECT term, sum(d) FROM {} GROUP BY term HAVING sum(d) <> 0").format(ix.df))
    return {r[0]: int(r[1]) for r in rows}


def check(conn, t, m, ix) -> None:
    expected = expected_postings(conn, t, m)
    assert postings(conn, ix) == expected
    assert stats(conn, ix) == expected_stats(conn, t, m)
    assert df_of(conn, ix) == dict(Counter(term for term, *_ in expected))


def test_statistics_follow_every_kind_of_write(conn) -> None:
    m = FieldMapping(primary_key="Key", text="Body Text", vector="vec")  # odd names: quoted everywhere
    t = TableRef(conn.info_schema, "kb-odd.name")
    create_table(conn, t, m, DIM)
    ids = [uuid.uuid4() for _ in TEXTS]
    write(conn, t, m, [ChunkRow(ids[i], TEXTS[i], vec(i), {}, {}) for i in range(3)])
    assert bm25.install_bm25(conn, t, m) is True  # backfill
    ix = bm25.lookup(conn, t)
    assert ix is not None and ix.config == "english"
    check(conn, t, m, ix)
    assert stats(conn, ix)[0] == 3

    # Inserts (one statement: the trigger sees the whole batch), including empty and stop-word-only text
    # and a parent row without an embedding (never searchable).
    parent = uuid.uuid4()
    write(conn, t, m, [ChunkRow(ids[i], TEXTS[i], vec(i), {}, {}) for i in range(3, 6)]
          + [ChunkRow(parent, "parent text about foxes", None, {}, {})])
    check(conn, t, m, ix)
    assert stats(conn, ix)[0] == 6

    # Upserts: one text changed, one unchanged, the parent gains an embedding, a child loses one.
    write(conn, t, m, [
        ChunkRow(ids[0], "a completely different fox story", vec(0), {}, {}),
        ChunkRow(ids[1], TEXTS[1], vec(1), {}, {}),
        ChunkRow(parent, "parent text about foxes", vec(9), {}, {}),
        ChunkRow(ids[2], TEXTS[2], None, {}, {}),
    ])
    check(conn, t, m, ix)

    # Plain UPDATE and DELETE statements.
    conn.execute(sql.SQL("UPDATE {} SET {} = 'terms terms terms' WHERE {} = %s").format(
        t.ident, sql.Identifier(m.text), sql.Identifier(m.primary_key)), (ids[3],))
    check(conn, t, m, ix)
    conn.execute(sql.SQL("DELETE FROM {} WHERE {} = ANY(%s)").format(t.ident, sql.Identifier(m.primary_key)),
                 ([ids[0], ids[4], parent],))
    check(conn, t, m, ix)

    # Idempotent: a second install keeps everything (and compacts the deltas: one stats row, one df
    # row per term).
    before = postings(conn, ix)
    assert conn.execute(sql.SQL("SELECT count(*) > count(DISTINCT term) FROM {}").format(ix.df)).fetchone()[0]
    assert bm25.install_bm25(conn, t, m) is False
    assert postings(conn, ix) == before
    assert conn.execute(sql.SQL("SELECT count(*) FROM {}").format(ix.stats)).fetchone()[0] == 1
    assert conn.execute(sql.SQL("SELECT count(*) = count(DISTINCT term) FROM {}").format(ix.df)).fetchone()[0]
    check(conn, t, m, ix)

    conn.execute(sql.SQL("TRUNCATE {}").format(t.ident))
    assert postings(conn, ix) == set() and stats(conn, ix) == (0, 0) and df_of(conn, ix) == {}

    bm25.uninstall_bm25(conn, t)
    assert bm25.lookup(conn, t) is None
    write(conn, t, m, [ChunkRow(ids[0], TEXTS[0], vec(0), {}, {})])  # no trigger left behind
    assert conn.execute("SELECT to_regclass(%s)", (ix.postings.as_string(conn),)).fetchone()[0] is None


def test_a_failed_write_leaves_statistics_untouched(conn) -> None:
    t, m = TableRef(conn.info_schema, "rollback"), FieldMapping()
    create_table(conn, t, m, DIM)
    bm25.install_bm25(conn, t, m)
    ix = bm25.lookup(conn, t)
    with pytest.raises(psycopg.errors.DivisionByZero), conn.transaction():
        write_rows(conn, t, m, [ChunkRow(uuid.uuid4(), "fox", vec(1), {}, {})])
        conn.execute("SELECT 1/0")
    conn.execute("DROP TABLE IF EXISTS pg_temp.pgkb_stage")
    assert postings(conn, ix) == set() and stats(conn, ix) == (0, 0)


def _python_bm25(docs: dict[str, list[str]], query: list[str], k1: float, b: float) -> dict[str, float]:
    n = len(docs)
    avgdl = max(sum(len(d) for d in docs.values()) / max(n, 1), 1)
    df = Counter(term for d in docs.values() for term in set(d))
    out = {}
    for doc, toks in docs.items():
        tf = Counter(toks)
        s = 0.0
        for q in query:
            if tf[q]:
                idf = math.log(1 + (n - df[q] + 0.5) / (df[q] + 0.5))
                s += idf * tf[q] * (k1 + 1) / (tf[q] + k1 * (1 - b + b * len(toks) / avgdl))
        if s > 0:
            out[doc] = s
    return out


def test_lexical_scores_are_bm25(conn) -> None:
    t, m = TableRef(conn.info_schema, "scores"), FieldMapping()
    create_table(conn, t, m, DIM)
    corpus = TEXTS[:4] + [
        "fox fox fox fox fox and a dog", "a dog story", "lazy afternoons", "Quick ranking of foxes and dogs",
    ]
    ids = [uuid.uuid4() for _ in corpus]
    write(conn, t, m, [ChunkRow(ids[i], corpus[i], vec(i), {}, {}) for i in range(len(corpus))])
    bm25.install_bm25(conn, t, m, k1=1.5, b=0.75)
    ix = bm25.lookup(conn, t)
    assert (ix.k1, ix.b) == (1.5, 0.75)
    docs = {
        str(i): [lex for lex, n in bm25.query_terms(conn, "english", text) for _ in range(n)]
        for i, text in zip(ids, corpus, strict=True)
    }
    query = "quick fox, lazy dogs and the foxes"
    qtok = [lex for lex, n in bm25.query_terms(conn, "english", query) for _ in range(n)]
    assert qtok.count("fox") == 2  # "fox" and "foxes" stem alike; counted twice, as BM25Okapi does
    want = _python_bm25(docs, qtok, 1.5, 0.75)
    hits = search(conn, t, m, query_embedding=None, query_text=query, k=100, search_type="LEXICAL")
    got = {h.id: h.score / (1 - h.score) for h in hits}  # LEXICAL's score is s / (1 + s)
    assert got.keys() == want.keys()
    for doc, s in want.items():
        assert got[doc] == pytest.approx(s, rel=1e-6)
    assert [h.id for h in hits] == sorted(want, key=lambda d: -want[d])


def test_hybrid_without_statistics_falls_back_to_the_simple_text_index(conn) -> None:
    t, m = TableRef(conn.info_schema, "bedrock_made"), FieldMapping()
    create_table(conn, t, m, DIM)
    e = np.eye(DIM, dtype=np.float32)
    ids = [uuid.uuid4() for _ in range(4)]
    write(conn, t, m, [
        ChunkRow(ids[0], "alpha", e[0], {}, {}),
        ChunkRow(ids[1], "beta", e[1], {}, {}),
        ChunkRow(ids[2], "gamma", e[2], {}, {}),
        ChunkRow(ids[3], "the zanzibar archipelago", -e[0], {}, {}),  # lexical match, dense opposite
    ])
    assert bm25.lookup(conn, t) is None
    sem = search(conn, t, m, query_embedding=e[0], query_text="zanzibar", k=2)
    assert str(ids[3]) not in {h.id for h in sem}
    hyb = search(conn, t, m, query_embedding=e[0], query_text="zanzibar", k=2, search_type="HYBRID")
    assert [h.id for h in hyb] == [str(ids[0]), str(ids[3])] or [h.id for h in hyb] == [str(ids[3]), str(ids[0])]
    assert all(0 <= h.score <= 1 for h in hyb)
    plan = "\n".join(r[0] for r in conn.execute(
        sql.SQL("EXPLAIN SELECT 1 FROM {} c WHERE to_tsvector('simple', c.chunks) @@ 'x'::tsquery").format(t.ident)))
    assert "chunks" in plan
    # Installing BM25 later is picked up by the next query.
    bm25.install_bm25(conn, t, m)
    hyb = search(conn, t, m, query_embedding=e[0], query_text="zanzibar", k=2, search_type="HYBRID")
    assert {h.id for h in hyb} == {str(ids[0]), str(ids[3])}
    # ... and a dropped one too (the cached lookup is refreshed).
    bm25.uninstall_bm25(conn, t)
    hyb = search(conn, t, m, query_embedding=e[0], query_text="zanzibar", k=2, search_type="HYBRID")
    assert {h.id for h in hyb} == {str(ids[0]), str(ids[3])}


def test_a_table_we_may_not_alter_keeps_working_without_statistics(conn, session_db_url: str) -> None:
    t, m = TableRef(conn.info_schema, "not_ours"), FieldMapping()
    create_table(conn, t, m, DIM)
    e = np.eye(DIM, dtype=np.float32)
    write(conn, t, m, [ChunkRow(uuid.uuid4(), "alpha words", e[0], {}, {}),
                       ChunkRow(uuid.uuid4(), "zanzibar", -e[0], {}, {})])
    role = "pgkb_reader_" + uuid.uuid4().hex[:6]
    conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    try:
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(t.schema), sql.Identifier(role)))
        conn.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(t.ident, sql.Identifier(role)))
        with psycopg.connect(session_db_url, user=role, autocommit=True) as ro:
            assert bm25.install_bm25(ro, t, m) is False  # logged, not raised
            hits = search(ro, t, m, query_embedding=e[0], query_text="zanzibar", k=2, search_type="HYBRID")
            assert {h.text for h in hits} == {"alpha words", "zanzibar"}
    finally:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_fallback_ranks_by_rare_words_and_leaves_out_common_ones(conn, monkeypatch) -> None:
    """Without statistics: a chunk scores the idf of the query words it holds, counted through the
    simple-text index; a word in FTS_MAX_DF chunks or more is left out, so no query visits more rows."""
    search_mod = importlib.import_module("pgkb.retrieval.search")  # the package re-exports the function
    t, m = TableRef(conn.info_schema, "fallback_idf"), FieldMapping()
    create_table(conn, t, m, DIM)
    texts = ["walrus colony common", "walrus tusk colony common", "penguin common", "seal common", "tusk ivory"]
    ids = [uuid.uuid4() for _ in texts]
    write(conn, t, m, [ChunkRow(i, text, vec(n), {}, {}) for n, (i, text) in enumerate(zip(ids, texts, strict=True))])
    conn.execute(sql.SQL("ANALYZE {}").format(t.ident))
    assert bm25.lookup(conn, t) is None

    def lexical(query: str) -> list[str]:
        return [h.text for h in search(conn, t, m, query_embedding=vec(0), query_text=query, k=5, search_type="LEXICAL")]

    # walrus (2 chunks) + tusk (2) + colony (2): the chunk with all three first, then those with two.
    got = lexical("walrus tusk colony")
    assert got[0] == "walrus tusk colony common" and set(got[1:]) == {"walrus colony common", "tusk ivory"}
    assert len(lexical("common")) == 4  # below the cap every word counts
    monkeypatch.setattr(search_mod, "FTS_MAX_DF", 4)
    assert lexical("common") == []  # in 4 chunks: left out, nothing is visited
    assert lexical("common penguin") == ["penguin common"]  # the rare word alone decides
    hyb = search(conn, t, m, query_embedding=vec(3), query_text="common", k=2, search_type="HYBRID")
    assert hyb and hyb[0].text == "seal common"  # the dense ranking still answers


def test_freshly_written_statistics_are_read_through_the_index(conn) -> None:
    """Right after a sync (analyzed, not yet vacuumed: no index-only scans), the planner once chose a
    sequential scan of every posting for a join; each query term's postings must come from the index."""
    from pgkb.retrieval.search import build_query

    t, m = TableRef(conn.info_schema, "fresh"), FieldMapping()
    create_table(conn, t, m, DIM)
    bm25.install_bm25(conn, t, m)
    rng = np.random.default_rng(7)
    vocab = [f"w{i:03d}x" for i in range(400)]
    rows = [ChunkRow(uuid.uuid4(), " ".join(rng.choice(vocab, 30)), vec(i), {}, {}) for i in range(4000)]
    for i in range(0, len(rows), 1000):
        write(conn, t, m, rows[i : i + 1000])
    ix = bm25.lookup(conn, t)
    conn.execute(sql.SQL("ANALYZE {}").format(ix.postings))  # what autoanalyze does first
    stmt, params = build_query(t, m, k=10, search_type="LEXICAL", filter=None, attribute_cols=None, bm25_index=ix)
    plan = "\n".join(r[0] for r in conn.execute(
        sql.SQL("EXPLAIN ") + stmt, {**params, "qvec": "[0]", "qtext": "w001x w002x w003x"}))
    assert f"Seq Scan on {ix.base}_postings" not in plan, plan


def test_statistics_of_an_older_install_are_upgraded(conn) -> None:
    """Statistics made before the df deltas and the impact index: queries count df and read every
    posting until install_bm25 adds both (df backfilled from the postings), same rankings."""
    t, m = TableRef(conn.info_schema, "upgrade"), FieldMapping()
    create_table(conn, t, m, DIM)
    write(conn, t, m, [ChunkRow(uuid.uuid4(), text, vec(i), {}, {}) for i, text in enumerate(TEXTS)])
    bm25.install_bm25(conn, t, m)
    ix = bm25.lookup(conn, t)

    def lexical() -> list[tuple[str, float]]:
        hits = search(conn, t, m, query_embedding=vec(0), query_text="quick fox ranking", k=5, search_type="LEXICAL")
        return [(h.id, round(h.score, 9)) for h in hits]

    new_ranking = lexical()
    conn.execute(sql.SQL("DROP TABLE {}").format(ix.df))
    conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(bm25.SCHEMA, f"{ix.base}_impact")))
    old = bm25.lookup(conn, t)
    assert old is not None and old.has_df is False
    search_mod = importlib.import_module("pgkb.retrieval.search")
    search_mod._BM25.clear()  # as a process that never saw the new statistics
    assert lexical() == new_ranking
    bm25.compact_bm25(conn, t, m)  # what the end of an ingestion job does: no rebuild, adds what is missing
    assert bm25.lookup(conn, t).has_df
    check(conn, t, m, ix)
    assert lexical() == new_ranking
    # The running process sees the upgrade: its next query reads the df deltas.
    assert search_mod._bm25_index(conn, t).has_df


def test_unfiltered_bm25_reads_each_terms_best_postings(conn, monkeypatch) -> None:
    """A term in more chunks than MAX_POSTINGS_PER_TERM: only its postings of highest impact (more
    occurrences, shorter chunk) are read; a filtered query reads FILTERED_POSTINGS_FACTOR times as
    many when too few of those pass, and no more."""
    search_mod = importlib.import_module("pgkb.retrieval.search")
    t, m = TableRef(conn.info_schema, "impact"), FieldMapping()
    create_table(conn, t, m, DIM)
    texts = {"a": "otter otter otter", "b": "otter otter river", "c": "otter river bank stone",
             "d": "otter river bank stone moss fern", "e": "river otter bank stone moss fern reed"}
    write(conn, t, m, [ChunkRow(uuid.uuid4(), text, vec(i), {}, {"k": key}) for i, (key, text) in enumerate(texts.items())])
    bm25.install_bm25(conn, t, m)

    def keys(**kw: Any) -> list[str]:
        hits = search(conn, t, m, query_embedding=vec(0), query_text="otter", k=5, search_type="LEXICAL", **kw)
        return [h.metadata["k"] for h in hits]

    assert keys() == ["a", "b", "c", "d", "e"]
    monkeypatch.setattr(search_mod, "MAX_POSTINGS_PER_TERM", 2)
    assert keys() == ["a", "b"]
    assert keys(filter={"in": {"key": "k", "value": ["c", "d", "e"]}}) == ["c", "d", "e"]  # 2 x 10 postings read
    monkeypatch.setattr(search_mod, "FILTERED_POSTINGS_FACTOR", 2)
    # the best 2 hold none that pass: the best 4 are read, and e (5th by impact) is not
    assert keys(filter={"in": {"key": "k", "value": ["c", "d", "e"]}}) == ["c", "d"]
    assert keys(filter={"in": {"key": "k", "value": ["a", "b", "c", "d", "e"]}}) == ["a", "b", "c", "d"]
    monkeypatch.setattr(search_mod, "FILTERED_POSTINGS_FACTOR", None)  # every posting (exact)
    assert keys(filter={"in": {"key": "k", "value": ["c", "d", "e"]}}) == ["c", "d", "e"]


def test_filtered_bm25_reads_deeper_only_when_too_few_pass(conn, monkeypatch) -> None:
    """The deeper read of a filtered BM25 ranking is behind a one-time filter: when enough of the best
    postings' chunks pass, PostgreSQL never runs it (a MANAGED knowledge base's every search is
    filtered by its ACL: at 1M chunks reading every posting of its terms cost 150-330 ms)."""
    search_mod = importlib.import_module("pgkb.retrieval.search")
    t, m = TableRef(conn.info_schema, "deeper"), FieldMapping()
    create_table(conn, t, m, DIM)
    write(conn, t, m, [ChunkRow(uuid.uuid4(), "otter " * (1 + i % 7) + "river " * i, vec(i), {}, {"n": i})
                       for i in range(40)])
    bm25.install_bm25(conn, t, m)
    ix = bm25.lookup(conn, t)
    monkeypatch.setattr(search_mod, "MAX_POSTINGS_PER_TERM", 5)

    def plan(values: list[int]) -> str:
        stmt, params = search_mod.build_query(t, m, k=3, search_type="LEXICAL", filter={"in": {"key": "n", "value": values}},
                                              attribute_cols=None, bm25_index=ix)
        params.update(qvec="[0,0,0,0]", qtext="otter")
        rows = conn.execute(sql.SQL("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) ") + stmt, params).fetchall()
        return "\n".join(r[0] for r in rows)

    broad = plan(list(range(40)))
    assert "CTE lx2" in broad and "never executed" in broad.split("CTE lx2")[1].split("CTE ")[0], broad
    narrow = plan([39])  # not among the best 5: the deeper read runs
    assert "CTE lx2" in narrow and "never executed" not in narrow.split("CTE lx2")[1].split("CTE ")[0], narrow


def test_filtered_bm25_is_the_unfiltered_ranking_restricted(conn) -> None:
    """With a filter, BM25 ranks the matching chunks exactly as without it (scores included); the
    filter is checked best score first until enough chunks pass."""
    t, m = TableRef(conn.info_schema, "filtered_lexical"), FieldMapping()
    create_table(conn, t, m, DIM)
    rng = np.random.default_rng(3)
    vocab = ["river", "otter", "stone", "moss", "fern", "reed", "bank", "heron", "trout", "willow"]
    rows = [ChunkRow(uuid.uuid4(), " ".join(rng.choice(vocab, int(rng.integers(3, 12)))), vec(i), {},
                     {"half": bool(i % 2), "third": i % 3}) for i in range(300)]
    write(conn, t, m, rows)
    bm25.install_bm25(conn, t, m)

    def lexical(f: Any, k: int) -> list[tuple[str, float]]:
        hits = search(conn, t, m, query_embedding=vec(0), query_text="otter heron willow", k=k,
                      search_type="LEXICAL", filter=f)
        return [(h.id, round(h.score, 9)) for h in hits]

    everything = lexical(None, 100)
    third = {str(r.id) for r in rows if r.custom_metadata["third"] == 0}
    half = {str(r.id) for r in rows if r.custom_metadata["half"]}
    assert lexical({"equals": {"key": "third", "value": 0}}, 20) == [h for h in everything if h[0] in third][:20]
    assert lexical({"equals": {"key": "half", "value": True}}, 30) == [h for h in everything if h[0] in half][:30]


def test_writers_without_rights_on_the_statistics_keep_them_current(conn, session_db_url: str) -> None:
    t, m = TableRef(conn.info_schema, "shared_writes"), FieldMapping()
    create_table(conn, t, m, DIM)
    bm25.install_bm25(conn, t, m)
    ix = bm25.lookup(conn, t)
    role = "pgkb_writer_" + uuid.uuid4().hex[:6]
    conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    try:
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(t.schema), sql.Identifier(role)))
        conn.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO {}").format(t.ident, sql.Identifier(role)))
        with psycopg.connect(session_db_url, user=role, autocommit=True) as w:
            w.execute(sql.SQL("INSERT INTO {} (id, embedding, chunks, metadata, custom_metadata)"
                              " VALUES (%s, '[1,0,0,0]', 'written by another role', '{{}}', '{{}}')").format(t.ident),
                      (uuid.uuid4(),))
        check(conn, t, m, ix)
        assert stats(conn, ix)[0] == 1
    finally:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_concurrent_writers_leave_exact_statistics(conn, session_db_url: str) -> None:
    import threading

    t, m = TableRef(conn.info_schema, "concurrent"), FieldMapping()
    create_table(conn, t, m, DIM)
    bm25.install_bm25(conn, t, m)
    ix = bm25.lookup(conn, t)
    errors: list[BaseException] = []

    def writer(w: int) -> None:
        try:
            with psycopg.connect(session_db_url) as c:
                register_vector(c)
                for batch in range(5):
                    rows = [ChunkRow(uuid.uuid5(uuid.NAMESPACE_URL, f"{w}/{batch}/{i}"), f"writer {w} batch {batch} {TEXTS[i % 4]}",
                                     vec(i), {}, {}) for i in range(20)]
                    with c.transaction():
                        write_rows(c, t, m, rows)
                    if batch % 2:  # and delete some of what this writer wrote
                        c.execute(sql.SQL("DELETE FROM {} WHERE id = ANY(%s)").format(t.ident), ([r.id for r in rows[:5]],))
                        c.commit()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    def compactor() -> None:  # folding deltas while writers append them loses nothing
        try:
            with psycopg.connect(session_db_url, autocommit=True) as c:
                for _ in range(10):
                    bm25.compact_bm25(c, t)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(3)] + [threading.Thread(target=compactor)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    check(conn, t, m, ix)
    assert stats(conn, ix)[0] == 3 * (5 * 20 - 2 * 5)


def test_a_suspended_load_rebuilt_at_the_end_equals_a_row_by_row_load(conn) -> None:
    """The initial-load path (issue 19): row triggers off, rows written, statistics rebuilt in one pass.
    The postings, df and stats equal those the triggers kept on the same rows; LEXICAL and HYBRID rank
    alike; later writes are maintained incrementally again."""
    m = FieldMapping()
    kept, bulk = TableRef(conn.info_schema, "row_by_row"), TableRef(conn.info_schema, "bulk_load")
    rows = [ChunkRow(uuid.uuid4(), TEXTS[i % len(TEXTS)] + f" extra{i % 5} words", vec(i), {}, {}) for i in range(40)]
    rows.append(ChunkRow(uuid.uuid4(), "a parent row about foxes", None, {}, {}))  # never searchable
    for t in (kept, bulk):
        create_table(conn, t, m, DIM)
        bm25.install_bm25(conn, t, m)
    assert bm25.suspend_bm25(conn, bulk) is True
    ix_kept, ix_bulk = bm25.lookup(conn, kept), bm25.lookup(conn, bulk)
    assert ix_kept is not None and ix_kept.ready and ix_bulk is not None and not ix_bulk.ready
    for i in range(0, len(rows), 8):  # batches, as a sync writes them; a rewrite of one batch too
        for t in (kept, bulk):
            write(conn, t, m, rows[i : i + 8])
    for t in (kept, bulk):
        write(conn, t, m, rows[:8])
    assert postings(conn, ix_bulk) == set() and stats(conn, ix_bulk) == (0, 0)  # nothing kept meanwhile

    # While suspended, searches do not read the (empty) statistics: HYBRID uses the text index.
    hyb = search(conn, bulk, m, query_embedding=vec(2), query_text="PostgreSQL postings", k=3, search_type="HYBRID")
    assert str(rows[2].id) in {h.id for h in hyb}

    assert bm25.rebuild_bm25(conn, bulk, m) is True
    ix_bulk = bm25.lookup(conn, bulk)
    assert ix_bulk is not None and ix_bulk.ready
    bm25.compact_bm25(conn, kept, m)
    assert postings(conn, ix_bulk) == postings(conn, ix_kept)
    assert stats(conn, ix_bulk) == stats(conn, ix_kept)
    assert df_of(conn, ix_bulk) == df_of(conn, ix_kept)
    check(conn, bulk, m, ix_bulk)
    # The rebuilt postings have the one index installed ones have (unique on term, impact, doc).
    names = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE schemaname = %s AND tablename = %s",
                                        (bm25.SCHEMA, f"{ix_bulk.base}_postings"))}
    assert names == {f"{ix_bulk.base}_impact"}

    def ranked(t: TableRef, search_type: Any) -> list[tuple[str, float]]:
        return [(h.id, round(h.score, 9)) for h in search(conn, t, m, query_embedding=vec(5), query_text="quick lazy ranking foxes",
                                                          k=10, search_type=search_type)]

    for kind in ("LEXICAL", "HYBRID"):
        assert ranked(bulk, kind) == ranked(kept, kind) and ranked(bulk, kind)

    # Triggers on again: updates, deletes and new rows are kept row by row; a second rebuild changes nothing.
    more = [ChunkRow(rows[3].id, "rewritten text about zebras", vec(3), {}, {}),
            ChunkRow(uuid.uuid4(), "a new chunk about ranking", vec(50), {}, {})]
    write(conn, bulk, m, more)
    conn.execute(sql.SQL("DELETE FROM {} WHERE id = %s").format(bulk.ident), (rows[4].id,))
    check(conn, bulk, m, ix_bulk)
    before = postings(conn, ix_bulk)
    assert bm25.rebuild_bm25(conn, bulk, m) is True
    assert postings(conn, ix_bulk) == before
    check(conn, bulk, m, ix_bulk)


def _index_defs(conn, ix: bm25.Bm25Index) -> list[str]:
    return sorted(r[0] for r in conn.execute("SELECT indexdef FROM pg_indexes WHERE schemaname = %s AND tablename = %s",
                                             (bm25.SCHEMA, f"{ix.base}_postings")))


def test_postings_have_one_index_that_also_finds_what_a_delete_removes(conn) -> None:
    """The postings carry a single B-tree, unique on (term, impact, doc) (at 1M chunks a second one on
    (term, doc) was 2.7 GB of 9.2 and a fifth of the rebuild); a delete reaches each posting through
    it with the term, the impact its tf and dl give, and the chunk."""
    t, m = TableRef(conn.info_schema, "one_index"), FieldMapping()
    create_table(conn, t, m, DIM)
    bm25.install_bm25(conn, t, m)
    ix = bm25.lookup(conn, t)
    rng = np.random.default_rng(3)
    vocab = [f"w{i:03d}x" for i in range(300)]
    rows = [ChunkRow(uuid.uuid4(), " ".join(rng.choice(vocab, 25)), vec(i), {}, {}) for i in range(3000)]
    write(conn, t, m, rows)
    defs = _index_defs(conn, ix)
    assert len(defs) == 1 and defs[0].startswith("CREATE UNIQUE INDEX") and "doc) INCLUDE (tf, dl)" in defs[0], defs
    conn.execute(sql.SQL("ANALYZE {}").format(ix.postings))
    doomed = sql.SQL("(SELECT * FROM {} WHERE {} = ANY(%(ids)s))").format(t.ident, sql.Identifier(m.primary_key))
    plan = "\n".join(r[0] for r in conn.execute(
        sql.SQL("EXPLAIN ") + bm25._remove_sql(doomed, m, ix), {"ids": [rows[0].id, rows[1].id]}))
    assert f"Index Scan using {ix.base}_impact" in plan, plan
    cond = next(line for line in plan.splitlines() if "Index Cond:" in line and "term" in line)
    assert "doc" in cond and "double precision" in cond, cond  # the impact is part of the lookup
    # Deletes and updates through the triggers keep the statistics exact.
    with conn.transaction():
        conn.execute(sql.SQL("DELETE FROM {} WHERE {} = ANY(%s)").format(t.ident, sql.Identifier(m.primary_key)),
                     ([r.id for r in rows[:50]],))
    write(conn, t, m, [ChunkRow(r.id, "w001x w002x w002x new words", vec(1), {}, {}) for r in rows[50:80]])
    check(conn, t, m, ix)


def test_statistics_with_the_older_two_indexes_stay_exact_and_a_rebuild_leaves_one(conn) -> None:
    """Statistics installed by an earlier pgkb (primary key (term, doc) and a non-unique impact index)
    are maintained by the same triggers; rebuilding them leaves the one unique index."""
    t, m = TableRef(conn.info_schema, "two_indexes"), FieldMapping()
    create_table(conn, t, m, DIM)
    ids = [uuid.uuid4() for _ in TEXTS]
    write(conn, t, m, [ChunkRow(ids[i], TEXTS[i], vec(i), {}, {}) for i in range(len(TEXTS))])
    bm25.install_bm25(conn, t, m)
    ix = bm25.lookup(conn, t)
    with conn.transaction():  # the earlier layout, as an install of the previous release made it
        conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(bm25.SCHEMA, f"{ix.base}_impact")))
        conn.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY (term, doc) INCLUDE (tf, dl)").format(ix.postings))
        conn.execute(sql.SQL("CREATE INDEX {} ON {} (term, {} DESC) INCLUDE (doc, tf, dl)").format(
            sql.Identifier(f"{ix.base}_impact"), ix.postings, ix.impact()))
    assert len(_index_defs(conn, ix)) == 2
    write(conn, t, m, [ChunkRow(ids[0], "quick quick ranking of foxes", vec(0), {}, {}),
                       ChunkRow(uuid.uuid4(), "another lazy dog", vec(9), {}, {})])
    with conn.transaction():
        conn.execute(sql.SQL("DELETE FROM {} WHERE {} = %s").format(t.ident, sql.Identifier(m.primary_key)), (ids[2],))
    check(conn, t, m, ix)
    before = [(h.id, round(h.score, 9)) for h in search(conn, t, m, query_embedding=vec(1), query_text="quick lazy foxes",
                                                        k=5, search_type="LEXICAL")]
    with conn.transaction():
        conn.execute(sql.SQL("ALTER TABLE {} DISABLE TRIGGER pgkb_bm25_ins").format(t.ident))  # as suspend_bm25 leaves it
    assert bm25.rebuild_bm25(conn, t, m) is True
    defs = _index_defs(conn, ix)
    assert len(defs) == 1 and defs[0].startswith("CREATE UNIQUE INDEX"), defs
    check(conn, t, m, ix)
    after = [(h.id, round(h.score, 9)) for h in search(conn, t, m, query_embedding=vec(1), query_text="quick lazy foxes",
                                                       k=5, search_type="LEXICAL")]
    assert after == before
