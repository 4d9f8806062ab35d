"""Token-offset packing: the one place chunk boundaries are decided.

The document is tokenised once; everything here works on token indices and their character
offsets, so chunking is O(tokens) and every chunk is an exact slice of the document text.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from pgkb.errors import PgkbError

# How far to look for a word start before cutting inside a word (a very long token run).
_SNAP_WINDOW = 64
_PIECE_CHARS = 65536


class TokenizerLike(Protocol):
    def offsets(self, text: str) -> list[tuple[int, int]]: ...

    def count(self, texts: Sequence[str]) -> list[int]: ...


def _tokenize(text: str, tokenizer: TokenizerLike) -> np.ndarray:
    """(n, 2) token offsets. Long texts go in ~64 KB pieces cut at whitespace (tokens never span
    whitespace): the Rust tokenizers are about twice as fast on pieces as on one 5 MB string."""
    parts = []
    pos = 0
    while pos < len(text):
        end = _piece_end(text, pos)
        offs = np.asarray(tokenizer.offsets(text[pos:end]), dtype=np.int64).reshape(-1, 2)
        parts.append(offs + pos)
        pos = end
    return np.concatenate(parts) if parts else np.zeros((0, 2), dtype=np.int64)


def _piece_end(text: str, pos: int) -> int:
    if len(text) - pos <= _PIECE_CHARS:
        return len(text)
    lo, hi = pos + _PIECE_CHARS // 2, pos + _PIECE_CHARS
    for sep in ("\n\n", "\n", " "):
        cut = text.rfind(sep, lo, hi)
        if cut > pos:
            return cut
    return hi


class TokenizedText:
    """`text` with its tokens' character offsets, and the token indices where sentences start."""

    def __init__(self, text: str, tokenizer: TokenizerLike, sentences: list[tuple[int, int]]) -> None:
        self.text = text
        offs = _tokenize(text, tokenizer)
        offs = offs[offs[:, 1] > offs[:, 0]]  # special / empty tokens carry no text
        self.starts = offs[:, 0]
        self.ends = offs[:, 1]
        self.n = len(offs)
        if self.n and any(ch.isalnum() for ch in text[int(self.ends[-1]) :]):
            raise PgkbError(
                "the tokenizer did not cover the whole text (is truncation enabled on it?)"
            )
        # Token index of each sentence start, and the sorted unique boundaries [0, ..., n].
        sent_starts = np.asarray([s for s, _ in sentences], dtype=np.int64)
        sent_ends = np.asarray([e for _, e in sentences], dtype=np.int64)
        self.sentence_tokens = np.stack(
            [np.searchsorted(self.starts, sent_starts), np.searchsorted(self.starts, sent_ends)], axis=1
        ) if sentences else np.zeros((0, 2), dtype=np.int64)
        bounds = set(self.sentence_tokens[:, 0].tolist())
        bounds.update((0, self.n))
        self.bounds: list[int] = sorted(b for b in bounds if 0 <= b <= self.n)

    def span(self, p: int, e: int) -> tuple[int, int]:
        return int(self.starts[p]), int(self.ends[e - 1])

    def is_word_start(self, i: int) -> bool:
        if i <= 0 or i >= self.n:
            return True
        s = int(self.starts[i])
        if s > int(self.ends[i - 1]):
            return True
        return not (self.text[s - 1].isalnum() and self.text[s].isalnum())

    def snap_back(self, limit: int, p: int) -> int:
        """Largest word start in (p, limit], else limit (a cut inside one enormous word)."""
        for i in range(limit, max(p, limit - _SNAP_WINDOW), -1):
            if self.is_word_start(i):
                return i
        return limit

    def snap_forward(self, target: int, e: int) -> int:
        """Smallest word start in [target, e), else e."""
        for i in range(target, min(e, target + _SNAP_WINDOW)):
            if self.is_word_start(i):
                return i
        return e

    def pack(self, lo: int, hi: int, max_tokens: int, overlap: int) -> list[tuple[int, int]]:
        """Token ranges over [lo, hi): whole sentences up to `max_tokens` (when that fills at least
        half of it; otherwise, and for a sentence longer than `max_tokens`, the cut falls between
        words); each range starts with the trailing whole sentences of the one before that fit in
        `overlap` tokens, or with its last `overlap` tokens when none fit."""
        b = self.bounds
        out: list[tuple[int, int]] = []
        p = lo
        while p < hi:
            limit = p + max_tokens
            if limit >= hi:
                e = hi
            else:
                e = b[bisect_right(b, limit) - 1]
                if e <= p or e < p + max_tokens // 2:
                    # ending at that sentence would leave a fragment: fill up to the limit instead
                    e = self.snap_back(limit, p)
            out.append((p, e))
            if e >= hi:
                break
            q = e
            if overlap > 0:
                # repeat at most 90% of the chunk just emitted, so every step moves forward
                target = max(e - min(overlap, (e - p) * 9 // 10), p + 1)
                k = bisect_left(b, target)
                q = b[k] if k < len(b) and b[k] < e else self.snap_forward(target, e)
            p = q if q > p else e
        return out
