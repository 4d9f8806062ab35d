"""Where the benchmark datasets are: `$PGKB_DATASETS`, else `../shared/datasets` beside the repository.

Each dataset is a BEIR folder (`corpus.jsonl`, `queries.jsonl`, `qrels/test.tsv`). A missing one ends
the script with one line that says what to pass; the test suite never needs them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DEFAULT_ROOT = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets"


def root() -> Path:
    return Path(os.environ.get("PGKB_DATASETS") or DEFAULT_ROOT)


def find(name: str = "msmarco-5k") -> Path:
    """The dataset folder `name`, or exit with a one-line message."""
    path = root() / name
    if not (path / "corpus.jsonl").is_file():
        sys.exit(f"{Path(sys.argv[0]).name}: dataset {name!r} not found at {path}; set PGKB_DATASETS to a folder "
                 f"holding BEIR datasets ({name}/corpus.jsonl, queries.jsonl, qrels/test.tsv)")
    return path
