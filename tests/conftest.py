"""Test fixtures: one real embedded PostgreSQL for the whole session, fresh databases on demand."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pgkb.config import Settings  # noqa: E402
from pgkb.db import Database, open_database  # noqa: E402
from pgkb.db.embedded import ensure_embedded, stop_embedded  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def pg_root() -> Iterator[Path]:
    """Data dir of the session's embedded server (under /tmp: the socket path must stay short)."""
    root = Path(tempfile.mkdtemp(prefix="pgkbt-"))
    os.chmod(root, 0o755)
    yield root
    stop_embedded(root)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_url(pg_root: Path) -> str:
    """Admin URL of the session's embedded PostgreSQL 18 + pgvector."""
    return ensure_embedded(pg_root)


def _with_dbname(url: str, dbname: str) -> str:
    base, _, query = url.partition("?")
    base = base.rsplit("/", 1)[0] + "/" + dbname
    return base + ("?" + query if query else "")


@pytest.fixture
def new_database_url(pg_url: str) -> Iterator[str]:
    """A fresh, empty database on the session server (dropped afterwards)."""
    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield _with_dbname(pg_url, name)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def session_db_url(pg_url: str) -> str:
    """A database shared by the tests that only add uniquely named objects to it."""
    name = "pgkb_tests"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')
    return _with_dbname(pg_url, name)


@pytest.fixture(scope="session")
def settings(session_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(data_dir=tmp_path_factory.mktemp("pgkb-data"), database_url=session_db_url)


@pytest.fixture(scope="session")
def db(settings: Settings) -> Iterator[Database]:
    database = open_database(settings)
    yield database
    database.close()
