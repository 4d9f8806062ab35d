"""One redaction for everything pgkb prints or logs: passwords in URLs and connection strings, and
keys in query strings."""

from __future__ import annotations

import re

_USERINFO_PASSWORD = re.compile(r"(://[^:/@\s]*:)([^@\s]*)(@)")
_PASSWORD_KV = re.compile(r"(password\s*=\s*)(\S+)", re.IGNORECASE)
_QUERY_SECRET = re.compile(r"([?&](?:api[-_]?key|key|token|access[-_]?token|sig|signature)=)([^&\s]+)", re.IGNORECASE)


def redact_url(text: str) -> str:
    """`text` with every password and query-string key replaced by `***`."""
    text = _USERINFO_PASSWORD.sub(r"\1***\3", text)
    text = _PASSWORD_KV.sub(r"\1***", text)
    return _QUERY_SECRET.sub(r"\1***", text)
