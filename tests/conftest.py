"""Test fixtures: one real embedded PostgreSQL for the whole session, fresh databases on demand."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.databases import create_database, fresh_database

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


@pytest.fixture
def new_database_url(pg_url: str) -> Iterator[str]:
    """A fresh, empty database on the session server (dropped afterwards)."""
    with fresh_database(pg_url) as url:
        yield url


@pytest.fixture(scope="session")
def session_db_url(pg_url: str) -> str:
    """A database shared by the tests that only add uniquely named objects to it."""
    return create_database(pg_url, "pgkb_tests", exist_ok=True)


@pytest.fixture(scope="session")
def settings(session_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(data_dir=tmp_path_factory.mktemp("pgkb-data"), database_url=session_db_url)


@pytest.fixture(scope="session")
def db(settings: Settings) -> Iterator[Database]:
    database = open_database(settings)
    yield database
    database.close()
