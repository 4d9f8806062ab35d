"""InvokeModel bodies for embedding models: Titan's and Cohere's request/response shapes over ANY registry model.

Shared by the HTTP `bedrock-runtime` InvokeModel operation and the SQL functions. The body's keys choose
the shape (`inputText` → Titan, `texts` → Cohere), so a local model answers either.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np

from pgkb.embeddings.base import EmbeddingModel, ModelSpec
from pgkb.embeddings.registry import get_model, get_spec, resolve_dimensions
from pgkb.errors import InputTooLongError, MalformedJsonError, ValidationError

JSON = "application/json"
TITAN_V1 = "amazon.titan-embed-text-v1"
TITAN_KEYS = {"inputText", "dimensions", "normalize", "embeddingTypes"}
TITAN_TYPES = {"float", "binary"}
COHERE_KEYS = {"texts", "input_type", "truncate", "embedding_types"}
COHERE_INPUT_TYPES = ("search_document", "search_query", "classification", "clustering")
COHERE_TRUNCATE = ("NONE", "START", "END")
COHERE_TYPES = ("float", "int8", "uint8", "binary", "ubinary")
COHERE_MAX_TEXTS = 96
COHERE_MAX_CHARS = 2048


def _bad(msg: str, kind: type[ValidationError] = ValidationError) -> ValidationError:
    return kind(f"Malformed input request: {msg}, please reformat your input and try again.")


def _check_media(content_type: str | None, accept: str | None) -> None:
    ct = (content_type or JSON).split(";")[0].strip().lower()
    if ct not in (JSON, "*/*"):
        raise ValidationError(f"Content type {content_type} is not supported by embedding models; use {JSON}")
    ac = (accept or JSON).split(";")[0].strip().lower()
    if ac not in (JSON, "*/*", "application/*"):
        raise ValidationError(f"Accept type {accept} is not supported by embedding models; use {JSON}")


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _token_limit(model: EmbeddingModel) -> int:
    return model.spec.max_input_tokens - model.tokenizer.num_special_tokens


def invoke(
    model_id: str, body: bytes | str, content_type: str | None = JSON, accept: str | None = JSON
) -> tuple[bytes, str]:
    """Run one InvokeModel request; returns (response body, content type). Raises pgkb.errors only."""
    spec = get_spec(model_id)
    _check_media(content_type, accept)
    try:
        req = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise _bad(f"the body is not valid JSON ({str(e)[:200]})", MalformedJsonError) from e
    if not isinstance(req, dict):
        raise _bad("expected a JSON object", MalformedJsonError)
    texts: list[Any] = req["texts"] if isinstance(req.get("texts"), list) else [req.get("inputText")]
    if any(isinstance(t, str) and not _encodable(t) for t in texts):  # JSON's "\ud800": no tokenizer takes it
        raise _bad("the input text contains an unpaired surrogate character")
    if "inputText" in req:
        out = _titan(spec, req)
    elif "texts" in req or "input_type" in req:
        out = _cohere(spec, req)
    elif "images" in req:
        raise ValidationError(f"Model {spec.id} does not accept images")
    else:
        raise _bad(
            "required key [inputText] not found (Titan body), nor [texts] and [input_type] (Cohere body)"
        )
    return json.dumps(out, separators=(",", ":")).encode(), JSON


def _extraneous(req: dict[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(req) - allowed)
    if extra:
        raise _bad(f"extraneous key [{extra[0]}] is not permitted")


def _titan(spec: ModelSpec, req: dict[str, Any]) -> dict[str, Any]:
    _extraneous(req, {"inputText"} if spec.id == TITAN_V1 else TITAN_KEYS)
    text = req["inputText"]
    if not isinstance(text, str):
        raise _bad("[inputText] expected type: String")
    if not text:
        raise _bad("[inputText] expected minLength: 1")
    dims = req.get("dimensions")
    if dims is not None and (isinstance(dims, bool) or not isinstance(dims, int)):
        raise _bad("[dimensions] expected type: Integer")
    if dims is not None and dims not in spec.dimension_choices:
        raise _bad(f"[dimensions] {dims} is not a valid enum value, expected one of {list(spec.dimension_choices)}")
    if "normalize" in req and not isinstance(req["normalize"], bool):
        raise _bad("[normalize] expected type: Boolean")
    types = req.get("embeddingTypes")
    if types is not None and (
        not isinstance(types, list) or not types or any(t not in TITAN_TYPES for t in types)
    ):
        raise _bad(f"[embeddingTypes] expected a non-empty list of {sorted(TITAN_TYPES)}")
    model = get_model(spec.id, resolve_dimensions(spec, dims))
    # The count is the whole input's; a model with a shorter window embeds its first tokens
    # (docs/embeddings.md, "Inputs longer than the model's window").
    n_tokens = model.tokenizer.count([text])[0]
    vec = model.embed_documents([text])[0]
    out: dict[str, Any] = {"embedding": vec.tolist(), "inputTextTokenCount": n_tokens}
    if types:
        by_type: dict[str, Any] = {}
        if "float" in types:
            by_type["float"] = out["embedding"]
        if "binary" in types:
            by_type["binary"] = (vec > 0).astype(np.int8).tolist()
        out["embeddingsByType"] = by_type
    return out


def _truncate(model: EmbeddingModel, texts: list[str], mode: str) -> list[str]:
    limit = _token_limit(model)
    counts = model.tokenizer.count(texts)
    out = []
    for i, (t, n) in enumerate(zip(texts, counts, strict=True)):
        if n <= limit:
            out.append(t)
        elif mode == "NONE":
            raise InputTooLongError(
                f"Too many input tokens: texts[{i}] has {n} tokens and {model.spec.id} accepts at most {limit}; "
                "shorten it or set \"truncate\" to \"END\" or \"START\""
            )
        else:
            offs = model.tokenizer.offsets(t)
            out.append(t[: offs[limit - 1][1]] if mode == "END" else t[offs[n - limit][0] :])
    return out


def _quantize(vecs: np.ndarray, kind: str) -> list[Any]:
    if kind == "float":
        floats: list[Any] = vecs.tolist()
        return floats
    if kind in ("int8", "uint8"):
        scale = 127.0 / np.maximum(np.abs(vecs).max(axis=1, keepdims=True), 1e-12)
        q = np.clip(np.rint(vecs * scale), -127, 127).astype(np.int16)
        ints: list[Any] = (q + 128 if kind == "uint8" else q).tolist()
        return ints
    packed = np.packbits(vecs > 0, axis=1).astype(np.int16)  # 1 bit per dimension, 8 per byte
    bits: list[Any] = (packed - 128 if kind == "binary" else packed).tolist()
    return bits


def _cohere(spec: ModelSpec, req: dict[str, Any]) -> dict[str, Any]:
    _extraneous(req, COHERE_KEYS)
    texts = req.get("texts")
    if texts is None:
        raise _bad("required key [texts] not found")
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise _bad("[texts] expected type: array of String")
    if not 1 <= len(texts) <= COHERE_MAX_TEXTS:
        raise _bad(f"[texts] expected between 1 and {COHERE_MAX_TEXTS} items, found {len(texts)}")
    for i, t in enumerate(texts):
        if len(t) > COHERE_MAX_CHARS:
            raise _bad(f"[texts][{i}] expected maxLength: {COHERE_MAX_CHARS}, actual: {len(t)}")
    input_type = req.get("input_type")
    if input_type is None:
        raise _bad("required key [input_type] not found")
    if input_type not in COHERE_INPUT_TYPES:
        raise _bad(f"[input_type] {input_type!r} is not a valid enum value, expected one of {list(COHERE_INPUT_TYPES)}")
    truncate = req.get("truncate", "END")
    if truncate not in COHERE_TRUNCATE:
        raise _bad(f"[truncate] {truncate!r} is not a valid enum value, expected one of {list(COHERE_TRUNCATE)}")
    types = req.get("embedding_types")
    if types is not None and (
        not isinstance(types, list) or not types or any(t not in COHERE_TYPES for t in types)
    ):
        raise _bad(f"[embedding_types] expected a non-empty list of {list(COHERE_TYPES)}")
    model = get_model(spec.id)
    inputs = _truncate(model, texts, truncate)
    embed = model.embed_queries if input_type == "search_query" else model.embed_documents
    vecs = embed(inputs)
    out: dict[str, Any] = {"id": str(uuid.uuid4()), "texts": texts}
    if types is None:
        out["embeddings"] = vecs.tolist()
        out["response_type"] = "embeddings_floats"
    else:
        out["embeddings"] = {t: _quantize(vecs, t) for t in dict.fromkeys(types)}
        out["response_type"] = "embeddings_by_type"
    return out


def embed_texts_batch(model_id: str, texts: Sequence[str], dimensions: int | None = None) -> np.ndarray:
    """Document vectors for many texts in one batched model call (the SQL fast path)."""
    return get_model(model_id, dimensions).embed_documents(list(texts))
