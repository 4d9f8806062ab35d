"""Per-document access control lists of ACL-enabled data sources (contract 2026 §1.4).

Sources of an ACL, by data source:
- S3 and LOCAL folders: the `accessControlList` of the document's `<file>.metadata.json`
  (capitalised keys `Name`/`Type`/`Access`), else the global ACL file's entry whose `keyPrefix` is
  the longest prefix of the document's URI (a folder or the document itself). The per-document
  list wins outright; entries are not merged.
- CUSTOM: `metadata.accessControlList` of IngestKnowledgeBaseDocuments (lowercase keys) for inline
  metadata, or the `.metadata.json` at `metadata.s3Location` (capitalised keys).

Only USER entries exist; a user id is matched exactly (no case folding: the docs say "exactly").
A malformed ACL fails the document (fail closed), with the reason.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from pgkb.errors import ValidationError

MAX_NAME_CHARS = 256
NO_ACL_SKIPPED = (
    "not ingested: the data source has aclEnabled and the document has no access control list"
    " (add accessControlList to its .metadata.json or an entry to the global ACL file)"
)
NO_ACL_HIDDEN = (
    "stored but never returned: the data source has aclEnabled and the document was ingested"
    " without metadata.accessControlList"
)


@dataclass(frozen=True)
class DocAcl:
    allow: tuple[str, ...]
    deny: tuple[str, ...]
    origin: str  # where it came from, for messages

    @property
    def hash(self) -> str:
        body = json.dumps([sorted(set(self.allow)), sorted(set(self.deny))])
        return hashlib.sha256(body.encode()).hexdigest()


def parse_entries(entries: Any, *, capitalised: bool, origin: str) -> DocAcl:
    """A list of {Name, Type, Access} (capitalised) or {name, type, access} entries → DocAcl."""
    name_k, type_k, access_k = ("Name", "Type", "Access") if capitalised else ("name", "type", "access")
    if not isinstance(entries, list) or not entries:
        raise ValidationError(f"{origin}: accessControlList must be a non-empty list of entries")
    allow: list[str] = []
    deny: list[str] = []
    for i, e in enumerate(entries):
        if not isinstance(e, dict):
            raise ValidationError(f"{origin}: accessControlList[{i}] must be an object")
        name, kind, access = e.get(name_k), e.get(type_k), e.get(access_k)
        if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME_CHARS:
            raise ValidationError(f"{origin}: accessControlList[{i}].{name_k} must be 1 to {MAX_NAME_CHARS} characters")
        if kind != "USER":
            raise ValidationError(f"{origin}: accessControlList[{i}].{type_k} must be USER, not {kind!r}")
        if access == "ALLOW":
            allow.append(name)
        elif access == "DENY":
            deny.append(name)
        else:
            raise ValidationError(f"{origin}: accessControlList[{i}].{access_k} must be ALLOW or DENY, not {access!r}")
    return DocAcl(tuple(dict.fromkeys(allow)), tuple(dict.fromkeys(deny)), origin)


def sidecar_acl(data: bytes | None) -> DocAcl | None:
    """The `accessControlList` of a `.metadata.json` (None when the file or the member is absent)."""
    if data is None:
        return None
    try:
        doc = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError):
        raise ValidationError("metadata file: not valid UTF-8 JSON, so its accessControlList cannot be read") from None
    if not isinstance(doc, dict) or "accessControlList" not in doc:
        return None
    return parse_entries(doc["accessControlList"], capitalised=True, origin="metadata file")


class GlobalAcl:
    """The global ACL file: a JSON array of {keyPrefix, aclEntries}; the longest matching prefix wins."""

    def __init__(self, entries: list[tuple[str, DocAcl]]) -> None:
        self.entries = sorted(entries, key=lambda e: len(e[0]), reverse=True)

    @classmethod
    def parse(cls, data: bytes, normalise: Any = None) -> GlobalAcl:
        try:
            doc = json.loads(data.decode("utf-8-sig"))
        except (UnicodeDecodeError, ValueError):
            raise ValidationError("global ACL file is not valid UTF-8 JSON") from None
        if not isinstance(doc, list):
            raise ValidationError("global ACL file must be a JSON array of {keyPrefix, aclEntries}")
        out = []
        for i, item in enumerate(doc):
            if not isinstance(item, dict) or not isinstance(item.get("keyPrefix"), str) or not item["keyPrefix"]:
                raise ValidationError(f"global ACL file: entry {i} needs a keyPrefix")
            prefix = normalise(item["keyPrefix"]) if normalise else item["keyPrefix"]
            acl = parse_entries(item.get("aclEntries"), capitalised=True, origin=f"global ACL file entry {i}")
            out.append((prefix, DocAcl(acl.allow, acl.deny, f"global ACL file ({item['keyPrefix']})")))
        return cls(out)

    def for_uri(self, uri: str) -> DocAcl | None:
        for prefix, acl in self.entries:
            if uri.startswith(prefix):
                return acl
        return None


def effective_acl(sidecar: bytes | None, uri: str, global_acl: GlobalAcl | None) -> DocAcl | None:
    """The document's ACL: its metadata file's list if it has one, else the global file's. None: no ACL.
    Raises ValidationError for a malformed list."""
    own = sidecar_acl(sidecar)
    if own is not None:
        return own
    return global_acl.for_uri(uri) if global_acl is not None else None
