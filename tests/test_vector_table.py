"""write_rows on its own: autocommit connections, several tables on one connection, idempotent upserts."""

from __future__ import annotations

import uuid

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector

from pgkb.store.vector_table import ChunkRow, FieldMapping, TableRef, create_table, write_rows


def test_write_rows_on_autocommit_and_two_tables(new_database_url: str) -> None:
    with psycopg.connect(new_database_url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        register_vector(conn)
        a, b = TableRef("kb", "a"), TableRef("kb", "b")
        m = FieldMapping()
        custom = FieldMapping(vector="vec", text="body", custom_metadata=None)
        create_table(conn, a, m, 3)
        create_table(conn, b, custom, 2)
        ida = uuid.uuid4()
        rows_a = [ChunkRow(ida, "alpha", np.array([1, 0, 0], dtype=np.float32), {"s": 1}, {"k": "v"})]
        write_rows(conn, a, m, rows_a)
        write_rows(conn, a, m, [ChunkRow(ida, "alpha2", np.array([0, 1, 0], dtype=np.float32), {"s": 2}, {})])
        write_rows(conn, b, custom, [ChunkRow(uuid.uuid4(), "beta", np.array([1, 0], dtype=np.float32), {}, {})])
        assert conn.execute("SELECT id, chunks, metadata FROM kb.a").fetchall() == [(ida, "alpha2", {"s": 2})]
        assert conn.execute("SELECT body FROM kb.b").fetchall() == [("beta",)]
        # staging tables do not linger
        assert conn.execute("SELECT count(*) FROM pg_class WHERE relname LIKE 'pgkb_stage_%'").fetchone()[0] == 0


def test_new_rows_are_copied_straight_in_and_a_duplicate_changes_nothing(new_database_url: str) -> None:
    with psycopg.connect(new_database_url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        register_vector(conn)
        t, m = TableRef("kb", "c"), FieldMapping()
        create_table(conn, t, m, 2)
        ids = [uuid.uuid4() for _ in range(3)]
        rows = [ChunkRow(i, f"text {n}", np.array([1, n], dtype=np.float32), {"n": n}, {"k": str(n)}) for n, i in enumerate(ids)]
        oid = conn.execute("SELECT max(oid::bigint) FROM pg_class").fetchone()[0]
        write_rows(conn, t, m, rows[:2], new=True)
        # straight in: no staging table was created (it would have taken a new pg_class oid)
        assert conn.execute("SELECT count(*) FROM pg_class WHERE oid::bigint > %s", (oid,)).fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM kb.c").fetchone()[0] == 2
        # one row that exists: the whole batch is refused, the table unchanged (the writer then upserts)
        with pytest.raises(psycopg.errors.UniqueViolation):
            write_rows(conn, t, m, [rows[2], ChunkRow(ids[0], "changed", np.array([0, 1], dtype=np.float32), {}, {})], new=True)
        assert conn.execute("SELECT id, chunks FROM kb.c ORDER BY chunks").fetchall() == [(ids[0], "text 0"), (ids[1], "text 1")]
        write_rows(conn, t, m, [rows[2], ChunkRow(ids[0], "changed", np.array([0, 1], dtype=np.float32), {}, {})])
        assert sorted(r[0] for r in conn.execute("SELECT chunks FROM kb.c")) == ["changed", "text 1", "text 2"]
