"""Runs in the strands-tools venv (tests/test_rag_frameworks.py): calls strands-agents-tools' `retrieve`
tool directly, with a ToolUse as an agent would pass it (no model needed), once per input given, and
prints the tool results as one JSON list. The endpoint comes from AWS_ENDPOINT_URL_BEDROCK_AGENT_RUNTIME,
the region from AWS_REGION, the keys from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.
Argument: a JSON list of tool inputs."""

import json
import sys
import warnings

from strands_tools.retrieve import retrieve

warnings.simplefilter("ignore", DeprecationWarning)  # retrieve is marked deprecated in favour of a memory store

results = [retrieve({"toolUseId": f"t{i}", "input": tool_input}) for i, tool_input in enumerate(json.loads(sys.argv[1]))]
print(json.dumps(results))
