"""`pgkb serve` on the embedded PostgreSQL: SIGTERM stops the server it started, and only that one."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers.servers import pgkb_serve

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


@contextmanager
def _serve(data: Path) -> Iterator[subprocess.Popen]:
    """`pgkb serve` on the embedded server of `data`, once it answers HTTP."""
    with pgkb_serve(None, data.parent / "serve.log", {}, ("--no-auth", "--data-dir", str(data))) as (url, proc):
        urllib.request.urlopen(f"{url}/console", timeout=60).close()
        yield proc


def test_sigterm_stops_the_embedded_server_it_started(data: Path) -> None:
    try:
        with _serve(data) as proc:
            assert embedded_running(data)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(90) == 0
        assert not embedded_running(data)
    finally:
        stop_embedded(data)


def test_sigterm_leaves_a_shared_embedded_server_running(data: Path) -> None:
    try:
        ensure_embedded(data)  # started by someone else (the CLI, another process)
        with _serve(data) as proc:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(90) == 0
        assert embedded_running(data)
    finally:
        stop_embedded(data)
