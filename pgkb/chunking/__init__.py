"""Bedrock's chunking strategies over a ParsedDocument: FIXED_SIZE, NONE, HIERARCHICAL, SEMANTIC.

Tokens are the embedding model's own (`tokenizer.offsets`), counted once per document. Every chunk's
text is exactly `doc.text[start:end]`, so a citation can point at the characters it came from.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pgkb.chunking.config import DEFAULT_CHUNKING, STRATEGIES, validate_chunking_configuration
from pgkb.chunking.packing import TokenizedText, TokenizerLike
from pgkb.chunking.sentences import split_sentences
from pgkb.errors import ValidationError
from pgkb.parsing import ParsedDocument

__all__ = [
    "DEFAULT_CHUNKING",
    "STRATEGIES",
    "Chunk",
    "ChunkSet",
    "chunk_text",
    "split_sentences",
    "validate_chunking_configuration",
]

EmbedFn = Callable[[list[str]], np.ndarray]
# Groups go to the model in large calls: the model sorts by length and batches on its own.
_EMBED_BATCH = 4096


@dataclass(frozen=True, slots=True)
class Chunk:
    """`text == doc.text[start:end]`; `page` is the PDF page of `start`; `parent` indexes
    `ChunkSet.parents` for HIERARCHICAL children, else None."""

    text: str
    index: int
    start: int
    end: int
    page: int | None = None
    parent: int | None = None


@dataclass(frozen=True)
class ChunkSet:
    """`chunks` are embedded and searched; `parents` (HIERARCHICAL only) are stored and returned."""

    chunks: list[Chunk]
    parents: list[Chunk] = field(default_factory=list)


def chunk_text(
    doc: ParsedDocument,
    chunking_configuration: dict[str, Any] | None,
    tokenizer: TokenizerLike,
    embed: EmbedFn | None = None,
) -> ChunkSet:
    cfg = DEFAULT_CHUNKING if chunking_configuration is None else chunking_configuration
    validate_chunking_configuration(cfg)
    strategy = cfg["chunkingStrategy"]
    text = doc.text
    if strategy == "NONE":
        return _whole(text)
    if strategy == "SEMANTIC" and embed is None:
        raise ValidationError("SEMANTIC chunking needs the knowledge base's embedding model")
    sentences = split_sentences(text)
    tt = TokenizedText(text, tokenizer, sentences)
    if tt.n == 0:
        return ChunkSet([])
    pages = _PageIndex(doc.pages)
    if strategy == "FIXED_SIZE":
        sub = cfg["fixedSizeChunkingConfiguration"]
        max_tokens = sub["maxTokens"]
        overlap = max_tokens * sub["overlapPercentage"] // 100
        return ChunkSet(_chunks(tt, tt.pack(0, tt.n, max_tokens, overlap), pages))
    if strategy == "HIERARCHICAL":
        return _hierarchical(tt, cfg["hierarchicalChunkingConfiguration"], pages)
    assert embed is not None
    return _semantic(tt, cfg["semanticChunkingConfiguration"], pages, embed)


def _whole(text: str) -> ChunkSet:
    # Bedrock: NONE keeps each file as one chunk, without page numbers.
    stripped = text.strip()
    if not stripped:
        return ChunkSet([])
    start = len(text) - len(text.lstrip())
    return ChunkSet([Chunk(stripped, 0, start, start + len(stripped))])


class _PageIndex:
    def __init__(self, pages: list[tuple[int, int, int]] | None) -> None:
        pages = sorted((p for p in pages or [] if p[2] > p[1]), key=lambda p: p[1])
        self.starts = [s for _, s, _ in pages]
        self.numbers = [n for n, _, _ in pages]

    def page_of(self, pos: int) -> int | None:
        if not self.starts:
            return None
        i = bisect_right(self.starts, pos) - 1
        return self.numbers[max(i, 0)]


def _chunks(
    tt: TokenizedText, ranges: Sequence[tuple[int, int]], pages: _PageIndex, parent: int | None = None,
    first_index: int = 0,
) -> list[Chunk]:
    out = []
    text = tt.text
    for i, (p, e) in enumerate(ranges):
        s, end = tt.span(p, e)
        # some tokenizers (byte-level BPE) count the space before a word as part of its token
        while s < end and text[s].isspace():
            s += 1
        while end > s and text[end - 1].isspace():
            end -= 1
        out.append(Chunk(text[s:end], first_index + i, s, end, pages.page_of(s), parent))
    return out


def _hierarchical(tt: TokenizedText, sub: dict[str, Any], pages: _PageIndex) -> ChunkSet:
    parent_max = sub["levelConfigurations"][0]["maxTokens"]
    child_max = sub["levelConfigurations"][1]["maxTokens"]
    overlap = sub["overlapTokens"]
    # An overlap as large as the chunk would step a few tokens at a time (quadratic output):
    # each layer repeats at most a quarter of its chunk size.
    parent_ranges = tt.pack(0, tt.n, parent_max, min(overlap, max(1, parent_max // 4)))
    parents = _chunks(tt, parent_ranges, pages)
    children: list[Chunk] = []
    for parent_index, (lo, hi) in enumerate(parent_ranges):
        ranges = tt.pack(lo, hi, child_max, min(overlap, max(1, child_max // 4)))
        children.extend(_chunks(tt, ranges, pages, parent_index, len(children)))
    return ChunkSet(children, parents)


def _semantic(tt: TokenizedText, sub: dict[str, Any], pages: _PageIndex, embed: EmbedFn) -> ChunkSet:
    max_tokens = sub["maxTokens"]
    buffer = sub["bufferSize"]
    threshold = sub["breakpointPercentileThreshold"]
    sent = tt.sentence_tokens
    sent = sent[sent[:, 1] > sent[:, 0]]  # sentences that hold at least one token
    m = len(sent)
    segments: list[tuple[int, int]] = []
    if m <= 2:
        segments.append((0, tt.n))
    else:
        text = tt.text
        groups = []
        for i in range(m):
            a = int(sent[max(0, i - buffer), 0])
            z = int(sent[min(m - 1, i + buffer), 1])
            s, e = tt.span(a, z)
            groups.append(text[s:e])
        vectors = np.concatenate(
            [np.asarray(embed(groups[k : k + _EMBED_BATCH]), dtype=np.float32)
             for k in range(0, m, _EMBED_BATCH)]
        )
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        distance = 1.0 - np.einsum("ij,ij->i", vectors[:-1], vectors[1:])
        cut_after = np.flatnonzero(distance > np.percentile(distance, threshold))
        first = 0
        for i in cut_after.tolist():
            segments.append((int(sent[first, 0]), int(sent[i + 1, 0])))
            first = i + 1
        segments.append((int(sent[first, 0]), tt.n))
        segments[0] = (0, segments[0][1])
    ranges: list[tuple[int, int]] = []
    for lo, hi in segments:
        ranges.extend(tt.pack(lo, hi, max_tokens, 0))  # over-long segments: fixed-size, no overlap
    return ChunkSet(_chunks(tt, ranges, pages))
