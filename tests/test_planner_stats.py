"""pgkb.store.planner_stats: a cached search plan made while the table was small stays (joining the
table by sequential scans) until the table is analyzed; `refresh` analyzes a table that outgrew its
statistics, and only then."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector
from psycopg import sql

from pgkb.retrieval.search import search
from pgkb.store import planner_stats
from pgkb.store.vector_table import ChunkRow, FieldMapping, TableRef, create_table, write_rows

DIM = 8
M = FieldMapping()


@pytest.fixture
def table(session_db_url: str) -> Iterator[tuple[psycopg.Connection, TableRef]]:
    with psycopg.connect(session_db_url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        register_vector(conn)
        schema = "plst_" + uuid.uuid4().hex[:8]
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        t = TableRef(schema, "chunks")
        create_table(conn, t, M, DIM)
        # Autovacuum must not analyze it behind the test's back.
        conn.execute(sql.SQL("ALTER TABLE {} SET (autovacuum_enabled = off)").format(t.ident))
        yield conn, t
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def write(conn: psycopg.Connection, t: TableRef, n: int, rng: np.random.Generator) -> None:
    rows = [ChunkRow(uuid.uuid4(), "words " * 40, rng.normal(size=DIM).astype(np.float32),
                     {"x-amz-bedrock-kb-source-uri": "s3://b/x"}, {}) for _ in range(n)]
    with conn.transaction():
        write_rows(conn, t, M, rows)


def test_a_plan_made_for_a_small_table_stays_until_refresh_analyzes_the_grown_table(
    session_db_url: str, table: tuple[psycopg.Connection, TableRef]
) -> None:
    writer, t = table
    rng = np.random.default_rng(5)
    assert not planner_stats.stale(writer, t)  # empty: nothing to analyze
    write(writer, t, 20, rng)  # (also makes the writer's temporary schema, whose creation resets plans)
    assert planner_stats.stale(writer, t)  # rows, no column statistics
    assert planner_stats.refresh(writer, t)
    assert not planner_stats.stale(writer, t) and not planner_stats.refresh(writer, t)

    with psycopg.connect(session_db_url, autocommit=True) as reader:
        register_vector(reader)
        reader.execute("SET plan_cache_mode = force_generic_plan")
        q = np.ones(DIM, dtype=np.float32)
        for _ in range(6):  # psycopg prepares a statement at its fifth run
            search(reader, t, M, query_embedding=q, query_text=None, k=5)
        (name,), = reader.execute("SELECT name FROM pg_prepared_statements WHERE statement LIKE 'WITH ranked%'").fetchall()
        vec = "[" + ",".join("1" for _ in range(DIM)) + "]"

        def joined_by_seq_scan() -> set[str]:
            """Aliases of the table the cached plan joins the ranked hits to by a sequential scan."""
            lines = [r[0] for r in reader.execute(f"EXPLAIN EXECUTE \"{name}\"('{vec}')").fetchall()]
            return {a for ln in lines for a in ("c", "r") if f"Seq Scan on {t.name} {a} " in ln}

        assert joined_by_seq_scan() == {"c", "r"}  # made for 20 rows
        write(writer, t, 5000, rng)
        assert joined_by_seq_scan() == {"c", "r"}  # 5,020 rows now, the same plan
        assert planner_stats.stale(writer, t)
        assert planner_stats.refresh(writer, t)
        assert joined_by_seq_scan() == set()  # replanned at its next use: the hits looked up by key
        assert len(search(reader, t, M, query_embedding=q, query_text=None, k=5)) == 5

    write(writer, t, 50, rng)  # 1 % more: below autovacuum's share, not analyzed again
    assert not planner_stats.stale(writer, t)
