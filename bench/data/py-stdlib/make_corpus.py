"""Rebuild corpus.jsonl: the docstrings of public functions and classes of some Python standard-library
modules (Python Software Foundation License), one document each, titled with the qualified name.

Run with the Python the committed file was made with (3.11); another version changes some docstrings.
"""

from __future__ import annotations

import importlib
import inspect
import json
from pathlib import Path

# Defining modules before the ones that re-export their names (statistics re-exports bisect_left...):
# a re-export's docstring is already taken, so it is skipped.
MODULES = ["collections", "os.path", "shutil", "itertools", "functools", "json", "re", "math", "random", "string",
           "textwrap", "datetime", "heapq", "bisect", "glob", "fnmatch", "tempfile", "zlib", "hashlib", "base64",
           "difflib", "operator", "time", "statistics", "secrets", "uuid", "csv", "urllib.parse"]


def main() -> None:
    out = Path(__file__).resolve().parent / "corpus.jsonl"
    seen: set[str] = set()
    texts: set[str] = set()  # re-exports (statistics.Counter is collections.Counter) are kept once
    with out.open("w", encoding="utf-8") as fh:
        for name in MODULES:
            mod = importlib.import_module(name)
            for attr in sorted(dir(mod)):
                obj = getattr(mod, attr)
                if attr.startswith("_") or not (inspect.isroutine(obj) or inspect.isclass(obj)):
                    continue
                doc = inspect.getdoc(obj) or ""
                if len(doc.split()) < 8:
                    continue
                did, text = f"{name}.{attr}", " ".join(doc.split()[:300])
                if did in seen or text in texts:
                    continue
                seen.add(did)
                texts.add(text)
                fh.write(json.dumps({"_id": did, "title": did, "text": text}) + "\n")


if __name__ == "__main__":
    main()
