"""bedrock-agent-runtime's AgenticRetrieveStream (contract 2026 §3): the service's hook.

Before it returns, the request is checked (pgkb.agentic.request), every retriever's knowledge base
is resolved (ResourceNotFoundException; a VECTOR knowledge base is a ValidationException, since the
operation serves MANAGED knowledge bases only, as in Bedrock) and the planner is chosen (an
unconfigured model is a ValidationException). So a bad request is an ordinary error response; the
run itself (pgkb.agentic.engine) happens while the stream is read, and its failures become
in-stream exceptions.

ACLs apply at every step: each retrieval is Retrieve's own (`userContext` → the search statement's
ACL predicate), and full document expansion reads only documents the user may see (the same
`visible` rule GetDocumentContent applies), so no trace event, result or answer holds anything else.
"""

from __future__ import annotations

from typing import Any

from pgkb.agentic.engine import Run
from pgkb.agentic.planners import planner_for
from pgkb.agentic.request import AgenticRequest, Retriever, parse_request
from pgkb.errors import ValidationError
from pgkb.generation.extractive import rewrite_follow_up
from pgkb.service.access import visible
from pgkb.service.base import Collaborator, KnowledgeBases, ServiceCore
from pgkb.service.retrieve import RetrieveOps

_EXPAND_SQL = (
    "SELECT d.kb_id, d.uri, c.extracted, ds.acl_enabled, d.acl_allow, d.acl_deny"
    " FROM unnest(%s::text[], %s::text[]) AS w(kb_id, uri)"
    " JOIN pgkb.documents AS d ON d.kb_id = w.kb_id AND d.uri = w.uri AND d.status = 'INDEXED'"
    " JOIN pgkb.data_sources AS ds ON ds.id = d.ds_id"
    " JOIN pgkb.document_content AS c ON c.ds_id = d.ds_id AND c.uri = d.uri AND c.extracted IS NOT NULL"
)


class AgenticOps(Collaborator):
    def __init__(self, core: ServiceCore, kbs: KnowledgeBases, retriever: RetrieveOps) -> None:
        super().__init__(core, kbs)
        self.retriever = retriever

    def agentic_retrieve_stream(
        self,
        *,
        messages: list[dict[str, Any]],
        retrievers: list[dict[str, Any]],
        agenticRetrieveConfiguration: dict[str, Any],
        generateResponse: bool | None = None,
        userContext: dict[str, Any] | None = None,
        policyConfiguration: dict[str, Any] | None = None,
        retrievalInstructionConfiguration: dict[str, Any] | None = None,
        memoryConfiguration: dict[str, Any] | None = None,
        nextToken: str | None = None,
    ) -> dict[str, Any]:
        """`{"stream": iterator}` of `{"traceEvent"}`, `{"responseEvent"}` and finally `{"result"}`."""
        req = parse_request(
            messages=messages, retrievers=retrievers, agenticRetrieveConfiguration=agenticRetrieveConfiguration,
            generateResponse=generateResponse, userContext=userContext, policyConfiguration=policyConfiguration,
            retrievalInstructionConfiguration=retrievalInstructionConfiguration,
            memoryConfiguration=memoryConfiguration, nextToken=nextToken,
        )
        kb_ids: dict[str, str] = {}
        for r in req.retrievers:
            kb = self.resolve(r.knowledge_base_id)
            if not kb.managed:
                raise ValidationError(
                    f"knowledge base {kb.id} is a VECTOR knowledge base; AgenticRetrieveStream works only on"
                    " MANAGED knowledge bases"
                )
            kb_ids[r.knowledge_base_id] = kb.id
        planner = planner_for(req.model_arn)
        query = rewrite_follow_up(req.question, req.previous_questions())
        run = Run(req, planner, lambda pairs: self._agentic_retrieve(req, pairs),
                  lambda pairs: self._agentic_expand(req, kb_ids, pairs), query)
        return {"stream": run.events()}

    def _agentic_retrieve(self, req: AgenticRequest, pairs: list[tuple[Retriever, str]]) -> list[list[dict[str, Any]]]:
        """One step's searches: the distinct query texts embedded in one batch per model, then one
        Retrieve statement per (retriever, query)."""
        kbs = {r.knowledge_base_id: self.resolve(r.knowledge_base_id) for r, _ in pairs}
        groups: dict[tuple[str, int], list[str]] = {}
        models: dict[tuple[str, int], Any] = {}
        for r, text in pairs:
            kb = kbs[r.knowledge_base_id]
            models[(kb.model_id, kb.dimensions)] = kb
            groups.setdefault((kb.model_id, kb.dimensions), []).append(text)
        vectors: dict[tuple[str, int, str], Any] = {}
        for key, texts in groups.items():
            texts = list(dict.fromkeys(texts))
            for text, v in zip(texts, models[key].model().embed_queries(texts), strict=True):
                vectors[(*key, text)] = v
        out = []
        for r, text in pairs:
            kb = kbs[r.knowledge_base_id]
            msc: dict[str, Any] = {"numberOfResults": r.max_results}
            if r.filter is not None:
                msc["filter"] = r.filter
            if req.reranking_type is not None:
                msc["rerankingModelType"] = req.reranking_type
            if req.reranking_configuration is not None:
                msc["rerankingConfiguration"] = req.reranking_configuration
            results, _ = self.retriever.retrieve_results(r.knowledge_base_id, text, {"managedSearchConfiguration": msc},
                                               user_id=req.user_id, vector=vectors[(kb.model_id, kb.dimensions, text)])
            out.append(results)
        return out

    def _agentic_expand(self, req: AgenticRequest, kb_ids: dict[str, str],
                        pairs: list[tuple[Retriever, str]]) -> dict[tuple[str, str], str]:
        """Whole texts of the documents the user may see, keyed (retriever identifier, uri): one statement."""
        if not pairs:
            return {}
        wanted = {(kb_ids[r.knowledge_base_id], uri): r.identifier for r, uri in pairs}
        with self.db.connection() as conn:
            rows = conn.execute(_EXPAND_SQL, ([k for k, _ in wanted], [u for _, u in wanted])).fetchall()
        out: dict[tuple[str, str], str] = {}
        for kb_id, uri, text, acl_enabled, allow, deny in rows:
            if visible(acl_enabled, allow, deny, req.user_id):
                out[(wanted[(kb_id, uri)], uri)] = text
        return out
