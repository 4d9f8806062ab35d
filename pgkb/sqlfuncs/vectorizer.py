"""Vectorizers (keep a table's embeddings in sync): registration and the worker.

Registration (`register`) runs `aws_bedrock.create_vectorizer` (pgkb/sql/aws_bedrock/vectorizer.sql):
a queue table, and triggers that queue a row on INSERT and on an UPDATE that changes the text.
The worker claims due items with SKIP LOCKED and a lease (committed at once, so no row lock is held
while the model runs), embeds the batch in one call, then writes each vector only if the row's text is
still the one embedded, and deletes the item. Failures stay queued with reason, attempts and a next
retry time (exponential backoff): nothing is lost.
"""

from __future__ import annotations

import logging
import select
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg.types.json import Jsonb

from pgkb.errors import NotFoundError, ValidationError
from pgkb.sqlfuncs.fill import table_identifier

log = logging.getLogger(__name__)

#: (model_id, texts) -> (n, d) float32 vectors.
EmbedFn = Callable[[str, Sequence[str]], np.ndarray]
CHANNEL = "aws_bedrock_vectorizer"


def _default_embed(model_id: str, texts: Sequence[str]) -> np.ndarray:
    from pgkb.embeddings.registry import get_model

    return get_model(model_id).embed_documents(list(texts))


def register(database_url: str, table: str, text_column: str, vector_column: str, model_id: str,
             backfill: bool = True) -> int:
    """Create or re-configure the vectorizer of `table.vector_column`; returns its id."""
    with psycopg.connect(database_url) as conn:
        if conn.execute("SELECT to_regclass('aws_bedrock.vectorizer')").fetchone() == (None,):
            raise NotFoundError("aws_bedrock is not installed in this database: run pgkb sql install first")
        row = conn.execute(
            "SELECT aws_bedrock.create_vectorizer(%s::regclass, %s, %s, %s, %s)",
            (table_identifier(table).as_string(conn), text_column, vector_column, model_id, backfill),
        ).fetchone()
        assert row is not None
        return int(row[0])


def unregister(database_url: str, vectorizer_id: int) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute("SELECT aws_bedrock.drop_vectorizer(%s)", (vectorizer_id,))


def status(database_url: str) -> list[dict[str, Any]]:
    with psycopg.connect(database_url) as conn:
        cur = conn.execute("SELECT * FROM aws_bedrock.vectorizer_status()")
        cols = [d.name for d in cur.description or []]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


@dataclass
class WorkerStats:
    embedded: int = 0
    failed: int = 0
    batches: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Item:
    key: dict[str, Any]
    queued_at: datetime
    attempts: int
    text: str | None
    exists: bool


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:500]


class Worker:
    def __init__(self, database_url: str, *, batch_size: int = 64, lease_s: float = 300.0,
                 base_delay_s: float = 10.0, max_delay_s: float = 3600.0, embed: EmbedFn | None = None) -> None:
        if batch_size < 1:
            raise ValidationError("batch_size must be at least 1")
        if base_delay_s <= 0 or max_delay_s < base_delay_s:
            raise ValidationError("retry delays must satisfy 0 < base_delay_s <= max_delay_s")
        self.database_url = database_url
        self.batch_size = batch_size
        self.lease_s = lease_s
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self.embed = embed or _default_embed

    def _vectorizers(self, conn: psycopg.Connection, ids: Sequence[int] | None) -> list[tuple[int, str]]:
        rows = conn.execute("SELECT id, model_id FROM aws_bedrock.vectorizer ORDER BY id").fetchall()
        conn.commit()
        return [(r[0], r[1]) for r in rows if ids is None or r[0] in ids]

    def run_once(self, conn: psycopg.Connection, vectorizer_id: int, model_id: str, stats: WorkerStats) -> int:
        """Claim and process one batch; returns how many items were claimed."""
        rows = conn.execute("SELECT * FROM aws_bedrock.vectorizer_claim(%s, %s, make_interval(secs => %s))",
                            (vectorizer_id, self.batch_size, self.lease_s)).fetchall()
        conn.commit()  # the lease is taken: no lock is held while the model runs
        if not rows:
            return 0
        items = [_Item(*r) for r in rows]
        done: list[tuple[_Item, np.ndarray | None]] = []
        failed: list[tuple[_Item, str]] = []
        gone = [it for it in items if not it.exists]
        todo = [it for it in items if it.exists and it.text is not None]
        done += [(it, None) for it in items if it.exists and it.text is None]
        if todo:
            try:
                vecs = self.embed(model_id, [it.text or "" for it in todo])
                done += list(zip(todo, vecs, strict=True))
            except Exception as exc:  # the batch failed: find which items fail on their own
                log.info("vectorizer %d: batch of %d failed (%s); retrying items one by one",
                         vectorizer_id, len(todo), _one_line(exc))
                for it in todo:
                    try:
                        done.append((it, self.embed(model_id, [it.text or ""])[0]))
                    except Exception as one_exc:
                        failed.append((it, _one_line(one_exc)))
        finished = done + [(it, None) for it in gone]
        if finished:
            try:
                conn.execute(
                    "SELECT aws_bedrock.vectorizer_complete(%s, %s::jsonb[], %s::timestamptz[], %s::text[], %s)",
                    (vectorizer_id, [Jsonb(it.key) for it, _ in finished],
                     [it.queued_at for it, _ in finished], [it.text for it, _ in finished],
                     [None if v is None else np.asarray(v, dtype=np.float32) for _, v in finished]))
                conn.commit()
                stats.embedded += len(done)
            except psycopg.Error as exc:  # e.g. wrong dimensions for the column: record it on each item
                conn.rollback()
                failed += [(it, _one_line(exc)) for it, _ in finished]
        if failed:
            conn.execute(
                "SELECT aws_bedrock.vectorizer_fail(%s, %s::jsonb[], %s::timestamptz[], %s::text[], "
                "make_interval(secs => %s), make_interval(secs => %s))",
                (vectorizer_id, [Jsonb(it.key) for it, _ in failed],
                 [it.queued_at for it, _ in failed], [msg for _, msg in failed],
                 self.base_delay_s, self.max_delay_s))
            conn.commit()
            stats.failed += len(failed)
            stats.errors += [msg for _, msg in failed]
            log.warning("vectorizer %d: %d item(s) failed, will retry: %s", vectorizer_id, len(failed), failed[0][1])
        stats.batches += 1
        return len(items)

    def run(self, vectorizer_ids: Sequence[int] | None = None, *, once: bool = False, poll_s: float = 5.0,
            stop: threading.Event | None = None) -> WorkerStats:
        """Process queues until they are empty (`once`) or until `stop` is set; wakes on NOTIFY."""
        stats = WorkerStats()
        stop = stop or threading.Event()
        with psycopg.connect(self.database_url) as conn, \
                psycopg.connect(self.database_url, autocommit=True) as listener:
            register_vector(conn)
            listener.execute(f"LISTEN {CHANNEL}")
            while not stop.is_set():
                for vid, model_id in self._vectorizers(conn, vectorizer_ids):
                    # Failed items are due again only after their backoff, so this loop ends.
                    while not stop.is_set() and self.run_once(conn, vid, model_id, stats) > 0:
                        pass
                if once:
                    break
                # Sleep until a trigger notifies, the poll interval passes (retries become due) or stop.
                deadline = time.monotonic() + poll_s
                while not stop.is_set() and time.monotonic() < deadline:
                    ready, _, _ = select.select([listener.pgconn.socket], [], [],
                                                min(0.5, max(0.0, deadline - time.monotonic())))
                    if ready:
                        break
                for _ in listener.notifies(timeout=0):
                    pass
        return stats


def run_worker(database_url: str, vectorizer_ids: Sequence[int] | None = None, *, once: bool = False,
               batch_size: int = 64, poll_s: float = 5.0, lease_s: float = 300.0, base_delay_s: float = 10.0,
               max_delay_s: float = 3600.0, embed: EmbedFn | None = None,
               stop: threading.Event | None = None) -> WorkerStats:
    """Run a vectorizer worker. `once`: process everything due now and return (cron, tests)."""
    worker = Worker(database_url, batch_size=batch_size, lease_s=lease_s, base_delay_s=base_delay_s,
                    max_delay_s=max_delay_s, embed=embed)
    t0 = time.perf_counter()
    stats = worker.run(vectorizer_ids, once=once, poll_s=poll_s, stop=stop)
    log.info("vectorizer worker: %d embedded, %d failed in %.1fs", stats.embedded, stats.failed,
             time.perf_counter() - t0)
    return stats
