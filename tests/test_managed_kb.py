"""MANAGED knowledge bases (storage owned by pgkb), ACL-aware data sources, managed search, the ACL
operations and GetDocumentContent, through the service (the HTTP wire is in test_managed_http.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers.acl import (
    connector,
    custom_source,
    folder_source,
    inline_doc,
    managed_kb,
    retrieve,
    unique,
    uris,
    write_acl_sidecar,
)
from psycopg import sql

from pgkb.config import Settings
from pgkb.errors import NotFoundError, ValidationError
from pgkb.service import KnowledgeBaseService
from pgkb.service.access import document_id


@pytest.fixture(scope="module")
def svc(settings: Settings) -> Iterator[KnowledgeBaseService]:
    with KnowledgeBaseService(settings) as s:
        yield s


def _table_exists(settings: Settings, schema: str, name: str) -> bool:
    with psycopg.connect(str(settings.database_url)) as conn:
        return conn.execute(
            "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s"
            " AND c.relname = %s", (schema, name)
        ).fetchone() is not None


class EmbedCounter:
    """Counts texts the knowledge base's model embeds (to prove an ACL-only change embeds nothing)."""

    def __init__(self, model: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.n = 0
        original = model.embed_documents

        def counting(texts: list[str]) -> Any:
            self.n += len(texts)
            return original(texts)

        monkeypatch.setattr(model, "embed_documents", counting)


# ---------------------------------------------------------------------------------------- 1. MANAGED


def test_managed_kb_lifecycle(svc: KnowledgeBaseService, settings: Settings) -> None:
    name = unique("mkb")
    kb = svc.create_knowledge_base(
        name=name, knowledgeBaseConfiguration={"type": "MANAGED"}, roleArn="arn:aws:iam::000000000000:role/x"
    )["knowledgeBase"]
    assert kb["knowledgeBaseConfiguration"]["type"] == "MANAGED"
    assert "storageConfiguration" not in kb
    assert kb["status"] == "ACTIVE"
    assert kb["userContextModeForRetrieval"] == "API_INPUT_ONLY"
    kb_id = kb["knowledgeBaseId"]
    table = f"kb_{kb_id.lower()}"
    assert _table_exists(settings, "pgkb_managed", table)
    got = svc.get_knowledge_base(knowledgeBaseId=kb_id)["knowledgeBase"]
    assert got["knowledgeBaseId"] == kb_id and "storageConfiguration" not in got
    assert svc.resolve(kb_id).model_id == "sentence-transformers.all-minilm-l6-v2-onnx-int8-unbatched"
    listed = svc.list_knowledge_bases(maxResults=1000)["knowledgeBaseSummaries"]
    assert any(s["knowledgeBaseId"] == kb_id and s["status"] == "ACTIVE" for s in listed)
    updated = svc.update_knowledge_base(
        knowledgeBaseId=kb_id, name=name, description="renamed", knowledgeBaseConfiguration={"type": "MANAGED"},
        metadataConfigurations=[{"name": "dept", "type": "STRING", "searchability": "ENABLED"}],
    )["knowledgeBase"]
    assert updated["description"] == "renamed"
    assert updated["metadataConfigurations"][0]["name"] == "dept"
    with pytest.raises(ValidationError, match="type cannot change"):
        svc.update_knowledge_base(knowledgeBaseId=kb_id, name=name, knowledgeBaseConfiguration={
            "type": "VECTOR", "vectorKnowledgeBaseConfiguration": {"embeddingModelArn": "x"}})
    assert svc.delete_knowledge_base(knowledgeBaseId=kb_id)["status"] == "DELETING"
    assert not _table_exists(settings, "pgkb_managed", table)  # pgkb owned it, so it goes
    with pytest.raises(NotFoundError):
        svc.get_knowledge_base(knowledgeBaseId=kb_id)


def test_managed_kb_custom_embedding_and_refusals(svc: KnowledgeBaseService) -> None:
    arn = "arn:aws:bedrock:us-east-1::foundation-model/sentence-transformers.all-minilm-l6-v2-onnx-int8-unbatched"
    kb_id = svc.create_knowledge_base(
        name=unique("mkc"), knowledgeBaseConfiguration={"type": "MANAGED", "managedKnowledgeBaseConfiguration": {
            "embeddingModelType": "CUSTOM", "embeddingModelArn": arn}})["knowledgeBase"]["knowledgeBaseId"]
    assert svc.resolve(kb_id).dimensions == 384
    bad = [
        ({"type": "MANAGED", "managedKnowledgeBaseConfiguration": {"embeddingModelType": "CUSTOM"}}, {},
         "embeddingModelArn is required"),
        ({"type": "MANAGED", "managedKnowledgeBaseConfiguration": {"embeddingModelArn": arn}}, {},
         "for embeddingModelType CUSTOM"),
        ({"type": "MANAGED"}, {"storageConfiguration": {"type": "RDS"}}, "storageConfiguration must be left out"),
        ({"type": "MANAGED"}, {"userContextModeForRetrieval": "IDENTITY_ENHANCED_SESSION"}, "API_INPUT_ONLY"),
        ({"type": "MANAGED"}, {"userContextModeForRetrieval": "IDENTITY_ENHANCED_SESSION_ELSE_API_INPUT"},
         "identity-enhanced"),
        ({"type": "MANAGED"}, {"trustedIdentitySources": [{"identityStoreArn": "x"}]}, "trustedIdentitySources"),
        ({"type": "KENDRA"}, {}, "VECTOR or MANAGED"),
    ]
    for cfg, extra, msg in bad:
        with pytest.raises(ValidationError, match=msg):
            svc.create_knowledge_base(name=unique("bad"), knowledgeBaseConfiguration=cfg, **extra)
    svc.delete_knowledge_base(knowledgeBaseId=kb_id)


def test_managed_connector_rules(svc: KnowledgeBaseService, tmp_path: Path) -> None:
    from test_boto3_e2e import MODEL_ARN

    vector = svc.create_knowledge_base(
        name=unique("vec"), knowledgeBaseConfiguration={"type": "VECTOR", "vectorKnowledgeBaseConfiguration": {
            "embeddingModelArn": MODEL_ARN}})["knowledgeBase"]["knowledgeBaseId"]
    with pytest.raises(ValidationError, match="needs a MANAGED knowledge base"):
        custom_source(svc, vector, acl=True)
    kb_id = managed_kb(svc)
    ds = svc.create_data_source(knowledgeBaseId=kb_id, name="c1", dataSourceConfiguration=connector("CUSTOM", True))
    assert ds["dataSource"]["status"] == "AVAILABLE"
    with pytest.raises(ValidationError, match="aclEnabled cannot change"):
        svc.update_data_source(knowledgeBaseId=kb_id, dataSourceId=ds["dataSource"]["dataSourceId"], name="c1",
                               dataSourceConfiguration=connector("CUSTOM", False))
    for cfg, msg in [
        (connector("SHAREPOINT", True), "not supported by pgkb"),
        (connector("CUSTOM", "yes"), "aclEnabled must be true or false"),  # type: ignore[arg-type]
        (connector("S3", True), "bucketName is required"),
        (connector("S3", True, connectionConfiguration={"bucketName": "b"},
                   aclConfiguration={"globalAccessControlListS3Uri": "s3://other/acl.json"}), "in bucket b"),
    ]:
        with pytest.raises(ValidationError, match=msg):
            svc.create_data_source(knowledgeBaseId=kb_id, name=unique("x"), dataSourceConfiguration=cfg)
    # Chunking DEFAULT (MANAGED's name for pgkb's default) is accepted.
    svc.create_data_source(knowledgeBaseId=kb_id, name="c2", dataSourceConfiguration=connector("CUSTOM", False),
                           vectorIngestionConfiguration={"chunkingConfiguration": {"chunkingStrategy": "DEFAULT"},
                                                         "parsingConfiguration": {"parsingStrategy": "SMART_PARSING"}})
    svc.delete_knowledge_base(knowledgeBaseId=kb_id)
    svc.delete_knowledge_base(knowledgeBaseId=vector)


def test_cli_kb_create_makes_a_managed_kb_without_a_table(settings: Settings) -> None:
    from typer.testing import CliRunner

    from pgkb.cli import app

    name = unique("climkb")
    args = ["--database-url", str(settings.database_url), "--data-dir", str(settings.data_dir)]
    res = CliRunner().invoke(app, ["kb", "create", name, *args, "--json"])
    assert res.exit_code == 0, res.output
    kb = json.loads(res.output)
    assert kb["knowledgeBaseConfiguration"]["type"] == "MANAGED" and "storageConfiguration" not in kb
    res = CliRunner().invoke(app, ["kb", "create", unique("clivec"), *args, "--table", unique("t_"), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["knowledgeBaseConfiguration"]["type"] == "VECTOR"


# ---------------------------------------------------------------------------------------- 2. ACL sources


@pytest.fixture(scope="module")
def folder_kb(svc: KnowledgeBaseService, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A MANAGED KB with an ACL-enabled folder (global ACL file + per-document lists) and a public folder."""
    root = tmp_path_factory.mktemp("aclfolder")
    docs = root / "docs"
    (docs / "finance").mkdir(parents=True)
    (docs / "hr").mkdir()
    (docs / "finance" / "q3.txt").write_text("Quarterly revenue of the aurora project grew by nine percent.")
    (docs / "finance" / "q4.txt").write_text("Fourth quarter aurora revenue forecast for the board.")
    (docs / "hr" / "salaries.txt").write_text("Salary bands of the aurora engineering team, confidential.")
    (docs / "hr" / "handbook.txt").write_text("The aurora employee handbook describes holidays and leave.")
    (docs / "orphan.txt").write_text("An aurora note nobody granted access to.")
    write_acl_sidecar(docs / "hr" / "salaries.txt", [("carol@example.com", "ALLOW")])
    acl_file = root / "global-acl.json"
    acl_file.write_text(json.dumps([
        {"keyPrefix": "finance/", "aclEntries": [{"Name": "alice@example.com", "Type": "USER", "Access": "ALLOW"},
                                                 {"Name": "bob@example.com", "Type": "USER", "Access": "DENY"}]},
        {"keyPrefix": "finance/q4.txt", "aclEntries": [{"Name": "bob@example.com", "Type": "USER", "Access": "ALLOW"}]},
        {"keyPrefix": "hr/", "aclEntries": [{"Name": "alice@example.com", "Type": "USER", "Access": "ALLOW"},
                                            {"Name": "dave@example.com", "Type": "USER", "Access": "ALLOW"}]},
    ]))
    public = root / "public"
    public.mkdir()
    (public / "news.txt").write_text("Aurora borealis photos from the public newsletter.")
    kb_id = managed_kb(svc)
    ds = folder_source(svc, kb_id, docs, acl=True, global_acl=str(acl_file))
    pub = folder_source(svc, kb_id, public, acl=False)
    job = svc.run_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds)["ingestionJob"]
    svc.run_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=pub)
    return {"kb": kb_id, "ds": ds, "pub": pub, "docs": docs, "acl_file": acl_file, "job": job}


def _names(resp: dict[str, Any]) -> set[str]:
    return {u.rsplit("/", 1)[-1] for u in uris(resp)}


def test_folder_acls_global_file_and_per_document(svc: KnowledgeBaseService, folder_kb: dict[str, Any]) -> None:
    kb = folder_kb["kb"]
    stats = folder_kb["job"]["statistics"]
    assert folder_kb["job"]["status"] == "COMPLETE"
    assert stats["numberOfDocumentsSkipped"] == 1  # orphan.txt: no ACL anywhere
    assert stats["numberOfNewDocumentsIndexed"] == 4
    q = "aurora"
    # alice: finance/ (q3; q4 has its own, longer prefix), hr/handbook; salaries has its own list (carol).
    assert _names(retrieve(svc, kb, q, "alice@example.com")) == {"q3.txt", "handbook.txt", "news.txt"}
    assert _names(retrieve(svc, kb, q, "bob@example.com")) == {"q4.txt", "news.txt"}
    assert _names(retrieve(svc, kb, q, "carol@example.com")) == {"salaries.txt", "news.txt"}
    assert _names(retrieve(svc, kb, q, "dave@example.com")) == {"handbook.txt", "news.txt"}
    assert _names(retrieve(svc, kb, q)) == {"news.txt"}  # no userContext: only the source without ACLs
    assert _names(retrieve(svc, kb, q, "mallory@example.com")) == {"news.txt"}
    # The skipped document says why, per document.
    docs = svc.list_knowledge_base_documents(knowledgeBaseId=kb, dataSourceId=folder_kb["ds"])["documentDetails"]
    orphan = [d for d in docs if d["identifier"]["custom"]["id"].endswith("orphan.txt")]
    assert orphan[0]["status"] == "IGNORED" and "no access control list" in orphan[0]["statusReason"]


def test_acl_operations(svc: KnowledgeBaseService, folder_kb: dict[str, Any]) -> None:
    kb, ds = folder_kb["kb"], folder_kb["ds"]
    hit = retrieve(svc, kb, "salary bands", "carol@example.com")["retrievalResults"][0]
    doc_id = hit["documentId"]
    assert hit["location"]["customDocumentLocation"]["id"].endswith("salaries.txt")
    check = svc.check_ingested_document_acl
    assert check(knowledgeBaseId=kb, dataSourceId=ds, documentId=doc_id, userContext={"userId": "carol@example.com"}) == {"hasAccess": True}
    assert check(knowledgeBaseId=kb, dataSourceId=ds, documentId=doc_id, userContext={"userId": "alice@example.com"}) == {"hasAccess": False}
    arn = f"arn:aws:bedrock:us-east-1:000000000000:knowledge-base/{kb}"
    acl = svc.get_ingested_document_acl(knowledgeBaseId=arn, dataSourceId=ds, documentId=doc_id)["documentAcl"]
    assert acl == {"allowList": {"memberRelation": "OR", "conditions": [
        {"conditionOperator": "OR", "users": [{"id": "carol@example.com", "type": "KNOWLEDGE_BASE"}]}]}}
    q3 = next(r for r in retrieve(svc, kb, "quarterly revenue", "alice@example.com")["retrievalResults"]
              if r["location"]["customDocumentLocation"]["id"].endswith("q3.txt"))
    acl = svc.get_ingested_document_acl(knowledgeBaseId=kb, dataSourceId=ds, documentId=q3["documentId"])["documentAcl"]
    assert acl["denyList"]["conditions"][0]["users"] == [{"id": "bob@example.com", "type": "KNOWLEDGE_BASE"}]
    # The URI as ingested works as a documentId too.
    uri = q3["location"]["customDocumentLocation"]["id"]
    assert check(knowledgeBaseId=kb, dataSourceId=ds, documentId=uri, userContext={"userId": "bob@example.com"}) == {"hasAccess": False}
    with pytest.raises(NotFoundError):
        check(knowledgeBaseId=kb, dataSourceId=ds, documentId="nope", userContext={"userId": "a"})
    with pytest.raises(NotFoundError):
        svc.get_ingested_document_acl(knowledgeBaseId=kb, dataSourceId="ZZZZZZZZZZ", documentId=doc_id)
    with pytest.raises(ValidationError, match="userId must not be empty"):
        check(knowledgeBaseId=kb, dataSourceId=ds, documentId=doc_id, userContext={"userId": ""})
    with pytest.raises(ValidationError, match="does not have connectorParameters.aclEnabled"):
        news = retrieve(svc, kb, "borealis photos")["retrievalResults"][0]["documentId"]
        svc.get_ingested_document_acl(knowledgeBaseId=kb, dataSourceId=folder_kb["pub"], documentId=news)
    orphan = document_id(next(d["identifier"]["custom"]["id"] for d in svc.list_knowledge_base_documents(
        knowledgeBaseId=kb, dataSourceId=ds)["documentDetails"] if d["status"] == "IGNORED"))
    assert check(knowledgeBaseId=kb, dataSourceId=ds, documentId=orphan, userContext={"userId": "alice@example.com"}) == {"hasAccess": False}
    with pytest.raises(NotFoundError, match="not ingested"):
        svc.get_ingested_document_acl(knowledgeBaseId=kb, dataSourceId=ds, documentId=orphan)


def test_custom_acls_and_acl_only_change_embeds_nothing(
    svc: KnowledgeBaseService, monkeypatch: pytest.MonkeyPatch
) -> None:
    kb = managed_kb(svc)
    ds = custom_source(svc, kb, acl=True)
    counter = EmbedCounter(svc.resolve(kb).model(), monkeypatch)
    out = svc.ingest_knowledge_base_documents(knowledgeBaseId=kb, dataSourceId=ds, documents=[
        inline_doc("memo-1", "The zephyr merger memo for the legal team.", [("erin@example.com", "ALLOW")]),
        inline_doc("memo-2", "The zephyr merger memo, unlisted copy.", None),
    ])["documentDetails"]
    assert [d["status"] for d in out] == ["INDEXED", "INDEXED"]
    assert "never returned" in out[1]["statusReason"]  # stored, never returned, and it says so
    embedded = counter.n
    assert embedded > 0
    assert [u for u in uris(retrieve(svc, kb, "zephyr merger", "erin@example.com"))] == ["memo-1"]
    assert uris(retrieve(svc, kb, "zephyr merger", "frank@example.com")) == []
    # Only the ACL changes: frank in, erin denied. Nothing is embedded, and erin loses it at once.
    svc.ingest_knowledge_base_documents(knowledgeBaseId=kb, dataSourceId=ds, documents=[
        inline_doc("memo-1", "The zephyr merger memo for the legal team.",
                   [("frank@example.com", "ALLOW"), ("erin@example.com", "DENY"), ("erin@example.com", "ALLOW")]),
    ])
    assert counter.n == embedded
    assert uris(retrieve(svc, kb, "zephyr merger", "frank@example.com")) == ["memo-1"]
    assert uris(retrieve(svc, kb, "zephyr merger", "erin@example.com")) == []  # deny wins over allow
    # An ACL on a source without aclEnabled is refused, naming why.
    pub = custom_source(svc, kb, acl=False)
    with pytest.raises(ValidationError, match="aclEnabled"):
        svc.ingest_knowledge_base_documents(knowledgeBaseId=kb, dataSourceId=pub, documents=[
            inline_doc("x", "text", [("a@b.c", "ALLOW")])])
    # Malformed entries fail the document (fail closed) with the reason.
    bad = inline_doc("memo-3", "zephyr", [("g@example.com", "MAYBE")])
    detail = svc.ingest_knowledge_base_documents(knowledgeBaseId=kb, dataSourceId=ds, documents=[bad])
    assert detail["documentDetails"][0]["status"] == "FAILED"
    assert "ALLOW or DENY" in detail["documentDetails"][0]["statusReason"]
    svc.delete_knowledge_base(knowledgeBaseId=kb)


def test_long_acl_lists_stay_in_their_rows(svc: KnowledgeBaseService, settings: Settings) -> None:
    """A filtered search checks the allow list of every candidate it visits: the lists must not be
    moved out of line by TOAST (an index probe and a fetch per candidate). 600 users make a 2.4 KB
    list, which the default storage would move out of the row."""
    kb = managed_kb(svc)
    ds = custom_source(svc, kb, acl=True)
    users = [(f"user{i:04d}@example.com", "ALLOW") for i in range(600)]
    svc.ingest_knowledge_base_documents(knowledgeBaseId=kb, dataSourceId=ds, documents=[
        inline_doc(f"wide-{i}", f"Quarterly planning notes, part {i}.", users) for i in range(5)])
    table = f"kb_{kb.lower()}"
    with psycopg.connect(str(settings.database_url)) as conn:
        storage = dict(conn.execute(
            "SELECT attname, attstorage FROM pg_attribute WHERE attrelid = %s::regclass"
            " AND attname IN ('acl_allow', 'acl_deny')", (f"pgkb_managed.{table}",)).fetchall())
        assert storage == {"acl_allow": "m", "acl_deny": "m"}
        toast = conn.execute("SELECT reltoastrelid::regclass::text FROM pg_class WHERE oid = %s::regclass",
                             (f"pgkb_managed.{table}",)).fetchone()[0]  # type: ignore[index]
        # Small chunk texts and metadata may go out of line (the row is over TOAST's 2 KB target with
        # the list in it); a 2.4 KB value out there could only be an ACL list.
        out_of_line = conn.execute(sql.SQL("SELECT coalesce(max(n), 0) FROM (SELECT sum(length(chunk_data)) AS n"
                                           " FROM {} GROUP BY chunk_id) AS v").format(sql.SQL(toast))).fetchone()
        inline = conn.execute(sql.SQL("SELECT min(pg_column_size(acl_allow)) FROM {}").format(
            sql.Identifier("pgkb_managed", table))).fetchone()
    assert out_of_line is not None and out_of_line[0] < 1000
    assert inline == (24 + 4 * 600,)
    assert uris(retrieve(svc, kb, "quarterly planning", "user0599@example.com"))
    svc.delete_knowledge_base(knowledgeBaseId=kb)


def test_acl_storage_migration_keeps_older_tables_lists_in_their_rows(new_database_url: str) -> None:
    from pgkb.db.database import migrate, migration_files

    with psycopg.connect(new_database_url, autocommit=True) as conn:
        migrate(conn)
        conn.execute("CREATE SCHEMA IF NOT EXISTS pgkb_managed")
        conn.execute("CREATE TABLE pgkb_managed.kb_old (id uuid PRIMARY KEY, acl_allow int4[], acl_deny int4[])")
        conn.execute(next(text for v, _, text in migration_files() if v == 200))  # as an upgrade runs it
        storage = dict(conn.execute(
            "SELECT attname, attstorage FROM pg_attribute WHERE attrelid = 'pgkb_managed.kb_old'::regclass"
            " AND attname LIKE 'acl_%'").fetchall())
    assert storage == {"acl_allow": "m", "acl_deny": "m"}


def test_global_acl_change_rewrites_acls_without_embedding(
    svc: KnowledgeBaseService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "plan.txt").write_text("The heliotrope launch plan and its budget.")
    acl_file = tmp_path / "acl.json"

    def grant(user: str) -> None:
        acl_file.write_text(json.dumps([{"keyPrefix": str(docs) + "/", "aclEntries": [
            {"Name": user, "Type": "USER", "Access": "ALLOW"}]}]))

    grant("gina@example.com")
    kb = managed_kb(svc)
    ds = folder_source(svc, kb, docs, acl=True, global_acl=str(acl_file))
    svc.run_ingestion_job(knowledgeBaseId=kb, dataSourceId=ds)
    assert len(uris(retrieve(svc, kb, "heliotrope", "gina@example.com"))) == 1
    counter = EmbedCounter(svc.resolve(kb).model(), monkeypatch)
    grant("hank@example.com")
    job = svc.run_ingestion_job(knowledgeBaseId=kb, dataSourceId=ds)["ingestionJob"]
    assert counter.n == 0
    assert job["statistics"]["numberOfModifiedDocumentsIndexed"] == 0
    assert job["statistics"]["numberOfMetadataDocumentsModified"] == 1
    assert uris(retrieve(svc, kb, "heliotrope", "gina@example.com")) == []  # the old grant is gone
    assert len(uris(retrieve(svc, kb, "heliotrope", "hank@example.com"))) == 1
    # The ACL disappears altogether: the document leaves the index, and says why.
    acl_file.write_text("[]")
    job = svc.run_ingestion_job(knowledgeBaseId=kb, dataSourceId=ds)["ingestionJob"]
    assert job["statistics"]["numberOfDocumentsSkipped"] == 1
    assert uris(retrieve(svc, kb, "heliotrope", "hank@example.com")) == []
    svc.delete_knowledge_base(knowledgeBaseId=kb)


# ---------------------------------------------------------------------------------------- 5. managed search


def test_managed_search_configuration(svc: KnowledgeBaseService, folder_kb: dict[str, Any]) -> None:
    kb = folder_kb["kb"]
    with pytest.raises(ValidationError, match="vectorSearchConfiguration is for VECTOR"):
        svc.retrieve(knowledgeBaseId=kb, retrievalQuery={"text": "aurora"},
                     retrievalConfiguration={"vectorSearchConfiguration": {"numberOfResults": 3}})
    with pytest.raises(ValidationError, match="rerankingModelType"):
        svc.retrieve(knowledgeBaseId=kb, retrievalQuery={"text": "aurora"},
                     retrievalConfiguration={"managedSearchConfiguration": {"rerankingModelType": "FANCY"}})
    with pytest.raises(ValidationError, match="rerankingConfiguration is required"):
        svc.retrieve(knowledgeBaseId=kb, retrievalQuery={"text": "aurora"},
                     retrievalConfiguration={"managedSearchConfiguration": {"rerankingModelType": "CUSTOM"}})
    one = retrieve(svc, kb, "aurora", "alice@example.com", k=1)
    assert len(one["retrievalResults"]) == 1 and "nextToken" not in one  # numberOfResults caps the answer
    # Default (no configuration at all) works and answers with the public source.
    default = svc.retrieve(knowledgeBaseId=kb, retrievalQuery={"text": "aurora"})
    assert _names(default) == {"news.txt"}
    # A filter composes with the ACL.
    flt = {"startsWith": {"key": "x-amz-bedrock-kb-source-uri", "value": "file://" + str(folder_kb["docs"]) + "/hr"}}
    assert _names(retrieve(svc, kb, "aurora", "alice@example.com", flt=flt)) == {"handbook.txt"}


# ---------------------------------------------------------------------------------------- 6. content


def test_get_document_content(svc: KnowledgeBaseService, folder_kb: dict[str, Any]) -> None:
    kb, ds = folder_kb["kb"], folder_kb["ds"]
    hit = retrieve(svc, kb, "salary bands", "carol@example.com")["retrievalResults"][0]
    out = svc.get_document_content(knowledgeBaseId=kb, dataSourceId=ds, documentId=hit["documentId"],
                                   userContext={"userId": "carol@example.com"}, contentBaseUrl="http://h:1")
    assert out["mimeType"] == "text/plain"
    raw = (folder_kb["docs"] / "hr" / "salaries.txt").read_bytes()
    assert out["documentContentLength"] == len(raw)
    token = out["presignedUrl"].split("/content/", 1)[1]
    assert out["presignedUrl"].startswith("http://h:1/content/")
    assert svc.document_content_response(token) == (200, "text/plain", raw)
    ext = svc.get_document_content(knowledgeBaseId=kb, dataSourceId=ds, documentId=hit["documentId"],
                                   outputFormat="EXTRACTED", userContext={"userId": "carol@example.com"})
    assert ext["mimeType"] == "application/json"
    status, ctype, body = svc.document_content_response(ext["presignedUrl"].split("/content/", 1)[1])
    assert status == 200 and "Salary bands" in json.loads(body)["content"][0]["text"]
    for user in ("alice@example.com", None):  # not visible: answered as if it did not exist
        with pytest.raises(NotFoundError):
            svc.get_document_content(knowledgeBaseId=kb, dataSourceId=ds, documentId=hit["documentId"],
                                     userContext={"userId": user} if user else None)
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    assert svc.document_content_response(tampered)[0] == 403
    with pytest.raises(ValidationError, match="mediaId"):
        svc.get_document_content(knowledgeBaseId=kb, dataSourceId=ds, documentId=hit["documentId"],
                                 mediaId="a" * 36)


def test_acl_migration_runs_again_unchanged(new_database_url: str) -> None:
    from pgkb.db.database import migrate, migration_files

    with psycopg.connect(new_database_url) as conn:
        migrate(conn)
        key = conn.execute("SELECT secret FROM pgkb.url_signing_key").fetchone()
        sql_text = next(text for v, _, text in migration_files() if v == 140)
        conn.execute(sql_text)  # every statement is idempotent
        assert conn.execute("SELECT secret FROM pgkb.url_signing_key").fetchone() == key
        assert len(key[0]) == 64  # type: ignore[index]


def test_s3_acl_source_with_global_file_and_sidecars(
    svc: KnowledgeBaseService, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3
    from helpers.moto import moto_server

    with moto_server() as endpoint:
        for k, v in {"PGKB_S3_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
                     "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
            monkeypatch.setenv(k, v)
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        s3.create_bucket(Bucket="acl-docs")
        put = lambda key, body: s3.put_object(Bucket="acl-docs", Key=key, Body=body)  # noqa: E731
        put("legal/contract.txt", b"The walrus supply contract and its penalties.")
        put("legal/nda.txt", b"The walrus non-disclosure agreement.")
        put("legal/nda.txt.metadata.json", json.dumps({"metadataAttributes": {"kind": "nda"}, "accessControlList": [
            {"Name": "ivy@example.com", "Type": "USER", "Access": "ALLOW"}]}).encode())
        put("misc/walrus.txt", b"A walrus note with no ACL anywhere.")
        put("acl/global.json", json.dumps([{"keyPrefix": "s3://acl-docs/legal/", "aclEntries": [
            {"Name": "jay@example.com", "Type": "USER", "Access": "ALLOW"}]}]).encode())
        kb = managed_kb(svc)
        ds = svc.create_data_source(knowledgeBaseId=kb, name="s3acl", dataSourceConfiguration=connector(
            "S3", True, connectionConfiguration={"bucketName": "acl-docs"},
            filterConfiguration={"inclusionPrefixes": ["legal/"]},
            aclConfiguration={"globalAccessControlListS3Uri": "s3://acl-docs/acl/global.json"}))["dataSource"]
        ds2 = svc.create_data_source(knowledgeBaseId=kb, name="s3misc", dataSourceConfiguration=connector(
            "S3", True, connectionConfiguration={"bucketName": "acl-docs"},
            filterConfiguration={"inclusionPrefixes": ["misc/"]}))["dataSource"]
        job = svc.run_ingestion_job(knowledgeBaseId=kb, dataSourceId=ds["dataSourceId"])["ingestionJob"]
        assert job["status"] == "COMPLETE" and job["statistics"]["numberOfNewDocumentsIndexed"] == 2
        job2 = svc.run_ingestion_job(knowledgeBaseId=kb, dataSourceId=ds2["dataSourceId"])["ingestionJob"]
        assert job2["statistics"]["numberOfDocumentsSkipped"] == 1
        assert set(uris(retrieve(svc, kb, "walrus", "jay@example.com"))) == {"s3://acl-docs/legal/contract.txt"}
        ivy = retrieve(svc, kb, "walrus", "ivy@example.com")
        assert uris(ivy) == ["s3://acl-docs/legal/nda.txt"]  # its metadata file wins over the global prefix
        assert ivy["retrievalResults"][0]["metadata"]["kind"] == "nda"
        assert uris(retrieve(svc, kb, "walrus")) == []
        out = svc.get_document_content(knowledgeBaseId=kb, dataSourceId=ds["dataSourceId"],
                                       documentId=ivy["retrievalResults"][0]["documentId"],
                                       userContext={"userId": "ivy@example.com"})
        status, _, body = svc.document_content_response(out["presignedUrl"].split("/content/", 1)[1])
        assert status == 200 and body == b"The walrus non-disclosure agreement."
        svc.delete_knowledge_base(knowledgeBaseId=kb)


def test_malformed_acl_fails_closed_with_its_reason(svc: KnowledgeBaseService, tmp_path: Path) -> None:
    doc = tmp_path / "budget.txt"
    doc.write_text("The kestrel budget allocation.")
    write_acl_sidecar(doc, [("kim@example.com", "ALLOW")])
    kb = managed_kb(svc)
    ds = folder_source(svc, kb, tmp_path, acl=True)
    svc.run_ingestion_job(knowledgeBaseId=kb, dataSourceId=ds)
    assert len(uris(retrieve(svc, kb, "kestrel budget", "kim@example.com"))) == 1
    write_acl_sidecar(doc, [("kim@example.com", "MAYBE")])  # broken: the earlier grant must not survive
    job = svc.run_ingestion_job(knowledgeBaseId=kb, dataSourceId=ds)["ingestionJob"]
    assert job["statistics"]["numberOfDocumentsFailed"] == 1
    assert uris(retrieve(svc, kb, "kestrel budget", "kim@example.com")) == []
    detail = svc.list_knowledge_base_documents(knowledgeBaseId=kb, dataSourceId=ds)["documentDetails"]
    assert detail[0]["status"] == "FAILED" and "ALLOW or DENY" in detail[0]["statusReason"]
    svc.delete_knowledge_base(knowledgeBaseId=kb)


def test_managed_search_reranking(svc: KnowledgeBaseService, folder_kb: dict[str, Any],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from test_rerank import Server

    reranker = Server("tei")
    try:
        monkeypatch.setenv("PGKB_RERANKERS", json.dumps({"amazon.rerank-v1:0": reranker.url + "/rerank"}))
        kb = folder_kb["kb"]
        # rerankingModelType MANAGED (the default with managed embedding): pgkb's configured reranker runs,
        # over the visible chunks only.
        svc.retrieve(knowledgeBaseId=kb, retrievalQuery={"text": "aurora handbook holidays"},
                     retrievalConfiguration={"managedSearchConfiguration": {"numberOfResults": 3}},
                     userContext={"userId": "dave@example.com"})
        assert len(reranker.requests) == 1
        sent = reranker.requests[0][1]["texts"]
        assert sent and all("Salary" not in t and "revenue" not in t for t in sent)
        # NONE: no reranking.
        retrieve(svc, kb, "aurora handbook", "dave@example.com")
        assert len(reranker.requests) == 1
        # CUSTOM: the model named.
        svc.retrieve(knowledgeBaseId=kb, retrievalQuery={"text": "aurora handbook"},
                     retrievalConfiguration={"managedSearchConfiguration": {
                         "rerankingModelType": "CUSTOM", "rerankingConfiguration": {
                             "type": "BEDROCK_RERANKING_MODEL", "bedrockRerankingConfiguration": {
                                 "modelConfiguration": {"modelArn": "arn:aws:bedrock:us-east-1::foundation-model/amazon.rerank-v1:0"}}}}},
                     userContext={"userId": "dave@example.com"})
        assert len(reranker.requests) == 2
    finally:
        reranker.close()
