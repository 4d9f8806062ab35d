"""Connection pool, retries while the database is unreachable, and catalog migrations."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources

import psycopg
from pgvector.psycopg import register_vector
from psycopg_pool import ConnectionPool

from pgkb.config import Settings
from pgkb.errors import DatabaseUnavailableError

log = logging.getLogger(__name__)

_PASSWORD_IN_URL = re.compile(r"(://[^:/@]*:)([^@]*)(@)")
_PASSWORD_KV = re.compile(r"(password\s*=\s*)(\S+)", re.IGNORECASE)

# Key for the advisory lock that serialises migrations across processes.
_MIGRATION_LOCK = 0x70676B62  # "pgkb"


def redact_url(text: str) -> str:
    """Remove passwords from a connection URL or any text that may contain one."""
    return _PASSWORD_KV.sub(r"\1***", _PASSWORD_IN_URL.sub(r"\1***\3", text))


def _one_line(exc: BaseException) -> str:
    return redact_url(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)


def wait_for_database(url: str, timeout_s: float) -> None:
    """Retry connecting with exponential backoff until `timeout_s` has passed (a cluster resuming, a restart)."""
    deadline = time.monotonic() + timeout_s
    delay = 0.1
    while True:
        try:
            with psycopg.connect(url, connect_timeout=max(1, int(min(10, timeout_s)))) as conn:
                conn.execute("SELECT 1")
                return
        except psycopg.OperationalError as exc:
            if time.monotonic() + delay > deadline:
                raise DatabaseUnavailableError(f"cannot reach the database: {_one_line(exc)}") from None
            log.info("database not reachable yet (%s); retrying in %.1fs", _one_line(exc), delay)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def migration_files() -> list[tuple[int, str, str]]:
    """(version, name, sql) for every file in pgkb/sql/migrations, in order."""
    out = []
    for entry in resources.files("pgkb.sql").joinpath("migrations").iterdir():
        m = re.match(r"(\d+)_(.+)\.sql$", entry.name)
        if m:
            out.append((int(m.group(1)), m.group(2), entry.read_text()))
    return sorted(out)


def migrate(conn: psycopg.Connection) -> list[int]:
    """Apply pending migrations; returns the versions applied. Safe to run from several processes."""
    files = migration_files()
    latest = files[-1][0]
    # Fast path that needs no privileges beyond reading: everything is applied already.
    try:
        row = conn.execute("SELECT max(version) FROM pgkb.schema_migrations").fetchone()
        conn.commit()
        if row and row[0] is not None and row[0] >= latest:
            return []
    except psycopg.errors.UndefinedTable:
        conn.rollback()
    except psycopg.errors.InvalidSchemaName:
        conn.rollback()
    applied: list[int] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute("CREATE SCHEMA IF NOT EXISTS pgkb")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS pgkb.schema_migrations ("
            " version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r[0] for r in conn.execute("SELECT version FROM pgkb.schema_migrations")}
        for version, name, sql in files:
            if version in done:
                continue
            conn.execute(sql)
            conn.execute("INSERT INTO pgkb.schema_migrations (version, name) VALUES (%s, %s)", (version, name))
            applied.append(version)
    return applied


class Database:
    """A pool of connections with pgvector's types registered."""

    def __init__(self, url: str, *, max_size: int = 10, timeout_s: float = 30.0) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.pool = ConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            open=False,
            configure=self._configure,
            check=ConnectionPool.check_connection,  # a restarted server leaves dead connections behind
            reconnect_timeout=timeout_s,
            timeout=timeout_s,
            name="pgkb",
        )

    @staticmethod
    def _configure(conn: psycopg.Connection) -> None:
        register_vector(conn)
        conn.commit()

    def open(self) -> Database:
        wait_for_database(self.url, self.timeout_s)
        self.pool.open(wait=True, timeout=self.timeout_s)
        return self

    def close(self) -> None:
        self.pool.close()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """A pooled connection; the block's work is committed on success, rolled back on error."""
        try:
            with self.pool.connection() as conn:
                yield conn
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailableError(f"database error: {_one_line(exc)}") from None

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def resolve_url(settings: Settings) -> str:
    if settings.database_url:
        return settings.database_url
    from pgkb.db.embedded import ensure_embedded

    return ensure_embedded(settings.data_dir)


def open_database(settings: Settings, *, run_migrations: bool = True) -> Database:
    """Resolve the URL (embedded when none is set), wait for it, migrate the catalog, open the pool."""
    url = resolve_url(settings)
    wait_for_database(url, settings.connect_timeout_s)
    if run_migrations:
        with psycopg.connect(url, autocommit=False) as conn:
            migrate(conn)
    return Database(url, max_size=settings.pool_max_size, timeout_s=settings.connect_timeout_s).open()
