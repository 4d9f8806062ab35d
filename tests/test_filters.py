"""Bedrock's RetrievalFilter compiled to SQL, run against real tables in the three metadata layouts."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector
from psycopg import sql

from pgkb.errors import ValidationError
from pgkb.retrieval.filters import compile_filter, validate_filter
from pgkb.store.vector_table import ChunkRow, FieldMapping, TableRef, create_table, write_rows

SQLISH_KEY = "a'); DROP TABLE t; --"
SQLISH_VALUE = "Robert'); DROP TABLE students;--"

DOCS: dict[str, dict[str, Any]] = {
    "a": {"animal": "cat", "year": 2020, "tags": ["x", "y"], "flag": True, "name": "camel", SQLISH_KEY: "v"},
    "b": {"animal": "dog", "year": 1989, "tags": ["y"], "flag": False, "name": "dog house"},
    "c": {"animal": "cat", "year": 2001.5, "name": "Cathy"},
    "d": {},
    "e": {"animal": SQLISH_VALUE, "tags": ["zebra crossing"], "name": "e"},
}
# Only the jsonb layout can hold a string where others hold a number (typing test).
EXTRA_JSONB = {"f": {"year": "2020", "animal": 7}}


def _ids(conn: psycopg.Connection, table: TableRef, mapping: FieldMapping, f: dict, cols=None) -> set[str]:
    pred, params = compile_filter(f, mapping, cols, alias="t")
    rows = conn.execute(
        sql.SQL("SELECT t.{} FROM {} AS t WHERE {}").format(sql.Identifier(mapping.text), table.ident, pred), params
    ).fetchall()
    return {r[0] for r in rows}


def _write(conn: psycopg.Connection, table: TableRef, mapping: FieldMapping, rows: list[ChunkRow], cols=None) -> None:
    with conn.transaction():  # the staging table is ON COMMIT DELETE ROWS
        write_rows(conn, table, mapping, rows, attribute_cols=cols)
    # write_rows keeps one staging temp table per session, shaped like the first table it wrote to.
    conn.execute("DROP TABLE IF EXISTS pg_temp.pgkb_stage")


def _rows(docs: dict[str, dict[str, Any]]) -> list[ChunkRow]:
    rng = np.random.default_rng(0)
    out = []
    for name, attrs in docs.items():
        v = rng.normal(size=4).astype(np.float32)
        out.append(
            ChunkRow(
                uuid.uuid4(), name, v / np.linalg.norm(v),
                {"x-amz-bedrock-kb-source-uri": f"s3://bucket/{name}.txt", "x-amz-bedrock-kb-data-source-id": "DS" + name},
                attrs,
            )
        )
    return out


@pytest.fixture(scope="module")
def conn(session_db_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(session_db_url, autocommit=True) as c:
        c.execute("CREATE EXTENSION IF NOT EXISTS vector")
        register_vector(c)
        schema = "flt_" + uuid.uuid4().hex[:8]
        c.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        c.info_schema = schema  # type: ignore[attr-defined]
        yield c
        c.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(scope="module")
def layouts(conn: psycopg.Connection) -> dict[str, tuple[TableRef, FieldMapping, dict | None, dict]]:
    """name -> (table, mapping, attribute columns, docs)."""
    schema = conn.info_schema  # type: ignore[attr-defined]
    out = {}
    # 1. custom_metadata jsonb (pgkb's default).
    t, m = TableRef(schema, "kb_jsonb"), FieldMapping()
    create_table(conn, t, m, 4)
    docs = {**DOCS, **EXTRA_JSONB}
    _write(conn, t, m, _rows(docs))
    out["jsonb"] = (t, m, None, docs)
    # 2. One column per attribute (no customMetadataField).
    t, m = TableRef(schema, "kb_cols"), FieldMapping(custom_metadata=None)
    create_table(conn, t, m, 4)
    cols = {"animal": "text", "year": "double precision", "tags": "text[]", "flag": "boolean", "name": "text",
            SQLISH_KEY: "text"}
    for c, typ in cols.items():
        conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN {} " + typ).format(t.ident, sql.Identifier(c)))
    _write(conn, t, m, _rows(DOCS), cols)
    out["columns"] = (t, m, cols, DOCS)
    # 3. Everything in the metadata json (a Bedrock-made table without custom metadata).
    t, m = TableRef(schema, "kb_meta"), FieldMapping(custom_metadata=None, metadata="meta")
    create_table(conn, t, m, 4)
    rows = _rows(DOCS)
    for r in rows:
        r.metadata = {**r.metadata, **r.custom_metadata}
    _write(conn, t, m, rows)
    out["metadata"] = (t, m, None, DOCS)
    return out


CASES: list[tuple[dict, set[str]]] = [
    ({"equals": {"key": "animal", "value": "cat"}}, {"a", "c"}),
    ({"equals": {"key": "year", "value": 2020}}, {"a"}),  # not f's string "2020"
    ({"equals": {"key": "year", "value": 2020.0}}, {"a"}),
    ({"equals": {"key": "year", "value": "2020"}}, {"f"}),
    ({"equals": {"key": "flag", "value": True}}, {"a"}),
    ({"equals": {"key": "tags", "value": "y"}}, set()),  # a list is not equal to its member
    ({"equals": {"key": "animal", "value": SQLISH_VALUE}}, {"e"}),
    ({"equals": {"key": SQLISH_KEY, "value": "v"}}, {"a"}),
    ({"notEquals": {"key": "animal", "value": "cat"}}, {"b", "d", "e", "f"}),  # includes rows without the key
    ({"notEquals": {"key": "flag", "value": True}}, {"b", "c", "d", "e", "f"}),
    ({"greaterThan": {"key": "year", "value": 2001.5}}, {"a"}),
    ({"greaterThanOrEquals": {"key": "year", "value": 2001.5}}, {"a", "c"}),
    ({"lessThan": {"key": "year", "value": 2001.5}}, {"b"}),
    ({"lessThanOrEquals": {"key": "year", "value": 2020}}, {"a", "b", "c"}),  # never the string "2020"
    ({"in": {"key": "animal", "value": ["dog", SQLISH_VALUE, "eel"]}}, {"b", "e"}),
    ({"in": {"key": "year", "value": [1989, 2001.5]}}, {"b", "c"}),
    ({"notIn": {"key": "animal", "value": ["cat", "dog"]}}, {"e", "f"}),  # only rows that have the key
    ({"startsWith": {"key": "name", "value": "ca"}}, {"a"}),  # case-sensitive: not "Cathy"
    ({"startsWith": {"key": "name", "value": "Ca"}}, {"c"}),
    ({"listContains": {"key": "tags", "value": "y"}}, {"a", "b"}),
    ({"listContains": {"key": "animal", "value": "cat"}}, set()),  # a string is not a list
    ({"stringContains": {"key": "name", "value": "house"}}, {"b"}),
    ({"stringContains": {"key": "tags", "value": "cross"}}, {"e"}),  # a list member containing it
    ({"stringContains": {"key": "animal", "value": "DROP TABLE"}}, {"e"}),
    ({"equals": {"key": "x-amz-bedrock-kb-source-uri", "value": "s3://bucket/b.txt"}}, {"b"}),
    ({"startsWith": {"key": "x-amz-bedrock-kb-data-source-id", "value": "DSa"}}, {"a"}),
    ({"in": {"key": "x-amz-bedrock-kb-data-source-id", "value": ["DSa", "DSc"]}}, {"a", "c"}),
    ({"andAll": [{"equals": {"key": "animal", "value": "cat"}}, {"greaterThan": {"key": "year", "value": 2010}}]}, {"a"}),
    ({"orAll": [{"equals": {"key": "animal", "value": "dog"}}, {"listContains": {"key": "tags", "value": "x"}}]},
     {"a", "b"}),
    (
        {"orAll": [
            {"andAll": [{"equals": {"key": "animal", "value": "cat"}},
                        {"orAll": [{"lessThan": {"key": "year", "value": 2010}},
                                   {"equals": {"key": "flag", "value": True}}]}]},
            {"notEquals": {"key": "animal", "value": "cat"}},
        ]},
        {"a", "b", "c", "d", "e", "f"},
    ),
    ({"andAll": [{"notEquals": {"key": "animal", "value": "cat"}}, {"notEquals": {"key": "animal", "value": "dog"}}]},
     {"d", "e", "f"}),
]


@pytest.mark.parametrize("layout", ["jsonb", "columns", "metadata"])
def test_filter_grammar(conn, layouts, layout: str) -> None:
    table, mapping, cols, docs = layouts[layout]
    for f, expected in CASES:
        got = _ids(conn, table, mapping, f, cols)
        assert got == expected & set(docs), (layout, f)


def test_sqlish_keys_and_values_are_data(conn, layouts) -> None:
    table, mapping, cols, _ = layouts["jsonb"]
    pred, params = compile_filter({"equals": {"key": SQLISH_KEY, "value": SQLISH_VALUE}}, mapping, cols)
    text = pred.as_string(conn)
    assert "DROP" not in text and SQLISH_KEY not in text
    assert any("DROP" in str(v) for v in params.values())
    assert _ids(conn, table, mapping, {"notEquals": {"key": SQLISH_KEY, "value": "x"}}) == set("abcdef")
    assert conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table.ident)).fetchone()[0] == 6


def test_equality_uses_the_gin_index(conn, layouts) -> None:
    table, mapping, _, _ = layouts["jsonb"]
    pred, params = compile_filter(
        {"orAll": [{"equals": {"key": "animal", "value": "cat"}}, {"in": {"key": "animal", "value": ["dog", "eel"]}}]},
        mapping,
    )
    conn.execute("SET enable_seqscan = off")
    try:
        plan = "\n".join(
            r[0] for r in conn.execute(
                sql.SQL("EXPLAIN SELECT 1 FROM {} WHERE {}").format(table.ident, pred), params
            )
        )
    finally:
        conn.execute("RESET enable_seqscan")
    assert "Bitmap Index Scan" in plan and "@>" in plan, plan


def test_a_selective_equality_fetches_only_its_rows_from_the_gin_index(conn) -> None:
    """pgkb's tables index custom metadata with jsonb_path_ops: `{"rare": "yes"}` looks up the hashed
    (key, value) path, not "yes" anywhere (jsonb_ops fetched every row with any attribute "yes", then
    rechecked them all: 112 ms at 0.5 % of 100,000 chunks)."""
    t, m = TableRef(conn.info_schema, "kb_selective"), FieldMapping()  # type: ignore[attr-defined]
    create_table(conn, t, m, 4)
    docs = {f"d{i}": {"rare": "yes" if i % 100 == 0 else "no", "common": "yes"} for i in range(300)}
    _write(conn, t, m, _rows(docs))
    conn.execute(sql.SQL("ANALYZE {}").format(t.ident))
    pred, params = compile_filter({"equals": {"key": "rare", "value": "yes"}}, m, alias="c")
    conn.execute("SET enable_seqscan = off")
    try:
        plan = "\n".join(r[0] for r in conn.execute(
            sql.SQL("EXPLAIN (ANALYZE, TIMING OFF) SELECT 1 FROM {} AS c WHERE {}").format(t.ident, pred), params))
    finally:
        conn.execute("RESET enable_seqscan")
    scan = next(line for line in plan.splitlines() if "Bitmap Index Scan" in line)
    assert float(scan.split("actual rows=")[1].split()[0]) == 3, plan  # the 3 matching rows, nothing to recheck away
    assert _ids(conn, t, m, {"equals": {"key": "rare", "value": "yes"}}) == {"d0", "d100", "d200"}


@pytest.mark.parametrize(
    "f, needle",
    [
        ({"like": {"key": "a", "value": "b"}}, "unknown filter operator 'like'"),
        ({"equals": {"key": "a", "value": 1}, "notEquals": {"key": "a", "value": 2}}, "2 operators in one filter"),
        ({"andAll": [{"equals": {"key": "a", "value": 1}}]}, "andAll: needs at least 2"),
        ({"orAll": []}, "orAll: needs at least 2"),
        ({"greaterThan": {"key": "a", "value": "10"}}, "greaterThan needs a number, got string"),
        ({"lessThan": {"key": "a", "value": True}}, "lessThan needs a number, got boolean"),
        ({"in": {"key": "a", "value": "cat"}}, "in needs a non-empty list"),
        ({"notIn": {"key": "a", "value": [{"x": 1}]}}, "filter.notIn.value[0]"),
        ({"equals": {"key": "a", "value": None}}, "equals needs a string, number or boolean, got null"),
        ({"equals": {"key": "a", "value": ["x"]}}, "got list"),
        ({"startsWith": {"key": "a", "value": 3}}, "startsWith needs a non-empty string"),
        ({"listContains": {"key": "a", "value": {"o": 1}}}, "listContains needs"),
        ({"equals": {"key": "k" * 101, "value": 1}}, "101 characters"),
        ({"equals": {"key": "", "value": 1}}, "non-empty string"),
        ({"equals": {"value": 1}}, "'key' and 'value' are both required"),
        ({"equals": {"key": "a", "value": 1, "x": 2}}, "unexpected member"),
        ({}, "empty filter"),
        ("equals", "must be an object"),
        ({"andAll": [{"equals": {"key": "a", "value": 1}}, {"nope": {}}]}, "filter.andAll[1]: unknown filter operator"),
    ],
)
def test_bad_filters_are_validation_errors(f: Any, needle: str) -> None:
    with pytest.raises(ValidationError) as err:
        validate_filter(f)
    assert needle in str(err.value)
    with pytest.raises(ValidationError):
        compile_filter(f, FieldMapping())


def test_key_of_100_characters_is_fine_and_deep_nesting_works(conn, layouts) -> None:
    validate_filter({"equals": {"key": "k" * 100, "value": 1}})
    f: dict = {"equals": {"key": "animal", "value": "cat"}}
    for _ in range(20):
        f = {"andAll": [f, {"notEquals": {"key": "animal", "value": "dog"}}]}
    table, mapping, cols, _ = layouts["jsonb"]
    assert _ids(conn, table, mapping, f, cols) == {"a", "c"}
