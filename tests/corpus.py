"""Real English text for tests that needs nothing outside the repository.

The Python reference documentation ships with every CPython as `pydoc_data.topics` (PSF licence):
~460 KB of technical prose, split here into paragraphs and sentences in a fixed order, so tests get
real text (real token lengths, real vocabulary) without reading a dataset from disk.
"""

from __future__ import annotations

import pydoc_data.topics
import re
from functools import cache
from pathlib import Path

_BLANK = re.compile(r"\n\s*\n")
_SENTENCE_END = re.compile(r"(?<=[a-z0-9)][.?!])\s+(?=[A-Z])")


@cache
def _paragraphs() -> tuple[str, ...]:
    out: list[str] = []
    for topic in sorted(pydoc_data.topics.topics):
        for block in _BLANK.split(pydoc_data.topics.topics[topic]):
            words = block.split()
            # prose only: long enough, not a code sample or a list of bullets
            if (len(words) >= 30 and "::=" not in block
                    and not block.lstrip().startswith((">>>", "*", "-", "+", "|", "["))):
                out.append(" ".join(words))
    return tuple(out)


def paragraphs(n: int, offset: int = 0) -> list[str]:
    """`n` prose paragraphs (30+ words each), starting at `offset`; at least 600 exist."""
    got = list(_paragraphs()[offset:offset + n])
    if len(got) < n:
        raise ValueError(f"only {len(_paragraphs()) - offset} paragraphs from offset {offset}")
    return got


def sentences(n: int, min_words: int = 3, max_words: int = 40) -> list[str]:
    """`n` distinct sentences of `min_words`..`max_words` words, in a fixed order."""
    out: list[str] = []
    seen: set[str] = set()
    for para in _paragraphs():
        for s in _SENTENCE_END.split(para):
            if min_words <= len(s.split()) <= max_words and s not in seen:
                seen.add(s)
                out.append(s)
                if len(out) == n:
                    return out
    raise ValueError(f"only {len(out)} sentences of {min_words}-{max_words} words")


def write_folder(folder: Path, n: int, offset: int = 0) -> list[str]:
    """Write `n` paragraphs as `doc<i>.txt` files into `folder`; returns their texts."""
    folder.mkdir(parents=True, exist_ok=True)
    texts = paragraphs(n, offset)
    for i, text in enumerate(texts, offset):
        (folder / f"doc{i:04d}.txt").write_text(text)
    return texts
