"""The offline planner's question decomposition: a compound question → the parts to retrieve for.

Deterministic and model-free. Three rules, tried in this order:

1. several questions in one message ("What is X? How does Y work?") → one part per question;
2. a comparison: "A vs B" / "A versus B" / "A compared to|with B", "difference between A and B",
   "compare A and|with|to B", "which …, A or B?" → the question once with A, once with B (the words
   around the pair are kept in both, so "the default port of X vs Y" asks for the port of each);
3. a conjunction joining clauses (", and", "; ", "as well as", "and" before a question word or an
   auxiliary verb, or "and" between two sides that each carry at least MIN_TERMS content words) →
   one part per clause, each clause carrying the question word of the first when it has none.

Parts with fewer than MIN_TERMS content words are merged into the previous one (a dangling "and
why?" is not worth a search). At most MAX_PARTS parts; a question that matches no rule is its own
single part.
"""

from __future__ import annotations

import re

from pgkb.generation.support import question_terms

MAX_PARTS = 5
MIN_TERMS = 2

_WH = ("what", "which", "who", "whom", "whose", "where", "when", "why", "how")
_AUX = ("is", "are", "was", "were", "do", "does", "did", "can", "could", "should", "would", "will", "has",
        "have", "may", "must")
_STOP_BOUNDARY = frozenset(
    ("of", "for", "in", "on", "at", "to", "with", "by", "from", "between", "the", "a", "an", "is", "are", "and",
     "or", "does", "do", "did", "what", "which", "how", "whether", "than", "about", "using", "use", "uses", "under")
)
_QUESTIONS = re.compile(r"[^?]+\?+|[^?]+$")
_VS = re.compile(r"\s+(?:vs\.?|versus|compared\s+(?:to|with)|against)\s+", re.IGNORECASE)
_BETWEEN = re.compile(r"\b(?:difference|differences|choose|choice)\s+between\s+(.+?)\s+and\s+(.+?)(?=[?.,;]|$)",
                      re.IGNORECASE)
_COMPARE = re.compile(r"\bcompare\s+(.+?)\s+(?:and|with|to)\s+(.+?)(?=[?.,;]|$)", re.IGNORECASE)
_WHICH_OR = re.compile(r"^(?P<head>.*?),\s*(?P<a>[^,?]+?)\s+or\s+(?P<b>[^,?]+?)\s*\?*\s*$", re.IGNORECASE)
_CLAUSE = re.compile(
    r"\s*;\s*|\s*,\s*and\s+|\s+as well as\s+|\s+and\s+(?=(?:also\s+)?(?:" + "|".join(_WH + _AUX) + r")\b)",
    re.IGNORECASE,
)
_AND = re.compile(r"\s+and\s+(?:also\s+)?", re.IGNORECASE)
_LEAD = re.compile(r"^(?:and|also|then|but|plus|so)\s+", re.IGNORECASE)
_WORD = re.compile(r"\S+")


def _terms(text: str) -> int:
    return len(question_terms(text))


def _clean(part: str) -> str:
    part = _LEAD.sub("", part.strip(" \t\n,;")).strip()
    return part[:1].upper() + part[1:] if part else part


def _wh_word(text: str) -> str | None:
    first = text.split(None, 1)[0].lower() if text.strip() else ""
    return first if first in _WH else None


def _merge_small(parts: list[tuple[str, bool]]) -> list[str]:
    """`parts`: (text, mergeable); the two sides of a comparison stay apart however short."""
    out: list[str] = []
    for p, mergeable in parts:
        if out and mergeable and _terms(p) < MIN_TERMS:
            out[-1] = f"{out[-1].rstrip('?')} {p}".strip()
        else:
            out.append(p)
    if len(out) > 1 and parts[0][1] and _terms(out[0]) < MIN_TERMS:  # a short head joins the next part
        out[1] = f"{out[0].rstrip('?')} {out[1]}"
        out.pop(0)
    return out


def _phrase_left(words: list[str]) -> int:
    """Index where the phrase that ends `words` starts: back to the nearest boundary word."""
    i = len(words)
    while i > 0 and words[i - 1].lower().strip(",") not in _STOP_BOUNDARY:
        i -= 1
        if len(words) - i >= 4:
            break
    return i


def _phrase_right(words: list[str]) -> int:
    """Length of the phrase that starts `words`: up to the nearest boundary word or punctuation."""
    n = 0
    while n < len(words) and n < 4:
        w = words[n]
        if n and w.lower().strip("?.,;") in _STOP_BOUNDARY:
            break
        n += 1
        if w.endswith(("?", ".", ",", ";")):
            break
    return max(n, 1)


def _comparison(q: str) -> list[str] | None:
    m = _BETWEEN.search(q) or _COMPARE.search(q)
    if m:
        a, b = m.group(1).strip(), m.group(2).strip()
        head, tail = q[: m.start()].strip(), q[m.end():].strip(" ?.")
        return [" ".join(x for x in (head, a, tail) if x), " ".join(x for x in (head, b, tail) if x)]
    m = _VS.search(q)
    if m:
        left, right = q[: m.start()].split(), q[m.end():].split()
        if not left or not right:
            return None
        i = _phrase_left(left)
        n = _phrase_right(right)
        prefix, a = left[:i], left[i:]
        b, suffix = right[:n], right[n:]
        trail = ""
        if b and b[-1][-1:] in "?.":
            trail = b[-1][-1]
            b[-1] = b[-1][:-1]
        if not a:
            return None
        return [" ".join([*prefix, *a, *suffix]) + trail, " ".join([*prefix, *b, *suffix]) + trail]
    m = _WHICH_OR.match(q)
    if m and _wh_word(m.group("head")):
        head = m.group("head").strip()
        return [f"{head}: {m.group('a').strip()}?", f"{head}: {m.group('b').strip()}?"]
    return None


def _clauses(q: str) -> list[str]:
    parts = [p for p in _CLAUSE.split(q) if p and p.strip()]
    if len(parts) == 1:
        pieces = _AND.split(q)
        # a bare "and" splits only when both sides are substantial (not "keys and secrets")
        if len(pieces) == 2 and all(_terms(p) >= 3 for p in pieces):
            parts = pieces
    if len(parts) < 2:
        return [q]
    wh = _wh_word(parts[0])
    out = [parts[0]]
    for p in parts[1:]:
        p = _LEAD.sub("", p.strip())
        first = p.split(None, 1)[0].lower() if p else ""
        if wh and first not in _WH and first not in _AUX:
            p = f"{wh} {p}"
        out.append(p)
    return out


def split_question(question: str) -> list[str]:
    """The parts of a compound question, each a search query; `[question]` when it is not compound."""
    text = " ".join(question.split())
    if not text:
        return [question]
    questions = [s.strip() for s in _QUESTIONS.findall(text) if s.strip()]
    parts: list[tuple[str, bool]] = []
    for q in questions:
        comp = _comparison(q)
        sub = comp if comp else _clauses(q)
        parts.extend((_clean(p), comp is None) for p in sub)
    merged = _merge_small([(p, m) for p, m in parts if p])
    seen: set[str] = set()
    unique = []
    for p in merged:
        key = p.lower().rstrip("?. ")
        if key not in seen:
            seen.add(key)
            unique.append(p)
    if len(unique) > MAX_PARTS:  # keep the first ones, fold the rest into the last kept part
        unique = [*unique[: MAX_PARTS - 1], " ".join(unique[MAX_PARTS - 1:])]
    return unique or [question]
