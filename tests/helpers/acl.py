"""Shared helpers for the MANAGED knowledge base and ACL tests: knowledge bases, data sources, documents."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def managed_kb(svc: Any, name: str | None = None, **kw: Any) -> str:
    kb = svc.create_knowledge_base(
        name=name or unique("managed"),
        knowledgeBaseConfiguration={"type": "MANAGED", "managedKnowledgeBaseConfiguration": {}},
        **kw,
    )["knowledgeBase"]
    return str(kb["knowledgeBaseId"])


def connector(ctype: str, acl: bool, **params: Any) -> dict[str, Any]:
    return {
        "type": "MANAGED_KNOWLEDGE_BASE_CONNECTOR",
        "managedKnowledgeBaseConnectorConfiguration": {
            "connectorParameters": {"type": ctype, "version": "1", "aclEnabled": acl, **params}
        },
    }


def custom_source(svc: Any, kb_id: str, acl: bool, name: str | None = None) -> str:
    ds = svc.create_data_source(
        knowledgeBaseId=kb_id, name=name or unique("custom"), dataSourceConfiguration=connector("CUSTOM", acl)
    )["dataSource"]
    return str(ds["dataSourceId"])


def folder_source(svc: Any, kb_id: str, path: Path, acl: bool, global_acl: str | None = None) -> str:
    params: dict[str, Any] = {"connectionConfiguration": {"path": str(path)}}
    if global_acl:
        params["aclConfiguration"] = {"globalAccessControlListPath": global_acl}
    ds = svc.create_data_source(
        knowledgeBaseId=kb_id, name=unique("folder"), dataSourceConfiguration=connector("LOCAL", acl, **params)
    )["dataSource"]
    return str(ds["dataSourceId"])


def inline_doc(doc_id: str, text: str, acl: list[tuple[str, str]] | None = None,
               attrs: dict[str, str] | None = None) -> dict[str, Any]:
    """A CUSTOM inline document; `acl` is [(user, "ALLOW"|"DENY")] (lowercase keys, as the API takes them)."""
    doc: dict[str, Any] = {
        "content": {
            "dataSourceType": "CUSTOM",
            "custom": {
                "customDocumentIdentifier": {"id": doc_id},
                "sourceType": "IN_LINE",
                "inlineContent": {"type": "TEXT", "textContent": {"data": text}},
            },
        }
    }
    if acl is not None or attrs:
        md: dict[str, Any] = {"type": "IN_LINE_ATTRIBUTE"}
        if attrs:
            md["inlineAttributes"] = [{"key": k, "value": {"type": "STRING", "stringValue": v}} for k, v in attrs.items()]
        if acl is not None:
            md["accessControlList"] = [{"name": u, "type": "USER", "access": a} for u, a in acl]
        doc["metadata"] = md
    return doc


def write_acl_sidecar(path: Path, acl: list[tuple[str, str]], attrs: dict[str, Any] | None = None) -> None:
    body = {"metadataAttributes": attrs or {},
            "accessControlList": [{"Name": u, "Type": "USER", "Access": a} for u, a in acl]}
    path.with_name(path.name + ".metadata.json").write_text(json.dumps(body))


def retrieve(svc: Any, kb_id: str, text: str, user: str | None = None, k: int = 10,
             flt: dict[str, Any] | None = None, token: str | None = None) -> dict[str, Any]:
    msc: dict[str, Any] = {"numberOfResults": k, "rerankingModelType": "NONE"}
    if flt is not None:
        msc["filter"] = flt
    kw: dict[str, Any] = {"retrievalConfiguration": {"managedSearchConfiguration": msc}}
    if user is not None:
        kw["userContext"] = {"userId": user}
    if token is not None:
        kw["nextToken"] = token
    return svc.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": text}, **kw)  # type: ignore[no-any-return]


def uris(response: dict[str, Any]) -> list[str]:
    return [r["location"]["customDocumentLocation"]["id"] if r["location"]["type"] == "CUSTOM"
            else r["location"]["s3Location"]["uri"] for r in response["retrievalResults"]]
