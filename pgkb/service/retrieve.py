"""bedrock-agent-runtime's Retrieve."""

from __future__ import annotations

from typing import Any

from pgkb.errors import ValidationError, unstorable
from pgkb.service import shapes
from pgkb.service.access import document_id, user_id_of
from pgkb.service.base import Collaborator

MAX_QUERY_CHARS = 20000
MAX_RESULTS = 100
DEFAULT_RESULTS = 5  # Bedrock returns up to five results by default


def _managed_config(retrieval_configuration: dict[str, Any] | None, custom_embedding: bool) -> dict[str, Any]:
    """A MANAGED knowledge base's managedSearchConfiguration → the vectorSearchConfiguration pgkb runs:
    its best strategy (HYBRID), plus reranking when asked for (MANAGED: the reranker pgkb has configured,
    if any; the default unless the knowledge base uses a CUSTOM embedding model, as in Bedrock)."""
    if retrieval_configuration is None:
        retrieval_configuration = {}
    if not isinstance(retrieval_configuration, dict):
        raise ValidationError("retrievalConfiguration must be an object")
    if retrieval_configuration.get("vectorSearchConfiguration") is not None:
        raise ValidationError(
            "retrievalConfiguration.vectorSearchConfiguration is for VECTOR knowledge bases; a MANAGED knowledge"
            " base takes managedSearchConfiguration (numberOfResults, filter, rerankingModelType)"
        )
    msc = retrieval_configuration.get("managedSearchConfiguration") or {}
    if not isinstance(msc, dict):
        raise ValidationError("retrievalConfiguration.managedSearchConfiguration must be an object")
    out: dict[str, Any] = {"overrideSearchType": "HYBRID"}
    if "numberOfResults" in msc:
        out["numberOfResults"] = msc["numberOfResults"]
    if msc.get("filter") is not None:
        out["filter"] = msc["filter"]
    mode = msc.get("rerankingModelType", "NONE" if custom_embedding else "MANAGED")
    if mode not in ("CUSTOM", "MANAGED", "NONE"):
        raise ValidationError("managedSearchConfiguration.rerankingModelType must be CUSTOM, MANAGED or NONE")
    rerank = msc.get("rerankingConfiguration")
    if mode == "CUSTOM":
        if not isinstance(rerank, dict):
            raise ValidationError("managedSearchConfiguration.rerankingConfiguration is required with rerankingModelType CUSTOM")
        out["rerankingConfiguration"] = rerank
    elif rerank is not None:
        raise ValidationError("managedSearchConfiguration.rerankingConfiguration goes with rerankingModelType CUSTOM")
    elif mode == "MANAGED" and not custom_embedding:
        managed = _managed_reranker()
        if managed is not None:
            out["rerankingConfiguration"] = managed
    return out


def _managed_reranker() -> dict[str, Any] | None:
    """pgkb's managed reranker: the first model configured in PGKB_RERANKERS, if there is one."""
    import json

    from pgkb.config import current

    try:
        table = json.loads(current().rerankers or "{}")
    except json.JSONDecodeError:
        return None
    if not isinstance(table, dict) or not table:
        return None
    model = next(iter(table))
    arn = model if model.startswith("arn:") else f"arn:aws:bedrock:us-east-1::foundation-model/{model}"
    return {"type": "BEDROCK_RERANKING_MODEL", "bedrockRerankingConfiguration": {"modelConfiguration": {"modelArn": arn}}}


def _vector_config(retrieval_configuration: dict[str, Any] | None) -> dict[str, Any]:
    if retrieval_configuration is None:
        return {}
    if not isinstance(retrieval_configuration, dict):
        raise ValidationError("retrievalConfiguration must be an object")
    if retrieval_configuration.get("managedSearchConfiguration"):
        raise ValidationError("retrievalConfiguration.managedSearchConfiguration is for MANAGED knowledge bases")
    vsc = retrieval_configuration.get("vectorSearchConfiguration") or {}
    if not isinstance(vsc, dict):
        raise ValidationError("retrievalConfiguration.vectorSearchConfiguration must be an object")
    if vsc.get("implicitFilterConfiguration"):
        raise ValidationError("implicitFilterConfiguration is not supported by pgkb")
    return vsc


def query_text(retrieval_query: dict[str, Any]) -> str:
    if not isinstance(retrieval_query, dict):
        raise ValidationError("retrievalQuery is required")
    if retrieval_query.get("type", "TEXT") != "TEXT" or retrieval_query.get("image"):
        raise ValidationError("retrievalQuery.type must be TEXT: pgkb's models embed text only")
    text = retrieval_query.get("text")
    if not isinstance(text, str):
        raise ValidationError("retrievalQuery.text is required")
    why = unstorable(text)
    if why is not None:  # checked before the shared embedding batch, which it would fail
        raise ValidationError(f"retrievalQuery.text {why}")
    if len(text) > MAX_QUERY_CHARS:
        raise ValidationError(
            f"retrievalQuery.text is {len(text)} characters; the limit is {MAX_QUERY_CHARS}"
        )
    return text


class RetrieveOps(Collaborator):
    query_embedder: Any = None  # set by the server to batch concurrent queries; else the model directly

    def embed_query(self, kb: Any, text: str) -> Any:
        if self.query_embedder is not None:
            return self.query_embedder(kb.model(), text)
        return kb.model().embed_queries([text])[0]

    def retrieve_results(
        self,
        knowledge_base_id: str,
        text: str,
        retrieval_configuration: dict[str, Any] | None = None,
        offset: int = 0,
        user_id: str | None = None,
        vector: Any = None,
    ) -> tuple[list[dict[str, Any]], bool]:
        """Ranked results in Bedrock's shape, and whether more may follow. `user_id`: whose ACLs
        apply (MANAGED knowledge bases; None = nobody's, so only sources without ACLs answer).
        `vector`: the query's embedding when the caller already has it (a batch of several queries)."""
        from pgkb.retrieval.filters import acl_predicate
        from pgkb.retrieval.fusion import model_coverage
        from pgkb.retrieval.search import search

        kb = self.resolve(knowledge_base_id)
        if kb.managed:
            custom = (kb.row["kb_config"].get("managedKnowledgeBaseConfiguration") or {}).get("embeddingModelType") == "CUSTOM"
            vsc = _managed_config(retrieval_configuration, custom)
        else:
            vsc = _vector_config(retrieval_configuration)
        k = vsc.get("numberOfResults", DEFAULT_RESULTS)
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_RESULTS:
            raise ValidationError(
                "retrievalConfiguration.vectorSearchConfiguration.numberOfResults must be an integer from 1 to 100"
            )
        search_type: Any = vsc.get("overrideSearchType") or "SEMANTIC"  # checked just below
        if search_type not in ("SEMANTIC", "HYBRID"):
            raise ValidationError("overrideSearchType must be SEMANTIC or HYBRID")
        # Validate everything cheap before the model runs.
        flt = vsc.get("filter")
        if flt is not None:
            from pgkb.retrieval.filters import validate_filter

            validate_filter(flt, "retrievalConfiguration.vectorSearchConfiguration.filter")
        rerank = vsc.get("rerankingConfiguration")
        reranker = None
        if rerank is not None:
            from pgkb.retrieval.rerank import reranker_for

            reranker = reranker_for(rerank)
        if vector is None:
            vector = self.embed_query(kb, text)
        # HYBRID's evidence of whether the model can read the query (its own tokenizer's coverage).
        coverage = model_coverage(kb.model(), text) if search_type == "HYBRID" else None
        want = k  # the window numberOfResults asks for; an offset only skips into it
        with self.core.reader(kb.database).connection() as conn:  # a read replica when configured
            acl = None
            if kb.managed:
                from pgkb.store.acl import lookup_principal

                acl = acl_predicate(lookup_principal(conn, kb.table, user_id) if user_id is not None else None)
            hits = search(
                conn, kb.table, kb.mapping, query_embedding=vector, query_text=text, k=min(want, MAX_RESULTS),
                filter=flt, search_type=search_type, attribute_cols=kb.attribute_cols, query_coverage=coverage,
                acl=acl, ef_search_default=kb.ef_search, postings_per_term=kb.bm25_postings,
            )
        if reranker is not None:
            hits = reranker.rerank(text, hits)
        page = hits[offset:k]
        results = []
        for h in page:
            item: dict[str, Any] = {
                "content": {"text": h.text, "type": "TEXT"},
                "location": shapes.location_for(h.source_uri or ""),
                "score": float(h.score),
            }
            if h.metadata:
                item["metadata"] = h.metadata
            if kb.managed and h.source_uri:
                item["documentId"] = document_id(h.source_uri)
            results.append(item)
        return results, len(hits) >= want and want < MAX_RESULTS

    def retrieve(
        self,
        *,
        knowledgeBaseId: str,
        retrievalQuery: dict[str, Any],
        retrievalConfiguration: dict[str, Any] | None = None,
        nextToken: str | None = None,
        guardrailConfiguration: dict[str, Any] | None = None,
        userContext: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        if guardrailConfiguration:
            raise ValidationError("guardrailConfiguration is not supported by pgkb")
        kb_id = knowledgeBaseId.rsplit("/", 1)[-1] if knowledgeBaseId.startswith("arn:") else knowledgeBaseId
        text = query_text(retrievalQuery)
        # numberOfResults caps the whole answer, as in Bedrock: every result (at most 100) comes in one
        # page and no nextToken is returned, so paginators (awscli's auto-pagination, boto3's and the JS
        # SDK's paginateRetrieve) stop after one call. A token issued by an earlier pgkb (an offset)
        # still decodes and yields what is left of the numberOfResults window.
        user = user_id_of(userContext)
        offset = shapes.decode_token(nextToken)
        results, _ = self.retrieve_results(kb_id, text, retrievalConfiguration, offset, user)
        return {"retrievalResults": results}
