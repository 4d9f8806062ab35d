"""`pgkb ask --agentic`: AgenticRetrieveStream from the command line.

The answer with [n] markers and its numbered sources go to stdout, each finished step of the agent
(planning, retrieval, document expansion) to stderr as it streams; `--json` prints every event.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console


def request(kb_ids: list[str], question: str, model: str, k: int, user: str | None) -> dict[str, Any]:
    cfg: dict[str, Any] = {}
    if model != "pgkb.extractive":
        cfg = {"foundationModelType": "CUSTOM", "foundationModelConfiguration": {
            "type": "BEDROCK_FOUNDATION_MODEL",
            "bedrockFoundationModelConfiguration": {"modelConfiguration": {"modelArn": model}}}}
    body: dict[str, Any] = {
        "messages": [{"role": "user", "content": {"text": question}}],
        "retrievers": [{"configuration": {"knowledgeBase": {"knowledgeBaseId": kb, "retrievalOverrides": {
            "maxNumberOfResults": k}}}} for kb in kb_ids],
        "agenticRetrieveConfiguration": cfg,
    }
    if user is not None:
        body["userContext"] = {"userId": user}
    return body


def show(events: Any, out: Console, err: Console, as_json: bool) -> None:
    """Print the stream: steps to stderr as they finish, then the answer and its sources."""
    import json

    collected = []
    result: dict[str, Any] = {}
    for ev in events:
        collected.append(ev)
        trace = ev.get("traceEvent")
        if trace and trace["attributes"]["status"] != "IN_PROGRESS" and not as_json:
            a = trace["attributes"]
            err.print(f"[{a['step']}] {a['message']}", highlight=False, markup=False)
        if "result" in ev:
            result = ev["result"]
    if as_json:
        out.print_json(json.dumps(collected, default=str))
        return
    gen = result.get("generatedResponse") or {}
    text = gen.get("answer", "")
    shown, pos = "", 0
    for c in sorted(gen.get("citations", []), key=lambda c: c["endIndex"]):
        shown += text[pos:c["endIndex"]] + "".join(f"[{r['resultIndex'] + 1}]" for r in c["references"])
        pos = c["endIndex"]
    out.print(shown + text[pos:], highlight=False, markup=False)
    if result.get("results"):
        out.print("\nSources:")
    for n, r in enumerate(result.get("results", []), 1):
        md = r.get("metadata") or {}
        whole = " (whole document)" if md.get("x-pgkb-full-document") else ""
        out.print(f"  [{n}] {r['sourceRetriever']['identifier']} {md.get('x-amz-bedrock-kb-source-uri', '')}{whole}",
                  highlight=False, markup=False)
        excerpt = " ".join((r["content"].get("text") or "").split())
        out.print(f"      {excerpt[:200]}{'…' if len(excerpt) > 200 else ''}", highlight=False, markup=False)
