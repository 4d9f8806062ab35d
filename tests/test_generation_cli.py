"""`pgkb ask`: the answer with numbered citations and sources, and --session continuing it."""

from __future__ import annotations

import re
from typing import Any

import pytest
from test_generation import DOCS, new_kb
from typer.testing import CliRunner

from pgkb.cli import app
from pgkb.config import Settings
from pgkb.service import KnowledgeBaseService


@pytest.fixture(scope="module")
def kb(settings: Settings) -> str:
    with KnowledgeBaseService(settings) as svc:
        return new_kb(svc, DOCS)


def run(settings: Settings, *args: str) -> Any:
    result = CliRunner().invoke(
        app, [*args, "--database-url", str(settings.database_url), "--data-dir", str(settings.data_dir)]
    )
    assert result.exit_code == 0, result.output
    return result


def test_ask_prints_numbered_citations_and_continues_a_session(settings: Settings, kb: str) -> None:
    first = run(settings, "ask", kb, "When was the Eiffel Tower completed?")
    answer, _, sources = first.stdout.partition("\nSources:\n")
    assert "completed in 1889 for the World's Fair.[1]" in " ".join(answer.split())  # the console wraps lines
    assert re.search(r"^  \[1\] eiffel$", sources, re.M)
    assert "generator: extractive" in first.stderr
    session = re.search(r"session: (\S+)", first.stderr).group(1)  # type: ignore[union-attr]
    follow = run(settings, "ask", kb, "How tall is it?", "--session", session)
    assert "It is 330 metres tall.[1]" in " ".join(follow.stdout.split())
    assert f"session: {session}" in follow.stderr
