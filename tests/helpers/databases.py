"""Fresh databases on a test server: created under a unique name, dropped (FORCE) when done."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql


def with_dbname(url: str, dbname: str) -> str:
    """`url` (a postgresql:// URL, socket in its query string) pointing at another database."""
    base, _, query = url.partition("?")
    base = base.rsplit("/", 1)[0] + "/" + dbname
    return base + ("?" + query if query else "")


def create_database(admin_url: str, name: str, *, exist_ok: bool = False) -> str:
    """Create database `name` (kept if it exists and `exist_ok`); returns its URL."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if not (exist_ok and conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()):
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return with_dbname(admin_url, name)


def drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextmanager
def fresh_database(admin_url: str, prefix: str = "t_") -> Iterator[str]:
    """A new, empty database on `admin_url`'s server; yields its URL, drops it afterwards."""
    name = prefix + uuid.uuid4().hex[:12]
    url = create_database(admin_url, name)
    try:
        yield url
    finally:
        drop_database(admin_url, name)
