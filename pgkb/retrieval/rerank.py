"""Rerankers for Retrieve's `rerankingConfiguration`, pluggable by model ARN.

Resolution of `modelConfiguration.modelArn` (`arn:aws:bedrock:<region>::foundation-model/<id>`):
1. `PGKB_RERANKERS`, a JSON object mapping a model ARN or model id to an HTTP reranker: either a URL
   (TEI's request shape) or `{"url", "format": "tei"|"cohere", "model", "api_key_env", "timeout"}`.
   `tei` (Text Embeddings Inference) posts `{"query", "texts"}` and reads `[{"index", "score"}]`;
   `cohere` (Cohere, Infinity, Jina and most others) posts `{"model", "query", "documents", "top_n"}`
   and reads `{"results": [{"index", "relevance_score"}]}`. Either response shape is accepted.
2. Otherwise Amazon Bedrock's own rerank models through boto3 `bedrock-agent-runtime` Rerank, when
   AWS credentials are configured (or `PGKB_BEDROCK_RERANK_ENDPOINT_URL` points at a compatible
   endpoint).
3. Otherwise a ValidationError: an unusable configuration is never silently skipped.
A reranker that fails raises BadGatewayError (unreachable, timed out, 5xx) or DependencyFailedError
(4xx, a malformed answer), as every model endpoint does (`pgkb.http_json`).

Documents sent to the reranker are the chunk texts; with `metadataConfiguration` the selected
metadata is appended as `key: value` lines (`ALL`: every attribute; `SELECTIVE`: fieldsToInclude, or
all but fieldsToExclude). Scores are the reranker's relevance scores, squashed into [0, 1] with a
logistic function when the model returns raw logits.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from pgkb import config as pgkb_config
from pgkb.errors import AccessDeniedError, DependencyFailedError, ValidationError
from pgkb.http_json import post_json
from pgkb.redact import redact_url
from pgkb.retrieval.search import SearchHit

RERANKERS_ENV = "PGKB_RERANKERS"
BEDROCK_ENDPOINT_ENV = "PGKB_BEDROCK_RERANK_ENDPOINT_URL"
_MODEL_ARN = re.compile(r"^arn:aws(-[^:]+)?:bedrock:([a-z0-9-]{1,20})::foundation-model/(.+)$")
MAX_DOCUMENTS = 1000


class Reranker(Protocol):
    name: str

    def rerank(self, query: str, documents: Sequence[str], top_n: int) -> list[tuple[int, float]]:
        """(index into documents, relevance score), best first, at most top_n."""
        ...


@dataclass(frozen=True)
class RerankRequest:
    """A validated `rerankingConfiguration`."""

    model_arn: str
    model_id: str
    region: str
    number_of_results: int | None
    additional_fields: dict[str, Any]
    metadata_mode: str | None  # None (text only), "ALL" or "SELECTIVE"
    include: tuple[str, ...] | None
    exclude: tuple[str, ...] | None


def parse_config(cfg: Any, path: str = "rerankingConfiguration") -> RerankRequest:
    """Validate Retrieve's VectorSearchRerankingConfiguration; ValidationError naming the problem."""
    if not isinstance(cfg, Mapping):
        raise ValidationError(f"{path}: expected an object")
    if cfg.get("type") != "BEDROCK_RERANKING_MODEL":
        raise ValidationError(f"{path}.type: {cfg.get('type')!r} is not supported; expected BEDROCK_RERANKING_MODEL")
    brc = cfg.get("bedrockRerankingConfiguration")
    if not isinstance(brc, Mapping):
        raise ValidationError(f"{path}.bedrockRerankingConfiguration is required when type is BEDROCK_RERANKING_MODEL")
    mc = brc.get("modelConfiguration")
    if not isinstance(mc, Mapping) or not isinstance(mc.get("modelArn"), str):
        raise ValidationError(f"{path}.bedrockRerankingConfiguration.modelConfiguration.modelArn is required")
    arn = mc["modelArn"]
    m = _MODEL_ARN.match(arn)
    if not m:
        raise ValidationError(
            f"{path}.bedrockRerankingConfiguration.modelConfiguration.modelArn: {arn!r} is not a foundation-model "
            "ARN (arn:aws:bedrock:<region>::foundation-model/<model id>)"
        )
    extra = mc.get("additionalModelRequestFields") or {}
    if not isinstance(extra, Mapping):
        raise ValidationError(f"{path}...modelConfiguration.additionalModelRequestFields must be an object")
    n = brc.get("numberOfRerankedResults")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 100):
        raise ValidationError(
            f"{path}.bedrockRerankingConfiguration.numberOfRerankedResults: {n!r} must be an integer from 1 to 100"
        )
    mode = include = exclude = None
    meta = brc.get("metadataConfiguration")
    if meta is not None:
        mpath = f"{path}.bedrockRerankingConfiguration.metadataConfiguration"
        if not isinstance(meta, Mapping) or meta.get("selectionMode") not in ("ALL", "SELECTIVE"):
            raise ValidationError(f"{mpath}.selectionMode must be ALL or SELECTIVE")
        mode = meta["selectionMode"]
        if mode == "SELECTIVE":
            sel = meta.get("selectiveModeConfiguration")
            if not isinstance(sel, Mapping) or len(sel) != 1 or not set(sel) <= {"fieldsToInclude", "fieldsToExclude"}:
                raise ValidationError(
                    f"{mpath}.selectiveModeConfiguration needs exactly one of fieldsToInclude or fieldsToExclude"
                )
            (which, fields), = sel.items()
            if not isinstance(fields, list) or not 1 <= len(fields) <= 100 or not all(
                isinstance(f, Mapping) and isinstance(f.get("fieldName"), str) and f["fieldName"] for f in fields
            ):
                raise ValidationError(f"{mpath}.selectiveModeConfiguration.{which}: 1 to 100 objects with a fieldName")
            names = tuple(f["fieldName"] for f in fields)
            include, exclude = (names, None) if which == "fieldsToInclude" else (None, names)
    return RerankRequest(arn, m.group(3), m.group(2), n, dict(extra), mode, include, exclude)


# -------------------------------------------------------------------------------------------- HTTP


@dataclass
class HttpReranker:
    name: str
    url: str
    format: str = "tei"
    model: str | None = None
    api_key: str | None = None
    timeout: float = 30.0
    extra: dict[str, Any] | None = None

    def rerank(self, query: str, documents: Sequence[str], top_n: int) -> list[tuple[int, float]]:
        if self.format == "tei":
            body: dict[str, Any] = {"query": query, "texts": list(documents), "truncate": True}
        else:
            body = {"query": query, "documents": list(documents), "top_n": top_n}
            if self.model:
                body["model"] = self.model
        body.update(self.extra or {})
        payload = post_json(self.url, body, resource=self.name, what="reranker", api_key=self.api_key,
                            timeout=self.timeout)
        return _parse_results(payload, len(documents), f"reranker {self.name} at {redact_url(self.url)}")[:top_n]


def _parse_results(payload: Any, n: int, where: str) -> list[tuple[int, float]]:
    items = payload.get("results") if isinstance(payload, Mapping) else payload
    if not isinstance(items, list):
        raise DependencyFailedError(f"{where} answered an unexpected shape (no list of results)")
    out: list[tuple[int, float]] = []
    for it in items:
        if not isinstance(it, Mapping):
            raise DependencyFailedError(f"{where} answered a result that is not an object")
        idx = it.get("index")
        score = next((it[k] for k in ("score", "relevance_score", "relevanceScore") if k in it), None)
        if isinstance(idx, bool) or not isinstance(idx, int) or not 0 <= idx < n or not isinstance(score, int | float):
            raise DependencyFailedError(f"{where} answered a result without a valid index and score: {dict(it)!r}"[:300])
        out.append((idx, float(score)))
    if any(not 0.0 <= s <= 1.0 for _, s in out):  # raw logits: squash, order unchanged
        out = [(i, 1 / (1 + math.exp(-max(-60.0, min(60.0, s))))) for i, s in out]
    out.sort(key=lambda x: -x[1])
    return out


# ----------------------------------------------------------------------------------------- Bedrock


@dataclass
class BedrockReranker:
    name: str
    model_arn: str
    region: str
    additional_fields: dict[str, Any]
    client: Any

    def rerank(self, query: str, documents: Sequence[str], top_n: int) -> list[tuple[int, float]]:
        from botocore.exceptions import BotoCoreError, ClientError

        mc: dict[str, Any] = {"modelArn": self.model_arn}
        if self.additional_fields:
            mc["additionalModelRequestFields"] = self.additional_fields
        try:
            resp = self.client.rerank(
                queries=[{"type": "TEXT", "textQuery": {"text": query}}],
                sources=[
                    {"type": "INLINE", "inlineDocumentSource": {"type": "TEXT", "textDocument": {"text": d}}}
                    for d in documents
                ],
                rerankingConfiguration={
                    "type": "BEDROCK_RERANKING_MODEL",
                    "bedrockRerankingConfiguration": {"modelConfiguration": mc, "numberOfResults": top_n},
                },
            )
        except ClientError as exc:
            err = exc.response.get("Error", {})
            code, msg = err.get("Code", "Error"), err.get("Message", "")
            text = f"Bedrock rerank with {self.name} failed: {code}: {msg}"
            if code == "ValidationException":
                raise ValidationError(text) from None
            if code == "AccessDeniedException":
                raise AccessDeniedError(text) from None
            raise DependencyFailedError(text) from None
        except BotoCoreError as exc:
            raise DependencyFailedError(f"Bedrock rerank with {self.name} failed: {exc}") from None
        results = [{"index": r.get("index"), "score": r.get("relevanceScore")} for r in resp.get("results", [])]
        return _parse_results(results, len(documents), f"Bedrock rerank model {self.name}")[:top_n]


def _bedrock_client(region: str) -> Any:
    import boto3
    from botocore.config import Config

    endpoint = pgkb_config.current().bedrock_rerank_endpoint_url
    session = boto3.Session()
    config = Config(retries={"max_attempts": 3, "mode": "standard"})
    if session.get_credentials() is None:
        if not endpoint:
            return None
        from botocore import UNSIGNED

        config = config.merge(Config(signature_version=UNSIGNED))
    return session.client("bedrock-agent-runtime", region_name=session.region_name or region,
                          endpoint_url=endpoint, config=config)


# ---------------------------------------------------------------------------------------- resolving


def _configured(raw: str) -> dict[str, Any]:
    raw = raw.strip()
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValidationError(f"{RERANKERS_ENV} is not valid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise ValidationError(f"{RERANKERS_ENV} must be a JSON object mapping model ARNs or ids to rerankers")
    return data


def get_reranker(req: RerankRequest, env: Mapping[str, str] | None = None) -> Reranker:
    """The reranker for a validated request; ValidationError when none is usable.

    `env` stands in for the environment (tests); by default pgkb.config reads it."""
    table = _configured(pgkb_config.current().rerankers if env is None else env.get(RERANKERS_ENV, ""))
    env_value = pgkb_config.env_value if env is None else env.get
    entry = table.get(req.model_arn, table.get(req.model_id))
    if entry is not None:
        if isinstance(entry, str):
            entry = {"url": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("url"), str) or not entry["url"].startswith(
            ("http://", "https://")
        ):
            raise ValidationError(f"{RERANKERS_ENV}[{req.model_id!r}] needs an http(s) url")
        fmt = entry.get("format", "tei")
        if fmt not in ("tei", "cohere"):
            raise ValidationError(f"{RERANKERS_ENV}[{req.model_id!r}].format {fmt!r} must be tei or cohere")
        key_env = entry.get("api_key_env")
        api_key = env_value(key_env) if key_env else None
        if key_env and not api_key:
            raise ValidationError(f"{RERANKERS_ENV}[{req.model_id!r}] needs an API key in {key_env}")
        return HttpReranker(
            req.model_id, entry["url"], fmt, entry.get("model") or (req.model_id if fmt == "cohere" else None),
            api_key, float(entry.get("timeout", 30.0)), {**req.additional_fields, **(entry.get("extra") or {})},
        )
    client = _bedrock_client(req.region)
    if client is None:
        raise ValidationError(
            f"reranking model {req.model_arn} is not usable: no reranker is configured for it in {RERANKERS_ENV} "
            f"(e.g. {{\"{req.model_id}\": \"http://localhost:8080/rerank\"}}) and AWS credentials for Amazon "
            f"Bedrock are not configured"
        )
    return BedrockReranker(req.model_id, req.model_arn, req.region, req.additional_fields, client)


def _document(hit: SearchHit, req: RerankRequest) -> str:
    if req.metadata_mode is None:
        return hit.text
    meta = {k: v for k, v in hit.metadata.items() if k != "x-amz-bedrock-kb-chunk-id"}
    if req.include is not None:
        meta = {k: meta[k] for k in req.include if k in meta}
    elif req.exclude is not None:
        meta = {k: v for k, v in meta.items() if k not in req.exclude}
    lines = [f"{k}: {v if isinstance(v, str) else json.dumps(v)}" for k, v in meta.items()]
    return hit.text + ("\n\n" + "\n".join(lines) if lines else "")


def rerank_hits(
    query: str,
    hits: Sequence[SearchHit],
    config: Any,
    *,
    reranker: Reranker | None = None,
    env: Mapping[str, str] | None = None,
) -> list[SearchHit]:
    """Reorder retrieved hits with the configured reranker; keep `numberOfRerankedResults` of them
    (default: all) with the reranker's score. Validates the configuration even when there are no hits."""
    req = parse_config(config)
    return HitReranker(req, reranker or get_reranker(req, env)).rerank(query, hits)


@dataclass
class HitReranker:
    """A resolved reranking configuration, applied to search hits: `reranker_for(cfg).rerank(query, hits)`."""

    request: RerankRequest
    reranker: Reranker

    def rerank(self, query: str, hits: Sequence[SearchHit]) -> list[SearchHit]:
        if not hits:
            return []
        hits = list(hits)[:MAX_DOCUMENTS]
        top_n = min(self.request.number_of_results or len(hits), len(hits))
        ranked = self.reranker.rerank(query, [_document(h, self.request) for h in hits], top_n)
        seen: set[int] = set()
        out = []
        for idx, score in ranked:
            if idx not in seen:
                seen.add(idx)
                out.append(replace(hits[idx], score=max(0.0, min(1.0, score))))
        return out[:top_n]


def reranker_for(config: Any, env: Mapping[str, str] | None = None) -> HitReranker:
    """Validate Retrieve's rerankingConfiguration and resolve its reranker (before any model runs)."""
    req = parse_config(config)
    return HitReranker(req, get_reranker(req, env))
