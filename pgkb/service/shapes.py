"""Catalog rows → the exact dicts boto3 returns for bedrock-agent operations."""

from __future__ import annotations

import base64
import json
from typing import Any

from pgkb.errors import ValidationError
from pgkb.ingestion.sync import STAT_NAMES


def _drop_empty(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None and v != [] and v != {}}


def kb_arn(region: str, account: str, kb_id: str) -> str:
    return f"arn:aws:bedrock:{region}:{account}:knowledge-base/{kb_id}"


def knowledge_base(row: dict[str, Any], region: str, account: str) -> dict[str, Any]:
    managed = (row["kb_config"] or {}).get("type") == "MANAGED"
    out = _drop_empty(
        {
            "knowledgeBaseId": row["id"],
            "name": row["name"],
            "knowledgeBaseArn": kb_arn(region, account, row["id"]),
            "description": row["description"],
            "roleArn": row["role_arn"],
            "knowledgeBaseConfiguration": row["kb_config"],
            # MANAGED: the storage is pgkb's own, not part of the API (Bedrock returns none).
            "storageConfiguration": None if managed else row["storage"],
            "status": row["status"],
            "createdAt": row["created_at"],
            "updatedAt": row["updated_at"],
            "failureReasons": row["failure_reasons"],
            "userContextModeForRetrieval": row.get("user_context_mode") if managed else None,
        }
    )
    if managed and row.get("metadata_configurations") is not None:
        out["metadataConfigurations"] = row["metadata_configurations"]
    return out


def knowledge_base_summary(row: dict[str, Any]) -> dict[str, Any]:
    return _drop_empty(
        {
            "knowledgeBaseId": row["id"],
            "name": row["name"],
            "description": row["description"],
            "status": row["status"],
            "updatedAt": row["updated_at"],
        }
    )


def data_source(row: dict[str, Any]) -> dict[str, Any]:
    return _drop_empty(
        {
            "knowledgeBaseId": row["kb_id"],
            "dataSourceId": row["id"],
            "name": row["name"],
            "status": row["status"],
            "description": row["description"],
            "dataSourceConfiguration": row["ds_config"],
            "vectorIngestionConfiguration": row["ingestion"],
            "dataDeletionPolicy": row["data_deletion_policy"],
            "createdAt": row["created_at"],
            "updatedAt": row["updated_at"],
            "failureReasons": row["failure_reasons"],
        }
    )


def data_source_summary(row: dict[str, Any]) -> dict[str, Any]:
    return _drop_empty(
        {
            "knowledgeBaseId": row["kb_id"],
            "dataSourceId": row["id"],
            "name": row["name"],
            "status": row["status"],
            "description": row["description"],
            "updatedAt": row["updated_at"],
        }
    )


def statistics(stats: dict[str, Any]) -> dict[str, int]:
    return {k: int(stats.get(k, 0)) for k in STAT_NAMES}


def ingestion_job(row: dict[str, Any]) -> dict[str, Any]:
    out = _drop_empty(
        {
            "knowledgeBaseId": row["kb_id"],
            "dataSourceId": row["ds_id"],
            "ingestionJobId": row["id"],
            "description": row["description"],
            "status": row["status"],
            "failureReasons": row["failure_reasons"],
            "startedAt": row["started_at"],
            "updatedAt": row["updated_at"],
        }
    )
    out["statistics"] = statistics(row["statistics"])
    return out


def ingestion_job_summary(row: dict[str, Any]) -> dict[str, Any]:
    out = ingestion_job(row)
    out.pop("failureReasons", None)
    return out


def document_identifier(uri: str, source_type: str) -> dict[str, Any]:
    if source_type == "S3":
        return {"dataSourceType": "S3", "s3": {"uri": uri}}
    return {"dataSourceType": "CUSTOM", "custom": {"id": uri}}


def document_detail(
    kb_id: str, ds_id: str, source_type: str, uri: str, status: str, reason: str | None, updated_at: Any
) -> dict[str, Any]:
    return _drop_empty(
        {
            "knowledgeBaseId": kb_id,
            "dataSourceId": ds_id,
            "status": status,
            "identifier": document_identifier(uri, source_type),
            "statusReason": reason,
            "updatedAt": updated_at,
        }
    )


def location_for(uri: str) -> dict[str, Any]:
    if uri.startswith("s3://"):
        return {"type": "S3", "s3Location": {"uri": uri}}
    return {"type": "CUSTOM", "customDocumentLocation": {"id": uri}}


# ---------------------------------------------------------------- pagination


def encode_token(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"o": offset}).encode()).decode().rstrip("=")


def decode_token(token: str | None) -> int:
    if not token:
        return 0
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        offset = json.loads(raw)["o"]
        if not isinstance(offset, int) or offset < 0:
            raise ValueError
        return offset
    except Exception:
        raise ValidationError("nextToken is not a token this service issued") from None


def page_limit(max_results: int | None, default: int = 100) -> int:
    if max_results is None:
        return default
    if not isinstance(max_results, int) or isinstance(max_results, bool) or not 1 <= max_results <= 1000:
        raise ValidationError("maxResults must be an integer from 1 to 1000")
    return max_results


def paged(rows: list[Any], offset: int, limit: int) -> tuple[list[Any], str | None]:
    """`rows` was fetched with limit+1 to learn whether another page exists."""
    if len(rows) > limit:
        return rows[:limit], encode_token(offset + limit)
    return rows, None
