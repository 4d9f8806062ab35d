"""MANAGED knowledge bases (contract 2026 §5): configuration checks.

pgkb owns a MANAGED knowledge base's storage: a table `pgkb_managed.kb_<id>` in its own database,
in Bedrock's layout plus the ACL columns of pgkb.store.acl. `embeddingModelType` MANAGED (the
default) is pgkb's default model; CUSTOM takes any model of pgkb's registry by ARN or id.
"""

from __future__ import annotations

import re
from typing import Any

from pgkb.errors import ModelNotAvailableError, ValidationError

MANAGED_SCHEMA = "pgkb_managed"
USER_CONTEXT_MODES = ("API_INPUT_ONLY", "IDENTITY_ENHANCED_SESSION_ELSE_API_INPUT", "IDENTITY_ENHANCED_SESSION")
_META_NAME = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9_-]*$")


def managed_embedding(kb_config: dict[str, Any]) -> tuple[str, int]:
    """(registry model id, dimensions) of a MANAGED knowledgeBaseConfiguration."""
    from pgkb.embeddings import get_spec
    from pgkb.embeddings.registry import DEFAULT_MODEL_ID, resolve_dimensions

    where = "knowledgeBaseConfiguration.managedKnowledgeBaseConfiguration"
    if kb_config.get("vectorKnowledgeBaseConfiguration"):
        raise ValidationError("a MANAGED knowledge base takes managedKnowledgeBaseConfiguration, not vectorKnowledgeBaseConfiguration")
    cfg = kb_config.get("managedKnowledgeBaseConfiguration") or {}
    if not isinstance(cfg, dict):
        raise ValidationError(f"{where} must be an object")
    kind = cfg.get("embeddingModelType", "MANAGED")
    if cfg.get("supplementalDataStorageConfiguration"):
        raise ValidationError(f"{where}.supplementalDataStorageConfiguration is not supported: pgkb's models embed text only")
    if kind == "MANAGED":
        if cfg.get("embeddingModelArn") or cfg.get("embeddingModelConfiguration"):
            raise ValidationError(
                f"{where}: embeddingModelArn and embeddingModelConfiguration are for embeddingModelType CUSTOM;"
                " MANAGED uses pgkb's default model"
            )
        spec = get_spec(DEFAULT_MODEL_ID)
        return spec.id, resolve_dimensions(spec, None)
    if kind != "CUSTOM":
        raise ValidationError(f"{where}.embeddingModelType must be MANAGED or CUSTOM, not {kind!r}")
    arn = cfg.get("embeddingModelArn")
    if not isinstance(arn, str) or not arn:
        raise ValidationError(f"{where}.embeddingModelArn is required with embeddingModelType CUSTOM")
    try:
        spec = get_spec(arn)
    except ModelNotAvailableError as exc:
        raise ValidationError(f"embeddingModelArn: {exc.message}") from None
    dims = ((cfg.get("embeddingModelConfiguration") or {}).get("bedrockEmbeddingModelConfiguration") or {}).get(
        "dimensions"
    )
    return spec.id, resolve_dimensions(spec, dims)


def check_user_context_mode(mode: Any, trusted: Any) -> str:
    """pgkb takes the user from the request's userContext only (API_INPUT_ONLY)."""
    mode = mode or "API_INPUT_ONLY"
    if mode not in USER_CONTEXT_MODES:
        raise ValidationError(f"userContextModeForRetrieval must be one of {', '.join(USER_CONTEXT_MODES)}")
    if mode != "API_INPUT_ONLY":
        raise ValidationError(
            f"userContextModeForRetrieval {mode} is not supported by pgkb: it has no identity-enhanced"
            " sessions (IAM Identity Center); use API_INPUT_ONLY and pass userContext.userId on each request"
        )
    if trusted:
        raise ValidationError(
            "trustedIdentitySources apply only to identity-enhanced sessions, which pgkb does not support"
        )
    return str(mode)


def check_metadata_configurations(items: Any) -> list[dict[str, Any]]:
    if not isinstance(items, list) or len(items) > 30:
        raise ValidationError("metadataConfigurations must be a list of at most 30 configurations")
    names = set()
    for i, m in enumerate(items):
        if not isinstance(m, dict) or not isinstance(m.get("name"), str) or not _META_NAME.match(m["name"]):
            raise ValidationError(f"metadataConfigurations[{i}].name must match [a-zA-Z0-9_][a-zA-Z0-9_-]*")
        if len(m["name"]) > 200 or m["name"] in names:
            raise ValidationError(f"metadataConfigurations[{i}].name is too long or repeated")
        names.add(m["name"])
        if m.get("type") not in ("STRING", "STRING_LIST"):
            raise ValidationError(f"metadataConfigurations[{i}].type must be STRING or STRING_LIST")
        if m.get("searchability") not in ("ENABLED", "DISABLED"):
            raise ValidationError(f"metadataConfigurations[{i}].searchability must be ENABLED or DISABLED")
    return items
