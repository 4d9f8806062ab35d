"""The planners AgenticRetrieveStream runs with: offline (deterministic, no model) and a language model.

`planner_for(model_arn)`: None (foundationModelType MANAGED) or `pgkb.extractive` → OfflinePlanner;
any other modelArn → LLMPlanner over the generator RetrieveAndGenerate would use for it
(PGKB_OPENAI_GENERATORS, else Bedrock Converse), which must have `chat(system, user) -> str`.

OfflinePlanner: round 1 splits the question (pgkb.agentic.split) and, when it is compound, asks
every retriever each part; round 2 retries, with its content words only, a part that found nothing
anywhere (a filter or an ACL can leave it empty); then it is done. A question that is not compound
is answered from the speculative retrieval alone. Its answer is extractive, per part: the best
sentences for each part (pgkb.extractive's scoring), copied verbatim, each citing the results it is
in, so every citation span is exact.

LLMPlanner: each round the model sees the retrievers (id and description), the conversation, and
the best results so far, and answers with JSON `{"done": bool, "queries": [{"query", "retrievers"}]}`.
An answer that is not that JSON is reported as a Planning failure and the round falls back to the
offline plan. Its answer is the generator's (citations from its [n] markers).
"""

from __future__ import annotations

import json
from typing import Any

from pgkb.agentic.engine import Plan, State, fuse
from pgkb.agentic.split import split_question
from pgkb.generation import extractive
from pgkb.generation.base import Answer, GenerationRequest, Segment, Turn

MAX_QUERIES_PER_ROUND = 5
PART_SENTENCES = 2
SINGLE_SENTENCES = 3
PLAN_RESULTS = 8  # results shown to the model when it plans
PLAN_SNIPPET = 400


def planner_for(model_arn: str | None) -> Any:
    if model_arn is None or model_arn.rsplit("/", 1)[-1] == extractive.MODEL_ID:
        return OfflinePlanner()
    from pgkb.generation.registry import generator_for

    return LLMPlanner(generator_for(model_arn))


def _all(state: State) -> list[int]:
    return list(range(len(state.request.retrievers)))


class OfflinePlanner:
    name = "offline"

    def plan(self, state: State) -> Plan:
        if state.iteration == 1:
            return self._split(state)
        empty = [p for p in state.parts
                 if not any(s.results for s in state.searches if not s.speculative and s.query == p)]
        retries = []
        for p in empty:
            relaxed = " ".join(extractive.key_terms(p))
            if relaxed and relaxed != p and not any(s.query == relaxed for s in state.searches):
                retries.append(relaxed)
        if not retries:
            return Plan([], True, "every sub-query has results; enough to answer" if not empty
                        else f"{len(empty)} sub-quer{'y' if len(empty) == 1 else 'ies'} found nothing visible; answering with what was found")
        return Plan([(q, _all(state)) for q in retries], False,
                    f"retrying {len(retries)} sub-quer{'y' if len(retries) == 1 else 'ies'} that found nothing, with content words only")

    def _split(self, state: State) -> Plan:
        parts = split_question(state.query)
        state.parts = parts
        if len(parts) == 1:
            return Plan([], True, "the question is not compound: the speculative retrieval answers it")
        listed = "; ".join(parts)
        return Plan([(p, _all(state)) for p in parts], False, f"split into {len(parts)} sub-queries: {listed}")

    def answer(self, state: State, results: list[dict[str, Any]]) -> Answer:
        parts = state.parts if len(state.parts) > 1 else [state.request.question]
        want = PART_SENTENCES if len(parts) > 1 else SINGLE_SENTENCES
        gen = extractive.ExtractiveGenerator()
        segments: list[Segment] = []
        used: set[str] = set()
        for part in parts:
            ans = gen.generate(GenerationRequest(question=part, results=results,
                                                 additional_fields={"maxSentences": want}))
            for seg in ans.segments:
                if not seg.sources or seg.text in used:
                    continue
                used.add(seg.text)
                if segments:
                    segments.append(Segment(" "))
                segments.append(seg)
        return Answer(segments or [Segment(extractive.NO_ANSWER)], extractive.NAME)


_SYSTEM = (
    "You plan searches over knowledge bases to answer the user's last question. Reply with JSON only, no"
    ' prose: {"done": true|false, "queries": [{"query": "a self-contained search query", "retrievers": [1, 2]}]}.'
    " Split a compound or comparative question into one query per thing asked; send each query to the"
    " knowledge bases whose description fits (all of them if unsure). Set done to true, with no queries,"
    " when the results found so far are enough to answer every part of the question."
)


def _json_object(text: str) -> dict[str, Any] | None:
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        doc = json.loads(text[start : end + 1])
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


class LLMPlanner:
    def __init__(self, generator: Any) -> None:
        self.generator = generator
        self.name = generator.name

    def _prompt(self, state: State) -> str:
        req = state.request
        lines = ["Knowledge bases:"]
        for i, retriever in enumerate(req.retrievers, 1):
            lines.append(f"{i}. {retriever.identifier}: {retriever.description or '(no description)'}")
        lines.append("\nConversation:")
        lines += [f"{role.capitalize()}: {text}" for role, text in req.messages]
        lines.append(f"\nSearches so far: {', '.join(sorted({s.query for s in state.searches})) or '(none)'}")
        lines.append("Best results so far:")
        best = fuse(state.searches)[:PLAN_RESULTS]
        for i, r in enumerate(best, 1):
            snippet = " ".join(r.result["content"]["text"].split())[:PLAN_SNIPPET]
            lines.append(f"[{i}] ({r.retriever.identifier}) {snippet}")
        if not best:
            lines.append("(none)")
        lines.append(f"\nThis is planning round {state.iteration} of at most {req.max_iterations}.")
        return "\n".join(lines)

    def plan(self, state: State) -> Plan:
        reply = self.generator.chat(_SYSTEM, self._prompt(state))
        doc = _json_object(reply)
        n = len(state.request.retrievers)
        if doc is None or not isinstance(doc.get("queries", []), list):
            fallback = OfflinePlanner().plan(state) if state.iteration == 1 else Plan([], True, "")
            fallback.failure = "the model's plan was not the JSON asked for; using the offline plan"
            fallback.message = f"{fallback.message} (offline fallback)".strip()
            return fallback
        queries: list[tuple[str, list[int]]] = []
        for q in doc.get("queries") or []:
            text = q.get("query") if isinstance(q, dict) else q
            if not isinstance(text, str) or not text.strip():
                continue
            idx = q.get("retrievers") if isinstance(q, dict) else None
            chosen = sorted({i - 1 for i in idx if isinstance(i, int) and 1 <= i <= n}) if isinstance(idx, list) else []
            queries.append((" ".join(text.split())[:1000], chosen or list(range(n))))
        queries = queries[:MAX_QUERIES_PER_ROUND]
        state.parts += [q for q, _ in queries if q not in state.parts]
        done = bool(doc.get("done")) or not queries
        if done:
            return Plan([], True, "the model judged the results sufficient")
        return Plan(queries, False, f"the model planned {len(queries)} sub-queries: {'; '.join(q for q, _ in queries)}")

    def answer(self, state: State, results: list[dict[str, Any]]) -> Answer:
        history: list[Turn] = []
        msgs = state.request.messages[:-1]
        for (r1, q), (r2, a) in zip(msgs, msgs[1:], strict=False):
            if r1 == "user" and r2 == "assistant":
                history.append(Turn(q, a))
        return self.generator.generate(GenerationRequest(question=state.request.question, results=results,
                                                         history=history))

