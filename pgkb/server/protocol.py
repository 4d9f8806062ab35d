"""rest-json: HTTP request -> operation keyword arguments, result dict -> HTTP response, errors -> wire.

Everything here is pure (no I/O) so the ASGI app stays a thin shell around it.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from pgkb.errors import PgkbError
from pgkb.server.model import Operation
from pgkb.server.validate import FieldError, Validator, summarize


class WireError(Exception):
    """An error answer: Bedrock exception name, message, optional status and extra body members."""

    def __init__(
        self, code: str, message: str, *, status: int | None = None, extra: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.extra = extra or {}


def validation_error(message: str, fields: list[FieldError] | None = None) -> WireError:
    extra = {"fieldList": [{"name": f.path, "message": f.message} for f in fields[:10]]} if fields else {}
    return WireError("ValidationException", message, extra=extra)


@dataclass
class Response:
    status: int
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""


def new_request_id() -> str:
    return str(uuid.uuid4())


# -- requests --------------------------------------------------------------------------------


def _scalar_from_text(shape: dict[str, Any], text: str) -> Any:
    """Header / query string text -> the JSON-ish value the validator expects."""
    kind = shape["type"]
    if kind in ("integer", "long"):
        try:
            return int(text)
        except ValueError:
            return text  # the validator reports the type error with the field name
    if kind in ("float", "double"):
        try:
            return float(text)
        except ValueError:
            return text
    if kind == "boolean":
        return {"true": True, "false": False}.get(text.lower(), text)
    return text


def parse_input(
    op: Operation,
    validator: Validator,
    labels: dict[str, str],
    query: dict[str, list[str]],
    headers: dict[str, str],
    body: bytes,
) -> dict[str, Any]:
    """The operation's input members as keyword arguments, validated; raises WireError."""
    if op.input_shape is None:
        return {}
    shapes = op.service.shapes
    shape = shapes[op.input_shape]
    members: dict[str, dict[str, Any]] = shape.get("members", {})
    raw: dict[str, Any] = {}
    payload = shape.get("payload")
    if payload:
        pshape = shapes[members[payload]["shape"]]
        if pshape["type"] in ("blob", "string"):
            raw[payload] = body if pshape["type"] == "blob" else body.decode("utf-8", "replace")
        elif body.strip():
            raw[payload] = _json_object(body)
    elif body.strip():
        doc = _json_object(body)
        for name, spec in members.items():
            if "location" not in spec and name in doc:
                raw[name] = doc[name]
    for name, spec in members.items():
        loc = spec.get("location")
        if loc is None:
            continue
        mshape = shapes[spec["shape"]]
        key = spec.get("locationName", name)
        if loc == "uri":
            if key in labels:
                raw[name] = _scalar_from_text(mshape, labels[key])
        elif loc == "header":
            if spec.get("jsonvalue") or mshape["type"] in ("map", "list"):
                continue  # not used by the served operations
            text = headers.get(key.lower())
            if text is not None:
                raw[name] = _scalar_from_text(mshape, text)
        elif loc == "querystring":
            values = query.get(key)
            if values:
                if mshape["type"] == "list":
                    raw[name] = values
                elif mshape["type"] != "map":
                    raw[name] = _scalar_from_text(mshape, values[-1])
    kwargs, errors = validator.convert(op.input_shape, raw)
    if errors:
        raise validation_error(summarize(errors), errors)
    return kwargs


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        raise validation_error("Could not parse the request body as JSON") from None
    if not isinstance(doc, dict):
        raise validation_error("The request body must be a JSON object")
    if _depth_exceeds(doc, MAX_DEPTH):
        raise validation_error(f"The request body is nested more than {MAX_DEPTH} levels deep")
    return doc


MAX_DEPTH = 64  # JSON levels; a filter uses two per andAll/orAll level. Keeps every recursive walk safe.


def _depth_exceeds(doc: Any, limit: int) -> bool:
    """Iterative, so a hostile body cannot blow the stack while being measured."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values() if isinstance(v, dict | list))
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value if isinstance(v, dict | list))
    return False


# -- responses -------------------------------------------------------------------------------


def iso8601(value: dt.datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def to_wire(value: Any) -> Any:
    """Result dict -> JSON-ready: None members dropped, datetimes ISO-8601, bytes base64."""
    if isinstance(value, dict):
        return {k: to_wire(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [to_wire(v) for v in value]
    if isinstance(value, dt.datetime):
        return iso8601(value)
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def _header_text(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return iso8601(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def json_dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON. Text that UTF-8 cannot carry (a lone surrogate echoed from a request)
    falls back to ASCII escapes, which any JSON parser reads back, so encoding never fails."""
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")


def serialize_output(op: Operation, result: dict[str, Any] | None, request_id: str) -> Response:
    """A service result -> the HTTP response botocore's rest-json parser expects."""
    result = result or {}
    headers: list[tuple[bytes, bytes]] = [(b"x-amzn-requestid", request_id.encode())]
    shapes = op.service.shapes
    shape = shapes[op.output_shape] if op.output_shape else {"members": {}}
    members: dict[str, dict[str, Any]] = shape.get("members", {})
    status = op.success_status
    body_doc: dict[str, Any] = {}
    payload = shape.get("payload")
    body: bytes | None = None
    for name, value in result.items():
        if value is None:
            continue
        spec = members.get(name)
        if spec is None:
            continue
        loc = spec.get("location")
        if loc == "header":
            headers.append(
                (
                    spec.get("locationName", name).lower().encode(),
                    _header_text(value).encode("latin-1", "replace"),
                )
            )
        elif loc == "statusCode":
            status = int(value)
        elif name == payload:
            pkind = shapes[spec["shape"]]["type"]
            if pkind == "blob":
                body = bytes(value) if not hasattr(value, "read") else value.read()
            elif pkind == "string":
                body = str(value).encode("utf-8")
            else:
                body = json_dumps(to_wire(value))
        elif loc is None:
            body_doc[name] = value
    headers += extra_headers(result)
    if body is None:
        body = json_dumps(to_wire(body_doc))
        headers.append((b"content-type", b"application/json"))
    elif not any(h == b"content-type" for h, _ in headers):
        headers.append((b"content-type", b"application/octet-stream"))
    return Response(status, headers, body)


def extra_headers(result: dict[str, Any]) -> list[tuple[bytes, bytes]]:
    """Unmodelled `x-pgkb-*` headers a service result asks for in `ResponseMetadata.HTTPHeaders`
    (e.g. `x-pgkb-generator`), so in-process and HTTP callers read them from the same place."""
    meta = result.get("ResponseMetadata")
    found = meta.get("HTTPHeaders") if isinstance(meta, dict) else None
    if not isinstance(found, dict):
        return []
    return [
        (str(k).lower().encode("latin-1"), str(v).encode("latin-1", "replace"))
        for k, v in found.items()
        if str(k).lower().startswith("x-pgkb-")
    ]


def error_response(
    err: WireError | PgkbError, op: Operation | None, request_id: str, default_status: int = 400
) -> Response:
    """`x-amzn-ErrorType` header + `{"message", "__type"}` body, status as this service models it."""
    code = err.code
    message = err.message
    extra: dict[str, Any] = dict(getattr(err, "extra", {}) or {})
    status = getattr(err, "status", None) or default_status
    if op is not None:
        modelled = op.service.error_status(code)
        if modelled is not None:
            status = modelled
            allowed = op.service.shapes[code].get("members", {})
            extra = {k: v for k, v in extra.items() if k in allowed}
        else:
            extra = {}
    # typed errors may carry modelled extras (e.g. `reason`, `resourceName`) as attributes
    if isinstance(err, PgkbError) and op is not None and op.service.error_status(code) is not None:
        for k in op.service.shapes[code].get("members", {}):
            if k != "message" and getattr(err, k, None) is not None:
                extra[k] = getattr(err, k)
    doc = {"message": message, "__type": code, **to_wire(extra)}
    headers = [
        (b"content-type", b"application/json"),
        (b"x-amzn-requestid", request_id.encode()),
        (b"x-amzn-errortype", code.encode()),
    ]
    return Response(status, headers, json_dumps(doc))
