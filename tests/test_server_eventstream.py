"""The event-stream encoder, decoded by botocore's own EventStreamBuffer (which checks both CRCs)."""

from __future__ import annotations

import json

import pytest
from botocore.eventstream import ChecksumMismatch, EventStreamBuffer

from pgkb.server import eventstream


def decode(data: bytes) -> list:
    buf = EventStreamBuffer()
    buf.add_data(data)
    return list(buf)


def test_events_round_trip() -> None:
    frames = eventstream.event("output", {"text": "héllo ✓"}) + eventstream.event(
        "guardrail", {"action": "NONE"}
    )
    msgs = decode(frames)
    assert [m.headers for m in msgs] == [
        {":message-type": "event", ":event-type": "output", ":content-type": "application/json"},
        {":message-type": "event", ":event-type": "guardrail", ":content-type": "application/json"},
    ]
    assert json.loads(msgs[0].payload) == {"text": "héllo ✓"}


def test_exception_and_error_frames() -> None:
    ex, err = decode(
        eventstream.exception("validationException", "bad input") + eventstream.error("Oops", "broken")
    )
    assert (
        ex.headers[":message-type"] == "exception" and ex.headers[":exception-type"] == "validationException"
    )
    assert json.loads(ex.payload) == {"message": "bad input"}
    assert err.headers == {":message-type": "error", ":error-code": "Oops", ":error-message": "broken"}
    assert err.payload == b""
    assert eventstream.exception_member("ResourceNotFoundException") == "resourceNotFoundException"


def test_large_payload_and_split_delivery() -> None:
    frame = eventstream.event("output", {"text": "x" * 200_000})
    buf = EventStreamBuffer()
    msgs = []
    for i in range(0, len(frame), 1000):  # arrives in small pieces, as over a socket
        buf.add_data(frame[i : i + 1000])
        msgs.extend(buf)
    assert len(msgs) == 1 and len(json.loads(msgs[0].payload)["text"]) == 200_000


def test_crc_is_checked() -> None:
    frame = bytearray(eventstream.event("output", {"text": "abc"}))
    frame[-6] ^= 0xFF  # corrupt the payload
    with pytest.raises(ChecksumMismatch):
        decode(bytes(frame))
