"""Embedding models: registry, providers (local torch / ONNX, Bedrock, OpenAI-compatible), InvokeModel codec."""

from pgkb.embeddings.base import EmbeddingModel, ModelSpec, Tokenizer
from pgkb.embeddings.registry import (
    DEFAULT_MODEL_ID,
    FAST_MODEL_ID,
    REFERENCE_MODEL_ID,
    get_model,
    get_spec,
    list_specs,
    model_arn,
    model_id_from_arn,
    register_provider,
)

__all__ = [
    "DEFAULT_MODEL_ID",
    "FAST_MODEL_ID",
    "REFERENCE_MODEL_ID",
    "EmbeddingModel",
    "ModelSpec",
    "Tokenizer",
    "get_model",
    "get_spec",
    "list_specs",
    "model_arn",
    "model_id_from_arn",
    "register_provider",
]
