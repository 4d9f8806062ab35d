"""AWS event-stream framing (`application/vnd.amazon.eventstream`), the encoder side.

A message is: prelude (total length, headers length, CRC32 of those 8 bytes), headers, payload,
and a CRC32 of everything before it. Headers here are all strings (type 7), which is all the
Bedrock streams use for `:message-type`, `:event-type`, `:exception-type` and `:content-type`.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

CONTENT_TYPE = "application/vnd.amazon.eventstream"
_STRING = 7
_MAX_HEADERS = 128 * 1024
_MAX_PAYLOAD = 16 * 1024 * 1024


def _headers(headers: dict[str, str]) -> bytes:
    out = bytearray()
    for name, value in headers.items():
        n = name.encode("utf-8")
        v = value.encode("utf-8")
        if len(n) > 255 or len(v) > 32767:
            raise ValueError(f"event-stream header {name!r} too long")
        out += struct.pack(">B", len(n)) + n + struct.pack(">BH", _STRING, len(v)) + v
    return bytes(out)


def encode_message(headers: dict[str, str], payload: bytes) -> bytes:
    hdr = _headers(headers)
    if len(hdr) > _MAX_HEADERS or len(payload) > _MAX_PAYLOAD:
        raise ValueError("event-stream message too large")
    total = 12 + len(hdr) + len(payload) + 4
    prelude = struct.pack(">II", total, len(hdr))
    prelude += struct.pack(">I", zlib.crc32(prelude) & 0xFFFFFFFF)
    message = prelude + hdr + payload
    return message + struct.pack(">I", zlib.crc32(message) & 0xFFFFFFFF)


def _json(payload: Any) -> bytes:
    from pgkb.server.protocol import json_dumps, to_wire

    return json_dumps(to_wire(payload))


def event(event_type: str, payload: Any) -> bytes:
    """One modelled event, e.g. `event("output", {"text": "..."})`."""
    return encode_message(
        {":message-type": "event", ":event-type": event_type, ":content-type": "application/json"},
        _json(payload),
    )


def exception(member: str, message: str, **extra: Any) -> bytes:
    """A modelled in-stream exception; `member` is the stream's member name (`validationException`)."""
    return encode_message(
        {":message-type": "exception", ":exception-type": member, ":content-type": "application/json"},
        _json({"message": message, **extra}),
    )


def error(code: str, message: str) -> bytes:
    """An unmodelled error frame (`:message-type: error`)."""
    return encode_message({":message-type": "error", ":error-code": code, ":error-message": message}, b"")


def exception_member(code: str) -> str:
    """`ValidationException` -> `validationException`, the stream member that carries it."""
    return code[:1].lower() + code[1:]
