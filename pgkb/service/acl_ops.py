"""bedrock-agent-runtime's CheckIngestedDocumentAcl, GetIngestedDocumentAcl and GetDocumentContent.

documentId is what Retrieve returns (pgkb.service.access.document_id) or the document's URI / custom
id as ingested. A document the caller may not see is answered exactly like one that does not exist
(ResourceNotFoundException), so its existence is not revealed.

GetDocumentContent's presignedUrl points at `pgkb serve` itself: `<base>/content/<payload>.<hmac>`,
HMAC-SHA256 with the catalog's signing key (pgkb.url_signing_key), valid 5 minutes, and the
visibility check is made again when the URL is fetched (an ACL revoked meanwhile wins).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import mimetypes
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from pgkb.errors import NotFoundError, ValidationError
from pgkb.service.access import uri_candidates, user_id_of, visible
from pgkb.service.base import Collaborator
from pgkb.store import catalog
from pgkb.store.content import get_content

URL_TTL_S = 300
MAX_USERS_PER_CONDITION = 3000


def _kb_key(kb_id: str) -> str:
    return kb_id.rsplit("/", 1)[-1] if kb_id.startswith("arn:") else kb_id


def _membership(users: list[str]) -> dict[str, Any]:
    """Flat USER entries → Bedrock's DocumentAclMembership (any one of the users: OR, OR)."""
    conditions = [
        {"conditionOperator": "OR",
         "users": [{"id": u, "type": "KNOWLEDGE_BASE"} for u in users[i : i + MAX_USERS_PER_CONDITION]]}
        for i in range(0, len(users), MAX_USERS_PER_CONDITION)
    ]
    return {"memberRelation": "OR", "conditions": conditions}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class AclOps(Collaborator):
    def _document(self, knowledgeBaseId: str, dataSourceId: str, documentId: Any) -> tuple[dict, dict, dict]:
        if not isinstance(documentId, str) or not 1 <= len(documentId) <= 1825:
            raise ValidationError("documentId must be 1 to 1825 characters")
        with self.db.connection() as conn:
            kb = catalog.get_knowledge_base(conn, _kb_key(knowledgeBaseId))
            ds = catalog.get_data_source(conn, kb["id"], dataSourceId)
            if ds["id"] != dataSourceId:  # the ACL operations take the id, not a name
                raise NotFoundError(f"data source {dataSourceId!r} does not exist in knowledge base {kb['id']}")
            rows = catalog.get_documents(conn, ds["id"], uri_candidates(documentId))
        doc = next((rows[u] for u in uri_candidates(documentId) if u in rows), None)
        if doc is None:
            raise NotFoundError(f"document {documentId!r} does not exist in data source {ds['id']}")
        return kb, ds, doc

    def check_ingested_document_acl(
        self, *, knowledgeBaseId: str, dataSourceId: str, documentId: str, userContext: dict[str, Any]
    ) -> dict[str, Any]:
        user = user_id_of(userContext, required=True)
        _, ds, doc = self._document(knowledgeBaseId, dataSourceId, documentId)
        if doc["status"] != "INDEXED":
            return {"hasAccess": False}
        return {"hasAccess": visible(ds["acl_enabled"], doc["acl_allow"], doc["acl_deny"], user)}

    def get_ingested_document_acl(self, *, knowledgeBaseId: str, dataSourceId: str, documentId: str) -> dict[str, Any]:
        _, ds, doc = self._document(knowledgeBaseId, dataSourceId, documentId)
        if not ds["acl_enabled"]:
            raise ValidationError(
                f"data source {ds['id']} does not have connectorParameters.aclEnabled: its documents have no ACL"
                " (every user can retrieve them)"
            )
        if doc["status"] != "INDEXED":
            raise NotFoundError(
                f"document {documentId!r} is not ingested ({doc['status']}: {doc['status_reason'] or 'no reason'})"
            )
        acl: dict[str, Any] = {}
        if doc["acl_allow"]:
            acl["allowList"] = _membership(list(doc["acl_allow"]))
        if doc["acl_deny"]:
            acl["denyList"] = _membership(list(doc["acl_deny"]))
        return {"documentAcl": acl}

    # ------------------------------------------------------------------ GetDocumentContent

    def _signing_key(self) -> bytes:
        key = getattr(self, "_url_key", None)
        if key is None:
            with self.db.connection() as conn:
                row = conn.execute("SELECT secret FROM pgkb.url_signing_key WHERE id = 1").fetchone()
            key = self._url_key = str(row[0]).encode() if row else b""
        if not key:
            raise ValidationError("the catalog has no URL signing key; run `pgkb db setup` to migrate it")
        return key

    def get_document_content(
        self,
        *,
        knowledgeBaseId: str,
        dataSourceId: str,
        documentId: str,
        outputFormat: str | None = None,
        mediaId: str | None = None,
        userContext: dict[str, Any] | None = None,
        contentBaseUrl: str | None = None,
    ) -> dict[str, Any]:
        fmt = outputFormat or "RAW"
        if fmt not in ("RAW", "EXTRACTED"):
            raise ValidationError("outputFormat must be RAW or EXTRACTED")
        if mediaId is not None:
            raise ValidationError("mediaId: pgkb does not extract embedded images, so no document has media")
        user = user_id_of(userContext)
        kb, ds, doc = self._document(knowledgeBaseId, dataSourceId, documentId)
        if (kb["kb_config"] or {}).get("type") != "MANAGED":
            raise ValidationError("GetDocumentContent serves MANAGED knowledge bases, whose content pgkb keeps")
        if doc["status"] != "INDEXED" or not visible(ds["acl_enabled"], doc["acl_allow"], doc["acl_deny"], user):
            raise NotFoundError(f"document {documentId!r} does not exist in data source {ds['id']}")
        body, mime = self._content_bytes(ds, doc["uri"], fmt)
        payload = json.dumps(
            {"k": kb["id"], "d": ds["id"], "u": doc["uri"], "f": fmt, "e": int(time.time()) + URL_TTL_S, "p": user},
            separators=(",", ":"),
        ).encode()
        token = _b64(payload) + "." + _b64(hmac.new(self._signing_key(), payload, hashlib.sha256).digest())
        base = (contentBaseUrl or "http://127.0.0.1").rstrip("/")
        return {"presignedUrl": f"{base}/content/{token}", "mimeType": mime, "documentContentLength": len(body)}

    def _content_bytes(self, ds: dict[str, Any], uri: str, fmt: str) -> tuple[bytes, str]:
        with self.db.connection() as conn:
            stored = get_content(conn, ds["id"], uri)
        if fmt == "EXTRACTED":
            if stored is None or stored["extracted"] is None:
                raise NotFoundError(f"no extracted text is kept for {uri}; sync the data source again")
            body = {"documentUri": uri, "content": [{"type": "TEXT", "text": stored["extracted"]}]}
            return json.dumps(body, ensure_ascii=False).encode("utf-8"), "application/json"
        if stored is not None and stored["raw"] is not None:
            return bytes(stored["raw"]), stored["mime_type"] or "application/octet-stream"
        mime = mimetypes.guess_type(urlparse(uri).path)[0] or "application/octet-stream"
        if uri.startswith("s3://"):
            from pgkb.ingestion.sources import S3Source, split_s3_uri

            return S3Source(split_s3_uri(uri)[0]).get_uri(uri), mime
        if uri.startswith("file://"):
            try:
                return Path(unquote(urlparse(uri).path)).read_bytes(), mime
            except OSError:
                raise NotFoundError(f"the original of {uri} can no longer be read") from None
        raise NotFoundError(f"no original is kept for {uri}")

    def document_content_response(self, token: str) -> tuple[int, str, bytes]:
        """GET /content/<token> (a presigned URL): (status, content type, body)."""
        try:
            payload_b64, sig_b64 = token.split(".", 1)
            payload = _unb64(payload_b64)
            ok = hmac.compare_digest(_unb64(sig_b64), hmac.new(self._signing_key(), payload, hashlib.sha256).digest())
            claims = json.loads(payload) if ok else None
        except (ValueError, UnicodeDecodeError):
            claims = None
        if not isinstance(claims, dict):
            return 403, "text/plain", b"invalid signature"
        if int(claims.get("e", 0)) < time.time():
            return 403, "text/plain", b"the URL has expired"
        with self.db.connection() as conn:
            ds = conn.execute("SELECT acl_enabled FROM pgkb.data_sources WHERE id = %s", (claims["d"],)).fetchone()
            rows = catalog.get_documents(conn, claims["d"], [claims["u"]]) if ds else {}
        doc = rows.get(claims["u"])
        if ds is None or doc is None or doc["status"] != "INDEXED" or not visible(
            bool(ds[0]), doc["acl_allow"], doc["acl_deny"], claims.get("p")
        ):
            return 404, "text/plain", b"not found"
        try:
            body, mime = self._content_bytes({"id": claims["d"]}, claims["u"], claims["f"])
        except NotFoundError:
            return 404, "text/plain", b"not found"
        return 200, mime, body
