"""Connection pool, retries while the database is unreachable, and catalog migrations."""

from __future__ import annotations

import logging
import re
import select
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import resources
from typing import Any

import psycopg
from pgvector.psycopg import register_vector
from psycopg_pool import ConnectionPool

from pgkb.config import Settings
from pgkb.errors import AccessDeniedError, DatabaseUnavailableError
from pgkb.redact import redact_url
from pgkb.store import ddl

log = logging.getLogger(__name__)

# Key for the advisory lock that serialises migrations across processes.
_MIGRATION_LOCK = 0x70676B62  # "pgkb"


def _one_line(exc: BaseException) -> str:
    return redact_url(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)


class DatabaseAuthError(DatabaseUnavailableError):
    """The database rejected the credentials (after re-reading a rotated secret once)."""


# SQLSTATE 28P01 (invalid_password) / 28000: libpq reports them on connect as text only.
_AUTH_FAILED = re.compile(r"password authentication failed|authentication failed for user|28P01", re.IGNORECASE)

# Re-reads the credentials (a rotated secret) and returns the new connection string.
Refresh = Callable[[], str]
# Starts the database again when it is down (the embedded server pgkb runs) and returns its URL.
Revive = Callable[[], str]
# At most one revival attempt per this many seconds per pool (the pool retries with backoff anyway).
_REVIVE_EVERY_S = 1.0


# Failures that waiting will not fix: TLS configuration, a missing database or role, pg_hba refusals.
_PERMANENT = re.compile(
    r"does not support SSL|SSL was required|SSL is not supported|certificate|sslrootcert"
    r"|database \"[^\"]*\" does not exist|role \"[^\"]*\" does not exist"
    r"|no pg_hba\.conf entry|invalid (?:sslmode|connection option)",
    re.IGNORECASE,
)


def is_permanent_failure(exc: BaseException) -> bool:
    return bool(_PERMANENT.search(str(exc)))


def is_auth_failure(exc: BaseException) -> bool:
    return getattr(exc, "sqlstate", None) in ("28P01", "28000") or bool(_AUTH_FAILED.search(str(exc)))


def wait_for_database(url: str, timeout_s: float, *, refresh: Refresh | None = None) -> str:
    """Retry connecting with exponential backoff until `timeout_s` has passed (a cluster resuming, a restart).

    A rejected password is not transient: the credentials are re-read once (`refresh`), then it fails
    at once. Returns the URL that worked.
    """
    deadline = time.monotonic() + timeout_s
    delay = 0.1
    refreshed = refresh is None
    while True:
        try:
            with psycopg.connect(url, connect_timeout=max(1, int(min(10, timeout_s)))) as conn:
                conn.execute("SELECT 1")
                return url
        except psycopg.OperationalError as exc:
            if is_auth_failure(exc):
                if not refreshed and refresh is not None:
                    refreshed = True
                    log.info("database rejected the password; re-reading the secret once")
                    url = refresh()
                    continue
                raise DatabaseAuthError(f"the database rejected the credentials: {_one_line(exc)}") from None
            if is_permanent_failure(exc) or time.monotonic() + delay > deadline:
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
    # Fast path that needs no privileges beyond reading: everything is applied already.
    try:
        # Every file's version must be there, not just one as high as the newest: a file numbered
        # below an applied one (added later) must still run.
        done = {r[0] for r in conn.execute("SELECT version FROM pgkb.schema_migrations")}
        conn.commit()
        if {v for v, _, _ in files} <= done:
            return []
    except psycopg.errors.UndefinedTable:
        conn.rollback()
    except psycopg.errors.InvalidSchemaName:
        conn.rollback()
    applied: list[int] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        for stmt in ddl.migrations_ledger():
            conn.execute(stmt)
        done = {r[0] for r in conn.execute("SELECT version FROM pgkb.schema_migrations")}
        for version, name, sql in files:
            if version in done:
                continue
            conn.execute(sql)
            conn.execute("INSERT INTO pgkb.schema_migrations (version, name) VALUES (%s, %s)", (version, name))
            applied.append(version)
    return applied


def _check_connection(conn: psycopg.Connection) -> None:
    """Pool checkout check without a round trip when none is needed.

    A server that restarts (or kills the backend) sends a FATAL and closes the socket, so an idle
    connection with something to read is suspect: only then is it verified with a round trip (and
    discarded by the pool if dead). That saves the empty query per checkout on the hot path.
    """
    if conn.closed or conn.broken:
        raise psycopg.OperationalError("connection closed")
    readable, _, _ = select.select([conn.fileno()], [], [], 0)
    if readable:
        ConnectionPool.check_connection(conn)


class Database:
    """A pool of connections with pgvector's types registered.

    `refresh`, when given, re-reads the credentials (a secret): a connection the database refuses
    with 28P01 is retried once with them, so a rotated password is picked up without a restart.
    `revive`, when given (the embedded server), starts the database again when a connection cannot
    reach it, so a killed server comes back without a person.
    """

    def __init__(
        self,
        url: str,
        *,
        max_size: int = 10,
        timeout_s: float = 30.0,
        refresh: Refresh | None = None,
        revive: Revive | None = None,
        alive: Callable[[], bool] | None = None,
        name: str = "pgkb",
    ) -> None:
        self._url = url
        self._refresh = refresh
        self._revive = revive
        self._alive = alive
        self._revived_at = 0.0
        self._url_lock = threading.Lock()
        self.timeout_s = timeout_s
        self.pool = ConnectionPool(
            lambda: self._url,  # read at each connection attempt: it changes when the secret rotates
            min_size=1,
            max_size=max_size,
            open=False,
            configure=self._configure,
            check=self._check,  # a restarted server leaves dead connections behind
            reconnect_timeout=timeout_s,
            timeout=timeout_s,
            name=name,
            connection_class=_recovering_connection_class(self) if refresh or revive else psycopg.Connection,
        )

    @property
    def url(self) -> str:
        """The current connection string (may hold a password: never log it, use redact_url)."""
        return self._url

    def refresh_credentials(self, failed_url: str) -> str:
        """Re-read the credentials after `failed_url` was refused; concurrent callers share one read."""
        with self._url_lock:
            if self._refresh is not None and self._url == failed_url:
                self._url = self._refresh()
            return self._url

    def revive(self, failed_url: str) -> str:
        """Start the database again after `failed_url` could not reach it (at most once a second)."""
        with self._url_lock:
            if self._revive is not None and self._url == failed_url \
                    and time.monotonic() - self._revived_at >= _REVIVE_EVERY_S:
                self._revived_at = time.monotonic()
                try:
                    self._url = self._revive()
                except Exception as exc:  # not up yet: the pool's next attempt tries again
                    log.warning("cannot start the database again yet: %s", _one_line(exc))
            return self._url

    def _check(self, conn: psycopg.Connection) -> None:
        """The pool's checkout check; for the embedded server also whether its postmaster lives: its
        orphaned backends send their FATAL a moment after it dies, and a connection handed out in that
        moment fails its first statement (it reads postmaster.pid and /proc)."""
        _check_connection(conn)
        if self._alive is not None and not self._alive():
            raise psycopg.OperationalError("the embedded PostgreSQL is not running")

    @staticmethod
    def _configure(conn: psycopg.Connection) -> None:
        register_vector(conn)
        conn.commit()

    def open(self) -> Database:
        refresh = (lambda: self.refresh_credentials(self._url)) if self._refresh else None
        self._url = wait_for_database(self._url, self.timeout_s, refresh=refresh)
        self.pool.open(wait=True, timeout=self.timeout_s)
        return self

    def close(self) -> None:
        self.pool.close()
        close_alive = getattr(self._alive, "close", None)  # a PostmasterWatch holds a pidfd
        if close_alive is not None:
            close_alive()

    @contextmanager
    def connection(self, timeout: float | None = None) -> Iterator[psycopg.Connection]:
        """A pooled connection; the block's work is committed on success, rolled back on error.
        `timeout`: seconds to wait for one (default: the pool's), for callers that must stay
        responsive while the database is away (a worker told to stop)."""
        try:
            with self.pool.connection(timeout=timeout) as conn:
                yield conn
        except psycopg.OperationalError as exc:
            if is_auth_failure(exc):
                raise DatabaseAuthError(f"the database rejected the credentials: {_one_line(exc)}") from None
            raise DatabaseUnavailableError(f"database error: {_one_line(exc)}") from None
        except psycopg.errors.InsufficientPrivilege as exc:
            # A least-privilege role asked to do more (e.g. create a table): say so, not a 500.
            raise AccessDeniedError(
                f"the database role may not do this: {_one_line(exc)} (see `pgkb doctor`; DDL belongs to `pgkb db setup`)"
            ) from None

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _recovering_connection_class(db: Database) -> type[psycopg.Connection]:
    """A connection class whose connect() re-reads the secret once when the password is refused, and
    starts the database again (when pgkb runs it) when it cannot be reached."""

    class RecoveringConnection(psycopg.Connection):  # type: ignore[type-arg]
        @classmethod
        def connect(cls, conninfo: str = "", **kwargs: Any) -> Any:  # type: ignore[override]
            try:
                return super().connect(conninfo, **kwargs)
            except psycopg.OperationalError as exc:
                if not is_auth_failure(exc):
                    if db._revive is None:
                        raise
                    revived = db.revive(conninfo)
                    return super().connect(revived, **kwargs)
                if db._refresh is None:
                    raise
                fresh = db.refresh_credentials(conninfo)
                if fresh == conninfo:
                    raise  # the pool logs it (no password in libpq's message) and retries with backoff
                log.info("database rejected the password; retrying with the re-read secret")
                return super().connect(fresh, **kwargs)

    return RecoveringConnection


SECRET_URL_PREFIX = "secret:"


def secret_refresh(settings: Settings, ref: str) -> Refresh:
    """Re-reads secret `ref` (pgkb's store, env, or Secrets Manager) and returns its connection string."""
    from pgkb.secrets import SecretResolver

    resolver = SecretResolver(settings.data_dir, settings.region, settings.account_id)
    return lambda: resolver.resolve(ref, refresh=True).conninfo()


def resolve_url(settings: Settings) -> str:
    """The connection string: `--database-url`, a secret (`secret:<ARN or name>`), or the embedded server."""
    if settings.database_url and settings.database_url.startswith(SECRET_URL_PREFIX):
        return secret_refresh(settings, settings.database_url[len(SECRET_URL_PREFIX):])()
    if settings.database_url:
        return settings.database_url
    from pgkb.db.embedded import ensure_embedded

    return ensure_embedded(settings.data_dir)


def open_database(settings: Settings, *, run_migrations: bool = True) -> Database:
    """Resolve the URL (embedded when none is set), wait for it, migrate the catalog, open the pool."""
    refresh: Refresh | None = None
    if settings.database_url and settings.database_url.startswith(SECRET_URL_PREFIX):
        refresh = secret_refresh(settings, settings.database_url[len(SECRET_URL_PREFIX):])
        url = refresh()
    else:
        url = resolve_url(settings)
    revive: Revive | None = None
    alive: Callable[[], bool] | None = None
    if not settings.database_url:  # the embedded server: pgkb started it, pgkb starts it again
        from pgkb.db.embedded import PostmasterWatch, ensure_embedded

        revive = lambda: ensure_embedded(settings.data_dir)  # noqa: E731
        alive = PostmasterWatch(settings.data_dir)
    url = wait_for_database(url, settings.connect_timeout_s, refresh=refresh)
    if run_migrations:
        with psycopg.connect(url, autocommit=False) as conn:
            try:
                migrate(conn)
            except psycopg.errors.InsufficientPrivilege:
                raise DatabaseUnavailableError(
                    "pgkb's catalog needs migrations this role may not run: run `pgkb db setup` as the admin"
                ) from None
    return Database(url, max_size=settings.pool_max_size, timeout_s=settings.connect_timeout_s, refresh=refresh,
                    revive=revive, alive=alive).open()
