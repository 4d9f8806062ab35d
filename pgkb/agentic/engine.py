"""One AgenticRetrieveStream run: the steps, as the events of the stream (contract 2026 §3.3-3.4).

speculative retrieval (the raw question, or the follow-up made self-contained, on every retriever)
→ up to `maxAgentIteration` rounds of planning + retrieval (the planner proposes sub-queries and
says when it has enough) → selection (`select`: each retriever's slots filled round-robin over the
sub-queries, so every part of the question is covered; a chunk found by several sub-queries appears
once) → full document expansion of the best documents → the answer (if `generateResponse`) → the
`result` event.

The engine knows nothing of databases or models: it calls `retrieve([(retriever, text), ...])` (one
step's searches at once, so their queries embed in one batch; Retrieve's results, ACLs applied), `expand(pairs)` (whole document texts, ACLs applied) and a planner
(pgkb.agentic.planners). Each step is one `traceEvent` with status IN_PROGRESS when it starts and
one with SUCCEEDED or FAILED (with `failures`) when it ends. A failure raised by a callable ends
the stream after its FAILED trace; the server turns it into an in-stream exception event.

Results per retriever are capped at that retriever's `maxNumberOfResults`; an expanded document
replaces its selected chunks (placed where the first of them was).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from pgkb.agentic.request import AgenticRequest, Retriever
from pgkb.errors import PgkbError
from pgkb.generation.base import Answer, Segment

RRF_K = 60
MAX_EXPANDED = 3  # documents read whole per run
MAX_EXPAND_CHARS = 20000  # a longer document stays as its chunks
SOURCE_URI = "x-amz-bedrock-kb-source-uri"
DOCUMENT_ID = "x-pgkb-document-id"
FULL_DOCUMENT = "x-pgkb-full-document"
SCORE = "x-pgkb-score"
CHUNK_ID = "x-amz-bedrock-kb-chunk-id"

RetrieveFn = Callable[[list[tuple[Retriever, str]]], list[list[dict[str, Any]]]]  # one step's searches at once
ExpandFn = Callable[[list[tuple[Retriever, str]]], dict[tuple[str, str], str]]


@dataclass
class Search:
    """One sub-query's results on one retriever."""

    query: str
    retriever: Retriever
    results: list[dict[str, Any]]
    speculative: bool = False


@dataclass
class Plan:
    queries: list[tuple[str, list[int]]]  # (sub-query, indexes of the retrievers to ask)
    done: bool  # the planner has enough: no retrieval this round
    message: str
    failure: str | None = None  # the planner failed and fell back (reported in the trace)


@dataclass
class State:
    request: AgenticRequest
    query: str  # the question as retrieval sees it (a follow-up made self-contained)
    iteration: int = 0
    searches: list[Search] = field(default_factory=list)
    parts: list[str] = field(default_factory=list)  # what the question asks, as the planner split it


class Planner(Protocol):
    name: str

    def plan(self, state: State) -> Plan: ...

    def answer(self, state: State, results: list[dict[str, Any]]) -> Answer: ...


def _now_ms() -> int:
    return int(time.time() * 1000)


def _item(r: dict[str, Any], retriever: Retriever) -> dict[str, Any]:
    """A Retrieve result → an AgenticRetrieveResultItem / trace result item."""
    md = dict(r.get("metadata") or {})
    if r.get("documentId"):
        md[DOCUMENT_ID] = r["documentId"]
    if "score" in r:
        md[SCORE] = r["score"]
    return {"content": {"text": r["content"]["text"], "mimeType": "text/plain"}, "metadata": md,
            "sourceRetriever": {"identifier": retriever.identifier}}


def _chunk_key(r: dict[str, Any], retriever: Retriever) -> tuple[str, str]:
    md = r.get("metadata") or {}
    return retriever.identifier, str(md.get(CHUNK_ID) or r["content"]["text"])


def _uri(r: dict[str, Any]) -> str | None:
    uri = (r.get("metadata") or {}).get(SOURCE_URI)
    return uri if isinstance(uri, str) else None


@dataclass
class Ranked:
    retriever: Retriever
    result: dict[str, Any]  # Retrieve's shape
    uri: str | None
    full: bool = False


def select(searches: list[Search], retrievers: list[Retriever]) -> list[Ranked]:
    """The results: each retriever's `maxNumberOfResults` slots filled in rounds, round k taking the
    k-th result of each sub-query's list on that retriever, the speculative query's after the planned
    ones, and among those first the sub-queries this retriever serves best: the ratio of the
    sub-query's best score here to its best score on any retriever (Retrieve's scores of one query
    compare across knowledge bases; those of two queries do not), so with one slot each knowledge
    base keeps the part of the question it answers.
    So every part gets its best chunk on each retriever before any part gets a second; a chunk found
    by several queries appears once. Results are ordered by round, then score."""
    def top(s: Search) -> float:
        return float(s.results[0].get("score") or 0.0) if s.results else 0.0

    best: dict[str, float] = {}
    for s in searches:
        best[s.query] = max(best.get(s.query, 0.0), top(s))
    picked: list[tuple[int, int, float, Ranked]] = []
    taken: set[tuple[str, str]] = set()
    slots = {id(r): r.max_results for r in retrievers}
    # First, every planned sub-query (in order) takes its best chunk on any retriever with a slot left.
    for q in dict.fromkeys(s.query for s in searches if not s.speculative):
        options = [(-top(s), i, s) for i, s in enumerate(searches) if s.query == q and not s.speculative]
        for _, _, s in sorted(options, key=lambda o: o[:2]):
            r = next((x for x in s.results if _chunk_key(x, s.retriever) not in taken), None)
            if r is None or slots.get(id(s.retriever), 0) <= 0:
                continue
            taken.add(_chunk_key(r, s.retriever))
            slots[id(s.retriever)] -= 1
            picked.append((-1, 0, -float(r.get("score") or 0.0), Ranked(s.retriever, r, _uri(r))))
            break
    for retriever in retrievers:
        lists = [s for s in searches if s.retriever is retriever]
        lists.sort(key=lambda s: s.speculative)  # planned first, in their order (stable sort)
        left = slots.get(id(retriever), 0)
        for rank in range(max((len(s.results) for s in lists), default=0)):
            if left <= 0:
                break
            row = [(s.speculative, -(top(s) / best[s.query] if best[s.query] > 0 else 0.0),
                    -float(s.results[rank].get("score") or 0.0), i, s.results[rank])
                   for i, s in enumerate(lists) if rank < len(s.results)]
            for spec, _, neg, _, r in sorted(row, key=lambda x: x[:4]):
                key = _chunk_key(r, retriever)
                if key in taken or left <= 0:
                    continue
                taken.add(key)
                left -= 1
                picked.append((rank, int(spec), neg, Ranked(retriever, r, _uri(r))))
    picked.sort(key=lambda p: p[:3])
    return [p[3] for p in picked]


def fuse(searches: list[Search]) -> list[Ranked]:
    """Reciprocal rank fusion over every search's list; one entry per chunk, best first. Ties keep
    the order of first appearance, so the sub-queries' best results interleave."""
    scores: dict[tuple[str, str], float] = {}
    first: dict[tuple[str, str], tuple[int, Retriever, dict[str, Any]]] = {}
    order = itertools.count()
    for rank in range(max((len(s.results) for s in searches), default=0)):
        for s in searches:  # breadth first: rank 1 of every list before rank 2 of any
            if rank < len(s.results):
                r = s.results[rank]
                key = _chunk_key(r, s.retriever)
                scores[key] = scores.get(key, 0.0) + 1.0 / (RRF_K + rank + 1)
                if key not in first:
                    first[key] = (next(order), s.retriever, r)
    keys = sorted(scores, key=lambda k: (-scores[k], first[k][0]))
    top = scores[keys[0]] if keys else 1.0
    out = []
    for k in keys:
        _, retriever, r = first[k]
        out.append(Ranked(retriever, {**r, "score": scores[k] / top}, _uri(r)))
    return out


class Run:
    """`events()` yields the stream's members: `{"traceEvent": ...}`, `{"responseEvent": ...}`, `{"result": ...}`."""

    def __init__(self, request: AgenticRequest, planner: Planner, retrieve: RetrieveFn, expand: ExpandFn,
                 query: str) -> None:
        self.req = request
        self.planner = planner
        self.retrieve = retrieve
        self.expand = expand
        self.state = State(request, query)
        self._ids = itertools.count(1)

    # ------------------------------------------------------------------ events

    def _trace(self, step: str, status: str, message: str, **attrs: Any) -> dict[str, Any]:
        attributes = {"step": step, "status": status, "message": message}
        attributes.update({k: v for k, v in attrs.items() if v})
        return {"traceEvent": {"id": str(next(self._ids)), "timestamp": _now_ms(), "attributes": attributes}}

    def _metadata(self, retrievers: list[Retriever]) -> list[dict[str, str]]:
        return [{"identifier": r.identifier, "retrievalType": "BedrockKnowledgeBase"} for r in retrievers]

    @staticmethod
    def _action(query: str, retrievers: list[Retriever]) -> dict[str, Any]:
        return {"retrieve": {"inputQuery": {"text": query},
                             "sourceRetrievers": [{"identifier": r.identifier} for r in retrievers]}}

    def _search(self, step: str, queries: list[tuple[str, list[Retriever]]], speculative: bool) -> Iterator[dict[str, Any]]:
        actions = [self._action(q, rs) for q, rs in queries]
        used = list({r.identifier: r for _, rs in queries for r in rs}.values())
        yield self._trace(step, "IN_PROGRESS", f"retrieving for {len(queries)} quer{'y' if len(queries) == 1 else 'ies'}",
                          actions=actions, retrievalMetadata=self._metadata(used))
        pairs = [(r, q) for q, rs in queries for r in rs]
        try:
            lists = self.retrieve(pairs)
        except PgkbError as exc:  # the trace says which step failed; the stream then ends with the error
            yield self._trace(step, "FAILED", "retrieval failed", failures=[{"message": exc.message}], actions=actions)
            raise
        found: list[dict[str, Any]] = []
        for (r, q), results in zip(pairs, lists, strict=True):
            self.state.searches.append(Search(q, r, results, speculative))
            found.extend(_item(x, r) for x in results)
        yield self._trace(step, "SUCCEEDED", f"{len(found)} results", actions=actions,
                          retrievalMetadata=self._metadata(used), retrievalResponse=found)

    # ------------------------------------------------------------------ the run

    def events(self) -> Iterator[dict[str, Any]]:
        req, st = self.req, self.state
        everyone = list(req.retrievers)
        yield from self._search("SpeculativeRetrieval", [(st.query, everyone)], speculative=True)
        while st.iteration < req.max_iterations:
            st.iteration += 1
            yield self._trace("Planning", "IN_PROGRESS", f"planning iteration {st.iteration} of {req.max_iterations}")
            try:
                plan = self.planner.plan(st)
            except PgkbError as exc:
                yield self._trace("Planning", "FAILED", "planning failed", failures=[{"message": exc.message}])
                raise
            failures = [{"message": plan.failure}] if plan.failure else None
            queries = [(q, [everyone[i] for i in idx]) for q, idx in plan.queries if idx]
            yield self._trace("Planning", "SUCCEEDED", plan.message, failures=failures,
                              actions=[self._action(q, rs) for q, rs in queries])
            if plan.done or not queries:
                break
            yield from self._search("Retrieval", queries, speculative=False)
        results = select(st.searches, req.retrievers)
        results = yield from self._expand(results)
        out = [_item(r.result, r.retriever) for r in results]
        for item, r in zip(out, results, strict=True):
            if r.full:
                item["metadata"][FULL_DOCUMENT] = True
        event: dict[str, Any] = {"results": out}
        if req.generate:
            answer = self.planner.answer(st, [r.result for r in results])
            for text in _chunks(answer.segments):
                yield {"responseEvent": {"text": text}}
            event["generatedResponse"] = _generated(answer)
        yield {"result": event}

    def _expand(self, ranked: list[Ranked]) -> Generator[dict[str, Any], None, list[Ranked]]:
        """Read the best documents whole (the first selected, one per part of the question, at most
        MAX_EXPANDED); each one's selected chunks collapse into one result holding the whole text."""
        want = max(1, min(MAX_EXPANDED, len(self.state.parts) or 1))
        picks: list[Ranked] = []
        for r in ranked:
            if r.uri and all((p.retriever.identifier, p.uri) != (r.retriever.identifier, r.uri) for p in picks):
                picks.append(r)
            if len(picks) == want:
                break
        if not picks:
            return ranked
        actions = [{"fullDocumentExpansion": {"documentId": p.result.get("documentId") or p.uri,
                                              "sourceRetriever": {"identifier": p.retriever.identifier}}}
                   for p in picks]
        yield self._trace("FullDocumentExpansion", "IN_PROGRESS", f"reading {len(picks)} document(s) whole",
                          actions=actions)
        texts = self.expand([(p.retriever, p.uri) for p in picks if p.uri])
        kept = {k: t for k, t in texts.items() if len(t) <= MAX_EXPAND_CHARS}
        out: list[Ranked] = []
        done: set[tuple[str, str]] = set()
        for r in ranked:
            key = (r.retriever.identifier, r.uri or "")
            if key in kept:
                if key in done:
                    continue  # its chunks are in the whole document already
                done.add(key)
                full = {**r.result, "content": {"text": kept[key], "type": "TEXT"}}
                full["metadata"] = {k: v for k, v in (r.result.get("metadata") or {}).items() if k != CHUNK_ID}
                out.append(Ranked(r.retriever, full, r.uri, full=True))
            else:
                out.append(r)
        skipped = len(texts) - len(kept)
        msg = f"{len(kept)} document(s) read whole" + (f", {skipped} too long to expand" if skipped else "")
        yield self._trace("FullDocumentExpansion", "SUCCEEDED", msg, actions=actions,
                          retrievalResponse=[_item(r.result, r.retriever) for r in out if r.full])
        return out


def _chunks(segments: list[Segment]) -> Iterator[str]:
    """The answer as responseEvent texts: one per cited part, separators riding with the next part."""
    pending = ""
    for s in segments:
        pending += s.text
        if s.sources:
            yield pending
            pending = ""
    if pending:
        yield pending


def _generated(answer: Answer) -> dict[str, Any]:
    from pgkb.generation.citations import spans

    cites = [{"startIndex": start, "endIndex": end, "references": [{"resultIndex": i} for i in seg.sources]}
             for start, end, seg in spans(answer.segments)]
    return {"answer": answer.text, "citations": cites}
