"""bedrock-agent's direct document operations: Ingest / Get / List / DeleteKnowledgeBaseDocuments.

Documents are processed in the request, through the same parse → chunk → embed → crash-safe write
path as a sync, so the response already says INDEXED or FAILED with the reason.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import mimetypes
import threading
from collections import Counter
from typing import Any

import numpy as np

from pgkb.errors import PgkbError, ValidationError
from pgkb.ingestion.acl import DocAcl, parse_entries, sidecar_acl
from pgkb.ingestion.documents import PreparedDocument, prepare_document
from pgkb.ingestion.sources import S3Source, split_s3_uri
from pgkb.ingestion.writer import DocumentWriter
from pgkb.parsing import Sidecar, read_sidecar
from pgkb.service import shapes
from pgkb.service.base import Collaborator
from pgkb.service.connectors import settings_of
from pgkb.store import catalog
from pgkb.store.content import store_raw

MAX_DOCUMENTS = 25
MAX_INLINE_BYTES = 5 * 1024 * 1024
#: Direct writes append BM25 df deltas like any other; every this many write calls on a knowledge
#: base (in this process) they are folded, as an ingestion job does when it ends.
COMPACT_EVERY = 64
_writes: Counter[str] = Counter()
_writes_lock = threading.Lock()

# MIME types of byteContent → a file name extension the parser understands.
_MIME_EXT = {
    "text/plain": ".txt",
    "text/markdown": ".md",
    "text/html": ".html",
    "application/xhtml+xml": ".html",
    "text/csv": ".csv",
    "application/pdf": ".pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ".docx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": ".xlsx",
}


def _attributes(metadata: dict[str, Any] | None, fetch_s3: Any) -> Sidecar:
    """Inline attributes or an S3 metadata file → attributes."""
    if not metadata:
        return Sidecar({})
    kind = metadata.get("type")
    if kind == "IN_LINE_ATTRIBUTE":
        attrs = metadata.get("inlineAttributes") or []
        least = 0 if metadata.get("accessControlList") else 1  # an ACL alone is metadata enough
        if not isinstance(attrs, list) or not least <= len(attrs) <= 50:
            raise ValidationError("metadata.inlineAttributes must hold 1 to 50 attributes")
        typed = {}
        for a in attrs:
            if not isinstance(a, dict) or "key" not in a or "value" not in a:
                raise ValidationError("each inline attribute needs a key and a value")
            typed[a["key"]] = {"value": a["value"]}
        return read_sidecar(json.dumps({"metadataAttributes": typed}).encode())
    if kind == "S3_LOCATION":
        uri = (metadata.get("s3Location") or {}).get("uri")
        if not uri:
            raise ValidationError("metadata.s3Location.uri is required")
        return read_sidecar(fetch_s3(uri))
    raise ValidationError("metadata.type must be IN_LINE_ATTRIBUTE or S3_LOCATION")


def _acl(metadata: dict[str, Any] | None, fetch_s3: Any, acl_enabled: bool) -> DocAcl | None:
    """The ACL of a CUSTOM document: inline `metadata.accessControlList` (lowercase keys) or the
    `.metadata.json` at `metadata.s3Location` (capitalised keys). Exactly one source per document."""
    metadata = metadata or {}
    inline = metadata.get("accessControlList")
    if inline is not None and not acl_enabled:
        raise ValidationError(
            "metadata.accessControlList needs a data source with connectorParameters.aclEnabled true"
        )
    if not acl_enabled:
        return None
    if metadata.get("type") == "S3_LOCATION":
        if inline is not None:
            raise ValidationError(
                "metadata.accessControlList is for IN_LINE_ATTRIBUTE metadata; with S3_LOCATION the ACL comes"
                " from the accessControlList of the metadata file"
            )
        uri = (metadata.get("s3Location") or {}).get("uri")
        return sidecar_acl(fetch_s3(uri)) if uri else None
    if inline is None:
        return None
    return parse_entries(inline, capitalised=False, origin="metadata.accessControlList")


class DocumentOps(Collaborator):
    def _kb_ds(self, kb_id: str, ds_id: str) -> tuple[Any, dict[str, Any]]:
        with self.db.connection() as conn:
            kb_row = catalog.get_knowledge_base(conn, kb_id)
            ds = catalog.get_data_source(conn, kb_row["id"], ds_id)
        return self.resolve(kb_row["id"]), ds

    @staticmethod
    def _fetch_s3(uri: str) -> bytes:
        return S3Source(split_s3_uri(uri)[0]).get_uri(uri)

    def _content(self, ds: dict[str, Any], content: Any) -> tuple[str, str, bytes, str | None]:
        """(uri, file name for the parser, bytes, mime type) of one document's content."""
        if not isinstance(content, dict):
            raise ValidationError("document.content is required")
        kind = content.get("dataSourceType")
        if kind != ds["source_type"] and not (kind == "CUSTOM" and ds["source_type"] == "LOCAL"):
            raise ValidationError(
                f"content.dataSourceType {kind!r} does not match the data source's type {ds['source_type']}"
            )
        if kind == "S3":
            uri = ((content.get("s3") or {}).get("s3Location") or {}).get("uri")
            if not uri:
                raise ValidationError("content.s3.s3Location.uri is required")
            bucket, key = split_s3_uri(uri)
            own = settings_of(ds).bucket
            if bucket != own:
                raise ValidationError(f"{uri} is not in the data source's bucket {own}")
            return uri, key.rsplit("/", 1)[-1], self._fetch_s3(uri), None
        custom = content.get("custom") or {}
        doc_id = (custom.get("customDocumentIdentifier") or {}).get("id")
        if not isinstance(doc_id, str) or not 1 <= len(doc_id) <= 2048:
            raise ValidationError("content.custom.customDocumentIdentifier.id must be 1 to 2048 characters")
        source_type = custom.get("sourceType")
        if source_type == "S3_LOCATION":
            uri = (custom.get("s3Location") or {}).get("uri")
            if not uri:
                raise ValidationError("content.custom.s3Location.uri is required")
            return doc_id, split_s3_uri(uri)[1].rsplit("/", 1)[-1], self._fetch_s3(uri), None
        if source_type != "IN_LINE":
            raise ValidationError("content.custom.sourceType must be IN_LINE or S3_LOCATION")
        inline = custom.get("inlineContent") or {}
        mime: str | None
        if inline.get("type") == "TEXT":
            text = (inline.get("textContent") or {}).get("data")
            if not isinstance(text, str):
                raise ValidationError("inlineContent.textContent.data is required")
            data = text.encode("utf-8")
            name, mime = "document.txt", "text/plain"
        elif inline.get("type") == "BYTE":
            byte = inline.get("byteContent") or {}
            mime = byte.get("mimeType")
            raw = byte.get("data")
            if isinstance(raw, bytes | bytearray):
                data = bytes(raw)
            elif isinstance(raw, str):
                try:
                    data = base64.b64decode(raw, validate=True)
                except (binascii.Error, ValueError):
                    raise ValidationError("inlineContent.byteContent.data is not valid base64") from None
            else:
                raise ValidationError("inlineContent.byteContent.data is required")
            if mime not in _MIME_EXT:
                raise ValidationError(f"inlineContent.byteContent.mimeType {mime!r} is not supported")
            name = "document" + _MIME_EXT[mime]
        else:
            raise ValidationError("inlineContent.type must be TEXT or BYTE")
        if len(data) > MAX_INLINE_BYTES:
            raise ValidationError("inline content is larger than 5 MB")
        return doc_id, name, data, mime

    def ingest_knowledge_base_documents(
        self,
        *,
        knowledgeBaseId: str,
        dataSourceId: str,
        documents: list[dict[str, Any]],
        clientToken: str | None = None,
    ) -> dict[str, Any]:
        kb, ds = self._kb_ds(knowledgeBaseId, dataSourceId)
        if not isinstance(documents, list) or not 1 <= len(documents) <= MAX_DOCUMENTS:
            raise ValidationError(f"documents must hold 1 to {MAX_DOCUMENTS} documents")
        model = kb.model()
        chunking = (ds["ingestion"] or {}).get("chunkingConfiguration")
        ready: list[PreparedDocument] = []
        details: list[dict[str, Any]] = []
        failed: list[tuple[str, str]] = []
        # Shape errors fail the whole request before anything is written.
        parsed_inputs = []
        acl_enabled = bool(ds.get("acl_enabled"))
        for doc in documents:
            if not isinstance(doc, dict):
                raise ValidationError("each document must be an object")
            uri, name, data, mime = self._content(ds, doc.get("content"))
            if (doc.get("metadata") or {}).get("accessControlList") is not None and not acl_enabled:
                raise ValidationError(
                    "metadata.accessControlList needs a data source with connectorParameters.aclEnabled true"
                )
            parsed_inputs.append((doc, uri, name, data, mime))
        with self.db.connection() as conn:
            before = catalog.get_documents(conn, ds["id"], [p[1] for p in parsed_inputs])
        acl_only: list[tuple[str, int, Any]] = []
        raws: list[tuple[str, bytes, str | None]] = []
        for doc, uri, name, data, mime in parsed_inputs:
            try:
                sidecar = _attributes(doc.get("metadata"), self._fetch_s3)
                acl = _acl(doc.get("metadata"), self._fetch_s3, acl_enabled)
                meta_hash = hashlib.sha256(json.dumps(sidecar.attributes, sort_keys=True).encode()).hexdigest()
                fingerprint = hashlib.sha256(data).hexdigest()
                prev = before.get(uri)
                if (prev is not None and prev["status"] == "INDEXED" and prev["content_hash"] == fingerprint
                        and prev["metadata_hash"] == meta_hash):
                    # Same content and attributes: at most the ACL changed, and nothing is embedded.
                    if acl_enabled and prev.get("acl_hash") != (acl.hash if acl else None):
                        acl_only.append((uri, max(prev["chunk_high_water"], prev["chunk_count"]), acl))
                    continue
                prepared = prepare_document(
                    ds_id=ds["id"], uri=uri, name=name, data=data, sidecar=sidecar, chunking=chunking,
                    model=model, fingerprint=fingerprint, sidecar_hash=meta_hash,
                    location=shapes.location_for(uri), mime_type=mime,
                )
                prepared.acl = acl
                ready.append(prepared)
                if kb.managed and ds["source_type"] == "CUSTOM":  # kept: a custom id points at no file
                    raws.append((uri, data, mime or mimetypes.guess_type(name)[0]))
            except PgkbError as exc:
                failed.append((uri, exc.message))
        texts = [t for d in ready for t in d.embed_texts if t is not None]
        vectors = model.embed_documents(texts) if texts else np.zeros((0, kb.dimensions), dtype=np.float32)
        writer = DocumentWriter(self.db, kb, ds["id"])
        writer.write(ready, vectors)
        writer.update_acls(acl_only)
        if raws:
            with self.db.connection() as conn:
                store_raw(conn, ds["id"], raws)
        _fold_now_and_then(writer)
        with self.db.connection() as conn:
            catalog.mark_documents_failed(conn, kb.id, ds["id"], failed)
            rows = catalog.get_documents(conn, ds["id"], [p[1] for p in parsed_inputs])
        for _, uri, *_ in parsed_inputs:
            r = rows.get(uri)
            details.append(
                shapes.document_detail(kb.id, ds["id"], ds["source_type"], uri, r["status"] if r else "FAILED",
                                       r["status_reason"] if r else None, r["updated_at"] if r else None)
            )
        return {"documentDetails": details}

    def _identifiers(self, ds: dict[str, Any], identifiers: list[dict[str, Any]]) -> list[str]:
        if not isinstance(identifiers, list) or not 1 <= len(identifiers) <= MAX_DOCUMENTS:
            raise ValidationError(f"documentIdentifiers must hold 1 to {MAX_DOCUMENTS} identifiers")
        uris = []
        for ident in identifiers:
            if not isinstance(ident, dict):
                raise ValidationError("each document identifier must be an object")
            if ident.get("dataSourceType") == "S3":
                uri = (ident.get("s3") or {}).get("uri")
            else:
                uri = (ident.get("custom") or {}).get("id")
            if not isinstance(uri, str) or not uri:
                raise ValidationError("a document identifier needs s3.uri or custom.id")
            uris.append(uri)
        return uris

    def get_knowledge_base_documents(
        self, *, knowledgeBaseId: str, dataSourceId: str, documentIdentifiers: list[dict[str, Any]]
    ) -> dict[str, Any]:
        kb, ds = self._kb_ds(knowledgeBaseId, dataSourceId)
        uris = self._identifiers(ds, documentIdentifiers)
        with self.db.connection() as conn:
            rows = catalog.get_documents(conn, ds["id"], uris)
        out = []
        for uri in uris:
            r = rows.get(uri)
            out.append(
                shapes.document_detail(kb.id, ds["id"], ds["source_type"], uri, r["status"] if r else "NOT_FOUND",
                                       r["status_reason"] if r else None, r["updated_at"] if r else None)
            )
        return {"documentDetails": out}

    def list_knowledge_base_documents(
        self, *, knowledgeBaseId: str, dataSourceId: str, maxResults: int | None = None, nextToken: str | None = None
    ) -> dict[str, Any]:
        kb, ds = self._kb_ds(knowledgeBaseId, dataSourceId)
        offset, limit = shapes.decode_token(nextToken), shapes.page_limit(maxResults)
        with self.db.connection() as conn:
            rows = catalog.list_documents(conn, ds["id"], offset, limit + 1)
        rows, token = shapes.paged(rows, offset, limit)
        out: dict[str, Any] = {
            "documentDetails": [
                shapes.document_detail(kb.id, ds["id"], ds["source_type"], r["uri"], r["status"], r["status_reason"],
                                       r["updated_at"])
                for r in rows
            ]
        }
        if token:
            out["nextToken"] = token
        return out

    def delete_knowledge_base_documents(
        self,
        *,
        knowledgeBaseId: str,
        dataSourceId: str,
        documentIdentifiers: list[dict[str, Any]],
        clientToken: str | None = None,
    ) -> dict[str, Any]:
        kb, ds = self._kb_ds(knowledgeBaseId, dataSourceId)
        uris = self._identifiers(ds, documentIdentifiers)
        with self.db.connection() as conn:
            known = catalog.get_documents(conn, ds["id"], uris)
        writer = DocumentWriter(self.db, kb, ds["id"])
        writer.delete([u for u in uris if u in known], known)
        _fold_now_and_then(writer)
        return {
            "documentDetails": [
                shapes.document_detail(kb.id, ds["id"], ds["source_type"], u, "DELETING" if u in known else "NOT_FOUND",
                                       None, None)
                for u in uris
            ]
        }


def _fold_now_and_then(writer: DocumentWriter) -> None:
    with _writes_lock:
        _writes[writer.kb.id] += 1
        due = _writes[writer.kb.id] % COMPACT_EVERY == 0
    if due:
        writer.fold_statistics()
        writer.refresh_planner_statistics()
