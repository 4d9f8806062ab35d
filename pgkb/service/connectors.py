"""A data source's configuration read the same way whatever its shape.

Data sources of type S3 / LOCAL / CUSTOM (pgkb's VECTOR knowledge bases) and type
MANAGED_KNOWLEDGE_BASE_CONNECTOR (MANAGED knowledge bases; `connectorParameters.type` S3, CUSTOM, or
pgkb's LOCAL) resolve to one kind, its location, and whether the source is ACL-enabled.

connectorParameters accepted (contract 2026 §5.3):
- S3: `{"type": "S3", "connectionConfiguration": {"bucketName": ..}, "aclEnabled": bool,
  "aclConfiguration": {"globalAccessControlListS3Uri": "s3://same-bucket/.."},
  "filterConfiguration": {"inclusionPrefixes": ["one/prefix/"]}}`
- LOCAL (pgkb): `{"type": "LOCAL", "connectionConfiguration": {"path": "/folder"}, "aclEnabled": bool,
  "aclConfiguration": {"globalAccessControlListPath": "/folder/acl.json"}}`
- CUSTOM: `{"type": "CUSTOM", "aclEnabled": bool}`
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pgkb.errors import ValidationError

MANAGED_CONNECTOR = "MANAGED_KNOWLEDGE_BASE_CONNECTOR"


@dataclass(frozen=True)
class SourceSettings:
    kind: str  # S3 | LOCAL | CUSTOM
    acl_enabled: bool = False
    bucket: str | None = None
    prefix: str = ""
    path: str | None = None
    global_acl: str | None = None  # s3:// URI or local path of the global ACL file


def _obj(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValidationError(f"{where} must be an object")
    return value


def source_settings(cfg: Any) -> SourceSettings:
    """Validate a dataSourceConfiguration and say what it points at."""
    from pgkb.ingestion.sources import parse_bucket_arn, split_s3_uri

    cfg = _obj(cfg, "dataSourceConfiguration")
    kind = cfg.get("type")
    if kind == "S3":
        s3 = cfg.get("s3Configuration")
        if not isinstance(s3, dict) or not s3.get("bucketArn"):
            raise ValidationError("dataSourceConfiguration.s3Configuration.bucketArn is required")
        prefixes = s3.get("inclusionPrefixes")
        if prefixes is not None and (not isinstance(prefixes, list) or len(prefixes) != 1):
            raise ValidationError("s3Configuration.inclusionPrefixes must hold exactly one prefix")
        return SourceSettings("S3", bucket=parse_bucket_arn(s3["bucketArn"]), prefix=(prefixes or [""])[0])
    if kind == "LOCAL":
        local = cfg.get("localConfiguration")
        if not isinstance(local, dict) or not local.get("path"):
            raise ValidationError("dataSourceConfiguration.localConfiguration.path is required")
        return SourceSettings("LOCAL", path=str(local["path"]))
    if kind == "CUSTOM":
        return SourceSettings("CUSTOM")
    if kind != MANAGED_CONNECTOR:
        raise ValidationError(
            f"dataSourceConfiguration.type {kind!r} is not supported by pgkb"
            f" (S3, CUSTOM, LOCAL, or {MANAGED_CONNECTOR})"
        )
    where = "dataSourceConfiguration.managedKnowledgeBaseConnectorConfiguration"
    managed = _obj(cfg.get("managedKnowledgeBaseConnectorConfiguration"), where)
    params = _obj(managed.get("connectorParameters"), f"{where}.connectorParameters")
    where += ".connectorParameters"
    ctype = params.get("type")
    acl = params.get("aclEnabled", False)
    if not isinstance(acl, bool):
        raise ValidationError(f"{where}.aclEnabled must be true or false")
    conn = _obj(params.get("connectionConfiguration"), f"{where}.connectionConfiguration")
    acl_cfg = _obj(params.get("aclConfiguration"), f"{where}.aclConfiguration")
    if ctype == "S3":
        bucket = conn.get("bucketName")
        if not isinstance(bucket, str) or not bucket:
            raise ValidationError(f"{where}.connectionConfiguration.bucketName is required")
        prefixes = _obj(params.get("filterConfiguration"), f"{where}.filterConfiguration").get("inclusionPrefixes")
        if prefixes is not None and (not isinstance(prefixes, list) or len(prefixes) != 1):
            raise ValidationError(f"{where}.filterConfiguration.inclusionPrefixes must hold exactly one prefix")
        global_acl = acl_cfg.get("globalAccessControlListS3Uri")
        if global_acl is not None and (not isinstance(global_acl, str) or split_s3_uri(global_acl)[0] != bucket):
            raise ValidationError(
                f"{where}.aclConfiguration.globalAccessControlListS3Uri must be an s3:// URI in bucket {bucket}"
            )
        return SourceSettings("S3", acl, bucket=bucket, prefix=(prefixes or [""])[0], global_acl=global_acl)
    if ctype == "LOCAL":
        path = conn.get("path")
        if not isinstance(path, str) or not path:
            raise ValidationError(f"{where}.connectionConfiguration.path is required")
        global_acl = acl_cfg.get("globalAccessControlListPath")
        if global_acl is not None and (not isinstance(global_acl, str) or not global_acl):
            raise ValidationError(f"{where}.aclConfiguration.globalAccessControlListPath must be a file path")
        return SourceSettings("LOCAL", acl, path=path, global_acl=global_acl)
    if ctype == "CUSTOM":
        return SourceSettings("CUSTOM", acl)
    raise ValidationError(f"{where}.type {ctype!r} is not supported by pgkb (S3, CUSTOM, or LOCAL)")


def settings_of(ds: dict[str, Any]) -> SourceSettings:
    """Settings of a stored data source row (its configuration was validated when it was stored)."""
    return source_settings(ds["ds_config"])
