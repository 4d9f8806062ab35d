"""Two RAG frameworks' Bedrock knowledge-base clients against a real `pgkb serve`, with only the endpoint
and the credentials changed: llama-index's AmazonKnowledgeBasesRetriever (llama-index-retrievers-bedrock,
sync over boto3 and async over aioboto3) and strands-agents-tools' `retrieve` tool, called directly as an
agent would call it. Each runs from a venv of its own (tests/helpers/pyclients.py, pins in
tests/pyclients/llama-index.txt and strands-tools.txt) and is pointed at pgkb by
AWS_ENDPOINT_URL_BEDROCK_AGENT_RUNTIME; what it returns is checked against boto3's Retrieve on the same
knowledge base."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from helpers.pyclients import PINS, client_venv
from helpers.servers import pgkb_serve
from test_boto3_e2e import Server, create_kb

from pgkb.config import Settings
from pgkb.server.keys import create_key

# id -> (text, kind): `kind` is an inline metadata attribute the filters select on.
DOCS = {
    "tides": ("Ocean tides rise and fall twice a day, pulled by the gravity of the moon and the sun.", "nature"),
    "bread": ("Bread rises because yeast ferments the sugars in the dough and releases carbon dioxide.", "craft"),
    "volcano": ("A volcano erupts when molten rock from the mantle forces its way up through the crust.", "nature"),
    "printing": ("The printing press with movable type spread books across Europe in the fifteenth century.",
                 "craft"),
    "glaciers": ("Glaciers carve valleys as the slow-moving ice grinds rock beneath its enormous weight.", "nature"),
    "bees": ("Honey bees dance to tell the hive which direction and how far away the flowers are.", "nature"),
}


def _document(doc_id: str, text: str, kind: str) -> dict[str, Any]:
    return {
        "content": {"dataSourceType": "CUSTOM", "custom": {
            "customDocumentIdentifier": {"id": doc_id}, "sourceType": "IN_LINE",
            "inlineContent": {"type": "TEXT", "textContent": {"data": text}}}},
        "metadata": {"type": "IN_LINE_ATTRIBUTE",
                     "inlineAttributes": [{"key": "kind", "value": {"type": "STRING", "stringValue": kind}}]},
    }


class Kb:
    def __init__(self, server: Server, settings: Settings, kb_id: str, env: dict[str, str]) -> None:
        self.server, self.settings, self.id, self.env = server, settings, kb_id, env

    def retrieve(self, query: str, config: dict[str, Any]) -> list[dict[str, Any]]:
        """boto3's Retrieve: the reference each framework's answer is compared with."""
        out = self.server.client("bedrock-agent-runtime").retrieve(
            knowledgeBaseId=self.id, retrievalQuery={"text": query}, retrievalConfiguration=config)
        return list(out["retrievalResults"])

    def run(self, client: str, script: str, *args: str) -> Any:
        """Runs tests/pyclients/<script> in the venv of tests/pyclients/<client>.txt; its last line of JSON."""
        venv = client_venv(client)
        proc = subprocess.run([str(venv / "bin" / "python"), str(PINS / script), *args],
                              env=self.env, capture_output=True, text=True, timeout=300, check=False)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def kb(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kb]:
    """A `pgkb serve` holding DOCS (with their `kind` attribute) in one knowledge base, and the environment
    a framework's process gets: pgkb's endpoint and keys, nothing from this machine's own AWS set-up."""
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    home = tmp_path_factory.mktemp("awshome")
    key = create_key(settings)
    with pgkb_serve(settings, log, {}) as (url, proc):
        server = Server(url, key, proc, log)
        agent = server.client("bedrock-agent")
        kb_id = create_kb(server, settings, f"rag-fw-{uuid.uuid4().hex[:8]}")
        ds_id = agent.create_data_source(knowledgeBaseId=kb_id, name="inline",
                                         dataSourceConfiguration={"type": "CUSTOM"})["dataSource"]["dataSourceId"]
        agent.ingest_knowledge_base_documents(knowledgeBaseId=kb_id, dataSourceId=ds_id,
                                              documents=[_document(k, t, c) for k, (t, c) in DOCS.items()])
        ids = [{"dataSourceType": "CUSTOM", "custom": {"id": k}} for k in DOCS]
        deadline = time.monotonic() + 60
        while not all(d["status"] == "INDEXED" for d in agent.get_knowledge_base_documents(
                knowledgeBaseId=kb_id, dataSourceId=ds_id, documentIdentifiers=ids)["documentDetails"]):
            assert time.monotonic() < deadline, "documents not indexed"
            time.sleep(0.2)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
            "AWS_ENDPOINT_URL_BEDROCK_AGENT": url,
            "AWS_ENDPOINT_URL_BEDROCK_AGENT_RUNTIME": url,
            "AWS_ACCESS_KEY_ID": key["accessKeyId"],
            "AWS_SECRET_ACCESS_KEY": key["secretAccessKey"],
            "AWS_REGION": "us-east-1",  # what the retrieve tool reads
            "AWS_DEFAULT_REGION": "us-east-1",  # what boto3 reads
            "AWS_CONFIG_FILE": str(home / "config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(home / "credentials"),
            "AWS_MAX_ATTEMPTS": "1",
        }
        yield Kb(server, settings, kb_id, env)


def test_llama_index_retriever_matches_boto3(kb: Kb) -> None:
    """numberOfResults and a metadata filter reach pgkb; every node carries Retrieve's text, score, location
    and metadata, through the sync (boto3) and the async (aioboto3) client alike."""
    query = "what makes the sea level go up and down"
    config = {"vectorSearchConfiguration": {"numberOfResults": 3,
                                            "filter": {"equals": {"key": "kind", "value": "nature"}}}}
    expected = kb.retrieve(query, config)
    assert [r["location"]["customDocumentLocation"]["id"] for r in expected][0] == "tides"
    assert len(expected) == 3 and all(r["metadata"]["kind"] == "nature" for r in expected)
    out = kb.run("llama-index", "llama_index_client.py", kb.id, query, json.dumps(config))
    for nodes in (out["sync"], out["async"]):
        assert [n["text"] for n in nodes] == [r["content"]["text"] for r in expected]
        assert [n["score"] for n in nodes] == pytest.approx([r["score"] for r in expected], abs=1e-9)
        assert [n["metadata"] for n in nodes] == [
            {"location": r["location"], "sourceMetadata": r["metadata"]} for r in expected]
    # A different configuration is a different answer: the filter and the count are honoured, not defaulted.
    craft = {"vectorSearchConfiguration": {"numberOfResults": 1,
                                           "filter": {"equals": {"key": "kind", "value": "craft"}}}}
    out = kb.run("llama-index", "llama_index_client.py", kb.id, query, json.dumps(craft))
    assert [n["metadata"]["location"]["customDocumentLocation"]["id"] for n in out["sync"]] == [
        r["location"]["customDocumentLocation"]["id"] for r in kb.retrieve(query, craft)]
    assert len(out["async"]) == 1 and out["async"][0]["metadata"]["sourceMetadata"]["kind"] == "craft"


def _hits(text: str) -> list[tuple[str, float]]:
    """(document id, score) pairs of the retrieve tool's formatted answer."""
    return [(m[1], float(m[0])) for m in re.findall(r"Score: ([0-9.]+)\nDocument ID: (\S+)", text)]


def test_strands_retrieve_tool_returns_the_top_hits(kb: Kb) -> None:
    """The tool's answer lists Retrieve's hits in order with their scores; its numberOfResults, score floor,
    metadata filter and enableMetadata switch act on pgkb's answer; a missing knowledge base is an error
    result naming Bedrock's exception."""
    query = "how does dough rise"
    inputs = [
        {"text": query, "knowledgeBaseId": kb.id, "numberOfResults": 3, "score": 0.0},
        {"text": query, "knowledgeBaseId": kb.id, "numberOfResults": 2, "score": 0.0, "enableMetadata": True,
         "retrieveFilter": {"equals": {"key": "kind", "value": "nature"}}},
        {"text": query, "knowledgeBaseId": kb.id},  # the tool's defaults: 10 results, score >= 0.4
        {"text": query, "knowledgeBaseId": kb.id, "score": 0.6},
        {"text": query, "knowledgeBaseId": "NOSUCHKB00"},
    ]
    top, filtered, defaults, floored, missing = kb.run("strands-tools", "strands_client.py", json.dumps(inputs))
    expected = kb.retrieve(query, {"vectorSearchConfiguration": {"numberOfResults": 3}})
    assert top["status"] == "success", top
    got = _hits(top["content"][0]["text"])
    assert [i for i, _ in got] == [r["location"]["customDocumentLocation"]["id"] for r in expected]
    assert got[0][0] == "bread"
    assert [s for _, s in got] == pytest.approx([r["score"] for r in expected], abs=5e-5)  # printed to 4 places
    assert DOCS["bread"][0] in top["content"][0]["text"]

    nature = kb.retrieve(query, {"vectorSearchConfiguration": {
        "numberOfResults": 2, "filter": {"equals": {"key": "kind", "value": "nature"}}}})
    text = filtered["content"][0]["text"]
    assert [i for i, _ in _hits(text)] == [r["location"]["customDocumentLocation"]["id"] for r in nature]
    assert "'kind': 'nature'" in text and "x-amz-bedrock-kb-data-source-id" in text  # enableMetadata

    everything = kb.retrieve(query, {"vectorSearchConfiguration": {"numberOfResults": 10}})
    assert len(everything) == len(DOCS)
    assert [i for i, _ in _hits(defaults["content"][0]["text"])] == [
        r["location"]["customDocumentLocation"]["id"] for r in everything if r["score"] >= 0.4]
    above = [r["location"]["customDocumentLocation"]["id"] for r in everything if r["score"] >= 0.6]
    assert 0 < len(above) < len(DOCS)  # the floor drops some of pgkb's hits and keeps others
    assert [i for i, _ in _hits(floored["content"][0]["text"])] == above

    assert missing["status"] == "error" and "ResourceNotFoundException" in missing["content"][0]["text"]


def test_strands_knowledge_base_store_writes_and_searches_by_scope(kb: Kb) -> None:
    """strands' BedrockKnowledgeBaseStore (the retrieve tool's named successor) adds memories through
    IngestKnowledgeBaseDocuments with its scope as an inline attribute, and each scope's search (after
    GetKnowledgeBase) finds its own memory and never the other scope's. A knowledge base of its own: the
    shared one's contents are what the other tests count."""
    agent = kb.server.client("bedrock-agent")
    kb_id = create_kb(kb.server, kb.settings, f"rag-mem-{uuid.uuid4().hex[:8]}")
    ds_id = agent.create_data_source(knowledgeBaseId=kb_id, name="memories",
                                     dataSourceConfiguration={"type": "CUSTOM"})["dataSource"]["dataSourceId"]
    memories = {"alice": "Alice's favourite colour is teal and she paints her boat with it.",
                "bob": "Bob's favourite colour is orange, like the sunsets over his town."}
    out = kb.run("strands-tools", "strands_store_client.py", kb_id, ds_id, "which colour does the user like",
                 *(f"{scope}={text}" for scope, text in memories.items()))
    for scope, text in memories.items():
        found = out["found"][scope]
        assert [e["content"] for e in found] == [text]  # its own memory, the other scope's filtered out
        meta = found[0]["metadata"]
        assert meta["namespace"] == scope and meta["source"] == "chat"
        assert meta["_source_location"] == {"type": "CUSTOM", "customDocumentLocation": {"id": out["added"][scope]}}
        assert 0 < meta["_relevance_score"] <= 1
    listed = agent.list_knowledge_base_documents(knowledgeBaseId=kb_id, dataSourceId=ds_id)["documentDetails"]
    assert sorted(d["identifier"]["custom"]["id"] for d in listed) == sorted(out["added"].values())
