"""Ingestion jobs in tests: a folder knowledge base to sync, and who holds a data source's ingestion claim
(`pgkb.ingestion.claim`), seen from pg_locks."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any


def folder_kb(svc: Any, folder: Path, model_arn: str) -> tuple[str, str]:
    """(knowledge base id, data source id) of a new KB syncing `folder` in small FIXED_SIZE chunks
    (40 tokens), so a few documents make many rows."""
    kb = svc.create_knowledge_base(
        name=f"kb{uuid.uuid4().hex[:8]}",
        knowledgeBaseConfiguration={"type": "VECTOR",
                                    "vectorKnowledgeBaseConfiguration": {"embeddingModelArn": model_arn}},
    )["knowledgeBase"]
    ds = svc.create_data_source(
        knowledgeBaseId=kb["knowledgeBaseId"], name="docs",
        dataSourceConfiguration={"type": "LOCAL", "localConfiguration": {"path": str(folder)}},
        vectorIngestionConfiguration={"chunkingConfiguration": {
            "chunkingStrategy": "FIXED_SIZE", "fixedSizeChunkingConfiguration": {"maxTokens": 40, "overlapPercentage": 10}}},
    )["dataSource"]
    return kb["knowledgeBaseId"], ds["dataSourceId"]


# The advisory lock's bigint key is split into classid (high 32 bits) and objid (low 32 bits).
CLAIM_HOLDER = (
    "SELECT l.pid FROM pg_locks l, (SELECT hashtext(%s)::bigint AS k) h"
    " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
    " AND l.objid::bigint = (h.k & 4294967295) AND l.classid::bigint = ((h.k >> 32) & 4294967295)"
)


def claim_holder(conn: Any, ds_id: str) -> int | None:
    row = conn.execute(CLAIM_HOLDER, ("pgkb-ingestion:" + ds_id,)).fetchone()
    return row[0] if row else None


def wait_claim_released(svc: Any, ds_id: str, timeout: float = 30) -> None:
    """After a SIGKILLed sync: PostgreSQL ends the dead client's backends (releasing its claim) once it
    reads their closed sockets, asynchronously and slowly on a loaded machine; until then the job
    still looks alive and a new job is refused."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        with svc.db.connection() as conn:
            if claim_holder(conn, ds_id) is None:
                return
        time.sleep(0.05)
    raise AssertionError(f"the claim on data source {ds_id} was not released within {timeout} s")
