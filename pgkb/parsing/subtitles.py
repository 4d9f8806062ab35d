"""WebVTT transcripts → the spoken text, one cue per line, speakers kept (`Name: words`)."""

from __future__ import annotations

import html
import re

from pgkb.parsing.errors import ParseError

_VOICE = re.compile(r"<v(?:\.[^\s>]+)?\s+([^>]+)>")
_TAG = re.compile(r"<[^>]*>")
_SKIP_BLOCKS = ("NOTE", "STYLE", "REGION")


def vtt_text(text: str) -> str:
    if not text.lstrip("\ufeff").startswith("WEBVTT"):
        raise ParseError("not a WebVTT file: the first line must start with WEBVTT")
    lines: list[str] = []
    for block in re.split(r"\n[ \t]*\n", text)[1:]:  # the first block is the header
        rows = block.strip("\n").split("\n")
        if not rows or rows[0].startswith(_SKIP_BLOCKS):
            continue
        timing = next((i for i, row in enumerate(rows) if "-->" in row), None)
        if timing is None:
            continue
        for row in rows[timing + 1 :]:
            spoken = _cue_text(row)
            if spoken and (not lines or lines[-1] != spoken):  # roll-up captions repeat lines
                lines.append(spoken)
    return "\n".join(lines)


def _cue_text(row: str) -> str:
    row = _VOICE.sub(lambda m: f"{m.group(1).strip()}: ", row)
    return " ".join(html.unescape(_TAG.sub("", row)).split())
