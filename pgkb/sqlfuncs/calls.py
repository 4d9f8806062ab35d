"""The functions pgkb's SQL endpoint serves: model calls behind `SELECT fn('literal', ...)`.

`pgkb_invoke(model_id, content_type, accept, body)`                → one text row: the response body
`pgkb_invoke_get_embeddings(model_id, content_type, json_key, body)` → one row: a float4[] literal
`pgkb_embed_batch(model_id, texts_json)`                           → rows (ord, float4[] literal)

Each handler is synchronous and runs in the endpoint's thread pool.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from pgkb.errors import ValidationError
from pgkb.sqlfuncs import errors as E
from pgkb.sqlfuncs.errors import SqlStateError

TEXT_OID = 25
INT4_OID = 23
FLOAT4_ARRAY_OID = 1021


class ModelBackend(Protocol):
    def invoke(self, model_id: str, body: bytes, content_type: str, accept: str) -> tuple[bytes, str]: ...

    def embed(self, model_id: str, texts: Sequence[str]) -> np.ndarray: ...


class RegistryBackend:
    """The registry's models (local ones, and Bedrock's when AWS is configured)."""

    def invoke(self, model_id: str, body: bytes, content_type: str, accept: str) -> tuple[bytes, str]:
        from pgkb.embeddings.invoke import invoke

        return invoke(model_id, body, content_type, accept)

    def embed(self, model_id: str, texts: Sequence[str]) -> np.ndarray:
        from pgkb.embeddings.registry import get_model

        return get_model(model_id).embed_documents(list(texts))


@dataclass(frozen=True)
class Result:
    columns: list[tuple[str, int]]
    rows: list[list[str | None]]


def float_array_literal(values: Sequence[float] | np.ndarray) -> str:
    """A PostgreSQL array literal that reads back into the same float4 values."""
    if isinstance(values, np.ndarray):
        # str() of a float32 is its shortest round-tripping decimal form.
        return "{" + ",".join(map(str, values.astype(np.float32, copy=False))) + "}"
    return "{" + ",".join(map(repr, values)) + "}"


def _require(args: list[str | None], names: Sequence[str]) -> list[str]:
    if len(args) != len(names):
        raise SqlStateError(E.UNDEFINED_FUNCTION, f"expected {len(names)} arguments ({', '.join(names)}), got {len(args)}")
    for name, value in zip(names, args, strict=True):
        if value is None:
            raise SqlStateError(E.NULL_NOT_ALLOWED, f"{name} must not be NULL")
    return [a for a in args if a is not None]


def _vector_at(doc: object, json_key: str) -> list[float]:
    if not isinstance(doc, dict) or json_key not in doc:
        keys = ", ".join(sorted(doc)) if isinstance(doc, dict) else "none (not a JSON object)"
        raise SqlStateError(E.JSON_MEMBER_NOT_FOUND, f"json_key '{json_key}' is not in the model's response",
                        detail=f"response keys: {keys}")
    v = doc[json_key]
    # Titan's embeddingsByType / Cohere's embedding_types: {"float": ...}
    if isinstance(v, dict) and "float" in v:
        v = v["float"]
    # Cohere answers a list of vectors: one text in, one vector out.
    if isinstance(v, list) and len(v) == 1 and isinstance(v[0], list):
        v = v[0]
    if not (isinstance(v, list) and v and all(
            isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in v)):
        raise SqlStateError(E.INVALID_PARAMETER, f"the value at json_key '{json_key}' is not an array of numbers")
    return v


class Calls:
    def __init__(self, backend: ModelBackend | None = None) -> None:
        self.backend: ModelBackend = backend or RegistryBackend()
        self.table: dict[str, Callable[[list[str | None]], Result]] = {
            "pgkb_invoke": self.invoke,
            "pgkb_invoke_get_embeddings": self.invoke_get_embeddings,
            "pgkb_embed_batch": self.embed_batch,
        }

    def run(self, name: str, args: list[str | None]) -> Result:
        fn = self.table.get(name)
        if fn is None:
            raise SqlStateError(E.UNDEFINED_FUNCTION, f"function {name} does not exist on pgkb's endpoint",
                            hint="available: " + ", ".join(sorted(self.table)))
        try:
            return fn(args)
        except SqlStateError:
            raise
        except Exception as exc:  # every model error becomes an SQL error with a SQLSTATE
            raise E.from_exception(exc) from exc

    def _invoke(self, model_id: str, content_type: str, accept: str, body: str) -> bytes:
        out, _ct = self.backend.invoke(model_id, body.encode("utf-8"), content_type, accept)
        return out

    def invoke(self, args: list[str | None]) -> Result:
        model_id, ct, accept, body = _require(args, ("model_id", "content_type", "accept_type", "model_input"))
        out = self._invoke(model_id, ct, accept, body)
        try:
            text = out.decode("utf-8")
        except UnicodeDecodeError:
            raise SqlStateError(E.INVALID_PARAMETER, f"model {model_id} answered a binary body; use a text accept type") from None
        return Result([("pgkb_invoke", TEXT_OID)], [[text]])

    def invoke_get_embeddings(self, args: list[str | None]) -> Result:
        model_id, ct, json_key, body = _require(args, ("model_id", "content_type", "json_key", "model_input"))
        out = self._invoke(model_id, ct, "application/json", body)
        try:
            doc = json.loads(out)
        except ValueError:
            raise SqlStateError(E.EXTERNAL, f"model {model_id} did not answer JSON") from None
        vec = _vector_at(doc, json_key)
        return Result([("pgkb_invoke_get_embeddings", FLOAT4_ARRAY_OID)], [[float_array_literal(vec)]])

    # -- micro-batching of concurrent single-text calls (see wire._Coalescer) -------------------------

    def batchable(self, name: str, args: list[str | None]) -> tuple[str, str] | None:
        """(model_id, text) when this call is a plain Titan embedding request for a local model, which
        concurrent callers may share one model call for; None sends it down the general path."""
        if name != "pgkb_invoke_get_embeddings" or len(args) != 4 or any(a is None for a in args):
            return None
        model_id, ct, json_key, body = args
        assert model_id is not None and ct is not None and body is not None
        if json_key != "embedding" or ct.split(";")[0].strip().lower() not in ("application/json", "*/*"):
            return None
        if len(body) > 100_000 or '"inputText"' not in body:
            return None
        try:
            req = json.loads(body)
        except ValueError:
            return None
        if not (isinstance(req, dict) and set(req) == {"inputText"} and isinstance(req["inputText"], str)
                and req["inputText"]):
            return None
        try:
            from pgkb.embeddings.registry import get_spec

            if get_spec(model_id).provider != "local":
                return None
        except Exception:
            return None  # the general path reports it
        return model_id, req["inputText"]

    def embed_many(self, model_id: str, texts: list[str]) -> list[np.ndarray | SqlStateError]:
        """One model call for many single-text requests; each gets its vector or its own error.

        Texts longer than a local model's window are embedded from their first tokens (docs/embeddings.md),
        so a batch fails only on an input the model cannot take at all; then each text is embedded on
        its own, so that one caller's bad input fails only its own call.
        """
        try:
            return list(self.backend.embed(model_id, texts))
        except Exception as exc:
            if len(texts) == 1:
                return [E.from_exception(exc)]
        out: list[np.ndarray | SqlStateError] = []
        for t in texts:
            try:
                out.append(self.backend.embed(model_id, [t])[0])
            except Exception as exc:
                out.append(E.from_exception(exc))
        return out

    @staticmethod
    def embedding_result(vec: np.ndarray) -> Result:
        return Result([("pgkb_invoke_get_embeddings", FLOAT4_ARRAY_OID)], [[float_array_literal(vec)]])

    def embed_batch(self, args: list[str | None]) -> Result:
        model_id, texts_json = _require(args, ("model_id", "texts"))
        try:
            texts = json.loads(texts_json)
        except ValueError:
            raise SqlStateError(E.INVALID_TEXT, "texts must be a JSON array of strings") from None
        if not isinstance(texts, list) or not all(t is None or isinstance(t, str) for t in texts):
            raise SqlStateError(E.INVALID_PARAMETER, "texts must be a JSON array of strings")
        present = [(i, t) for i, t in enumerate(texts) if t is not None]
        strs = [t for _, t in present]
        try:
            vecs = self.backend.embed(model_id, strs) if strs else None
        except ValidationError as exc:
            raise E.from_exception(exc) from exc
        rows: list[list[str | None]] = [[str(i + 1), None] for i in range(len(texts))]
        if vecs is not None:
            for (i, _), v in zip(present, vecs, strict=True):
                rows[i][1] = float_array_literal(v)
        return Result([("ord", INT4_OID), ("embedding", FLOAT4_ARRAY_OID)], rows)
