"""How far HYBRID trusts the dense ranking of one query: the query-time evidence and the rule.

An embedding model reads a query through its tokenizer's vocabulary. When most of the query's letters
reach the model only as [UNK] or as one- and two-letter fragments of words (Arabic through
all-MiniLM-L6-v2's English WordPiece: `ا ##ل ##ى`), the model is guessing, and its ranking is noise:
on arcd the dense nDCG@10 is 0.06 against BM25's 0.72. Ranks carry no such warning, so the evidence
comes from the tokenizer, before the query runs:

- `token_coverage(tokenizer, text)`: the share of the query's letters and digits that fall in *real*
  word pieces, pieces of at least 3 characters or a whole word. English queries of msmarco-5k and of
  pgkb-docs score 0.68-1.0 with all-MiniLM-L6-v2; every arcd query 0.00-0.19.
- `dense_trust(coverage)`: 0 at or below `TRUST_FROM`, 1 from `TRUST_FULL`, linear in between.
  HYBRID scales both dense weights of its fusion by it (search.py): 1 is the fusion tuned on
  msmarco-5k, 0 is the BM25 ranking (dense order only breaks ties).

Only a model's own tokenizer is evidence: for remote models pgkb only knows an approximate tokenizer
(which would call a multilingual model blind to Arabic), so `model_coverage` returns None (trust 1).
The thresholds were chosen by leave-one-corpus-out over msmarco-5k, arcd and bench/data/pgkb-docs
(bench/bench_fusion.py; docs/retrieval.md has the figures).
"""

from __future__ import annotations

import re
from typing import Any

#: Coverage at or below which the dense ranking is ignored, and from which it is fully trusted.
TRUST_FROM = 0.3
TRUST_FULL = 0.6
#: A piece this long is a real word piece even when it is only part of a word.
REAL_PIECE_CHARS = 3

_WORD = re.compile(r"\w+")


def token_coverage(tokenizer: Any, text: str) -> float:
    """Share of `text`'s alphanumeric characters inside pieces of at least REAL_PIECE_CHARS characters
    or pieces that are a whole word (`tokenizer.offsets(text)`, pgkb's Tokenizer protocol). 1.0 for a
    text without letters or digits (nothing to be blind to)."""
    words = {m.span() for m in _WORD.finditer(text)}
    good = total = 0
    for a, b in tokenizer.offsets(text):
        n = sum(ch.isalnum() for ch in text[a:b])
        if not n:
            continue
        total += n
        if b - a >= REAL_PIECE_CHARS or (a, b) in words:
            good += n
    return good / total if total else 1.0


def model_coverage(model: Any, text: str) -> float | None:
    """`token_coverage` with a local model's own tokenizer; None when the tokenizer is not the model's."""
    spec = getattr(model, "spec", None)
    tokenizer = getattr(model, "tokenizer", None)
    if spec is None or tokenizer is None or getattr(spec, "provider", None) != "local":
        return None
    return token_coverage(tokenizer, text)


def dense_trust(coverage: float | None) -> float:
    """The weight multiplier of the dense ranking in HYBRID, in [0, 1]."""
    if coverage is None:
        return 1.0
    return min(1.0, max(0.0, (coverage - TRUST_FROM) / (TRUST_FULL - TRUST_FROM)))
