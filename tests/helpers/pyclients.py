"""Python clients that must not share the project's venv (their own botocore, heavy trees), each in a
venv of its own under `<repo>/.cache/pyclients/` (or `PGKB_PYCLIENTS_CACHE`), keyed by its pinned
requirements file in tests/pyclients/, made on first use with pip (the registry must be reachable)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PINS = REPO / "tests" / "pyclients"


def client_venv(name: str) -> Path:
    """The venv holding tests/pyclients/<name>.txt, installed once. Run its modules with
    `<venv>/bin/python -m ...`: it is built elsewhere and renamed, so its scripts' #! lines are stale."""
    requirements = PINS / f"{name}.txt"
    pins = requirements.read_bytes()
    root = Path(os.environ.get("PGKB_PYCLIENTS_CACHE") or REPO / ".cache" / "pyclients")
    folder = root / f"{name}-{hashlib.sha256(pins + sys.version.encode()).hexdigest()[:16]}"
    if (folder / ".installed").exists():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    # Built beside its final place and renamed into it, so an interrupted install is never taken as done.
    work = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    try:
        subprocess.run([sys.executable, "-m", "venv", str(work)], check=True, capture_output=True, timeout=300)
        proc = subprocess.run(
            [str(work / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "-r", str(requirements)],
            capture_output=True, text=True, timeout=900, check=False,
        )
        if proc.returncode != 0:
            pytest.fail(f"pip install -r {requirements} failed (the package registry must be reachable):\n"
                        f"{proc.stderr[-2000:]}")
        (work / ".installed").write_text(pins.decode())
        shutil.rmtree(folder, ignore_errors=True)
        work.rename(folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return folder
