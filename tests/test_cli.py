"""The CLI end to end, as a user runs it: real processes, real database, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pgkb.db.embedded import stop_embedded

PGKB = [sys.executable, "-m", "pgkb.cli"]


def run(*args: str, env: dict[str, str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    e = {**os.environ, "COLUMNS": "200", **(env or {})}
    e.pop("PGKB_DATABASE_URL", None)
    return subprocess.run([*PGKB, *args], capture_output=True, text=True, env=e, timeout=timeout)


def test_the_foundation_flow(session_db_url: str, tmp_path: Path) -> None:
    docs = tmp_path / "handbook"
    docs.mkdir()
    (docs / "rotation.md").write_text("# Credentials\n\nRotate database credentials every ninety days with the vault CLI.\n")
    (docs / "rotation.md.metadata.json").write_text(json.dumps({"metadataAttributes": {"team": "security"}}))
    (docs / "lunch.txt").write_text("The canteen serves lunch from noon until two.")
    db = ["--database-url", session_db_url, "--data-dir", str(tmp_path / "data")]
    name = "cli" + uuid.uuid4().hex[:6]
    r = run("kb", "create", name, "--model", "sentence-transformers.all-minilm-l6-v2", *db)
    assert r.returncode == 0, r.stderr
    assert run("ds", "create", name, "handbook", "--path", str(docs), *db).returncode == 0
    # One convention for every command: a table for people, --json for programs.
    shown = run("kb", "show", name, *db)
    assert shown.returncode == 0 and shown.stdout.lstrip()[:1] != "{" and "MANAGED" in shown.stdout
    kb_json = json.loads(run("kb", "show", name, "--json", *db).stdout)
    assert kb_json["name"] == name and kb_json["status"] == "ACTIVE"
    r = run("sync", name, "handbook", *db)
    assert r.returncode == 0, r.stderr
    assert "COMPLETE" in r.stdout and "new 2" in r.stdout
    r = run("retrieve", name, "how do I rotate credentials?", "-k", "1", "--json", *db)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert len(res) == 1 and "Rotate database credentials" in res[0]["content"]["text"]
    assert res[0]["metadata"]["team"] == "security"
    r = run("retrieve", name, "lunch", "--filter", '{"equals": {"key": "team", "value": "security"}}', "--json", *db)
    assert [x["metadata"]["team"] for x in json.loads(r.stdout)] == ["security"]
    r = run("jobs", name, "handbook", "--json", *db)
    jobs = json.loads(r.stdout)
    assert jobs[0]["status"] == "COMPLETE" and jobs[0]["statistics"]["numberOfNewDocumentsIndexed"] == 2


@pytest.mark.parametrize(
    "args, needle",
    [
        (["retrieve", "no-such-kb", "q"], "does not exist"),
        (["retrieve", "no-such-kb", "q", "-k", "500"], "does not exist"),
        (["kb", "create", "bad name!"], "must match"),
        (["retrieve", "x", "q", "--filter", "{not json"], "not valid JSON"),
    ],
)
def test_errors_are_one_line_without_traceback(session_db_url: str, tmp_path: Path, args: list[str], needle: str) -> None:
    r = run(*args, "--database-url", session_db_url, "--data-dir", str(tmp_path))
    assert r.returncode != 0
    assert "Traceback" not in r.stderr + r.stdout
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], r.stderr


def test_k_out_of_range_is_refused(session_db_url: str, tmp_path: Path) -> None:
    name = "k" + uuid.uuid4().hex[:6]
    db = ["--database-url", session_db_url, "--data-dir", str(tmp_path)]
    assert run("kb", "create", name, *db).returncode == 0
    r = run("retrieve", name, "q", "-k", "101", *db)
    assert r.returncode != 0 and "numberOfResults" in r.stderr and "Traceback" not in r.stderr


def test_unreachable_database_is_one_line(tmp_path: Path) -> None:
    r = run("kb", "list", "--database-url", "postgresql://u:hunter2pw@127.0.0.1:1/x", "--data-dir", str(tmp_path),
            env={"PGKB_CONNECT_TIMEOUT": "0.5"})
    assert r.returncode != 0
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "cannot reach the database" in lines[0]
    assert "hunter2pw" not in r.stderr + r.stdout and "Traceback" not in r.stderr


def test_concurrent_processes_share_one_embedded_server(tmp_path: Path) -> None:
    data = tmp_path / "kbdata"
    try:
        with ThreadPoolExecutor(3) as pool:
            results = list(pool.map(lambda _: run("db", "info", "--json", "--data-dir", str(data)), range(3)))
        for r in results:
            assert r.returncode == 0, r.stderr
        urls = {json.loads(r.stdout)["url"] for r in results}
        assert len(urls) == 1
        # state persists between commands on the embedded server
        assert run("kb", "create", "persisted", "--data-dir", str(data)).returncode == 0
        r = run("kb", "list", "--json", "--data-dir", str(data))
        assert [k["name"] for k in json.loads(r.stdout)] == ["persisted"]
    finally:
        stop_embedded(data)
