"""`pgkb serve` on the embedded PostgreSQL: SIGTERM stops the server it started, and only that one."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from server_helpers import free_port

from pgkb.db.embedded import embedded_running, ensure_embedded, stop_embedded


@pytest.fixture
def data() -> Iterator[Path]:
    """A data dir the server's own user can reach: pytest's tmp_path sits under a 0700 folder that
    every pytest session on the machine resets, which the embedded server (run as its own user when
    we are root) cannot enter."""
    root = Path(tempfile.mkdtemp(prefix="pgkbs-"))
    os.chmod(root, 0o755)
    yield root / "d"
    shutil.rmtree(root, ignore_errors=True)


def _serve(data: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PGKB_DATABASE_URL"}
    proc = subprocess.Popen([str(Path(sys.executable).parent / "pgkb"), "serve", "--no-auth", "--port", str(port),
                             "--data-dir", str(data), "--log-level", "warning"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/console", timeout=2)
            return proc, port
        except OSError:
            if proc.poll() is not None:
                raise AssertionError(proc.stderr.read().decode() if proc.stderr else "serve exited") from None
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("pgkb serve did not come up")


def test_sigterm_stops_the_embedded_server_it_started(data: Path) -> None:
    try:
        proc, _ = _serve(data)
        assert embedded_running(data)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(90) == 0
        assert not embedded_running(data)
    finally:
        stop_embedded(data)


def test_sigterm_leaves_a_shared_embedded_server_running(data: Path) -> None:
    try:
        ensure_embedded(data)  # started by someone else (the CLI, another process)
        proc, _ = _serve(data)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(90) == 0
        assert embedded_running(data)
    finally:
        stop_embedded(data)
