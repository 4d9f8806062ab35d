"""Source markers in a model's answer -> clean text and exact citation spans.

Models are asked to end each sentence with `[n]` markers (see prompts.OUTPUT_FORMAT_INSTRUCTIONS).
The text since the previous marker group is the part those sources support; the markers are removed
and punctuation that followed a marker ("... capital [1].") is kept with the part it closes. Numbers
outside 1..n are dropped. When the model cited nothing usable, the whole answer cites every result:
the honest fallback, since it was generated from all of them.
"""

from __future__ import annotations

import re

from pgkb.generation.base import Segment

# One or more bracket groups like [1], [1, 3], [2][4], with the whitespace before them.
_MARKERS = re.compile(r"[ \t]*(?:\[\s*\d{1,3}(?:\s*[,;]\s*\d{1,3})*\s*\])+")
_NUMBER = re.compile(r"\d{1,3}")
_TRAILING_PUNCT = re.compile(r"[.,;:!?)\"'\u2019\u201d]+")


def segments_from_markers(raw: str, n_sources: int) -> list[Segment]:
    """Split `raw` at marker groups; concatenated segment texts are the answer without markers."""
    segments: list[Segment] = []
    pos = 0
    cited_any = False
    for m in _MARKERS.finditer(raw):
        sources = tuple(sorted({int(x) - 1 for x in _NUMBER.findall(m.group()) if 1 <= int(x) <= n_sources}))
        body = raw[pos : m.start()]
        after = m.end()
        punct = _TRAILING_PUNCT.match(raw, after)
        if punct:
            body += punct.group()
            after = punct.end()
        pos = after
        _add(segments, body, sources)
        cited_any = cited_any or bool(sources)
    _add(segments, raw[pos:], ())
    text = "".join(s.text for s in segments)
    if not cited_any:
        return fallback(text, n_sources)
    return _trim(segments)


def fallback(text: str, n_sources: int) -> list[Segment]:
    """The whole (stripped) answer cites every result."""
    stripped = text.strip()
    if not stripped or n_sources == 0:
        return [Segment(stripped)] if stripped else []
    return [Segment(stripped, tuple(range(n_sources)))]


def _add(segments: list[Segment], body: str, sources: tuple[int, ...]) -> None:
    """Whitespace around a cited part becomes uncited segments, so spans start and end on text."""
    core = body.strip()
    if not core:
        if body:
            segments.append(Segment(body))
        return
    start = body.index(core[0])
    if start:
        segments.append(Segment(body[:start]))
    segments.append(Segment(core, sources))
    if start + len(core) < len(body):
        segments.append(Segment(body[start + len(core) :]))


def _trim(segments: list[Segment]) -> list[Segment]:
    """Drop leading/trailing whitespace-only segments and trailing whitespace of the last part."""
    while segments and not segments[0].text.strip():
        segments.pop(0)
    while segments and not segments[-1].text.strip():
        segments.pop()
    if segments:
        last = segments[-1]
        segments[-1] = Segment(last.text.rstrip(), last.sources)
    return segments


def spans(segments: list[Segment]) -> list[tuple[int, int, Segment]]:
    """(start, end) of each cited segment in the concatenated text; end is exclusive."""
    out = []
    pos = 0
    for s in segments:
        end = pos + len(s.text)
        if s.sources:
            out.append((pos, end, s))
        pos = end
    return out
