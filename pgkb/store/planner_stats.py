"""Planner statistics of a vector table, refreshed after writes that outgrew them.

Each pooled connection keeps the plans of its search statements once they are prepared; PostgreSQL
replans a cached plan only when the table's statistics or definition change. A plan made while the
table was small joins the table by sequential scans, and stays so until the statistics move
(`python bench/bench_stale_plans.py`: a plan made for 20 rows, 30,000 rows later, answered a SEMANTIC
search in 24.4 ms p50 against 3.0 ms for a new connection, 8.2x, and 0.99x after `refresh`; the gap
grows with the table). Autovacuum's ANALYZE would fix it within its
naptime (a minute by default, longer when its workers are busy with a large load's postings, never
when it is turned off), and filtered searches choose between the HNSW and GIN indexes from the
same statistics. So a job that grew the table by autovacuum's own share analyzes it at its end.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from pgkb.store.vector_table import TableRef

#: ANALYZE when the table has this share more pages than when the planner last counted them (as
#: autovacuum's default analyze scale factor), plus `SLACK_PAGES`, so that small tables growing by a
#: row at a time are not analyzed at every write.
GROWTH = 0.1
SLACK_PAGES = 8


def stale(conn: psycopg.Connection, table: TableRef) -> bool:
    """True when the table has rows and either no column statistics or `GROWTH` more pages than
    pg_class last recorded (relpages: set by ANALYZE, VACUUM and CREATE INDEX)."""
    row = conn.execute(
        "SELECT c.relpages, pg_relation_size(c.oid) / current_setting('block_size')::int,"
        " EXISTS (SELECT 1 FROM pg_stats s WHERE s.schemaname = n.nspname AND s.tablename = c.relname)"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
        (table.schema, table.name),
    ).fetchone()
    if row is None:
        return False
    recorded, pages, analyzed = int(row[0]), int(row[1]), bool(row[2])
    if pages == 0:
        return False
    return not analyzed or pages > recorded * (1 + GROWTH) + SLACK_PAGES


def refresh(conn: psycopg.Connection, table: TableRef) -> bool:
    """ANALYZE the table if `stale`; returns whether it ran. Its cached plans are replanned at their
    next use, on every connection."""
    if not stale(conn, table):
        return False
    conn.execute(sql.SQL("ANALYZE {}").format(table.ident))
    return True
