"""Runs in the llama-index venv (tests/test_rag_frameworks.py): llama-index's AmazonKnowledgeBasesRetriever,
configured as its documentation shows (region and keys as arguments, endpoint from
AWS_ENDPOINT_URL_BEDROCK_AGENT_RUNTIME: the retriever has no endpoint option), retrieves once through
`retrieve` (boto3) and once through `aretrieve` (aioboto3 over aiohttp), and prints the nodes of each as one
JSON object. Arguments: knowledge-base id, query, retrievalConfiguration as JSON."""

import asyncio
import json
import os
import sys

from llama_index.retrievers.bedrock import AmazonKnowledgeBasesRetriever


def _nodes(found):
    return [{"text": n.node.get_content(), "score": n.score, "metadata": n.node.metadata} for n in found]


def main() -> None:
    kb_id, query, config = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    retriever = AmazonKnowledgeBasesRetriever(
        knowledge_base_id=kb_id,
        retrieval_config=config,
        region_name=os.environ["AWS_REGION"],
        aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
    )
    sync = retriever.retrieve(query)
    asynchronous = asyncio.run(retriever.aretrieve(query))
    print(json.dumps({"sync": _nodes(sync), "async": _nodes(asynchronous)}))


main()
