"""Helpers for the bring-your-own-PostgreSQL tests: a private embedded server that checks passwords."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import psycopg

from pgkb.db.embedded import ensure_embedded, pgdata_dir, stop_embedded

HBA = """# written by tests/helpers/byo.py: the superuser over the socket, passwords for everyone else
local all postgres trust
local all all scram-sha-256
"""


def socket_dir(url: str) -> str:
    return parse_qs(urlparse(url).query)["host"][0]


def role_url(admin_url: str, user: str, password: str, dbname: str = "postgres") -> str:
    return psycopg.conninfo.make_conninfo("", host=socket_dir(admin_url), user=user, password=password, dbname=dbname)


@contextmanager
def password_server(prefix: str = "pgkbbyo-") -> Iterator[tuple[Path, str]]:
    """A second embedded server (own data dir) whose non-superuser roles log in with passwords."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(root, 0o755)
    try:
        url = ensure_embedded(root)
        hba = pgdata_dir(root) / "pg_hba.conf"
        hba.write_text(HBA)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        yield root, url
    finally:
        stop_embedded(root)
        shutil.rmtree(root, ignore_errors=True)


_shared: tuple[Path, str] | None = None


def shared_password_server() -> str:
    """One password-checking server for all the BYO test modules of a pytest process (stopped at exit)."""
    global _shared
    if _shared is None:
        import atexit

        cm = password_server("pgkbbyo-")
        _shared = cm.__enter__()
        atexit.register(cm.__exit__, None, None, None)
    return _shared[1]
