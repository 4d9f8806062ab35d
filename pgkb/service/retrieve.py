"""bedrock-agent-runtime's Retrieve."""

from __future__ import annotations

from typing import Any

from pgkb.errors import ValidationError, unstorable
from pgkb.service import shapes
from pgkb.service.base import ServiceBase

MAX_QUERY_CHARS = 20000
MAX_RESULTS = 100
DEFAULT_RESULTS = 5  # Bedrock returns up to five results by default


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


class RetrieveOps(ServiceBase):
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
    ) -> tuple[list[dict[str, Any]], bool]:
        """Ranked results in Bedrock's shape, and whether more may follow."""
        from pgkb.retrieval.fusion import model_coverage
        from pgkb.retrieval.search import search

        vsc = _vector_config(retrieval_configuration)
        k = vsc.get("numberOfResults", DEFAULT_RESULTS)
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_RESULTS:
            raise ValidationError(
                "retrievalConfiguration.vectorSearchConfiguration.numberOfResults must be an integer from 1 to 100"
            )
        search_type = vsc.get("overrideSearchType") or "SEMANTIC"
        if search_type not in ("SEMANTIC", "HYBRID"):
            raise ValidationError("overrideSearchType must be SEMANTIC or HYBRID")
        kb = self.resolve(knowledge_base_id)
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
        vector = self.embed_query(kb, text)
        # HYBRID's evidence of whether the model can read the query (its own tokenizer's coverage).
        coverage = model_coverage(kb.model(), text) if search_type == "HYBRID" else None
        want = k  # the window numberOfResults asks for; an offset only skips into it
        with kb.database.connection() as conn:
            hits = search(
                conn, kb.table, kb.mapping, query_embedding=vector, query_text=text, k=min(want, MAX_RESULTS),
                filter=flt, search_type=search_type, attribute_cols=kb.attribute_cols, query_coverage=coverage,
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
        offset = shapes.decode_token(nextToken)
        results, _ = self.retrieve_results(kb_id, text, retrievalConfiguration, offset)
        return {"retrievalResults": results}
