"""The CLI reference in docs/ is generated from the CLI itself (cog blocks calling pgkb.cli.reference):
a doc whose block no longer matches `--help` fails here. Regenerate with `cog -r docs/*.md`."""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path

from cogapp import Cog

from pgkb.cli.reference import help_text

DOCS = Path(__file__).resolve().parent.parent / "docs"


def cog_check(*paths: Path) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        rc = Cog().main(["cog", "--check", "--diff", *map(str, paths)])
    return rc, out.getvalue()


def test_docs_cli_reference_is_current() -> None:
    docs = sorted(p for p in DOCS.glob("*.md") if "[[[cog" in p.read_text())
    assert {p.name for p in docs} >= {"byo-postgres.md", "server.md"}
    rc, out = cog_check(*docs)
    assert rc == 0, f"stale CLI reference; run `cog -r docs/*.md`:\n{out}"


def test_a_stale_reference_is_caught(tmp_path: Path) -> None:
    doc = tmp_path / "byo-postgres.md"
    shutil.copy(DOCS / "byo-postgres.md", doc)
    text = doc.read_text()
    assert "  --rotate-password" in text
    doc.write_text(text.replace("  --rotate-password", "  --rotate-passwords", 1))  # an option renamed
    rc, out = cog_check(doc)
    assert rc != 0 and "--rotate-password" in out


def test_help_text_is_plain_and_stable() -> None:
    text = help_text("db", "setup")
    assert text.startswith("Usage: pgkb db setup [OPTIONS]") and "--print-sql" in text
    assert "\x1b[" not in text and "╭" not in text  # no colour, no rich panels
    assert max(len(line) for line in text.splitlines()) <= 100
    assert help_text("db", "setup") == text
