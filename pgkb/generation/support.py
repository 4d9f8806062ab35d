"""How well each candidate sentence supports a question, without a model call.

The chunks a sentence comes from were already ranked semantically by retrieval; what is left to
decide is which of their sentences answer the question. A sentence's score is its lexical support for
the question (BM25 over the candidate sentences: the question's content words, weighted by how rare
each is among the candidates, with term-frequency saturation and sentence-length normalisation, plus
a bonus for question word pairs that stay adjacent) and a prior from its chunk's retrieval score.

IDF comes from the candidates themselves, not the corpus: a word every retrieved sentence repeats
(usually the question's subject) says little about which one answers, while the rarer asked-for word
("completed", "tall") says more. It is the smoothed log(1 + n / df), not BM25's probabilistic IDF,
which goes to zero for a word in every candidate and then lets one incidental rare word decide
(over about 20 sentences, the subject's own words matter too).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

K1 = 1.2  # BM25 term-frequency saturation
B = 0.75  # BM25 length normalisation
PAIR_WEIGHT = 0.25  # bonus per adjacent question word pair found adjacent in the sentence, x its idf share
CHUNK_WEIGHT = 2.0  # the chunk prior (0..1) weighs as much as the lexical support's range (about 0..2)

_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)
STOP = frozenset(
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
        "more",
        "please",
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
        "s",
        "t",
    ]
)


def stem(word: str) -> str:
    """A light suffix stripper (plural, -ed, -ing, final e): enough to match "completed" with
    "complete" and "volcanoes" with "volcano" without a stemming library."""
    w = word
    if len(w) > 4 and w.endswith("ies"):
        w = w[:-3] + "y"
    elif len(w) > 4 and w.endswith(("ches", "shes", "sses", "xes", "oes")):
        w = w[:-2]
    elif len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    if len(w) > 5 and w.endswith("ing"):
        w = w[:-3]
    elif len(w) > 4 and w.endswith("ed"):
        w = w[:-2]
    if len(w) > 3 and w.endswith("e"):
        w = w[:-1]
    return w


def tokens(text: str) -> list[str | None]:
    """Lower-cased, stemmed word tokens, None for a stop word (it still counts for the length)."""
    return [None if t in STOP else stem(t) for t in _TOKEN.findall(text.lower())]


def question_terms(question: str) -> list[str]:
    """The question's content words as stemmed tokens, in order, with repeats."""
    return [t for t in tokens(question) if t is not None]


def lexical_support(question: str, texts: Sequence[str]) -> np.ndarray:
    """BM25 of each text for the question, over the texts as the collection, divided by the summed idf
    of the question terms that occur in any text: 1.0 is every such term once in a text of average
    length. Adjacent question word pairs found adjacent in a text add PAIR_WEIGHT x their idf share."""
    n = len(texts)
    out = np.zeros(n, dtype=np.float32)
    q = question_terms(question)
    terms = list(dict.fromkeys(q))
    if not n or not terms:
        return out
    docs = [tokens(t) for t in texts]
    counts = [Counter(t for t in d if t is not None) for d in docs]
    df = {t: sum(1 for c in counts if t in c) for t in terms}
    idf = {t: math.log(1 + n / df[t]) for t in terms if df[t]}
    total = sum(idf.values())
    if not total:
        return out
    avg = sum(len(d) for d in docs) / n or 1.0
    pairs = {(a, b) for a, b in zip(q, q[1:], strict=False) if a in idf and b in idf and a != b}
    for i, (d, c) in enumerate(zip(docs, counts, strict=True)):
        norm = K1 * (1 - B + B * len(d) / avg)
        s = sum(w * c[t] * (K1 + 1) / (c[t] + norm) for t, w in idf.items() if t in c)
        if pairs:
            content = [t for t in d if t is not None]
            adjacent = set(zip(content, content[1:], strict=False)) & pairs
            s += PAIR_WEIGHT * sum(idf[a] + idf[b] for a, b in adjacent)
        out[i] = s / total
    return out


def chunk_prior(scores: Sequence[float | None]) -> np.ndarray:
    """Each result's retrieval score relative to the best one's (1.0 for the best, lower for worse)."""
    vals = [float(s) if s is not None else 0.0 for s in scores]
    best = max(vals, default=0.0)
    if best <= 0:
        return np.asarray([1.0 / (1 + r) for r in range(len(vals))], dtype=np.float32)
    return np.asarray([v / best for v in vals], dtype=np.float32)
