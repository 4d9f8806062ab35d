"""The DDL module: statements for odd names (quotes, uppercase, unicode, dots, hyphens) run on the real
server both as composables and as the rendered text a person pastes, and what they build passes
validation, doctor, BM25 and ACL installation; doctor's fixes for such a table run as printed."""

from __future__ import annotations

import psycopg
import pytest

from pgkb.admin.doctor import diagnose
from pgkb.retrieval.bm25 import install_bm25, lookup
from pgkb.store import ddl
from pgkb.store.acl import enable_acl
from pgkb.store.index_build import build, hnsw_indexes
from pgkb.store.vector_table import FieldMapping, TableRef, create_table, validate_table

ODD_TABLE = TableRef('Sch.ema "Q"', 'Ta.ble "Ünï" X')
ODD_MAPPING = FieldMapping(primary_key="ID", vector='Vec "v"', text="Text.Body", metadata="méta",
                           custom_metadata="custom-Meta")


def test_version_tuple_compares_as_numbers() -> None:
    # "0.4.4" < 0.5 < "0.10.0": compared as numbers, not strings; suffixes and blanks tolerated.
    assert ddl.version_tuple("0.4.4") < (0, 5, 0) <= ddl.version_tuple("0.5.0") < ddl.version_tuple("0.10.0")
    assert ddl.version_tuple("0.8.0-dev") == (0, 8, 0) and ddl.version_tuple("0.10.1") >= (0, 8)
    assert ddl.version_tuple("") == (0,) == ddl.version_tuple(None) and ddl.version_tuple("0.7.4") < (0, 8)


def test_rendered_identifiers_are_always_quoted_and_escaped() -> None:
    t = TableRef('a"b', "C.d")
    assert ddl.render(ddl.jsonb_index(t, "X y")) == 'CREATE INDEX ON "a""b"."C.d" USING gin ("X y")'
    assert ddl.render(ddl.hnsw_index(t, "v", ef_construction=128, name="n")) == (
        'CREATE INDEX IF NOT EXISTS "n" ON "a""b"."C.d" USING hnsw ("v" vector_cosine_ops)'
        " WITH (m = 16, ef_construction = 128)"
    )
    # halfvec: its own m, also when no ef_construction is given (doctor's fixes)
    assert ddl.render(ddl.hnsw_index(t, "v", kind="halfvec", dimensions=384)) == (
        'CREATE INDEX ON "a""b"."C.d" USING hnsw (("v"::halfvec(384)) halfvec_cosine_ops) WITH (m = 13)'
    )
    assert ddl.index_name("x" * 70, "vec_hnsw") == "x" * 54 + "_vec_hnsw"
    with pytest.raises(ValueError):
        ddl.recreate_index("DROP TABLE x")


@pytest.mark.parametrize("as_text", [False, True], ids=["composed", "rendered"])
def test_odd_names_build_a_table_that_validates(new_database_url: str, as_text: bool) -> None:
    with psycopg.connect(new_database_url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        if as_text:  # what a DBA would paste from an error message or --print-sql
            for stmt in ddl.table_statements(ODD_TABLE, ODD_MAPPING, 3):
                conn.execute(ddl.render(stmt))
        else:
            create_table(conn, ODD_TABLE, ODD_MAPPING, 3)
        cols = {r[0] for r in conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0",
            (ddl.render(ODD_TABLE.ident),))}
        assert cols == {"ID", 'Vec "v"', "Text.Body", "méta", "custom-Meta"}
        assert validate_table(conn, ODD_TABLE, ODD_MAPPING, 3) == []
        assert [p for p in diagnose(conn, ODD_TABLE, ODD_MAPPING, dimensions=3) if p.severity == "error"] == []
        # The side structures other modules add to a knowledge-base table accept the names too.
        enable_acl(conn, ODD_TABLE)
        assert install_bm25(conn, ODD_TABLE, ODD_MAPPING)
        assert lookup(conn, ODD_TABLE) is not None


def test_doctor_fixes_for_odd_names_run_as_printed(new_database_url: str) -> None:
    with psycopg.connect(new_database_url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        create_table(conn, ODD_TABLE, ODD_MAPPING, 3)
        ((name, _),) = hnsw_indexes(conn, ODD_TABLE)
        conn.execute(ddl.drop_index(ODD_TABLE.schema, name))
        conn.execute(ddl.render(ddl.storage_plain(ODD_TABLE, ODD_MAPPING.vector)).replace("PLAIN", "EXTENDED"))
        conn.execute(f"ALTER TABLE {ddl.render(ODD_TABLE.ident)} DROP COLUMN {ddl.render(ddl.ident('méta'))}")
        problems = diagnose(conn, ODD_TABLE, ODD_MAPPING, dimensions=3)
        assert {p.check for p in problems} >= {"hnsw index", "column", "storage"}
        for p in problems:
            if p.check in ("hnsw index", "column", "storage"):
                conn.execute(p.fix)
        assert diagnose(conn, ODD_TABLE, ODD_MAPPING, dimensions=3) == []
        assert validate_table(conn, ODD_TABLE, ODD_MAPPING, 3) == []


def test_recorded_index_definition_rebuilds_for_odd_names(new_database_url: str) -> None:
    with psycopg.connect(new_database_url) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        create_table(conn, ODD_TABLE, ODD_MAPPING, 3)
        ((name, definition),) = hnsw_indexes(conn, ODD_TABLE)
        conn.execute(ddl.drop_index(ODD_TABLE.schema, name, if_exists=True))
        assert hnsw_indexes(conn, ODD_TABLE) == []
        build(conn, definition, memory_kb=65536, workers=0)
        build(conn, definition, memory_kb=65536, workers=0)  # idempotent: a crash between build and forget
        assert hnsw_indexes(conn, ODD_TABLE) == [(name, definition)]

