"""awslabs' Bedrock Knowledge Base retrieval MCP server (awslabs.bedrock-kb-retrieval-mcp-server), spoken
to over MCP stdio as an MCP host does, against a real `pgkb serve`: the server discovers knowledge
bases by their `mcp-multirag-kb` tag (ListKnowledgeBases, GetKnowledgeBase, ListTagsForResource,
ListDataSources) and answers QueryKnowledgeBases with Retrieve. It and the MCP SDK run from a venv of
their own (tests/helpers/pyclients.py, pins in tests/pyclients/bedrock-kb-mcp.txt), pointed at pgkb by
AWS_ENDPOINT_URL alone."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

from helpers.pyclients import PINS, client_venv
from helpers.servers import pgkb_serve
from test_boto3_e2e import Server, inline_kb

from pgkb.config import Settings
from pgkb.server.keys import create_key

DOCS = {
    "tides": "Ocean tides rise and fall twice a day, pulled by the gravity of the moon and the sun.",
    "bread": "Bread rises because yeast ferments the sugars in the dough and releases carbon dioxide.",
    "volcano": "A volcano erupts when molten rock from the mantle forces its way up through the crust.",
    "bees": "Honey bees dance to tell the hive which direction and how far away the flowers are.",
}


def test_mcp_server_lists_and_queries_a_tagged_knowledge_base(settings: Settings, tmp_path: Path) -> None:
    venv = client_venv("bedrock-kb-mcp")
    key = create_key(settings)
    with pgkb_serve(settings, tmp_path / "serve.log", {}) as (url, proc):
        server = Server(url, key, proc, tmp_path / "serve.log")
        agent = server.client("bedrock-agent")
        tagged, _ = inline_kb(server, settings, f"mcp-{uuid.uuid4().hex[:8]}", DOCS)
        hidden, _ = inline_kb(server, settings, f"mcp-hidden-{uuid.uuid4().hex[:8]}", {"x": DOCS["bees"]})
        arn = agent.get_knowledge_base(knowledgeBaseId=tagged)["knowledgeBase"]["knowledgeBaseArn"]
        agent.tag_resource(resourceArn=arn, tags={"mcp-multirag-kb": "true"})
        home = tmp_path / "aws"
        home.mkdir()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
            "AWS_ENDPOINT_URL": url,  # every service the MCP server's boto3 clients call
            "AWS_ACCESS_KEY_ID": key["accessKeyId"],
            "AWS_SECRET_ACCESS_KEY": key["secretAccessKey"],
            "AWS_REGION": "us-east-1",
            "AWS_CONFIG_FILE": str(home / "config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(home / "credentials"),
        }
        run = subprocess.run(
            [str(venv / "bin" / "python"), str(PINS / "mcp_client.py"), tagged, "why does the sea level change", "2"],
            env=env, capture_output=True, text=True, timeout=300, check=False,
        )
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert {"ListKnowledgeBases", "QueryKnowledgeBases"} <= set(out["tools"])
    assert not out["list"]["error"], out["list"]
    listed = json.loads(out["list"]["text"])
    assert tagged in listed and hidden not in listed  # only the tagged knowledge base is offered
    assert [ds["name"] for ds in listed[tagged]["data_sources"]] == ["inline"]
    assert not out["query"]["error"], out["query"]
    docs = [json.loads(line) for line in out["query"]["text"].splitlines() if line.strip()]
    assert len(docs) == 2 and "tides" in docs[0]["content"]["text"]
