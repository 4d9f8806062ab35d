"""Shared helpers for the server tests: an ASGI app under uvicorn in a thread, or `pgkb serve` in a process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 120, log: Path | None = None) -> None:
    """Until something accepts connections on 127.0.0.1:`port`; fails if `proc` exits first."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited ({proc.returncode}): {log.read_text() if log else ''}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"nothing listens on port {port}") from None
            time.sleep(0.1)


@contextmanager
def running(app: Any) -> Iterator[str]:
    """Serve `app` on 127.0.0.1:<free port>; yields the base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@contextmanager
def pgkb_serve(
    settings: Any | None, log: Path, env: dict[str, str], args: tuple[str, ...] = (), scheme: str = "http"
) -> Iterator[tuple[str, subprocess.Popen]]:
    """`pgkb serve` in its own process on a free port, over `settings`' data dir and database (None:
    `args` say where, or the defaults do), with `env` added to this process's environment (minus
    PGKB_DATABASE_URL, so only what the test passes counts) and `args` to its command line (auth is
    on unless they say --no-auth). Yields (base URL, process) once the port accepts connections;
    stops it with SIGTERM, as a service manager would (the exit code is then `proc.returncode`)."""
    port = free_port()
    where = ["--data-dir", str(settings.data_dir), "--database-url", str(settings.database_url)] if settings else []
    cmd = [str(Path(sys.executable).parent / "pgkb"), "serve", "--port", str(port), *where, "--log-level", "warning", *args]
    base_env = {k: v for k, v in os.environ.items() if k != "PGKB_DATABASE_URL"}
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env={**base_env, "HF_HUB_OFFLINE": "1", **env}, stdout=out, stderr=subprocess.STDOUT)
    wait_for_port(port, proc, 120, log)
    try:
        yield f"{scheme}://127.0.0.1:{port}", proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
