"""`pgkb keys ...` and `pgkb serve` guards through the real command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from pgkb.config import Settings

PGKB = str(Path(sys.executable).parent / "pgkb")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PGKB, *args], capture_output=True, text=True, timeout=120)


def test_keys_create_list_revoke(settings: Settings) -> None:
    where = ["--database-url", str(settings.database_url), "--data-dir", str(settings.data_dir)]
    r = run("keys", "create", "--json", "--description", "cli test", *where)
    assert r.returncode == 0, r.stderr
    key = json.loads(r.stdout)
    assert set(key) == {"accessKeyId", "secretAccessKey"}
    r = run("keys", "list", "--json", *where)
    listed = {k["accessKeyId"]: k for k in json.loads(r.stdout)}
    assert listed[key["accessKeyId"]]["description"] == "cli test"
    assert key["secretAccessKey"] not in r.stdout
    assert run("keys", "revoke", key["accessKeyId"], *where).returncode == 0
    assert key["accessKeyId"] not in run("keys", "list", "--json", *where).stdout
    r = run("keys", "revoke", "PGKBNOSUCHKEY0000000", *where)
    assert r.returncode != 0 and "does not exist" in r.stderr and "Traceback" not in r.stderr


def test_serve_no_auth_refused_off_loopback(tmp_path: Path) -> None:
    r = run("serve", "--host", "0.0.0.0", "--no-auth", "--data-dir", str(tmp_path))
    assert r.returncode != 0 and "loopback" in r.stderr and "Traceback" not in r.stderr
