"""The offline generator (`modelArn: "pgkb.extractive"`): no language model, no weights to download.

The answer is made of sentences copied verbatim from the retrieved chunks: every sentence of the
chunks is scored by its support for the question (support.py: the question's words, weighted by
rarity among the candidates, and the chunk's retrieval score; no model call, so a chunk never seen
before costs no more than a popular one), the best few are kept (in the order they appear in the
sources) and each cites the chunk(s) it was copied from. It never paraphrases, so every cited span
is literally in a cited chunk. It is named as extractive in the response (`x-pgkb-generator:
extractive`) and in the docs; it is not an LLM.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import numpy as np

from pgkb.chunking.sentences import split_sentences
from pgkb.errors import ValidationError
from pgkb.generation.base import Answer, GenerationRequest, RewriteRequest, Segment
from pgkb.generation.support import CHUNK_WEIGHT, STOP, chunk_prior, lexical_support

NAME = "extractive"
MODEL_ID = "pgkb.extractive"
NO_ANSWER = "Sorry, I am unable to assist you with this request."
DEFAULT_SENTENCES = 3
MAX_SENTENCES = 10
MIN_WORDS = 3
RELATIVE_FLOOR = 0.8  # a sentence joins the answer only within this score distance of the best one

_WORD = re.compile(r"[\w'-]+", re.UNICODE)
_ANAPHORA = frozenset(
    [
        "it",
        "its",
        "they",
        "them",
        "their",
        "theirs",
        "he",
        "him",
        "his",
        "she",
        "her",
        "hers",
        "this",
        "that",
        "these",
        "those",
        "there",
        "such",
        "one",
        "ones",
    ]
)
SHORT_FOLLOW_UP_WORDS = 6


def _options(fields: dict[str, Any]) -> int:
    n = fields.get("maxSentences", DEFAULT_SENTENCES)
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_SENTENCES:
        raise ValidationError(
            f"additionalModelRequestFields.maxSentences must be an integer from 1 to {MAX_SENTENCES} for pgkb.extractive"
        )
    unknown = sorted(set(fields) - {"maxSentences"})
    if unknown:
        raise ValidationError(
            f"pgkb.extractive does not take additionalModelRequestFields {', '.join(unknown)}"
        )
    return n


def _approx_tokens(text: str) -> int:
    return max(1, round(len(_WORD.findall(text)) * 1.3))


class Candidate(NamedTuple):
    rank: int  # 0-based index of the retrieved result it comes from
    start: int
    end: int
    text: str


def candidates(results: list[dict[str, Any]]) -> list[Candidate]:
    """Every sentence of at least MIN_WORDS words of the retrieved chunks, best chunk first."""
    out: list[Candidate] = []
    for rank, r in enumerate(results):
        text = r["content"]["text"]
        for s, e in split_sentences(text):
            if len(_WORD.findall(text[s:e])) >= MIN_WORDS:
                out.append(Candidate(rank, s, e, text[s:e]))
    return out


def support_scores(question: str, cands: list[Candidate], results: list[dict[str, Any]]) -> np.ndarray:
    """Lexical support for the question plus CHUNK_WEIGHT x the chunk's retrieval prior."""
    prior = chunk_prior([r.get("score") for r in results])
    lex = lexical_support(question, [c.text for c in cands])
    return lex + CHUNK_WEIGHT * np.asarray([prior[c.rank] for c in cands], dtype=np.float32)


def choose(
    cands: list[Candidate], scores: np.ndarray, want: int, max_tokens: Any, floor: float = RELATIVE_FLOOR
) -> list[int]:
    """Indexes of the answer's sentences, in the order of the sources: the best-scored ones within
    `floor` of the best, up to `want`, without duplicates, within the token budget."""
    order = sorted(range(len(cands)), key=lambda i: (-float(scores[i]), cands[i].rank, cands[i].start))
    best = float(scores[order[0]])
    chosen: list[int] = []
    seen: set[str] = set()
    budget = max_tokens if isinstance(max_tokens, int) else None
    for i in order:
        if len(chosen) == want or (chosen and float(scores[i]) < best - floor):
            break
        norm = " ".join(cands[i].text.split()).lower()
        if norm in seen:
            continue
        cost = _approx_tokens(cands[i].text)
        if budget is not None and chosen and cost > budget:
            break
        seen.add(norm)
        chosen.append(i)
        if budget is not None:
            budget -= cost
    return sorted(chosen, key=lambda i: (cands[i].rank, cands[i].start))


class ExtractiveGenerator:
    name = NAME

    def check(self, additional_fields: dict[str, Any]) -> None:
        _options(additional_fields)

    def generate(self, request: GenerationRequest) -> Answer:
        want = _options(request.additional_fields)
        max_tokens = request.inference.get("maxTokens")
        cands = candidates(request.results)
        if not cands or max_tokens == 0:
            return Answer([Segment(NO_ANSWER)], NAME)
        scores = support_scores(request.question, cands, request.results)
        segments: list[Segment] = []
        for n, i in enumerate(choose(cands, scores, want, max_tokens)):
            if n:
                segments.append(Segment(" "))
            # cite every retrieved chunk that holds the very same sentence (overlapping chunks do)
            text = cands[i].text
            sources = tuple(k for k, r in enumerate(request.results) if text in r["content"]["text"])
            segments.append(Segment(text, sources))
        return Answer(segments, NAME)

    def rewrite(self, request: RewriteRequest) -> str:
        return rewrite_follow_up(request.question, [t.rewritten or t.question for t in request.history])


def key_terms(question: str) -> list[str]:
    """Content words of a question, in order, without repeats (case-insensitive)."""
    out: list[str] = []
    seen: set[str] = set()
    for w in _WORD.findall(question):
        lw = w.lower().strip("'-")
        if lw and lw not in STOP and lw not in seen:
            seen.add(lw)
            out.append(w.strip("'-"))
    return out


def rewrite_follow_up(question: str, previous_questions: list[str]) -> str:
    """Deterministic rewrite: a follow-up that is short or leans on a pronoun gets the key terms of the
    previous (already rewritten) question prepended, so retrieval sees what it refers to."""
    if not previous_questions:
        return question
    words = [w.lower() for w in _WORD.findall(question)]
    if len(words) > SHORT_FOLLOW_UP_WORDS and not any(w in _ANAPHORA for w in words):
        return question
    own = {w.lower() for w in key_terms(question)}
    carried = [t for t in key_terms(previous_questions[-1]) if t.lower() not in own]
    if not carried:
        return question
    return f"{' '.join(carried)}: {question}"
