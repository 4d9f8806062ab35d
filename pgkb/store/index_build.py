"""Indexes deferred during an initial load, and their bulk build.

pgvector builds an HNSW index from rows already in the table many times faster than it grows one
row by row (and a GIN index is likewise cheaper built once than maintained batch by batch), so a
knowledge base's first sync into an empty table drops its HNSW and GIN indexes and builds them
when the rows are in; its BM25 statistics are suspended and rebuilt the same way (`BM25_RECORD`). Crash safety across two databases (the catalog and the vector
table may differ) comes from the order of the steps:
  defer: record the definitions in the catalog (commit) → drop the indexes (commit);
  build: CREATE INDEX IF NOT EXISTS from the record (commit) → forget the record (commit).
A process killed between any two steps leaves a record whose index is missing or already built;
the next job builds it (or finds it built) and forgets it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import psycopg
from psycopg import sql

from pgkb.config import current
from pgkb.store import ddl
from pgkb.store.vector_table import TableRef


def max_build_memory() -> str:
    """Upper bound of maintenance_work_mem for a build (pgvector wants the whole graph in memory:
    about 2 GB for 1M x 384 with m = 16): PGKB_INDEX_BUILD_MEMORY, e.g. "4GB"."""
    return current().index_build_memory


_MEMORY = re.compile(r"^\s*(\d+)\s*(kB|MB|GB|TB)\s*$")


def build_workers() -> int:
    """Parallel maintenance workers for a build (besides the leader): PGKB_INDEX_BUILD_WORKERS, else
    one less than this machine's cores, at most 7 (pgvector's own example)."""
    workers = current().index_build_workers
    if workers is not None:
        return workers
    return max(0, min(7, (os.cpu_count() or 1) - 1))


def _kb(text: str) -> int:
    m = _MEMORY.match(text)
    if not m:
        raise ValueError(f"PGKB_INDEX_BUILD_MEMORY {text!r}: expected a size such as 512MB or 2GB")
    return int(m.group(1)) * {"kB": 1, "MB": 1024, "GB": 1024**2, "TB": 1024**3}[m.group(2)]


def build_memory_kb(rows: int, dimensions: int) -> int:
    """maintenance_work_mem for a graph of `rows` vectors: the vectors plus ~2 x m neighbour links
    each, with a margin; at least 64 MB, at most max_build_memory()."""
    need = int(rows * (4 * dimensions + 400) * 1.3) // 1024
    return max(64 * 1024, min(need, _kb(max_build_memory())))


def hnsw_indexes(conn: psycopg.Connection, table: TableRef) -> list[tuple[str, str]]:
    """(name, definition) of the table's HNSW indexes."""
    return deferrable_indexes(conn, table, ("hnsw",))


def deferrable_indexes(conn: psycopg.Connection, table: TableRef, methods: Sequence[str]) -> list[tuple[str, str]]:
    """(name, definition) of the table's indexes of these access methods (e.g. hnsw, gin) that an
    initial load may set aside: never a constraint's index (primary key, unique), which the upsert needs."""
    return [
        (name, definition)
        for name, definition in conn.execute(
            "SELECT ic.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i"
            " JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_am am ON am.oid = ic.relam"
            " JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relname = %s AND am.amname = ANY(%s)"
            " AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)"
            " ORDER BY am.amname DESC, ic.relname",  # hnsw before gin: the graph is what queries miss most
            (table.schema, table.name, list(methods)),
        )
    ]


def is_empty(conn: psycopg.Connection, table: TableRef) -> bool:
    row = conn.execute(sql.SQL("SELECT NOT EXISTS (SELECT 1 FROM {})").format(table.ident)).fetchone()
    return bool(row and row[0])


def lock_table_builds(conn: psycopg.Connection, table: TableRef, part: str = "all") -> None:
    """Keep deferrals and builds of one table apart (transaction-scoped advisory locks, one for the BM25
    statistics and one for the indexes): a deferral takes both (`all`, always in this order); an
    initial load's end takes `statistics` and `indexes` in two transactions of its own, so the two
    build side by side, while two jobs finishing loads of one table still build each part one at a time."""
    parts = ("statistics", "indexes") if part == "all" else (part,)
    for name in parts:
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"pgkb.table-build:{name}:{table}",))


# ---------------------------------------------------------------------------- catalog records

#: The record of BM25 statistics owed a rebuild (suspended for an initial load). Not an index
#: definition: `build` refuses it; the writer rebuilds the statistics instead. A name no
#: pg_get_indexdef-recorded index of an initial load can carry (it has spaces).
BM25_RECORD = ("pgkb bm25 statistics", "BM25 statistics, rebuilt from the table's rows")


def record(conn: psycopg.Connection, kb_id: str, indexes: Sequence[tuple[str, str]]) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO pgkb.deferred_indexes (kb_id, index_name, definition) VALUES (%s, %s, %s)"
            " ON CONFLICT (kb_id, index_name) DO NOTHING",
            [(kb_id, n, d) for n, d in indexes],
        )


def deferred(conn: psycopg.Connection, kb_id: str) -> list[tuple[str, str]]:
    return [
        (n, d)
        for n, d in conn.execute(
            "SELECT index_name, definition FROM pgkb.deferred_indexes WHERE kb_id = %s ORDER BY index_name", (kb_id,)
        )
    ]


def owed(conn: psycopg.Connection, kb_id: str) -> bool:
    """Whether an initial load of the knowledge base is under way (or was interrupted): anything recorded."""
    row = conn.execute("SELECT EXISTS (SELECT 1 FROM pgkb.deferred_indexes WHERE kb_id = %s)", (kb_id,)).fetchone()
    return bool(row and row[0])


def forget(conn: psycopg.Connection, kb_id: str, names: Sequence[str]) -> None:
    conn.execute("DELETE FROM pgkb.deferred_indexes WHERE kb_id = %s AND index_name = ANY(%s)", (kb_id, list(names)))


# ---------------------------------------------------------------------------- the vector table


def drop(conn: psycopg.Connection, table: TableRef, names: Sequence[str]) -> None:
    for name in names:
        conn.execute(ddl.drop_index(table.schema, name, if_exists=True))


def build(conn: psycopg.Connection, definition: str, *, memory_kb: int, workers: int) -> None:
    """Run a recorded CREATE INDEX (made idempotent) with the build's memory and workers, in the
    caller's transaction. The definition is PostgreSQL's own pg_get_indexdef text, never user input."""
    stmt = ddl.recreate_index(definition)
    conn.execute("SELECT set_config('maintenance_work_mem', %s, true),"
                 " set_config('max_parallel_maintenance_workers', %s, true)",
                 (f"{int(memory_kb)}kB", str(int(workers))))
    conn.execute(stmt)
