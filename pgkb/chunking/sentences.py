"""A small rule-based sentence splitter: spans of `text`, no models, no data downloads.

A sentence ends at `.`, `!`, `?` or `…` (plus closing quotes/brackets) followed by whitespace, at CJK
full stops, at a blank line, and at a line break unless the break only wraps a running sentence
(a lowercase letter or comma before it and a lowercase letter after it). A period does not end a
sentence after a known abbreviation or a single-letter initial, nor when the next word is lowercase.
"""

from __future__ import annotations

import re

_END = re.compile(r"[.!?\u2026]+[\"'\u201d\u2019)\]]*(?=\s)|[\u3002\uff01\uff1f]+|\n")
_LAST_WORD = re.compile(r"(\S+)$")
_ABBREVIATIONS = frozenset(
    [
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "sr",
        "jr",
        "st",
        "mt",
        "vs",
        "etc",
        "e.g",
        "eg",
        "i.e",
        "ie",
        "inc",
        "ltd",
        "co",
        "corp",
        "dept",
        "est",
        "fig",
        "figs",
        "no",
        "nos",
        "vol",
        "vols",
        "approx",
        "cf",
        "al",
        "jan",
        "feb",
        "mar",
        "apr",
        "jun",
        "jul",
        "aug",
        "sep",
        "sept",
        "oct",
        "nov",
        "dec",
        "p",
        "pp",
        "ca",
        "op",
        "ed",
        "eds",
        "rev",
        "gen",
        "col",
        "lt",
        "sgt",
        "capt",
        "cmdr",
        "gov",
        "sen",
        "rep",
        "u.s",
        "u.k",
        "a.m",
        "p.m",
        "ph.d",
    ]
)


def split_sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence, whitespace trimmed, in order, non-overlapping."""
    spans: list[tuple[int, int]] = []
    prev = 0
    for m in _END.finditer(text):
        if m.group() == "\n":
            if _soft_wrap(text, m.start()):
                continue
            cut = m.start()
        else:
            if m.group()[0] == "." and not _period_ends_sentence(text, m.start(), m.end()):
                continue
            cut = m.end()
        _add(text, prev, cut, spans)
        prev = cut
    _add(text, prev, len(text), spans)
    return spans


def _add(text: str, start: int, end: int, spans: list[tuple[int, int]]) -> None:
    segment = text[start:end]
    stripped = segment.lstrip()
    if not stripped:
        return
    s = start + len(segment) - len(stripped)
    e = start + len(segment.rstrip())
    spans.append((s, e))


def _next_char(text: str, pos: int) -> str:
    window = text[pos : pos + 64].lstrip(" \t")
    return window[:1]


def _soft_wrap(text: str, nl: int) -> bool:
    after = _next_char(text, nl + 1)
    if not after or not after.islower():
        return False  # blank line, end of text, or a new line that starts like a sentence/list item
    before = text[max(0, nl - 1) : nl]
    return before.islower() or before == ","


def _period_ends_sentence(text: str, dot: int, end: int) -> bool:
    word = _LAST_WORD.search(text, max(0, dot - 40), dot)
    if word is not None:
        w = word.group(1).lower().lstrip("([\"'")
        if w in _ABBREVIATIONS or (len(w) == 1 and w.isalpha()):
            return False
    nxt = _next_char(text, end)
    return not (nxt and nxt.islower())
