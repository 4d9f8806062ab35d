"""Process-wide settings, read from the environment and overridable by CLI flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import platformdirs


def default_data_dir() -> Path:
    return Path(os.environ.get("PGKB_DATA_DIR") or platformdirs.user_data_dir("pgkb"))


@dataclass(frozen=True)
class Settings:
    """Where pgkb keeps its state and which database it talks to.

    `database_url` None means: start (or join) the embedded PostgreSQL under `data_dir`.
    """

    data_dir: Path = field(default_factory=default_data_dir)
    database_url: str | None = field(default_factory=lambda: os.environ.get("PGKB_DATABASE_URL") or None)
    region: str = field(default_factory=lambda: os.environ.get("PGKB_REGION", "us-east-1"))
    account_id: str = field(default_factory=lambda: os.environ.get("PGKB_ACCOUNT_ID", "000000000000"))
    # How long to keep retrying a database that is unreachable or starting up.
    connect_timeout_s: float = field(default_factory=lambda: float(os.environ.get("PGKB_CONNECT_TIMEOUT", "30")))
    pool_max_size: int = field(default_factory=lambda: int(os.environ.get("PGKB_POOL_MAX_SIZE", "10")))

    def with_overrides(self, *, data_dir: Path | str | None = None, database_url: str | None = None) -> Settings:
        s = self
        if data_dir is not None:
            s = replace(s, data_dir=Path(data_dir).expanduser().resolve())
        if database_url:
            s = replace(s, database_url=database_url)
        return s
