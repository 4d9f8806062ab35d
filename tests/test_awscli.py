"""awscli v1 (`aws bedrock-agent-runtime retrieve --endpoint-url ...`) against a real `pgkb serve`.

awscli v1 carries its own botocore and service models, so it runs from a venv of its own
(tests/helpers/pyclients.py, pins in tests/pyclients/awscli.txt). Its auto-pagination follows the
Retrieve paginator (`nextToken`), so it must stop at `numberOfResults` like boto3's paginator does.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.pyclients import client_venv
from helpers.servers import pgkb_serve
from test_boto3_e2e import Server, inline_kb

from pgkb.config import Settings
from pgkb.server.keys import create_key

DOCS = {
    "tides": "Ocean tides rise and fall twice a day, pulled by the gravity of the moon and the sun.",
    "bread": "Bread rises because yeast ferments the sugars in the dough and releases carbon dioxide.",
    "volcano": "A volcano erupts when molten rock from the mantle forces its way up through the crust.",
    "printing": "The printing press with movable type spread books across Europe in the fifteenth century.",
    "glaciers": "Glaciers carve valleys as the slow-moving ice grinds rock beneath its enormous weight.",
    "bees": "Honey bees dance to tell the hive which direction and how far away the flowers are.",
}


@pytest.fixture(scope="module")
def aws(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    """(run(args) -> parsed JSON output, knowledge-base id) over a `pgkb serve` with a 6-document base."""
    venv = client_venv("awscli")
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    key = create_key(settings)
    home = tmp_path_factory.mktemp("awshome")
    with pgkb_serve(settings, log, {}) as (url, proc):
        server = Server(url, key, proc, log)
        kb_id, _ = inline_kb(server, settings, f"awscli-{uuid.uuid4().hex[:8]}", DOCS)
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": key["accessKeyId"],
            "AWS_SECRET_ACCESS_KEY": key["secretAccessKey"],
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": str(home / "config"),  # nothing from this machine's own AWS set-up
            "AWS_SHARED_CREDENTIALS_FILE": str(home / "credentials"),
            "AWS_MAX_ATTEMPTS": "1",
        }
        env.pop("AWS_PROFILE", None)

        def run(*args: str) -> Any:
            proc = subprocess.run(
                [str(Path(venv) / "bin" / "python"), "-m", "awscli", *args, "--endpoint-url", url, "--output", "json"],
                env=env, capture_output=True, text=True, timeout=120, check=False,
            )
            if proc.returncode != 0:
                raise AssertionError(f"aws {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
            return json.loads(proc.stdout)

        yield run, kb_id


def _uris(out: dict[str, Any]) -> list[str]:
    return [r["location"]["customDocumentLocation"]["id"] for r in out["retrievalResults"]]


def test_retrieve_stops_at_number_of_results(aws: tuple[Any, str]) -> None:
    """awscli paginates Retrieve on its own; it must not ask for more than numberOfResults."""
    run, kb_id = aws
    for k in (1, 3, 6):
        out = run(
            "bedrock-agent-runtime", "retrieve", "--knowledge-base-id", kb_id,
            "--retrieval-query", "text=why does the sea level go up and down every day",
            "--retrieval-configuration", json.dumps({"vectorSearchConfiguration": {"numberOfResults": k}}),
        )
        assert len(out["retrievalResults"]) == k
        assert _uris(out)[0] == "tides"
        assert len(set(_uris(out))) == k  # no page repeated
    out = run("bedrock-agent-runtime", "retrieve", "--knowledge-base-id", kb_id,
              "--retrieval-query", "text=how does dough rise")
    assert len(out["retrievalResults"]) == 5 and _uris(out)[0] == "bread"  # Bedrock's default: five


def test_shorthand_filter_and_agent_commands(aws: tuple[Any, str]) -> None:
    run, kb_id = aws
    kbs = run("bedrock-agent", "list-knowledge-bases")["knowledgeBaseSummaries"]
    assert kb_id in {k["knowledgeBaseId"] for k in kbs}
    got = run("bedrock-agent", "get-knowledge-base", "--knowledge-base-id", kb_id)["knowledgeBase"]
    assert got["status"] == "ACTIVE"
    out = run(
        "bedrock-agent-runtime", "retrieve", "--knowledge-base-id", kb_id,
        "--retrieval-query", "text=molten rock",
        "--retrieval-configuration", "vectorSearchConfiguration={numberOfResults=2,overrideSearchType=HYBRID}",
    )
    assert _uris(out)[0] == "volcano" and len(out["retrievalResults"]) == 2


def test_errors_reach_the_cli_as_aws_errors(aws: tuple[Any, str]) -> None:
    run, _ = aws
    with pytest.raises(AssertionError, match="ResourceNotFoundException"):
        run("bedrock-agent-runtime", "retrieve", "--knowledge-base-id", "NOSUCHKB00",
            "--retrieval-query", "text=anything")
