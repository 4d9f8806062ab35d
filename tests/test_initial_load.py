"""Initial loads (issue 19): a first sync into an empty table builds the HNSW index after the rows
are in; later syncs insert into the existing index; a first sync killed mid-way leaves the index
for the next job to build."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import corpus
import pytest
from helpers.jobs import wait_claim_released

from pgkb.config import Settings
from pgkb.service import KnowledgeBaseService

ARN = "arn:aws:bedrock:us-east-1::foundation-model/sentence-transformers.all-minilm-l6-v2"


@pytest.fixture(scope="module")
def svc(settings: Settings) -> Any:
    with KnowledgeBaseService(settings) as s:
        yield s


def make_kb(svc: Any, folder: Path) -> tuple[str, str]:
    kb = svc.create_knowledge_base(
        name=f"load{uuid.uuid4().hex[:8]}",
        knowledgeBaseConfiguration={"type": "VECTOR", "vectorKnowledgeBaseConfiguration": {"embeddingModelArn": ARN}},
    )["knowledgeBase"]
    ds = svc.create_data_source(
        knowledgeBaseId=kb["knowledgeBaseId"], name="docs",
        dataSourceConfiguration={"type": "LOCAL", "localConfiguration": {"path": str(folder)}},
        vectorIngestionConfiguration={"chunkingConfiguration": {
            "chunkingStrategy": "FIXED_SIZE", "fixedSizeChunkingConfiguration": {"maxTokens": 40, "overlapPercentage": 10}}},
    )["dataSource"]
    return kb["knowledgeBaseId"], ds["dataSourceId"]


def hnsw(svc: Any, kb_id: str) -> list[tuple[int, bool, bool]]:
    """(oid, valid, ready) of the table's HNSW indexes."""
    kb = svc.resolve(kb_id)
    with kb.database.connection() as conn:
        return conn.execute(
            "SELECT i.indexrelid::bigint, i.indisvalid, i.indisready FROM pg_index i"
            " JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_am am ON am.oid = ic.relam"
            " JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relname = %s AND am.amname = 'hnsw'",
            (kb.table.schema, kb.table.name),
        ).fetchall()


def records(svc: Any, kb_id: str) -> int:
    with svc.db.connection() as conn:
        return conn.execute("SELECT count(*) FROM pgkb.deferred_indexes WHERE kb_id = %s", (kb_id,)).fetchone()[0]


def rows(svc: Any, kb_id: str) -> int:
    kb = svc.resolve(kb_id)
    with kb.database.connection() as conn:
        return conn.execute(f'SELECT count(*) FROM "{kb.table.schema}"."{kb.table.name}"').fetchone()[0]


def uses_hnsw(svc: Any, kb_id: str) -> bool:
    """Whether a nearest-neighbour query on the table plans an HNSW index scan."""
    kb = svc.resolve(kb_id)
    with kb.database.connection() as conn:
        conn.execute("SET LOCAL enable_seqscan = off")
        plan = conn.execute(
            f'EXPLAIN SELECT id FROM "{kb.table.schema}"."{kb.table.name}"'
            f" ORDER BY embedding <=> (SELECT embedding FROM \"{kb.table.schema}\".\"{kb.table.name}\" LIMIT 1) LIMIT 5"
        ).fetchall()
    return any("embedding_idx" in r[0] or "hnsw" in r[0].lower() for r in plan)


def test_first_sync_builds_the_index_after_the_rows_later_syncs_keep_it(svc: Any, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    corpus.write_folder(folder, 30)
    kb_id, ds_id = make_kb(svc, folder)
    (created, valid, _), = hnsw(svc, kb_id)
    assert valid

    job = svc.run_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJob"]
    assert job["status"] == "COMPLETE"
    (first, valid, ready), = hnsw(svc, kb_id)
    assert first != created  # dropped before the load, built from the rows after it
    assert valid and ready and records(svc, kb_id) == 0
    assert uses_hnsw(svc, kb_id)

    corpus.write_folder(folder, 10, offset=500)
    job = svc.run_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJob"]
    assert job["status"] == "COMPLETE" and job["statistics"]["numberOfNewDocumentsIndexed"] == 10
    (second, valid, _), = hnsw(svc, kb_id)
    assert second == first and valid  # the table was not empty: rows went into the existing index
    hits = svc.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": "the"})["retrievalResults"]
    assert hits


def test_defer_can_be_turned_off(svc: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "docs"
    corpus.write_folder(folder, 5)
    kb_id, ds_id = make_kb(svc, folder)
    (created, _, _), = hnsw(svc, kb_id)
    monkeypatch.setenv("PGKB_DEFER_HNSW", "0")
    assert svc.run_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJob"]["status"] == "COMPLETE"
    assert [h[0] for h in hnsw(svc, kb_id)] == [created]


CHILD = textwrap.dedent(
    """
    import sys
    from pgkb.config import Settings
    from pgkb.service import KnowledgeBaseService
    s = Settings(data_dir=sys.argv[1], database_url=sys.argv[2])
    with KnowledgeBaseService(s) as svc:
        svc.run_ingestion_job(knowledgeBaseId=sys.argv[3], dataSourceId=sys.argv[4])
    """
)


def test_first_sync_killed_mid_way_then_rerun_leaves_a_valid_index(svc: Any, settings: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    corpus.write_folder(folder, 80)
    kb_id, ds_id = make_kb(svc, folder)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(settings.data_dir), settings.database_url or "", kb_id, ds_id],
        env={**os.environ, "PGKB_EMBED_BATCH": "8"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.time() + 120
    while time.time() < deadline and child.poll() is None and rows(svc, kb_id) < 40:
        time.sleep(0.01)
    assert child.poll() is None, "the sync ended before it could be killed"
    child.send_signal(signal.SIGKILL)
    child.wait()
    wait_claim_released(svc, ds_id)
    # What the kill left: rows without their HNSW index, and the record that it is owed.
    assert rows(svc, kb_id) >= 40
    assert hnsw(svc, kb_id) == [] and records(svc, kb_id) == 1
    assert svc.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": "the"})["retrievalResults"]  # exact scan meanwhile

    job = svc.run_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJob"]
    assert job["status"] == "COMPLETE"
    (_, valid, ready), = hnsw(svc, kb_id)
    assert valid and ready and records(svc, kb_id) == 0
    assert uses_hnsw(svc, kb_id)


def test_a_job_with_nothing_to_index_still_builds_an_owed_index(svc: Any, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    corpus.write_folder(folder, 5)
    kb_id, ds_id = make_kb(svc, folder)
    assert svc.run_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJob"]["status"] == "COMPLETE"
    # Simulate a job killed after its last write but before its build: drop the index, keep the record.
    kb = svc.resolve(kb_id)
    with kb.database.connection() as conn:
        name, definition = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s AND tablename = %s AND indexdef LIKE %s",
            (kb.table.schema, kb.table.name, "%USING hnsw%"),
        ).fetchone()
    with svc.db.connection() as conn:
        conn.execute("INSERT INTO pgkb.deferred_indexes (kb_id, index_name, definition) VALUES (%s, %s, %s)",
                     (kb_id, name, definition))
    with kb.database.connection() as conn:
        conn.execute(f'DROP INDEX "{kb.table.schema}"."{name}"')
    job = svc.run_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJob"]
    assert job["status"] == "COMPLETE" and job["statistics"]["numberOfNewDocumentsIndexed"] == 0
    (_, valid, _), = hnsw(svc, kb_id)
    assert valid and records(svc, kb_id) == 0
