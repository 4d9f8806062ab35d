"""Filtered and ACL'd searches run with their own, deeper hnsw.ef_search (pgkb.retrieval.search
FILTERED_EF_SEARCH), set for that statement's transaction only; unfiltered ones leave theirs on the
connection's session, so the next one at that depth sends its statement alone.

The setting is observed from inside the search statement itself: the visibility predicate passed as
`acl` compares each row's text with `current_setting(...)`, so the row that comes back names the value
the statement ran with."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector
from psycopg import sql

from pgkb.errors import ValidationError
from pgkb.retrieval.search import (
    EF_SEARCH,
    FILTERED_EF_SEARCH,
    FILTERED_HYBRID_CANDIDATES,
    HALFVEC_EF_SEARCH,
    HYBRID_CANDIDATES,
    build_query,
    search,
    settings_statement,
    statement_settings,
)
from pgkb.store import ddl
from pgkb.store.vector_table import (
    ChunkRow,
    FieldMapping,
    TableRef,
    create_table,
    write_rows,
)

M = FieldMapping()
SETTING_VALUES = list(dict.fromkeys([str(EF_SEARCH), str(FILTERED_EF_SEARCH), "40", "100", "160", "relaxed_order", "strict_order", "off"]))


@pytest.fixture(scope="module")
def table(session_db_url: str) -> Iterator[tuple[psycopg.Connection, TableRef]]:
    with psycopg.connect(session_db_url, autocommit=True) as c:
        c.execute("CREATE EXTENSION IF NOT EXISTS vector")
        register_vector(c)
        schema = "fef_" + uuid.uuid4().hex[:8]
        c.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        t = TableRef(schema, "kb")
        create_table(c, t, M, 4)
        rng = np.random.default_rng(3)
        rows = []
        for i, text in enumerate(SETTING_VALUES):  # one row per value a setting could have
            v = rng.normal(size=4).astype(np.float32)
            rows.append(ChunkRow(uuid.uuid5(uuid.NAMESPACE_URL, text), text, v / np.linalg.norm(v),
                                 {"x-amz-bedrock-kb-source-uri": f"s3://b/{i}", "x-amz-bedrock-kb-data-source-id": "DS"}, {}))
        with c.transaction():
            write_rows(c, t, M, rows)
        for stmt in ddl.vector_indexes(t, M):
            c.execute(stmt)
        yield c, t
        c.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def seen_by_statement(conn: psycopg.Connection, t: TableRef, setting: str, **kw) -> list[str]:
    """Texts of the rows visible when each row's text must equal `setting`'s value in the statement."""
    pred = sql.SQL("(c.{} = current_setting({}))").format(sql.Identifier(M.text), sql.Literal(setting))
    hits = search(conn, t, M, query_embedding=[1.0, 0.0, 0.0, 0.0], query_text=None, k=5, acl=(pred, {}), **kw)
    return [h.text for h in hits]


def test_an_acl_search_runs_with_the_filtered_ef_search(table) -> None:
    conn, t = table
    assert FILTERED_EF_SEARCH > EF_SEARCH
    assert seen_by_statement(conn, t, "hnsw.ef_search") == [str(FILTERED_EF_SEARCH)]
    assert seen_by_statement(conn, t, "hnsw.iterative_scan") == ["relaxed_order"]
    # An explicit ef_search (benchmarks) still wins.
    assert seen_by_statement(conn, t, "hnsw.ef_search", ef_search=100) == ["100"]
    # Transaction-local: nothing is left on the connection afterwards.
    assert conn.execute("SELECT current_setting('hnsw.ef_search')").fetchone()[0] == "40"  # pgvector's default
    assert conn.execute("SELECT current_setting('hnsw.iterative_scan')").fetchone()[0] == "off"


def test_filtered_hybrid_takes_fewer_candidates_from_each_ranking(table) -> None:
    """A filtered dense scan walks until its candidates pass, so filtered HYBRID takes fewer (and still k)."""
    conn, t = table
    acl = (sql.SQL("true"), {})
    assert FILTERED_HYBRID_CANDIDATES < HYBRID_CANDIDATES

    def cand(k: int, **kw) -> int:
        _, params = build_query(t, M, k=k, search_type="HYBRID", filter=None, attribute_cols={}, bm25_index=None, **kw)
        return int(params["cand"])

    assert cand(5) == HYBRID_CANDIDATES
    assert cand(5, acl=acl) == FILTERED_HYBRID_CANDIDATES
    assert cand(60, acl=acl) == 60
    _, params = build_query(t, M, k=5, search_type="HYBRID", filter={"equals": {"key": "a", "value": 1}},
                            attribute_cols={}, bm25_index=None)
    assert params["cand"] == FILTERED_HYBRID_CANDIDATES


def test_settings_per_kind_of_statement(table) -> None:
    conn, _ = table

    def in_transaction(settings: list[tuple[str, str]]) -> dict[str, str]:
        stmt, params = settings_statement(settings)
        with conn.transaction():
            conn.execute(stmt, params)
            return {name: conn.execute("SELECT current_setting(%s)", (name,)).fetchone()[0]
                    for name in ("hnsw.ef_search", "hnsw.iterative_scan")}

    # Unfiltered: the default, untouched by the filtered rule.
    assert in_transaction(statement_settings(10, filtered=False, iterative=True)) == {
        "hnsw.ef_search": str(EF_SEARCH), "hnsw.iterative_scan": "off"}
    # A metadata filter gets the filtered rule as an ACL does.
    assert in_transaction(statement_settings(10, filtered=True, iterative=True))["hnsw.ef_search"] == str(FILTERED_EF_SEARCH)
    # Candidates beyond the rule (HYBRID's, or k up to 100 on larger values) widen it; 1,000 is pgvector's cap.
    assert in_transaction(statement_settings(300, filtered=True, iterative=True))["hnsw.ef_search"] == "300"
    assert in_transaction(statement_settings(5000, filtered=False, iterative=True))["hnsw.ef_search"] == "1000"
    # A halfvec index searches deeper (its graph links fewer neighbours), filtered twice as deep.
    assert in_transaction(statement_settings(10, filtered=False, iterative=True, kind="halfvec"))["hnsw.ef_search"] == str(
        HALFVEC_EF_SEARCH)
    assert in_transaction(statement_settings(10, filtered=True, iterative=True, kind="halfvec"))["hnsw.ef_search"] == str(
        2 * HALFVEC_EF_SEARCH)


class StatementLog(psycopg.Connection):
    """A connection that records the text of every statement it is asked to execute."""

    sent: list[str]

    def execute(self, query, params=None, **kw):  # type: ignore[no-untyped-def, override]
        self.sent.append(query if isinstance(query, str) else query.as_string(self))
        return super().execute(query, params, **kw)


def test_an_unfiltered_search_leaves_its_depth_on_the_session_and_the_next_sends_one_statement(
    session_db_url: str, table
) -> None:
    _, t = table
    with StatementLog.connect(session_db_url, autocommit=True) as conn:
        register_vector(conn)
        conn.sent = []

        def unfiltered(vector: list[float] | None = None, **kw) -> list[str]:
            conn.sent.clear()
            search(conn, t, M, query_embedding=vector or [1.0, 0.0, 0.0, 0.0], query_text=None, k=5, **kw)
            return list(conn.sent)

        def session_ef() -> str:
            return str(conn.execute("SELECT current_setting('hnsw.ef_search')").fetchone()[0])

        first = unfiltered()
        assert len(first) == 2 and "set_config('hnsw.ef_search', %s, false)" in first[0], first
        assert session_ef() == str(EF_SEARCH)  # kept by the session (pgvector's default is 40)
        assert len(unfiltered()) == 1  # the statement alone
        # A filtered search still runs deeper, for its own transaction only.
        assert seen_by_statement(conn, t, "hnsw.ef_search") == [str(FILTERED_EF_SEARCH)]
        assert session_ef() == str(EF_SEARCH)
        assert len(unfiltered()) == 1
        # Another depth (a knowledge base's pgkb:efSearch) is set once, then kept.
        assert len(unfiltered(ef_search_default=80)) == 2 and session_ef() == "80"
        assert len(unfiltered(ef_search_default=80)) == 1
        assert len(unfiltered()) == 2 and session_ef() == str(EF_SEARCH)
        # A statement that fails forgets what the session had: the next search sets it again.
        with pytest.raises(ValidationError):
            unfiltered([1.0, 0.0, 0.0])  # 3 dimensions against the table's 4
        assert len(unfiltered()) == 2
        assert len(unfiltered()) == 1
