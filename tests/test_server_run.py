"""`serve()` guards: --no-auth only on loopback hosts."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pgkb.config import Settings
from pgkb.errors import ValidationError
from pgkb.server.run import is_loopback, serve


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "192.168.0.1", "no-such-host.invalid"])
def test_non_loopback_hosts(host: str) -> None:
    assert not is_loopback(host)


def test_no_auth_refused_on_public_host(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValidationError, match="loopback"):
        serve(Settings(data_dir=tmp_path, database_url="postgresql://unused/x"), host="0.0.0.0", no_auth=True)


def test_no_auth_refused_from_the_command_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pgkb.server.run",
            "--host",
            "0.0.0.0",
            "--no-auth",
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode != 0 and "loopback" in r.stderr and "Traceback" not in r.stderr
