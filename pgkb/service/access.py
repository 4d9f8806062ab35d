"""Document-level access control at query time (contract 2026 §1.5-1.8).

`userContext.userId` is matched exactly against the ACLs ingested (no case folding, no aliases).
Without a userContext, documents of ACL-enabled data sources are invisible and the others answer as
usual. ACLs exist only on MANAGED knowledge bases; on a VECTOR knowledge base userContext is ignored.
This is filtering, not authorization: the caller must authenticate the user it names.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from pgkb.errors import ValidationError

MAX_USER_ID_CHARS = 2048
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def user_id_of(user_context: Any, *, required: bool = False) -> str | None:
    """The validated userId of a userContext (None when there is none and none is required)."""
    if user_context is None:
        if required:
            raise ValidationError("userContext.userId is required")
        return None
    if not isinstance(user_context, dict):
        raise ValidationError("userContext must be an object with a userId")
    user = user_context.get("userId")
    if not isinstance(user, str):
        raise ValidationError("userContext.userId is required and must be a string")
    if not user:
        raise ValidationError("userContext.userId must not be empty")
    if len(user) > MAX_USER_ID_CHARS or _CONTROL.search(user):
        raise ValidationError(
            f"userContext.userId must be at most {MAX_USER_ID_CHARS} characters with no control characters"
        )
    return user


def document_id(uri: str) -> str:
    """The documentId Retrieve returns and GetDocumentContent / the ACL operations take: the
    document's URI in URL-safe base64 (no '/' to escape in a path, reversible without a lookup)."""
    return base64.urlsafe_b64encode(uri.encode("utf-8")).decode("ascii").rstrip("=")


def uri_candidates(doc_id: str) -> list[str]:
    """URIs a documentId may stand for: itself (a URI given as is), and its base64 decoding."""
    out = [doc_id]
    try:
        decoded = base64.urlsafe_b64decode(doc_id + "=" * (-len(doc_id) % 4)).decode("utf-8")
        if decoded and decoded != doc_id:
            out.append(decoded)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        pass
    return out


def visible(acl_enabled: bool, allow: list[str] | None, deny: list[str] | None, user: str | None) -> bool:
    """The search predicate for one document (pgkb.retrieval.filters.acl_predicate), in Python."""
    if not acl_enabled:
        return True
    if user is None or allow is None:
        return False
    return user in allow and user not in (deny or [])
