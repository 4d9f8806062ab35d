"""MANAGED knowledge bases and document ACLs over the wire: boto3 (bedrock-agent and
bedrock-agent-runtime) against pgkb's ASGI app, and GetDocumentContent's presigned URL fetched over HTTP."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from helpers.acl import connector, unique
from helpers.servers import running

from pgkb.config import Settings
from pgkb.server.app import create_app
from pgkb.service import KnowledgeBaseService

REGION = "us-east-1"


@pytest.fixture(scope="module")
def url(settings: Settings) -> Iterator[str]:
    with KnowledgeBaseService(settings) as svc, running(create_app(svc, None)) as base:
        yield base


def client(url: str, name: str) -> Any:
    return boto3.client(name, endpoint_url=url, region_name=REGION, aws_access_key_id="k",
                        aws_secret_access_key="s", config=Config(retries={"max_attempts": 1}))


def _code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def test_managed_kb_and_acls_over_boto3(url: str) -> None:
    agent, runtime = client(url, "bedrock-agent"), client(url, "bedrock-agent-runtime")
    kb = agent.create_knowledge_base(
        name=unique("wire"), roleArn="arn:aws:iam::000000000000:role/kb",
        knowledgeBaseConfiguration={"type": "MANAGED", "managedKnowledgeBaseConfiguration": {"embeddingModelType": "MANAGED"}},
        userContextModeForRetrieval="API_INPUT_ONLY",
    )["knowledgeBase"]
    kb_id = kb["knowledgeBaseId"]
    assert kb["knowledgeBaseConfiguration"]["type"] == "MANAGED" and "storageConfiguration" not in kb
    assert agent.get_knowledge_base(knowledgeBaseId=kb_id)["knowledgeBase"]["userContextModeForRetrieval"] == "API_INPUT_ONLY"
    with pytest.raises(ClientError) as exc:
        agent.create_knowledge_base(name=unique("ies"), roleArn="arn:aws:iam::000000000000:role/kb",
                                    knowledgeBaseConfiguration={"type": "MANAGED"},
                                    userContextModeForRetrieval="IDENTITY_ENHANCED_SESSION")
    assert _code(exc) == "ValidationException" and "API_INPUT_ONLY" in str(exc.value)
    ds_id = agent.create_data_source(knowledgeBaseId=kb_id, name="acl", dataSourceConfiguration=connector("CUSTOM", True),
                                     )["dataSource"]["dataSourceId"]
    docs = [
        {"content": {"dataSourceType": "CUSTOM", "custom": {
            "customDocumentIdentifier": {"id": "plan"}, "sourceType": "IN_LINE",
            "inlineContent": {"type": "TEXT", "textContent": {"data": "The pelican expansion plan for next year."}}}},
         "metadata": {"type": "IN_LINE_ATTRIBUTE",
                      "inlineAttributes": [{"key": "dept", "value": {"type": "STRING", "stringValue": "ops"}}],
                      "accessControlList": [{"name": "ann@example.com", "type": "USER", "access": "ALLOW"},
                                            {"name": "ben@example.com", "type": "USER", "access": "DENY"}]}},
    ]
    details = agent.ingest_knowledge_base_documents(knowledgeBaseId=kb_id, dataSourceId=ds_id, documents=docs)
    assert details["documentDetails"][0]["status"] == "INDEXED"

    def ask(user: str | None) -> list[dict[str, Any]]:
        kw: dict[str, Any] = {"userContext": {"userId": user}} if user else {}
        return runtime.retrieve(  # type: ignore[no-any-return]
            knowledgeBaseId=kb_id, retrievalQuery={"text": "pelican expansion"},
            retrievalConfiguration={"managedSearchConfiguration": {"numberOfResults": 5}}, **kw)["retrievalResults"]

    hits = ask("ann@example.com")
    assert [h["location"]["customDocumentLocation"]["id"] for h in hits] == ["plan"]
    assert hits[0]["metadata"]["dept"] == "ops"
    assert ask("ben@example.com") == [] and ask(None) == []
    doc_id = hits[0]["documentId"]
    assert runtime.check_ingested_document_acl(knowledgeBaseId=kb_id, dataSourceId=ds_id, documentId=doc_id,
                                               userContext={"userId": "ann@example.com"})["hasAccess"] is True
    assert runtime.check_ingested_document_acl(knowledgeBaseId=kb_id, dataSourceId=ds_id, documentId=doc_id,
                                               userContext={"userId": "ben@example.com"})["hasAccess"] is False
    acl = runtime.get_ingested_document_acl(knowledgeBaseId=kb_id, dataSourceId=ds_id, documentId=doc_id)["documentAcl"]
    assert acl["allowList"]["conditions"][0]["users"] == [{"id": "ann@example.com", "type": "KNOWLEDGE_BASE"}]
    assert acl["denyList"]["conditions"][0]["users"] == [{"id": "ben@example.com", "type": "KNOWLEDGE_BASE"}]
    with pytest.raises(ClientError) as exc:
        runtime.check_ingested_document_acl(knowledgeBaseId=kb_id, dataSourceId=ds_id, documentId="missing",
                                            userContext={"userId": "ann@example.com"})
    assert _code(exc) == "ResourceNotFoundException"
    with pytest.raises(ClientError) as exc:
        runtime.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": "x"},
                         retrievalConfiguration={"vectorSearchConfiguration": {"numberOfResults": 5}})
    assert _code(exc) == "ValidationException"

    # GetDocumentContent: a presigned URL served by pgkb itself, checked against the user.
    out = runtime.get_document_content(knowledgeBaseId=kb_id, dataSourceId=ds_id, documentId=doc_id,
                                       outputFormat="RAW", userContext={"userId": "ann@example.com"})
    assert out["mimeType"] == "text/plain" and out["presignedUrl"].startswith(url + "/content/")
    with urllib.request.urlopen(out["presignedUrl"]) as resp:
        body = resp.read()
    assert body == b"The pelican expansion plan for next year." and out["documentContentLength"] == len(body)
    ext = runtime.get_document_content(knowledgeBaseId=kb_id, dataSourceId=ds_id, documentId=doc_id,
                                       outputFormat="EXTRACTED", userContext={"userId": "ann@example.com"})
    assert ext["mimeType"] == "application/json"
    with pytest.raises(ClientError) as exc:
        runtime.get_document_content(knowledgeBaseId=kb_id, dataSourceId=ds_id, documentId=doc_id,
                                     userContext={"userId": "ben@example.com"})
    assert _code(exc) == "ResourceNotFoundException"
    with pytest.raises(urllib.error.HTTPError) as http:
        urllib.request.urlopen(out["presignedUrl"][:-3] + "xyz")
    assert http.value.code == 403
    # Revoke ann (an ACL-only change): the URL she was given stops working at once.
    docs[0]["metadata"]["accessControlList"] = [{"name": "cat@example.com", "type": "USER", "access": "ALLOW"}]
    agent.ingest_knowledge_base_documents(knowledgeBaseId=kb_id, dataSourceId=ds_id, documents=docs)
    with pytest.raises(urllib.error.HTTPError) as http:
        urllib.request.urlopen(out["presignedUrl"])
    assert http.value.code == 404
    agent.delete_knowledge_base(knowledgeBaseId=kb_id)
