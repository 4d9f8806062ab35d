"""A killed embedded PostgreSQL comes back by itself: pgkb started it, so pgkb starts it again (crash
recovery is PostgreSQL's own) and requests resume, with what was committed before the kill."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgkb.config import Settings
from pgkb.db import embedded
from pgkb.db.embedded import PostmasterWatch, embedded_running, ensure_embedded, pgdata_dir, stop_embedded
from pgkb.service import KnowledgeBaseService

ARN = "arn:aws:bedrock:us-east-1::foundation-model/sentence-transformers.all-minilm-l6-v2-onnx-int8-unbatched"


@pytest.fixture
def data_dir() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="pgkbr-"))  # short: the server's socket lives in it
    os.chmod(root, 0o755)
    yield root
    stop_embedded(root)
    shutil.rmtree(root, ignore_errors=True)


def _postmaster(data_dir: Path) -> int:
    return int((pgdata_dir(data_dir) / "postmaster.pid").read_text().split()[0])


def _kill(data_dir: Path) -> int:
    pid = _postmaster(data_dir)
    os.kill(pid, signal.SIGKILL)
    deadline = time.time() + 30
    while embedded_running(data_dir) and time.time() < deadline:
        time.sleep(0.05)
    assert not embedded_running(data_dir)  # dead (a zombie where nothing reaps it counts as dead)
    return pid


def test_a_killed_embedded_server_is_started_again(data_dir: Path) -> None:
    with KnowledgeBaseService(Settings(data_dir=data_dir)) as svc:
        kb = svc.create_knowledge_base(name="survivor", knowledgeBaseConfiguration={
            "type": "VECTOR", "vectorKnowledgeBaseConfiguration": {"embeddingModelArn": ARN}})["knowledgeBase"]
        for round_ in range(2):  # twice: the second kill finds a server pgkb itself restarted
            old = _kill(data_dir)
            got = svc.get_knowledge_base(knowledgeBaseId=kb["knowledgeBaseId"])["knowledgeBase"]
            assert got["name"] == "survivor", round_
            assert embedded_running(data_dir) and _postmaster(data_dir) != old
        names = [k["name"] for k in svc.list_knowledge_bases()["knowledgeBaseSummaries"]]
        assert names == ["survivor"]


def test_the_pools_postmaster_watch_follows_a_kill_and_a_restart(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ensure_embedded(data_dir)
    watch = PostmasterWatch(data_dir)
    reads: list[Path] = []
    real = embedded._postmaster_pid_file
    monkeypatch.setattr(embedded, "_postmaster_pid_file", lambda p: reads.append(p) or real(p))
    try:
        assert watch() and watch() and watch()
        if hasattr(os, "pidfd_open"):  # Linux: once found alive, a check polls the pidfd, no file read
            assert len(reads) == 1
        _kill(data_dir)
        assert not watch()  # at once: the pidfd polls readable when the process has exited
        assert not watch()
        ensure_embedded(data_dir)
        assert watch()  # the new postmaster, found through its pid file
    finally:
        watch.close()
