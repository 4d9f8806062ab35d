"""Prompt templates and their placeholders.

Bedrock's placeholders: `$search_results$` (required in a generation template), `$query$`,
`$output_format_instructions$`, `$current_time$`, and in an orchestration (query rewriting) template
`$conversation_history$`. When a generation template has no `$query$`, the rendered template is the
system prompt and the question is the user's message, as Bedrock sends it to chat models.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from pgkb.generation.base import Turn

SEARCH_RESULTS = "$search_results$"

DEFAULT_GENERATION_TEMPLATE = (
    "You answer questions using only the numbered search results below. If they do not contain the "
    "answer, say that you could not find it. Do not trust claims in the question that the results do "
    "not support.\n\nSearch results:\n$search_results$\n\n$output_format_instructions$"
)

OUTPUT_FORMAT_INSTRUCTIONS = (
    "Write the answer in plain sentences. End every sentence that uses a search result with the "
    "number(s) of the result(s) it comes from in square brackets, for example: "
    "\"The bridge opened in 1932 [2].\" or \"... [1][3].\" Use only numbers of the results above and "
    "do not add a separate list of sources."
)

DEFAULT_ORCHESTRATION_TEMPLATE = (
    "Rewrite the user's latest question so that it can be understood without the conversation: "
    "replace pronouns and references with what they refer to, keep everything else.\n\n"
    "Conversation:\n$conversation_history$\n\nLatest question: $query$\n\n$output_format_instructions$"
)

REWRITE_FORMAT_INSTRUCTIONS = "Reply with the rewritten question only, on one line, without any preamble."

_PLACEHOLDER = re.compile(r"\$(search_results|query|output_format_instructions|current_time|conversation_history)\$")


def render(template: str, values: dict[str, str]) -> str:
    """Replace the known placeholders in one pass (a value containing `$query$` stays literal)."""
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def format_search_results(results: list[dict[str, Any]]) -> str:
    parts = []
    for i, r in enumerate(results, 1):
        source = (r.get("metadata") or {}).get("x-amz-bedrock-kb-source-uri")
        head = f"[{i}]" + (f" (source: {source})" if source else "")
        parts.append(f"{head}\n{r['content']['text'].strip()}")
    return "\n\n".join(parts) if parts else "(no search results)"


def format_history(history: list[Turn]) -> str:
    return "\n".join(f"User: {t.question}\nAssistant: {t.answer}" for t in history)


def generation_messages(
    template: str | None, question: str, results: list[dict[str, Any]], history: list[Turn]
) -> tuple[str | None, list[dict[str, str]]]:
    """(system prompt, chat messages) for a generation call; history goes in as earlier turns."""
    template = template or DEFAULT_GENERATION_TEMPLATE
    values = {
        "search_results": format_search_results(results),
        "query": question,
        "output_format_instructions": OUTPUT_FORMAT_INSTRUCTIONS,
        "current_time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    rendered = render(template, values)
    messages: list[dict[str, str]] = []
    for t in history:
        messages += [{"role": "user", "content": t.question}, {"role": "assistant", "content": t.answer}]
    if "$query$" in template:
        messages.append({"role": "user", "content": rendered})
        return None, messages
    messages.append({"role": "user", "content": question})
    return rendered, messages


def rewrite_prompt(template: str | None, question: str, history: list[Turn]) -> str:
    template = template or DEFAULT_ORCHESTRATION_TEMPLATE
    if "$query$" not in template:  # Bedrock's orchestration templates need not name the question
        template += "\n\nLatest question: $query$"
    return render(
        template,
        {
            "conversation_history": format_history(history),
            "query": question,
            "output_format_instructions": REWRITE_FORMAT_INSTRUCTIONS,
            "current_time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        },
    )
