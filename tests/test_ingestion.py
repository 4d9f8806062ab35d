"""Foundation: knowledge bases, incremental sync, bad input, crash safety (issue 2)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import corpus
import psycopg
import pytest
from helpers.jobs import wait_claim_released

from pgkb.config import Settings
from pgkb.errors import ConflictError, NotFoundError, ValidationError
from pgkb.service import KnowledgeBaseService

MODEL = "sentence-transformers.all-minilm-l6-v2"
ARN = f"arn:aws:bedrock:us-east-1::foundation-model/{MODEL}"


def kb_config() -> dict[str, Any]:
    return {"type": "VECTOR", "vectorKnowledgeBaseConfiguration": {"embeddingModelArn": ARN}}


@pytest.fixture(scope="module")
def svc(settings: Settings) -> Any:
    with KnowledgeBaseService(settings) as s:
        yield s


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def make_kb(svc: Any, folder: Path, chunking: dict[str, Any] | None = None) -> tuple[str, str]:
    kb = svc.create_knowledge_base(name=unique("kb"), knowledgeBaseConfiguration=kb_config())["knowledgeBase"]
    ingestion = {"chunkingConfiguration": chunking} if chunking else None
    ds = svc.create_data_source(
        knowledgeBaseId=kb["knowledgeBaseId"], name="docs",
        dataSourceConfiguration={"type": "LOCAL", "localConfiguration": {"path": str(folder)}},
        vectorIngestionConfiguration=ingestion,
    )["dataSource"]
    return kb["knowledgeBaseId"], ds["dataSourceId"]


def table_rows(svc: Any, kb_id: str) -> list[tuple[str, str, str]]:
    """(id, text, source uri) of every row, sorted."""
    kb = svc.resolve(kb_id)
    with kb.database.connection() as conn:
        rows = conn.execute(
            f'SELECT id::text, chunks, metadata->>\'x-amz-bedrock-kb-source-uri\' FROM "{kb.table.schema}"."{kb.table.name}"'
        ).fetchall()
    return sorted(rows)


def write_corpus(folder: Path, n: int, offset: int = 0) -> list[str]:
    return corpus.write_folder(folder, n, offset)


# ------------------------------------------------------------------------------------------ tables


def test_existing_bedrock_table_from_the_guide_is_adopted(svc: Any) -> None:
    table = unique("guide_")
    with psycopg.connect(svc.db.url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS bedrock_integration")
        conn.execute(f"CREATE TABLE bedrock_integration.{table} (id uuid PRIMARY KEY, embedding vector(384), chunks text, metadata json, custom_metadata jsonb)")
        conn.execute(f"CREATE INDEX ON bedrock_integration.{table} USING hnsw (embedding vector_cosine_ops)")
        conn.execute(f"CREATE INDEX ON bedrock_integration.{table} USING gin (to_tsvector('simple', chunks))")
        conn.execute(f"CREATE INDEX ON bedrock_integration.{table} USING gin (custom_metadata)")
    info = svc.db_info()
    storage = {"type": "RDS", "rdsConfiguration": {
        "resourceArn": info["resourceArn"], "credentialsSecretArn": info["credentialsSecretArn"],
        "databaseName": info["databaseName"], "tableName": f"bedrock_integration.{table}",
        "fieldMapping": {"primaryKeyField": "id", "vectorField": "embedding", "textField": "chunks",
                         "metadataField": "metadata", "customMetadataField": "custom_metadata"}}}
    kb = svc.create_knowledge_base(name=unique("adopt"), knowledgeBaseConfiguration=kb_config(),
                                   storageConfiguration=storage)["knowledgeBase"]
    assert kb["status"] == "ACTIVE"


@pytest.mark.parametrize(
    "ddl, needle",
    [
        ("CREATE TABLE {t} (id uuid PRIMARY KEY, embedding vector(384), chunks text, custom_metadata jsonb)",
         "column 'metadata'"),
        ("CREATE TABLE {t} (id text PRIMARY KEY, embedding vector(384), chunks text, metadata json, custom_metadata jsonb)",
         "expected uuid, found text"),
        ("CREATE TABLE {t} (id uuid PRIMARY KEY, embedding vector(1024), chunks text, metadata json, custom_metadata jsonb)",
         "expected vector(384), found vector(1024)"),
    ],
)
def test_invalid_existing_table_names_problem_and_fix(svc: Any, ddl: str, needle: str) -> None:
    table = f"bedrock_integration.{unique('bad_')}"
    with psycopg.connect(svc.db.url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS bedrock_integration")
        conn.execute(ddl.format(t=table))
    info = svc.db_info()
    storage = {"type": "RDS", "rdsConfiguration": {
        "resourceArn": info["resourceArn"], "credentialsSecretArn": info["credentialsSecretArn"],
        "databaseName": info["databaseName"], "tableName": table,
        "fieldMapping": {"primaryKeyField": "id", "vectorField": "embedding", "textField": "chunks",
                         "metadataField": "metadata", "customMetadataField": "custom_metadata"}}}
    with pytest.raises(ValidationError) as err:
        svc.create_knowledge_base(name=unique("bad"), knowledgeBaseConfiguration=kb_config(), storageConfiguration=storage)
    msg = err.value.message
    assert table in msg and needle in msg and "Fix:" in msg
    # the chunks column has no full-text index either: named with the exact SQL, as Bedrock does
    assert "USING gin (to_tsvector('simple'" in msg


def test_bedrock_model_without_aws_is_refused(svc: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "PGKB_BEDROCK_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    cfg = {"type": "VECTOR", "vectorKnowledgeBaseConfiguration": {
        "embeddingModelArn": "arn:aws:bedrock:us-east-1::foundation-model/amazon.titan-embed-text-v2:0"}}
    with pytest.raises(ValidationError, match="AWS"):
        svc.create_knowledge_base(name=unique("titan"), knowledgeBaseConfiguration=cfg)


# ------------------------------------------------------------------------------------------ sync


def test_incremental_sync_statistics_and_no_reembedding(svc: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "docs"
    write_corpus(folder, 12)
    (folder / "team.txt").write_text("The platform team rotates database credentials every ninety days.")
    (folder / "team.txt.metadata.json").write_text(json.dumps({"metadataAttributes": {"team": "platform", "year": 2024}}))
    kb_id, ds_id = make_kb(svc, folder)

    embedded: list[str] = []
    model = svc.resolve(kb_id).model()
    original = model.embed_documents

    def counting(texts: Any) -> Any:
        embedded.extend(texts)
        return original(texts)

    monkeypatch.setattr(model, "embed_documents", counting)

    job = svc.run_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJob"]
    st = job["statistics"]
    assert job["status"] == "COMPLETE"
    assert st["numberOfDocumentsScanned"] == 13 and st["numberOfNewDocumentsIndexed"] == 13
    assert st["numberOfMetadataDocumentsScanned"] == 1
    first_rows = table_rows(svc, kb_id)
    assert len(first_rows) >= 13

    # nothing changed: nothing embedded, nothing written
    embedded.clear()
    st = svc.run_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJob"]["statistics"]
    assert embedded == []
    assert st["numberOfNewDocumentsIndexed"] == st["numberOfModifiedDocumentsIndexed"] == 0
    assert table_rows(svc, kb_id) == first_rows

    # one modified, one deleted, one new, one metadata-only change
    files = sorted(p for p in folder.glob("*.txt") if p.name != "team.txt")
    files[0].write_text("Completely new text about lighthouse keepers and their lamps.")
    files[1].unlink()
    (folder / "new.txt").write_text("A new document about sourdough starters.")
    (folder / "team.txt.metadata.json").write_text(json.dumps({"metadataAttributes": {"team": "security", "year": 2025}}))
    embedded.clear()
    st = svc.run_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJob"]["statistics"]
    assert st["numberOfNewDocumentsIndexed"] == 1
    assert st["numberOfModifiedDocumentsIndexed"] == 1
    assert st["numberOfDocumentsDeleted"] == 1
    assert st["numberOfMetadataDocumentsModified"] == 1
    assert sorted(embedded) == sorted(["Completely new text about lighthouse keepers and their lamps.",
                                       "A new document about sourdough starters."])
    rows = table_rows(svc, kb_id)
    uris = {r[2] for r in rows}
    assert not any(r[2].endswith(files[1].name) for r in rows)
    assert any(r[2].endswith("new.txt") for r in rows)
    assert "Completely new text about lighthouse keepers and their lamps." in {r[1] for r in rows}
    assert len(uris) == 13

    # the metadata change is visible to filters without re-embedding
    res = svc.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": "credential rotation"},
                       retrievalConfiguration={"vectorSearchConfiguration": {
                           "numberOfResults": 3, "filter": {"equals": {"key": "team", "value": "security"}}}})
    hits = res["retrievalResults"]
    assert len(hits) == 1 and hits[0]["metadata"]["team"] == "security" and hits[0]["metadata"]["year"] == 2025.0

    # Each job folded the BM25 df deltas its writes appended: one row per term, equal to the postings.
    from psycopg import sql

    from pgkb.retrieval import bm25

    kb = svc.resolve(kb_id)
    with kb.database.connection() as conn:
        ix = bm25.lookup(conn, kb.table)
        assert ix is not None and ix.has_df
        df_rows = conn.execute(sql.SQL("SELECT term, d FROM {}").format(ix.df)).fetchall()
        counts = conn.execute(sql.SQL("SELECT term, count(*) FROM {} GROUP BY term").format(ix.postings)).fetchall()
    assert len(df_rows) == len({term for term, _ in df_rows})
    assert dict(df_rows) == dict(counts)


def test_retrieve_shape_scores_and_system_keys(svc: Any, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    write_corpus(folder, 20)
    kb_id, ds_id = make_kb(svc, folder)
    svc.run_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)
    res = svc.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": "can execution of a coroutine be suspended and resumed"},
                       retrievalConfiguration={"vectorSearchConfiguration": {"numberOfResults": 5}})["retrievalResults"]
    assert len(res) == 5
    top = res[0]
    assert "suspended and resumed" in top["content"]["text"] and top["content"]["type"] == "TEXT"
    scores = [r["score"] for r in res]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    md = top["metadata"]
    assert md["x-amz-bedrock-kb-source-uri"].startswith("file://") and md["x-amz-bedrock-kb-data-source-id"] == ds_id
    uuid.UUID(md["x-amz-bedrock-kb-chunk-id"])
    assert top["location"] == {"type": "CUSTOM", "customDocumentLocation": {"id": md["x-amz-bedrock-kb-source-uri"]}}
    for k in (0, 101):
        with pytest.raises(ValidationError, match="numberOfResults"):
            svc.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": "x"},
                         retrievalConfiguration={"vectorSearchConfiguration": {"numberOfResults": k}})
    with pytest.raises(NotFoundError):
        svc.retrieve(knowledgeBaseId="NOSUCHKB00", retrievalQuery={"text": "x"})


def test_bad_files_become_counted_failures_and_the_job_goes_on(svc: Any, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    write_corpus(folder, 3)
    (folder / "broken.pdf").write_bytes(b"%PDF-1.7\n1 0 obj <<>> garbage")
    (folder / "empty.txt").write_bytes(b"")
    (folder / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (folder / "bad-sidecar.txt").write_text("A document whose metadata file is broken.")
    (folder / "bad-sidecar.txt.metadata.json").write_text("{not json")
    with open(folder / "huge.txt", "wb") as f:  # sparse: 51 MB without writing them
        f.truncate(51 * 1024 * 1024)
    kb_id, ds_id = make_kb(svc, folder)
    job = svc.run_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJob"]
    st = job["statistics"]
    assert job["status"] == "COMPLETE"
    assert st["numberOfNewDocumentsIndexed"] == 3
    assert st["numberOfDocumentsFailed"] == 4
    assert st["numberOfDocumentsSkipped"] == 1
    reasons = " | ".join(job["failureReasons"])
    for name in ("broken.pdf", "empty.txt", "bad-sidecar.txt", "huge.txt"):
        assert name in reasons
    assert "50 MB" in reasons
    docs = svc.list_knowledge_base_documents(knowledgeBaseId=kb_id, dataSourceId=ds_id)["documentDetails"]
    by_name = {d["identifier"]["custom"]["id"].rsplit("/", 1)[-1]: d for d in docs}
    assert by_name["broken.pdf"]["status"] == "FAILED" and by_name["broken.pdf"]["statusReason"]
    assert by_name["image.png"]["status"] == "IGNORED"
    assert len({r[2] for r in table_rows(svc, kb_id)}) == 3


def test_second_job_on_a_busy_data_source_is_a_conflict(svc: Any, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    write_corpus(folder, 40)
    kb_id, ds_id = make_kb(svc, folder)
    started = svc.start_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJob"]
    assert started["status"] in ("STARTING", "IN_PROGRESS")
    with pytest.raises(ConflictError):
        svc.start_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)
    svc.wait_for_jobs()
    job = svc.get_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id, ingestionJobId=started["ingestionJobId"])
    assert job["ingestionJob"]["status"] == "COMPLETE"
    assert job["ingestionJob"]["statistics"]["numberOfNewDocumentsIndexed"] == 40


def test_stop_ingestion_job(svc: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGKB_EMBED_BATCH", "4")
    folder = tmp_path / "docs"
    write_corpus(folder, 80)
    kb_id, ds_id = make_kb(svc, folder)
    job_id = svc.start_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJob"]["ingestionJobId"]
    deadline = time.time() + 60
    while time.time() < deadline:
        st = svc.get_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id, ingestionJobId=job_id)["ingestionJob"]
        if st["statistics"]["numberOfNewDocumentsIndexed"] > 0:
            break
        time.sleep(0.05)
    svc.stop_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id, ingestionJobId=job_id)
    svc.wait_for_jobs()
    job = svc.get_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id, ingestionJobId=job_id)["ingestionJob"]
    assert job["status"] == "STOPPED"
    assert 0 < job["statistics"]["numberOfNewDocumentsIndexed"] < 80
    # a later sync finishes the work
    job = svc.run_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJob"]
    assert job["status"] == "COMPLETE"
    assert len({r[2] for r in table_rows(svc, kb_id)}) == 80


# ------------------------------------------------------------------------------------------ crash safety

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


def _indexed(svc: Any, ds_id: str) -> int:
    with svc.db.connection() as conn:
        return conn.execute("SELECT count(*) FROM pgkb.documents WHERE ds_id = %s AND status = 'INDEXED'",
                            (ds_id,)).fetchone()[0]


def _kill_mid_sync(svc: Any, settings: Settings, kb_id: str, ds_id: str, after_docs: int) -> None:
    env = {**os.environ, "PGKB_EMBED_BATCH": "8"}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(settings.data_dir), settings.database_url or "", kb_id, ds_id],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    base = _indexed(svc, ds_id)
    while time.time() < deadline and child.poll() is None:
        if _indexed(svc, ds_id) - base >= after_docs:
            break
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait()
    wait_claim_released(svc, ds_id)


def test_sigkill_mid_sync_then_resync_equals_uninterrupted_sync(svc: Any, settings: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    write_corpus(folder, 80)
    kb_id, ds_id = make_kb(svc, folder, {"chunkingStrategy": "FIXED_SIZE",
                                         "fixedSizeChunkingConfiguration": {"maxTokens": 40, "overlapPercentage": 10}})
    _kill_mid_sync(svc, settings, kb_id, ds_id, after_docs=20)
    jobs = svc.list_ingestion_jobs(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJobSummaries"]
    assert jobs[0]["status"] == "FAILED"  # interrupted, not left IN_PROGRESS forever
    assert "Interrupted" in svc.get_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id,
                                                  ingestionJobId=jobs[0]["ingestionJobId"])["ingestionJob"]["failureReasons"][0]

    # change the source while the job is dead: modify, delete, add
    files = sorted(folder.glob("*.txt"))
    for p in files[:10]:
        p.write_text(p.read_text()[::-1][:300] + " Revised.")
    for p in files[10:20]:
        p.unlink()
    write_corpus(folder, 10, offset=600)
    _kill_mid_sync(svc, settings, kb_id, ds_id, after_docs=15)
    final = svc.run_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJob"]
    assert final["status"] == "COMPLETE"

    ref_kb, ref_ds = make_kb(svc, folder, {"chunkingStrategy": "FIXED_SIZE",
                                           "fixedSizeChunkingConfiguration": {"maxTokens": 40, "overlapPercentage": 10}})
    svc.run_ingestion_job(knowledgeBaseId=ref_kb, dataSourceId=ref_ds)
    got = sorted((text, uri) for _, text, uri in table_rows(svc, kb_id))
    want = sorted((text, uri) for _, text, uri in table_rows(svc, ref_kb))
    assert got == want
    assert len(got) > 80  # several chunks per document, each present exactly once


# ------------------------------------------------------------------------------------------ direct ingestion


def test_direct_ingestion_custom_source(svc: Any) -> None:
    kb = svc.create_knowledge_base(name=unique("custom"), knowledgeBaseConfiguration=kb_config())["knowledgeBase"]
    ds = svc.create_data_source(knowledgeBaseId=kb["knowledgeBaseId"], name="inline",
                                dataSourceConfiguration={"type": "CUSTOM"})["dataSource"]
    ids = dict(knowledgeBaseId=kb["knowledgeBaseId"], dataSourceId=ds["dataSourceId"])
    doc = {"content": {"dataSourceType": "CUSTOM", "custom": {
        "customDocumentIdentifier": {"id": "doc-1"}, "sourceType": "IN_LINE",
        "inlineContent": {"type": "TEXT", "textContent": {"data": "Penguins live in the southern hemisphere."}}}},
        "metadata": {"type": "IN_LINE_ATTRIBUTE", "inlineAttributes": [
            {"key": "animal", "value": {"type": "STRING", "stringValue": "penguin"}}]}}
    out = svc.ingest_knowledge_base_documents(documents=[doc], **ids)["documentDetails"]
    assert out[0]["status"] == "INDEXED" and out[0]["identifier"] == {"dataSourceType": "CUSTOM", "custom": {"id": "doc-1"}}
    res = svc.retrieve(knowledgeBaseId=kb["knowledgeBaseId"], retrievalQuery={"text": "where do penguins live"})
    r = res["retrievalResults"][0]
    assert r["location"] == {"type": "CUSTOM", "customDocumentLocation": {"id": "doc-1"}}
    assert r["metadata"]["animal"] == "penguin"
    # a sync of a CUSTOM source deletes nothing
    svc.run_ingestion_job(**ids)
    assert len(svc.retrieve(knowledgeBaseId=kb["knowledgeBaseId"], retrievalQuery={"text": "penguins"})["retrievalResults"]) == 1
    svc.delete_knowledge_base_documents(documentIdentifiers=[{"dataSourceType": "CUSTOM", "custom": {"id": "doc-1"}}], **ids)
    assert svc.retrieve(knowledgeBaseId=kb["knowledgeBaseId"], retrievalQuery={"text": "penguins"})["retrievalResults"] == []
    got = svc.get_knowledge_base_documents(documentIdentifiers=[{"dataSourceType": "CUSTOM", "custom": {"id": "doc-1"}}], **ids)
    assert got["documentDetails"][0]["status"] == "NOT_FOUND"


def test_client_token_idempotency(svc: Any) -> None:
    token = "t" * 40
    a = svc.create_knowledge_base(name=unique("idem"), knowledgeBaseConfiguration=kb_config(), clientToken=token)
    b = svc.create_knowledge_base(name=unique("idem"), knowledgeBaseConfiguration=kb_config(), clientToken=token)
    assert a["knowledgeBase"]["knowledgeBaseId"] == b["knowledgeBase"]["knowledgeBaseId"]


def test_concurrent_services_share_the_database(svc: Any, settings: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    write_corpus(folder, 30)
    kb_id, ds_id = make_kb(svc, folder)
    errors: list[BaseException] = []
    results: list[str] = []

    def run() -> None:
        try:
            with KnowledgeBaseService(settings) as other:
                results.append(other.run_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJob"]["status"])
        except ConflictError:
            results.append("CONFLICT")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert "COMPLETE" in results
    assert len({r[2] for r in table_rows(svc, kb_id)}) == 30


def test_two_models_never_share_a_table(svc: Any) -> None:
    """Vectors of two models (even two variants of one) in one table would make scores meaningless."""
    table = f"bedrock_integration.{unique('shared_')}"
    info = svc.db_info()
    storage = {"type": "RDS", "rdsConfiguration": {
        "resourceArn": info["resourceArn"], "credentialsSecretArn": info["credentialsSecretArn"],
        "databaseName": info["databaseName"], "tableName": table,
        "fieldMapping": {"primaryKeyField": "id", "vectorField": "embedding", "textField": "chunks",
                         "metadataField": "metadata", "customMetadataField": "custom_metadata"}}}
    svc.create_knowledge_base(name=unique("first"), knowledgeBaseConfiguration=kb_config(), storageConfiguration=storage)
    # the same model may share it
    svc.create_knowledge_base(name=unique("same"), knowledgeBaseConfiguration=kb_config(), storageConfiguration=storage)
    other = {"type": "VECTOR", "vectorKnowledgeBaseConfiguration": {
        "embeddingModelArn": "arn:aws:bedrock:us-east-1::foundation-model/sentence-transformers.all-minilm-l6-v2-onnx-int8"}}
    with pytest.raises(ValidationError, match="holds vectors of sentence-transformers.all-minilm-l6-v2;"):
        svc.create_knowledge_base(name=unique("mixed"), knowledgeBaseConfiguration=other, storageConfiguration=storage)


def test_closing_the_service_stops_its_running_jobs(settings: Settings, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """What `pgkb serve` does on SIGTERM: running jobs end STOPPED promptly instead of blocking shutdown."""
    monkeypatch.setenv("PGKB_EMBED_BATCH", "2")
    folder = tmp_path / "docs"
    write_corpus(folder, 80)
    other = KnowledgeBaseService(settings)
    kb_id, ds_id = make_kb(other, folder)
    job_id = other.start_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJob"]["ingestionJobId"]
    deadline = time.time() + 60
    while time.time() < deadline and other.get_ingestion_job(
            knowledgeBaseId=kb_id, dataSourceId=ds_id, ingestionJobId=job_id)["ingestionJob"]["status"] == "STARTING":
        time.sleep(0.05)
    other.close()
    with KnowledgeBaseService(settings) as svc:
        job = svc.get_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id, ingestionJobId=job_id)["ingestionJob"]
        assert job["status"] == "STOPPED"
        assert job["statistics"]["numberOfNewDocumentsIndexed"] < 80


def test_deleted_knowledge_base_is_gone_at_once_in_this_process(svc: Any) -> None:
    """resolve() caches knowledge bases briefly; this process's own deletions bypass the cache."""
    name = unique("gone")
    kb_id = svc.create_knowledge_base(name=name, knowledgeBaseConfiguration=kb_config())["knowledgeBase"]["knowledgeBaseId"]
    assert svc.retrieve(knowledgeBaseId=name, retrievalQuery={"text": "x"})["retrievalResults"] == []
    svc.delete_knowledge_base(knowledgeBaseId=kb_id)
    for ref in (kb_id, name):
        with pytest.raises(NotFoundError):
            svc.retrieve(knowledgeBaseId=ref, retrievalQuery={"text": "x"})


def test_documents_are_read_ahead_concurrently(svc: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reads (S3 GETs) overlap: here each read waits for a second one to start, which never happens
    when documents are read one after another."""
    from dataclasses import replace

    from pgkb.ingestion.sources import LocalFolderSource

    folder = tmp_path / "pairs"
    write_corpus(folder, 6)
    kb_id, ds_id = make_kb(svc, folder)
    barrier = threading.Barrier(2, timeout=10)

    class PairedReads(LocalFolderSource):
        def scan(self) -> Any:
            for d in super().scan():
                yield replace(d, read=lambda real=d.read: (barrier.wait(), real())[1])

    monkeypatch.setattr(svc.jobs, "source_for", lambda ds: PairedReads(str(folder)))
    job = svc.run_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJob"]
    assert job["status"] == "COMPLETE", job
    assert job["statistics"]["numberOfNewDocumentsIndexed"] == 6
    assert job["statistics"]["numberOfDocumentsFailed"] == 0


def test_direct_writes_fold_bm25_deltas_now_and_then(svc: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """IngestKnowledgeBaseDocuments and DeleteKnowledgeBaseDocuments append df deltas; every
    COMPACT_EVERY calls they are folded (here every 2nd), and stay equal to the postings; the same
    calls ANALYZE the table when it outgrew its planner statistics (pgkb.store.planner_stats)."""
    from psycopg import sql

    from pgkb.retrieval import bm25
    from pgkb.service import documents

    monkeypatch.setattr(documents, "COMPACT_EVERY", 2)
    kb = svc.create_knowledge_base(name=unique("fold"), knowledgeBaseConfiguration=kb_config())["knowledgeBase"]
    ds = svc.create_data_source(knowledgeBaseId=kb["knowledgeBaseId"], name="inline",
                                dataSourceConfiguration={"type": "CUSTOM"})["dataSource"]
    ids = dict(knowledgeBaseId=kb["knowledgeBaseId"], dataSourceId=ds["dataSourceId"])

    def doc(i: int) -> dict[str, Any]:
        return {"content": {"dataSourceType": "CUSTOM", "custom": {
            "customDocumentIdentifier": {"id": f"d{i}"}, "sourceType": "IN_LINE",
            "inlineContent": {"type": "TEXT", "textContent": {"data": f"Harbour seals rest on rocks, note {i}."}}}}}

    resolved = svc.resolve(kb["knowledgeBaseId"])

    def df_rows() -> tuple[int, int, dict[str, int], dict[str, int]]:
        with resolved.database.connection() as conn:
            ix = bm25.lookup(conn, resolved.table)
            rows = conn.execute(sql.SQL("SELECT term, d FROM {}").format(ix.df)).fetchall()
            sums = dict(conn.execute(sql.SQL("SELECT term, sum(d)::int FROM {} GROUP BY term HAVING sum(d) <> 0")
                                     .format(ix.df)).fetchall())
            counts = dict(conn.execute(sql.SQL("SELECT term, count(*)::int FROM {} GROUP BY term").format(ix.postings)).fetchall())
        return len(rows), len({t for t, _ in rows}), sums, counts

    def analyzed() -> Any:  # the last ANALYZE pgkb ran (autovacuum's are counted apart)
        with resolved.database.connection() as conn:
            row = conn.execute("SELECT last_analyze FROM pg_stat_user_tables WHERE schemaname = %s AND relname = %s",
                               (resolved.table.schema, resolved.table.name)).fetchone()
        return row[0] if row else None

    svc.ingest_knowledge_base_documents(documents=[doc(1)], **ids)
    assert analyzed() is None
    svc.ingest_knowledge_base_documents(documents=[doc(2)], **ids)  # 2nd call: folded
    n, distinct, sums, counts = df_rows()
    assert n == distinct and sums == counts and sums["seal"] == 2
    assert analyzed() is not None  # and the table, without column statistics until then, analyzed
    svc.ingest_knowledge_base_documents(documents=[doc(3)], **ids)  # 3rd: deltas pile up
    n, distinct, sums, counts = df_rows()
    assert n > distinct and sums == counts
    svc.delete_knowledge_base_documents(documentIdentifiers=[{"dataSourceType": "CUSTOM", "custom": {"id": "d1"}}], **ids)
    n, distinct, sums, counts = df_rows()  # 4th: folded again
    assert n == distinct and sums == counts and sums["seal"] == 2
