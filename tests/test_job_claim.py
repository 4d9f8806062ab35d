"""One job per data source, across lost connections: a job whose claim's connection dies (a server
restart, a terminated backend) takes the claim back when nobody else has it, stops when another
process took over, and an ended job's status never changes again."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import corpus
import psycopg
import pytest
from helpers.jobs import claim_holder

from pgkb.config import Settings
from pgkb.errors import ConflictError
from pgkb.ingestion.claim import JobClaim
from pgkb.ingestion.writer import DocumentWriter
from pgkb.service import KnowledgeBaseService

MODEL = "sentence-transformers.all-minilm-l6-v2-onnx-int8-unbatched"
N_DOCS = 48


@pytest.fixture(scope="module")
def svc(settings: Settings) -> Any:
    with KnowledgeBaseService(settings) as s:
        yield s


@pytest.fixture
def slow_sync(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small batches with a pause before each write, so a job is reliably mid-way when we act."""
    monkeypatch.setenv("PGKB_EMBED_BATCH", "4")
    write = DocumentWriter.write

    def slow_write(self: DocumentWriter, docs: Any, embeddings: Any) -> None:
        time.sleep(0.15)
        write(self, docs, embeddings)

    monkeypatch.setattr(DocumentWriter, "write", slow_write)


def _source(svc: Any, tmp_path: Path) -> tuple[str, str]:
    folder = tmp_path / "docs"
    corpus.write_folder(folder, N_DOCS)
    kb = svc.create_knowledge_base(
        name="claim" + tmp_path.name[-12:].replace("_", ""),
        knowledgeBaseConfiguration={"type": "VECTOR", "vectorKnowledgeBaseConfiguration": {
            "embeddingModelArn": f"arn:aws:bedrock:us-east-1::foundation-model/{MODEL}"}})["knowledgeBase"]
    ds = svc.create_data_source(knowledgeBaseId=kb["knowledgeBaseId"], name="docs", dataSourceConfiguration={
        "type": "LOCAL", "localConfiguration": {"path": str(folder)}})["dataSource"]
    return kb["knowledgeBaseId"], ds["dataSourceId"]


def _job(svc: Any, kb_id: str, ds_id: str, job_id: str) -> dict[str, Any]:
    return svc.get_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id, ingestionJobId=job_id)["ingestionJob"]


def _wait(cond: Any, what: str, timeout: float = 60) -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _holder(url: str, ds_id: str) -> int | None:
    with psycopg.connect(url, autocommit=True) as conn:
        return claim_holder(conn, ds_id)


def _start_midway(svc: Any, kb_id: str, ds_id: str) -> tuple[str, int]:
    job_id = svc.start_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJob"]["ingestionJobId"]
    _wait(lambda: _job(svc, kb_id, ds_id, job_id)["statistics"]["numberOfNewDocumentsIndexed"] > 0, "a first batch")
    pid = _holder(svc.db.url, ds_id)
    assert pid is not None
    return job_id, pid


def _indexed_uris(svc: Any, ds_id: str) -> int:
    with svc.db.connection() as conn:
        return conn.execute("SELECT count(*) FROM pgkb.documents WHERE ds_id = %s AND status = 'INDEXED'",
                            (ds_id,)).fetchone()[0]


def test_a_lost_claim_is_taken_back_and_still_excludes_a_second_job(svc: Any, tmp_path: Path, slow_sync: None) -> None:
    kb_id, ds_id = _source(svc, tmp_path)
    job_id, pid = _start_midway(svc, kb_id, ds_id)
    with psycopg.connect(svc.db.url, autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,)).fetchone()[0]
    # Before its next write the job notices, reconnects, and holds the data source again.
    new_pid = _wait(lambda: (p := _holder(svc.db.url, ds_id)) is not None and p != pid and p, "the claim back")
    assert new_pid != pid
    if _job(svc, kb_id, ds_id, job_id)["status"] in ("STARTING", "IN_PROGRESS"):
        with pytest.raises(ConflictError):
            svc.start_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)
    svc.wait_for_jobs()
    job = _job(svc, kb_id, ds_id, job_id)
    assert job["status"] == "COMPLETE", job["failureReasons"]
    assert job["statistics"]["numberOfNewDocumentsIndexed"] == N_DOCS == _indexed_uris(svc, ds_id)


def test_a_job_that_lost_its_claim_to_another_stops_and_stays_failed(
        svc: Any, tmp_path: Path, slow_sync: None, monkeypatch: pytest.MonkeyPatch) -> None:
    # Park the job just before its next claim check, so the other process takes the data source
    # first whatever the machine's load (otherwise the job may take its claim back first).
    gate, parked = threading.Event(), threading.Event()
    gate.set()
    check = JobClaim.check

    def gated_check(self: JobClaim) -> None:
        if not gate.is_set():
            parked.set()
            gate.wait(60)
        check(self)

    monkeypatch.setattr(JobClaim, "check", gated_check)
    kb_id, ds_id = _source(svc, tmp_path)
    job_id, pid = _start_midway(svc, kb_id, ds_id)
    gate.clear()
    assert parked.wait(60)
    with psycopg.connect(svc.db.url, autocommit=True) as other:
        # Another process takes the data source the moment the claim's connection dies (as a second
        # sync does after a PostgreSQL restart) and marks the job it finds running as interrupted.
        assert other.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,)).fetchone()[0]
        assert other.execute("SELECT pg_try_advisory_lock(hashtext(%s))", ("pgkb-ingestion:" + ds_id,)).fetchone()[0]
        other.execute("UPDATE pgkb.ingestion_jobs SET status = 'FAILED', ended_at = now() WHERE id = %s", (job_id,))
        gate.set()
        svc.wait_for_jobs()
        stopped = _job(svc, kb_id, ds_id, job_id)
        assert stopped["status"] == "FAILED"  # never rewritten to COMPLETE by the runner that lost it
        indexed_then = _indexed_uris(svc, ds_id)
        assert indexed_then < N_DOCS  # it stopped writing
        time.sleep(0.5)
        assert _indexed_uris(svc, ds_id) == indexed_then
    # The other process is gone: a new sync finishes the work.
    job = svc.run_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJob"]
    assert job["status"] == "COMPLETE"
    assert _indexed_uris(svc, ds_id) == N_DOCS
    assert _job(svc, kb_id, ds_id, job_id)["status"] == "FAILED"
