"""Runs in the bedrock-kb-mcp venv (tests/test_mcp_kb_server.py): starts awslabs' Bedrock KB retrieval MCP
server over stdio as an MCP host would, lists its tools, calls ListKnowledgeBases and QueryKnowledgeBases,
and prints what came back as one JSON object. Arguments: knowledge-base id, query, number of results."""

import asyncio
import json
import os
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client


def _text(result):
    return {"error": bool(result.is_error), "text": "\n".join(getattr(c, "text", "") for c in result.content)}


async def main() -> None:
    kb_id, query, k = sys.argv[1], sys.argv[2], int(sys.argv[3])
    server = StdioServerParameters(
        command=sys.executable, args=["-m", "awslabs.bedrock_kb_retrieval_mcp_server.server"], env=dict(os.environ)
    )
    async with stdio_client(server) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        tools = await session.list_tools()
        kbs = await session.call_tool("ListKnowledgeBases", {})
        hits = await session.call_tool(
            "QueryKnowledgeBases", {"query": query, "knowledge_base_id": kb_id, "number_of_results": k}
        )
    print(json.dumps({"tools": sorted(t.name for t in tools.tools), "list": _text(kbs), "query": _text(hits)}))


asyncio.run(main())
