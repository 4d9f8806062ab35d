"""Runs in the strands-tools venv (tests/test_rag_frameworks.py): strands' BedrockKnowledgeBaseStore (the
memory store its docs name as the retrieve tool's successor) writes one memory per scope into a CUSTOM data
source (IngestKnowledgeBaseDocuments), waits until pgkb has indexed them, then searches as each scope
(GetKnowledgeBase to learn the knowledge base's type, then Retrieve with the scope as a metadata filter) and
prints what each search found as one JSON object. Endpoints come from AWS_ENDPOINT_URL_BEDROCK_AGENT and
AWS_ENDPOINT_URL_BEDROCK_AGENT_RUNTIME. Arguments: knowledge-base id, data-source id, query, then
scope=memory pairs."""

import asyncio
import json
import sys
import time

import boto3
from strands.vended_memory_stores.bedrock_knowledge_base import BedrockKnowledgeBaseStore


def _store(kb_id: str, ds_id: str, scope: str) -> BedrockKnowledgeBaseStore:
    config = {"knowledge_base_id": kb_id, "data_source_type": "CUSTOM", "data_source_id": ds_id}
    return BedrockKnowledgeBaseStore(config=config, name="notes", scope=scope, writable=True)


async def main() -> None:
    kb_id, ds_id, query = sys.argv[1:4]
    memories = dict(pair.split("=", 1) for pair in sys.argv[4:])
    added = {scope: (await _store(kb_id, ds_id, scope).add(text, {"source": "chat"})).document_id
             for scope, text in memories.items()}
    agent = boto3.client("bedrock-agent")
    ids = [{"dataSourceType": "CUSTOM", "custom": {"id": doc_id}} for doc_id in added.values()]
    deadline = time.monotonic() + 60
    while not all(d["status"] == "INDEXED" for d in agent.get_knowledge_base_documents(
            knowledgeBaseId=kb_id, dataSourceId=ds_id, documentIdentifiers=ids)["documentDetails"]):
        if time.monotonic() > deadline:
            raise SystemExit("memories not indexed")
        time.sleep(0.2)
    found = {}
    for scope in memories:
        entries = await _store(kb_id, ds_id, scope).search(query)
        found[scope] = [{"content": e.content, "metadata": e.metadata} for e in entries]
    print(json.dumps({"added": added, "found": found}))


asyncio.run(main())
