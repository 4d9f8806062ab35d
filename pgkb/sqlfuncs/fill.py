"""The fast path for whole tables: fill a table's NULL embeddings from its text column, in batches.

Each batch is one transaction: claim up to `batch_size` rows whose vector is NULL with
`FOR NO KEY UPDATE SKIP LOCKED`, embed their texts with ONE model call in this process, write the
vectors back in one statement, commit. So:
- a killed worker loses only its open batch: PostgreSQL releases its row locks when the connection
  dies, the rows are still NULL, and the next run (or another worker) takes them;
- a row is written once: a row is claimable only while NULL and unlocked;
- several workers share a table without coordination: each skips the others' locked rows.

The locks are held during the model call (one batch, ~0.1-1 s with a local model). That is the price of
needing no schema change to the user's table (no claim column, no lease to expire) and of exactly-once
writes after a crash; NO KEY UPDATE locks block neither readers nor inserts of referencing rows, and
small batches keep the window short. For tables that applications update constantly, use the
vectorizer, whose leases hold no lock during model calls.

Claims walk the heap in ctid order (a TID range scan) from where the previous batch ended, so filled
rows are not rescanned on every batch; a final pass from the start picks up rows another worker
released by dying.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql

from pgkb.errors import NotFoundError, ValidationError
from pgkb.sqlfuncs.install import extension_schema

log = logging.getLogger(__name__)

Embed = Callable[[Sequence[str]], np.ndarray]


@dataclass
class FillStats:
    rows: int = 0
    batches: int = 0
    seconds: float = 0.0
    model_seconds: float = 0.0

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def table_identifier(table: str) -> sql.Identifier:
    """`name` or `schema.name` (unquoted parts; use a tuple-free dotted form) → a quoted identifier."""
    parts = [p for p in table.split(".")]
    if not 1 <= len(parts) <= 2 or not all(parts):
        raise ValidationError(f"invalid table name {table!r}: expected name or schema.name")
    return sql.Identifier(*parts)


def vector_dimensions(conn: psycopg.Connection, table: str, column: str) -> int | None:
    """The n of a vector(n) column (None when declared without dimensions)."""
    row = conn.execute(
        "SELECT format_type(a.atttypid, a.atttypmod), a.atttypmod FROM pg_attribute a "
        "WHERE a.attrelid = %s::regclass AND a.attname = %s AND a.attnum > 0 AND NOT a.attisdropped",
        (table_identifier(table).as_string(conn), column)).fetchone()
    if row is None:
        raise NotFoundError(f"column {column!r} does not exist in table {table}")
    type_name, typmod = row
    if not type_name.startswith("vector") and "vector" not in type_name:
        raise ValidationError(f"column {column!r} of {table} is {type_name}, not a vector column")
    return typmod if typmod and typmod > 0 else None


def default_embed(model_id: str) -> Embed:
    from pgkb.embeddings.registry import get_model

    model = get_model(model_id)
    return lambda texts: model.embed_documents(list(texts))


def fill_embeddings(
    database_url: str,
    table: str,
    text_column: str,
    vector_column: str,
    model_id: str = "sentence-transformers.all-minilm-l6-v2",
    batch_size: int = 128,
    *,
    embed: Embed | None = None,
    max_batches: int | None = None,
) -> FillStats:
    """Embed every row of `table` whose `vector_column` is NULL (and text is not). Safe to kill and
    re-run, and to run from several processes at once."""
    if batch_size < 1:
        raise ValidationError("batch_size must be at least 1")
    stats = FillStats()
    start = time.perf_counter()
    with psycopg.connect(database_url) as conn:
        register_vector(conn)
        dims = vector_dimensions(conn, table, vector_column)
        conn.commit()
        if embed is None:
            from pgkb.embeddings.registry import get_spec

            spec = get_spec(model_id)
            if dims is not None and dims not in spec.dimension_choices:
                raise ValidationError(f"{table}.{vector_column} holds vector({dims}); model {spec.id} "
                                      f"makes {spec.dimensions} dimensions")
            embed = default_embed(model_id)
        vschema = extension_schema(conn, "vector")
        conn.commit()
        tbl, txt, vec = table_identifier(table), sql.Identifier(text_column), sql.Identifier(vector_column)
        claim = sql.SQL(
            "SELECT ctid::text, {txt} FROM {tbl} WHERE ctid > %s::tid AND {vec} IS NULL AND {txt} IS NOT NULL "
            "LIMIT %s FOR NO KEY UPDATE SKIP LOCKED").format(tbl=tbl, txt=txt, vec=vec)
        write = sql.SQL(
            "UPDATE {tbl} AS t SET {vec} = u.e FROM unnest(%s::tid[], %s::{vs}.vector[]) AS u(c, e) "
            "WHERE t.ctid = u.c").format(tbl=tbl, vec=vec, vs=sql.Identifier(vschema or "public"))
        cursor = "(0,0)"
        while max_batches is None or stats.batches < max_batches:
            rows = conn.execute(claim, (cursor, batch_size)).fetchall()
            if not rows:
                conn.commit()
                if cursor == "(0,0)":
                    break  # a pass from the start found nothing unclaimed: done
                cursor = "(0,0)"
                continue
            ctids = [r[0] for r in rows]
            t0 = time.perf_counter()
            vectors = embed([r[1] for r in rows])
            stats.model_seconds += time.perf_counter() - t0
            if len(vectors) != len(rows):
                raise ValidationError(f"the model returned {len(vectors)} vectors for {len(rows)} texts")
            conn.execute(write, (ctids, list(np.asarray(vectors, dtype=np.float32))))
            conn.commit()
            stats.rows += len(rows)
            stats.batches += 1
            cursor = max(ctids, key=_tid_key)
            log.debug("filled %d rows of %s (batch %d)", len(rows), table, stats.batches)
    stats.seconds = time.perf_counter() - start
    return stats


def _tid_key(tid: str) -> tuple[int, int]:
    block, offset = tid.strip("()").split(",")
    return int(block), int(offset)
