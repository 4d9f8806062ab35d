"""The offline generator (`modelArn: "pgkb.extractive"`): no language model, no weights to download.

The answer is made of sentences copied verbatim from the retrieved chunks: every sentence of the
chunks is scored by cosine similarity to the question with the knowledge base's own embedding model,
the best few are kept (in the order they appear in the sources) and each cites the chunk(s) it was
copied from. It never paraphrases, so every cited span is literally in a cited chunk. It is named as
extractive in the response (`x-pgkb-generator: extractive`) and in the docs; it is not an LLM.
"""

from __future__ import annotations

import math
import re
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from pgkb.chunking.sentences import split_sentences
from pgkb.errors import ValidationError
from pgkb.generation.base import Answer, GenerationRequest, RewriteRequest, Segment

NAME = "extractive"
MODEL_ID = "pgkb.extractive"
NO_ANSWER = "Sorry, I am unable to assist you with this request."
DEFAULT_SENTENCES = 3
MAX_SENTENCES = 10
MAX_CANDIDATES = 12  # sentences the model scores per answer (the model call is the cost of an answer)
RANK_PRIOR = 0.2  # pre-selection: lexical overlap + RANK_PRIOR / (1 + result rank)
MIN_WORDS = 3
RELATIVE_FLOOR = 0.15  # a sentence joins the answer only within this score distance of the best one
LEXICAL_WEIGHT = 0.3  # how much the question's rarer words count next to the cosine

_WORD = re.compile(r"[\w'-]+", re.UNICODE)
_STOP = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "if",
        "of",
        "to",
        "in",
        "on",
        "at",
        "by",
        "for",
        "with",
        "from",
        "as",
        "into",
        "about",
        "over",
        "under",
        "between",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "am",
        "do",
        "does",
        "did",
        "done",
        "have",
        "has",
        "had",
        "having",
        "can",
        "could",
        "will",
        "would",
        "shall",
        "should",
        "may",
        "might",
        "must",
        "what",
        "which",
        "who",
        "whom",
        "whose",
        "when",
        "where",
        "why",
        "how",
        "that",
        "this",
        "these",
        "those",
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
        "we",
        "us",
        "our",
        "you",
        "your",
        "i",
        "me",
        "my",
        "mine",
        "there",
        "here",
        "than",
        "then",
        "so",
        "not",
        "no",
        "yes",
        "also",
        "just",
        "tell",
        "me",
        "more",
        "please",
        "about",
        "any",
        "some",
        "such",
        "other",
        "another",
        "same",
        "own",
        "very",
        "too",
        "only",
    ]
)
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


class SentenceVectors:
    """A bounded process-wide cache of sentence vectors per model: chunks recur across questions."""

    def __init__(self, capacity: int = 20_000) -> None:  # 384-d: about 31 MB
        self.capacity = capacity
        self._items: OrderedDict[tuple[str, int, str], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, model: Any, texts: list[str]) -> np.ndarray:
        key_base = (str(model.spec.id), int(model.dimensions))
        out: list[np.ndarray | None] = []
        missing: list[int] = []
        with self._lock:
            for i, t in enumerate(texts):
                v = self._items.get((*key_base, t))
                if v is not None:
                    self._items.move_to_end((*key_base, t))
                else:
                    missing.append(i)
                out.append(v)
        if missing:
            # one batched model call for every sentence not seen before
            vecs = model.embed_documents([texts[i] for i in missing])
            with self._lock:
                for i, v in zip(missing, vecs, strict=True):
                    out[i] = v
                    self._items[(*key_base, texts[i])] = v
                while len(self._items) > self.capacity:
                    self._items.popitem(last=False)
        return np.vstack(out) if out else np.zeros((0, model.dimensions), dtype=np.float32)


SENTENCE_VECTORS = SentenceVectors()


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


class ExtractiveGenerator:
    name = NAME

    def __init__(self, vectors: SentenceVectors | None = None) -> None:
        self.vectors = vectors or SENTENCE_VECTORS

    def check(self, additional_fields: dict[str, Any]) -> None:
        _options(additional_fields)

    def generate(self, request: GenerationRequest) -> Answer:
        want = _options(request.additional_fields)
        max_tokens = request.inference.get("maxTokens")
        # candidates: (result rank, start, end) of every sentence worth quoting, best chunks first
        cands: list[tuple[int, int, int]] = []
        for rank, r in enumerate(request.results):
            text = r["content"]["text"]
            for s, e in split_sentences(text):
                if len(_WORD.findall(text[s:e])) >= MIN_WORDS:
                    cands.append((rank, s, e))
        if not cands or request.embedding_model is None or max_tokens == 0:
            return Answer([Segment(NO_ANSWER)], NAME)
        texts = [request.results[rank]["content"]["text"][s:e] for rank, s, e in cands]
        if len(cands) > MAX_CANDIDATES:
            # Embedding every sentence costs one model pass per sentence; pre-select the likeliest by
            # the question's words and the chunk's rank (on msmarco-5k, 42 of 43 answers were
            # unchanged by a pre-selection of 10 from about 16).
            lex = lexical_overlap(request.question, texts)
            keep = sorted(
                sorted(range(len(cands)), key=lambda i: -(lex[i] + RANK_PRIOR / (1 + cands[i][0])))[:MAX_CANDIDATES]
            )
            cands = [cands[i] for i in keep]
            texts = [texts[i] for i in keep]
        model = request.embedding_model
        qvec = request.query_vector
        if qvec is None:
            qvec = model.embed_queries([request.question])[0]
        scores = self.vectors.get(model, texts) @ np.asarray(qvec, dtype=np.float32)
        scores = scores + LEXICAL_WEIGHT * lexical_overlap(request.question, texts)
        order = sorted(range(len(cands)), key=lambda i: (-float(scores[i]), cands[i][0], cands[i][1]))
        best = float(scores[order[0]])
        chosen: list[int] = []
        seen: set[str] = set()
        budget = max_tokens if isinstance(max_tokens, int) else None
        for i in order:
            if len(chosen) == want or (chosen and float(scores[i]) < best - RELATIVE_FLOOR):
                break
            norm = " ".join(texts[i].split()).lower()
            if norm in seen:
                continue
            cost = _approx_tokens(texts[i])
            if budget is not None and chosen and cost > budget:
                break
            seen.add(norm)
            chosen.append(i)
            if budget is not None:
                budget -= cost
        chosen.sort(key=lambda i: (cands[i][0], cands[i][1]))  # the order of the sources
        segments: list[Segment] = []
        for n, i in enumerate(chosen):
            if n:
                segments.append(Segment(" "))
            # cite every retrieved chunk that holds the very same sentence (overlapping chunks do)
            sources = tuple(k for k, r in enumerate(request.results) if texts[i] in r["content"]["text"])
            segments.append(Segment(texts[i], sources))
        return Answer(segments, NAME)

    def rewrite(self, request: RewriteRequest) -> str:
        return rewrite_follow_up(request.question, [t.rewritten or t.question for t in request.history])


def lexical_overlap(question: str, texts: list[str]) -> np.ndarray:
    """Share of the question's content words (weighted by rarity among the candidates) each text holds.

    The cosine alone favours sentences that repeat the question's entity ("The Eiffel Tower is ...")
    over the one that answers it ("... was completed in 1889"); the rarer asked-for word breaks that tie.
    """
    terms = {t.lower() for t in key_terms(question)}
    if not terms or not texts:
        return np.zeros(len(texts), dtype=np.float32)
    words = [{w.lower() for w in _WORD.findall(t)} for t in texts]
    n = len(texts)
    idf = {t: math.log(1 + (n + 1) / (1 + sum(t in ws for ws in words))) for t in terms}
    total = sum(idf.values())
    return np.asarray([sum(idf[t] for t in terms if t in ws) / total for ws in words], dtype=np.float32)


def key_terms(question: str) -> list[str]:
    """Content words of a question, in order, without repeats (case-insensitive)."""
    out: list[str] = []
    seen: set[str] = set()
    for w in _WORD.findall(question):
        lw = w.lower().strip("'-")
        if lw and lw not in _STOP and lw not in seen:
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
