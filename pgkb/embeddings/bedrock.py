"""Amazon Bedrock embedding models through boto3 `bedrock-runtime` InvokeModel.

Usable only when AWS is configured (credentials boto3 can resolve) or when PGKB_BEDROCK_ENDPOINT_URL
points at another InvokeModel endpoint. Never falls back silently to another model.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from pgkb import config as pgkb_config
from pgkb.embeddings.base import ModelSpec, approximate_tokenizer, empty, l2_normalize
from pgkb.embeddings.registry import DEFAULT_MODEL_ID
from pgkb.errors import DependencyFailedError, ModelNotAvailableError, ValidationError

ENDPOINT_ENV = "PGKB_BEDROCK_ENDPOINT_URL"
COHERE_BATCH = 96  # Cohere's per-request limit on Bedrock
TITAN_CONCURRENCY = 8  # Titan takes one text per request: overlap the round trips


def _client(model_id: str) -> Any:
    import boto3
    from botocore.config import Config

    settings = pgkb_config.current()
    endpoint = settings.bedrock_endpoint_url
    session = boto3.Session()
    region = session.region_name or settings.region
    config = Config(retries={"max_attempts": 5, "mode": "standard"}, max_pool_connections=TITAN_CONCURRENCY * 2)
    if session.get_credentials() is None:
        if not endpoint:
            raise ModelNotAvailableError(
                f"Model {model_id} runs on Amazon Bedrock and requires AWS credentials; configure them (AWS_PROFILE, "
                f"AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, an instance role) or set {ENDPOINT_ENV}, "
                f"or use {DEFAULT_MODEL_ID}"
            )
        from botocore import UNSIGNED

        config = config.merge(Config(signature_version=UNSIGNED))
    return session.client("bedrock-runtime", region_name=region, endpoint_url=endpoint, config=config)


class BedrockModel:
    def __init__(self, spec: ModelSpec, dimensions: int) -> None:
        self.spec = spec
        self.dimensions = dimensions
        self.tokenizer = approximate_tokenizer()
        self._client = _client(spec.id)
        self._cohere = spec.id.startswith("cohere.")

    def _invoke(self, body: dict[str, Any]) -> dict[str, Any]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            resp = self._client.invoke_model(
                modelId=self.spec.id, body=json.dumps(body).encode(), contentType="application/json",
                accept="application/json",
            )
            answer: dict[str, Any] = json.loads(resp["body"].read())
            return answer
        except ClientError as e:
            err = e.response.get("Error", {})
            msg = f"Bedrock InvokeModel({self.spec.id}) failed: {err.get('Code')}: {err.get('Message')}"
            if err.get("Code") == "ValidationException":
                raise ValidationError(msg) from e
            raise DependencyFailedError(msg) from e
        except (BotoCoreError, ValueError) as e:
            raise DependencyFailedError(f"Bedrock InvokeModel({self.spec.id}) failed: {e}") from e

    def _titan(self, text: str) -> list[float]:
        body: dict[str, Any] = {"inputText": text}
        if self.spec.id != "amazon.titan-embed-text-v1":
            body.update(dimensions=self.dimensions, normalize=True)
        out = self._invoke(body)
        try:
            vector: list[float] = out["embedding"]
            return vector
        except KeyError as e:
            raise DependencyFailedError(f"Bedrock {self.spec.id} returned no 'embedding'") from e

    def _embed(self, texts: Sequence[str], input_type: str) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return empty(self.dimensions)
        if self._cohere:
            rows: list[list[float]] = []
            for i in range(0, len(texts), COHERE_BATCH):
                out = self._invoke({"texts": texts[i : i + COHERE_BATCH], "input_type": input_type, "truncate": "END"})
                emb = out.get("embeddings")
                if isinstance(emb, dict):
                    emb = emb.get("float")
                if not isinstance(emb, list):
                    raise DependencyFailedError(f"Bedrock {self.spec.id} returned no 'embeddings'")
                rows.extend(emb)
        elif len(texts) == 1:
            rows = [self._titan(texts[0])]
        else:
            with ThreadPoolExecutor(TITAN_CONCURRENCY) as pool:
                rows = list(pool.map(self._titan, texts))
        vecs = np.asarray(rows, dtype=np.float32)
        if vecs.shape != (len(texts), self.dimensions):
            raise DependencyFailedError(f"Bedrock {self.spec.id} returned vectors of shape {vecs.shape}")
        return l2_normalize(vecs)

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts, "search_document")

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts, "search_query")


def load_bedrock_model(spec: ModelSpec, dimensions: int) -> BedrockModel:
    return BedrockModel(spec, dimensions)
