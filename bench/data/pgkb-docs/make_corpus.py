"""Rebuild corpus.jsonl from pgkb's README.md and docs/*.md (run from the repository root).

Passages: the text under each `#`/`##`/`###` heading outside code fences; a section of over 250 words
is split at paragraph boundaries. Ids are `<file>/<heading slug>[-n]`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

OUT = Path(__file__).resolve().parent / "corpus.jsonl"


def sections(text: str, stem: str) -> list[tuple[str, str]]:
    fence, marked = False, []
    for ln in text.split("\n"):
        if ln.startswith("```"):
            fence = not fence
        marked.append(("\x00" + ln) if (not fence and re.match(r"#{1,3} ", ln)) else ln)
    parts = re.split(r"(?m)^\x00(#{1,3} .*)$", "\n".join(marked))
    out = [(stem, parts[0])] if parts[0].strip() else []
    out += [(parts[i].lstrip("#").strip(), parts[i + 1]) for i in range(1, len(parts), 2)]
    return out


def main() -> None:
    seen: set[str] = set()
    with OUT.open("w", encoding="utf-8") as fh:
        for f in [Path("README.md"), *sorted(Path("docs").glob("*.md"))]:
            for title, body in sections(f.read_text(encoding="utf-8"), f.stem):
                chunks: list[list[str]] = [[]]
                words = 0
                for p in (p.strip() for p in re.split(r"\n\s*\n", body) if p.strip()):
                    if chunks[-1] and words + len(p.split()) > 250:
                        chunks.append([])
                        words = 0
                    chunks[-1].append(p)
                    words += len(p.split())
                slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:40] or "intro"
                for n, chunk in enumerate(c for c in chunks if c):
                    did = f"{f.stem.lower()}/{slug}" + (f"-{n + 1}" if n else "")
                    while did in seen:
                        did += "+"
                    seen.add(did)
                    fh.write(json.dumps({"_id": did, "title": f"{f.name}: {title}", "text": "\n\n".join(chunk)},
                                        ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
