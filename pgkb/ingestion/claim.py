"""A running ingestion job's claim on its data source: one job per data source at a time.

The claim is a session-level advisory lock held on a dedicated connection for the whole job.
PostgreSQL releases it when the holder dies, however it dies, so a job whose lock is free while its
row says it runs was interrupted. A server restart (or a terminated backend) releases it too while
the job's process lives on: the job checks its claim before each batch it writes, takes the lock back
on a new connection if nobody else has it and its row still says it runs, and otherwise stops
without touching the job's row again (whoever took over has marked it FAILED).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import psycopg

from pgkb.errors import ConflictError
from pgkb.store.catalog import ACTIVE_JOB_STATUSES

log = logging.getLogger(__name__)

# How long a job waits for its database to come back (a restart) before it gives its claim up.
RECONNECT_S = 30.0


class ClaimLost(Exception):
    """This process no longer owns the job: another took the data source over, or the row ended."""


def _key(ds_id: str) -> str:
    return "pgkb-ingestion:" + ds_id


def _try_lock(conn: psycopg.Connection, ds_id: str) -> bool:
    row = conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (_key(ds_id),)).fetchone()
    return bool(row and row[0])


def lock_is_free(conn: psycopg.Connection, ds_id: str) -> bool:
    """Inside a transaction: whether no process holds the data source's claim (held until commit)."""
    row = conn.execute("SELECT pg_try_advisory_xact_lock(hashtext(%s))", (_key(ds_id),)).fetchone()
    return bool(row and row[0])


class JobClaim:
    """Held by the process running a data source's job; `check()` before each write."""

    def __init__(self, url: Callable[[], str], ds_id: str, conn: psycopg.Connection) -> None:
        self._url = url
        self.ds_id = ds_id
        self.job_id: str | None = None
        self._conn: psycopg.Connection | None = conn
        self._mutex = threading.Lock()

    @classmethod
    def take(cls, url: Callable[[], str], ds_id: str) -> JobClaim:
        """The data source's claim, or ConflictError when a job of another process holds it."""
        conn = psycopg.connect(url(), autocommit=True)
        if not _try_lock(conn, ds_id):
            conn.close()
            raise ConflictError(
                f"an ingestion job is already running for data source {ds_id}; wait for it to finish or stop it"
            )
        return cls(url, ds_id, conn)

    @property
    def connection(self) -> psycopg.Connection:
        assert self._conn is not None
        return self._conn

    def check(self) -> None:
        """Raise ClaimLost unless this process still holds the claim (taken back after a reconnect)."""
        with self._mutex:
            if self._conn is not None:
                try:
                    self._conn.execute("SELECT 1")
                    return
                except psycopg.Error:
                    self._conn.close()
                    self._conn = None
            self._retake()

    def _retake(self) -> None:
        deadline = time.monotonic() + RECONNECT_S
        delay = 0.2
        while True:
            try:
                conn = psycopg.connect(self._url(), autocommit=True, connect_timeout=5)
                break
            except psycopg.OperationalError as exc:
                if time.monotonic() + delay > deadline:
                    raise ClaimLost(f"the database stayed unreachable: {str(exc).splitlines()[0]}") from None
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
        if not _try_lock(conn, self.ds_id):
            conn.close()
            raise ClaimLost(f"another process took over data source {self.ds_id}'s ingestion after a reconnect")
        row = conn.execute("SELECT status FROM pgkb.ingestion_jobs WHERE id = %s", (self.job_id,)).fetchone()
        if not row or row[0] not in ACTIVE_JOB_STATUSES:
            conn.close()  # releases the lock
            raise ClaimLost(f"ingestion job {self.job_id} was ended by another process ({row[0] if row else 'gone'})")
        log.warning("ingestion job %s: the database connection holding its claim was lost; claim taken back",
                    self.job_id)
        self._conn = conn

    def close(self) -> None:
        with self._mutex:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
