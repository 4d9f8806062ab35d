"""bedrock-agent-runtime's Rerank: score inline documents against a query with the rerankers that
Retrieve's `rerankingConfiguration` uses (`PGKB_RERANKERS` HTTP rerankers, or Bedrock's own rerank
models when AWS is configured; see pgkb.retrieval.rerank). No knowledge base is involved.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from pgkb.errors import ValidationError
from pgkb.service.base import Collaborator

MAX_RESULTS = 1000


def _text(source: Any, i: int) -> str:
    doc = source.get("inlineDocumentSource") if isinstance(source, dict) else None
    if not isinstance(doc, dict):
        raise ValidationError(f"sources[{i}].inlineDocumentSource is required")
    if doc.get("type") == "TEXT" and isinstance((doc.get("textDocument") or {}).get("text"), str):
        return str(doc["textDocument"]["text"])
    if doc.get("type") == "JSON" and "jsonDocument" in doc:
        return json.dumps(doc["jsonDocument"], ensure_ascii=False)  # what the reranker reads
    raise ValidationError(f"sources[{i}].inlineDocumentSource: type TEXT with textDocument.text, or JSON with jsonDocument")


class RerankOps(Collaborator):
    def rerank(
        self,
        *,
        queries: list[dict[str, Any]],
        rerankingConfiguration: dict[str, Any],
        sources: list[dict[str, Any]],
        nextToken: str | None = None,
    ) -> dict[str, Any]:
        from pgkb.retrieval.rerank import get_reranker, parse_config

        if nextToken is not None:
            raise ValidationError("nextToken: pgkb returns every result in one page")
        if len(queries) != 1 or queries[0].get("type") != "TEXT" or not isinstance(
            (queries[0].get("textQuery") or {}).get("text"), str
        ):
            raise ValidationError("queries: exactly one query of type TEXT with textQuery.text")
        query = queries[0]["textQuery"]["text"]
        if not 1 <= len(sources) <= MAX_RESULTS:
            raise ValidationError(f"sources: 1 to {MAX_RESULTS} documents")
        texts = [_text(s, i) for i, s in enumerate(sources)]
        brc = dict(rerankingConfiguration.get("bedrockRerankingConfiguration") or {})
        n = brc.pop("numberOfResults", None)  # Rerank's name; Retrieve's is numberOfRerankedResults
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_RESULTS):
            raise ValidationError(f"rerankingConfiguration.bedrockRerankingConfiguration.numberOfResults: {n!r} "
                                  f"must be an integer from 1 to {MAX_RESULTS}")
        req = replace(parse_config({**rerankingConfiguration, "bedrockRerankingConfiguration": brc}), number_of_results=n)
        top_n = min(n or len(texts), len(texts))
        ranked = get_reranker(req).rerank(query, texts, top_n)
        results: list[dict[str, Any]] = []
        seen: set[int] = set()
        for idx, score in ranked:
            if idx not in seen and len(results) < top_n:
                seen.add(idx)
                results.append({"index": idx, "relevanceScore": float(score),
                                "document": sources[idx]["inlineDocumentSource"]})
        return {"results": results}
