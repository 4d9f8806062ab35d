"""Bedrock's `<file>.metadata.json` sidecars, in the plain and the typed form."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from pgkb.parsing.errors import MetadataError

MetadataValue = str | float | bool | list[str]

SIDECAR_SUFFIX = ".metadata.json"
MAX_SIDECAR_BYTES = 10 * 1024
MAX_KEY_CHARS = 100
RESERVED_PREFIX = "x-amz-bedrock-kb-"

_TYPED_FIELDS = {
    "STRING": "stringValue",
    "NUMBER": "numberValue",
    "BOOLEAN": "booleanValue",
    "STRING_LIST": "stringListValue",
}


@dataclass(frozen=True)
class Sidecar:
    """`attributes` are the document's metadata; `embed_keys` those marked includeForEmbedding."""

    attributes: dict[str, MetadataValue]
    embed_keys: tuple[str, ...] = field(default=())

    def embedding_prefix(self) -> str:
        """`key: value` lines for the includeForEmbedding attributes, to put before embedded text."""
        lines = [f"{key}: {render_value(self.attributes[key])}" for key in self.embed_keys]
        return "\n".join(lines) + "\n\n" if lines else ""


def sidecar_name(name: str) -> str:
    return name + SIDECAR_SUFFIX


def is_sidecar(name: str) -> bool:
    return name.lower().endswith(SIDECAR_SUFFIX)


def sidecar_target(name: str) -> str:
    """The document a sidecar describes: `a/b.pdf.metadata.json` → `a/b.pdf`."""
    return name[: -len(SIDECAR_SUFFIX)] if is_sidecar(name) else name


def render_value(value: MetadataValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, list):
        return ", ".join(value)
    return value


def parse_sidecar(data: bytes) -> dict[str, MetadataValue]:
    return read_sidecar(data).attributes


def read_sidecar(data: bytes) -> Sidecar:
    if len(data) > MAX_SIDECAR_BYTES:
        raise MetadataError(f"metadata file is {len(data)} bytes, over the {MAX_SIDECAR_BYTES}-byte limit")
    try:
        doc = json.loads(data.decode("utf-8-sig"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise MetadataError(f"metadata file is not valid UTF-8 JSON: {_first_line(exc)}") from exc
    if isinstance(doc, dict) and "metadataAttributes" not in doc and "accessControlList" in doc:
        doc = {**doc, "metadataAttributes": {}}  # an ACL-only metadata file (pgkb.ingestion.acl reads the list)
    if not isinstance(doc, dict) or "metadataAttributes" not in doc:
        raise MetadataError('metadata file must be a JSON object with a "metadataAttributes" object')
    attrs = doc["metadataAttributes"]
    if not isinstance(attrs, dict):
        raise MetadataError('"metadataAttributes" must be a JSON object')
    out: dict[str, MetadataValue] = {}
    embed: list[str] = []
    for key, raw in attrs.items():
        _check_key(key)
        if isinstance(raw, dict):
            value, include = _typed(key, raw)
            if include:
                embed.append(key)
        else:
            value = _plain(key, raw)
        out[key] = value
    return Sidecar(out, tuple(embed))


def _check_key(key: str) -> None:
    if not key.strip():
        raise MetadataError("metadata key must not be empty")
    if len(key) > MAX_KEY_CHARS:
        raise MetadataError(f"metadata key {key[:40]!r}... is {len(key)} characters, over {MAX_KEY_CHARS}")
    if key.lower().startswith(RESERVED_PREFIX):
        raise MetadataError(f"metadata key {key!r} uses the reserved prefix {RESERVED_PREFIX!r}")


def _plain(key: str, raw: object) -> MetadataValue:
    if isinstance(raw, bool | str):
        return raw
    if isinstance(raw, int | float):
        return _number(key, raw)
    if isinstance(raw, list) and all(isinstance(v, str) for v in raw):
        return list(raw)
    kind = "null" if raw is None else type(raw).__name__
    raise MetadataError(
        f"metadata {key!r}: value must be a string, number, boolean or list of strings, not {kind}"
    )


def _typed(key: str, raw: dict) -> tuple[MetadataValue, bool]:
    unknown = set(raw) - {"value", "includeForEmbedding"}
    if unknown or not isinstance(raw.get("value"), dict):
        raise MetadataError(
            f'metadata {key!r}: expected {{"value": {{"type": ..}}, "includeForEmbedding": ..}}'
        )
    include = raw.get("includeForEmbedding", False)
    if not isinstance(include, bool):
        raise MetadataError(f"metadata {key!r}: includeForEmbedding must be true or false")
    body = raw["value"]
    kind = body.get("type")
    if kind not in _TYPED_FIELDS:
        raise MetadataError(f"metadata {key!r}: unknown type {kind!r} (expected one of {', '.join(_TYPED_FIELDS)})")
    want = _TYPED_FIELDS[kind]
    extra = set(body) - {"type", want}
    if want not in body or extra:
        raise MetadataError(f"metadata {key!r}: type {kind} needs exactly one {want!r} field")
    value = body[want]
    if kind == "STRING" and isinstance(value, str):
        return value, include
    if kind == "NUMBER" and isinstance(value, int | float) and not isinstance(value, bool):
        return _number(key, value), include
    if kind == "BOOLEAN" and isinstance(value, bool):
        return value, include
    if kind == "STRING_LIST" and isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value), include
    raise MetadataError(f"metadata {key!r}: {want} does not match type {kind}")


def _number(key: str, raw: int | float) -> float:
    try:
        value = float(raw)
    except OverflowError:
        value = math.inf
    if not math.isfinite(value):
        raise MetadataError(f"metadata {key!r}: number must be finite")
    return value


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
