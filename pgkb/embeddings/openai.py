"""OpenAI-compatible embedding endpoints (OpenAI, vLLM, Ollama, LiteLLM, ...), registered by configuration.

PGKB_OPENAI_EMBEDDINGS is a JSON list of
  {"id": "...", "base_url": "http://host/v1", "model": "...", "dimensions": 768,
   "api_key_env": "OPENAI_API_KEY", "max_input_tokens": 8191, "batch_size": 128, "send_dimensions": false}
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from pgkb import config
from pgkb.embeddings.base import ModelSpec, approximate_tokenizer, empty, l2_normalize
from pgkb.errors import ModelNotAvailableError, ValidationError
from pgkb.http_json import post_json, unexpected_answer

ENV = "PGKB_OPENAI_EMBEDDINGS"


def configured_specs() -> list[ModelSpec]:
    return list(_parse(config.current().openai_embeddings))


@lru_cache(maxsize=8)
def _parse(raw: str) -> tuple[ModelSpec, ...]:
    if not raw.strip():
        return ()
    try:
        items = json.loads(raw)
        if not isinstance(items, list):
            raise TypeError("expected a JSON list")
        specs = []
        for it in items:
            dims = int(it["dimensions"])
            specs.append(
                ModelSpec(
                    id=str(it["id"]),
                    provider="openai",
                    dimensions=dims,
                    allowed_dimensions=(dims,),
                    max_input_tokens=int(it.get("max_input_tokens", 8191)),
                    normalize=True,
                    description=f"OpenAI-compatible {it['model']} at {it['base_url']}",
                    options={
                        "base_url": str(it["base_url"]).rstrip("/"),
                        "model": str(it["model"]),
                        "api_key_env": it.get("api_key_env"),
                        "batch_size": int(it.get("batch_size", 128)),
                        "send_dimensions": bool(it.get("send_dimensions", False)),
                        "timeout": float(it.get("timeout", 60)),
                    },
                )
            )
        return tuple(specs)
    except (ValueError, TypeError, KeyError) as e:
        raise ValidationError(f"{ENV} is not a valid JSON list of {{id, base_url, model, dimensions}}: {e}") from e


class OpenAICompatibleModel:
    def __init__(self, spec: ModelSpec, dimensions: int) -> None:
        self.spec = spec
        self.dimensions = dimensions
        self.tokenizer = approximate_tokenizer()
        o = spec.options
        self._url = f"{o['base_url']}/embeddings"
        self._model = str(o["model"])
        self._batch = max(1, int(o["batch_size"]))  # type: ignore[call-overload]
        self._send_dims = bool(o["send_dimensions"])
        self._timeout = float(o["timeout"])  # type: ignore[arg-type]
        key_env = o.get("api_key_env")
        self._api_key = config.env_value(str(key_env)) if key_env else None
        if key_env and not self._api_key:
            raise ModelNotAvailableError(f"Model {spec.id} needs an API key in the environment variable {key_env}")

    def _post(self, texts: list[str]) -> np.ndarray:
        body: dict[str, object] = {"model": self._model, "input": texts, "encoding_format": "float"}
        if self._send_dims:
            body["dimensions"] = self.dimensions
        payload = post_json(self._url, body, resource=self.spec.id, what="embedding endpoint",
                            api_key=self._api_key, timeout=self._timeout)
        try:
            data = sorted(payload["data"], key=lambda d: d.get("index", 0))
            vecs = np.asarray([d["embedding"] for d in data], dtype=np.float32)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise unexpected_answer(self.spec.id, "embedding endpoint", self._url, f"an unexpected body: {e}") from None
        if vecs.shape != (len(texts), self.dimensions):
            raise unexpected_answer(self.spec.id, "embedding endpoint", self._url,
                                    f"shape {vecs.shape}, expected ({len(texts)}, {self.dimensions})")
        return vecs

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return empty(self.dimensions)
        parts = [self._post(texts[i : i + self._batch]) for i in range(0, len(texts), self._batch)]
        return l2_normalize(np.concatenate(parts))

    embed_queries = embed_documents


def load_openai_model(spec: ModelSpec, dimensions: int) -> OpenAICompatibleModel:
    return OpenAICompatibleModel(spec, dimensions)
