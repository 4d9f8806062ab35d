"""bedrock-agent's knowledge-base and data-source operations."""

from __future__ import annotations

import re
from typing import Any

from pgkb import kb_tags
from pgkb.errors import ModelNotAvailableError, ValidationError
from pgkb.retrieval.bm25 import install_bm25, uninstall_bm25
from pgkb.service import shapes
from pgkb.service.base import Collaborator
from pgkb.service.connectors import MANAGED_CONNECTOR, SourceSettings, source_settings
from pgkb.service.managed import (
    MANAGED_SCHEMA,
    check_metadata_configurations,
    check_user_context_mode,
    managed_embedding,
)
from pgkb.service.tags import MAX_TAGS
from pgkb.store import catalog, ddl
from pgkb.store.acl import drop_acl, enable_acl
from pgkb.store.vector_index import VECTOR_INDEX_TAG, VectorIndexKind, check_kind
from pgkb.store.vector_table import FieldMapping, TableRef, ensure_table

_NAME = re.compile(r"^([0-9a-zA-Z][_-]?){1,100}$")
DEFAULT_ROLE_ARN = "arn:aws:iam::000000000000:role/pgkb"
# Schemas no knowledge-base table may live in: PostgreSQL's own, and the catalog pgkb keeps.
RESERVED_SCHEMAS = frozenset({"information_schema", "pgkb"})


def check_name(name: Any, field: str = "name") -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValidationError(f"{field} {name!r} must match ([0-9a-zA-Z][_-]?){{1,100}}")
    return name


def check_description(description: Any) -> str | None:
    if description is None:
        return None
    if not isinstance(description, str) or not 1 <= len(description) <= 200:
        raise ValidationError("description must be 1 to 200 characters")
    return description


def default_table_name(kb_name: str) -> str:
    return "bedrock_integration." + re.sub(r"[^a-z0-9_]", "_", kb_name.lower())[:60]


class ControlPlane(Collaborator):
    # ------------------------------------------------------------------ knowledge bases

    def _embedding(self, kb_config: dict[str, Any]) -> tuple[str, int]:
        from pgkb.embeddings import get_spec
        from pgkb.embeddings.registry import resolve_dimensions

        if isinstance(kb_config, dict) and kb_config.get("type") == "MANAGED":
            return managed_embedding(kb_config)
        if not isinstance(kb_config, dict) or kb_config.get("type", "VECTOR") != "VECTOR":
            raise ValidationError("knowledgeBaseConfiguration.type must be VECTOR or MANAGED")
        vec = kb_config.get("vectorKnowledgeBaseConfiguration")
        if not isinstance(vec, dict) or not vec.get("embeddingModelArn"):
            raise ValidationError(
                "knowledgeBaseConfiguration.vectorKnowledgeBaseConfiguration.embeddingModelArn is required"
            )
        try:
            spec = get_spec(vec["embeddingModelArn"])
        except ModelNotAvailableError as exc:
            raise ValidationError(f"embeddingModelArn: {exc.message}") from None
        dims = (
            ((vec.get("embeddingModelConfiguration") or {}).get("bedrockEmbeddingModelConfiguration") or {}).get(
                "dimensions"
            )
        )
        return spec.id, resolve_dimensions(spec, dims)

    @staticmethod
    def _vector_index(kb_config: dict[str, Any], tags: dict[str, str] | None) -> VectorIndexKind:
        """The HNSW index of a table pgkb creates for the knowledge base (pgkb.store.vector_index):
        Bedrock's `embeddingDataType` BINARY is a binary-quantized index (with exact re-ranking) over
        the float vectors; the tag `pgkb:vectorIndex` (float32 | halfvec | binary) chooses any kind."""
        inner = kb_config.get("vectorKnowledgeBaseConfiguration") or kb_config.get("managedKnowledgeBaseConfiguration") or {}
        bedrock = ((inner.get("embeddingModelConfiguration") or {}).get("bedrockEmbeddingModelConfiguration") or {}) \
            if isinstance(inner, dict) else {}
        data_type = bedrock.get("embeddingDataType", "FLOAT32") if isinstance(bedrock, dict) else "FLOAT32"
        if data_type not in ("FLOAT32", "BINARY"):
            raise ValidationError(f"embeddingDataType {data_type!r} must be FLOAT32 or BINARY")
        tagged = (tags or {}).get(VECTOR_INDEX_TAG)
        kind = check_kind(tagged, f"tag {VECTOR_INDEX_TAG}") if tagged is not None else None
        if data_type == "BINARY":
            if kind not in (None, "binary"):
                raise ValidationError(f"embeddingDataType BINARY is a binary index; the tag {VECTOR_INDEX_TAG} says {kind}")
            return "binary"
        return kind or "float32"

    def home_storage(self, table_name: str) -> dict[str, Any]:
        """The `storageConfiguration` of a table in the database pgkb runs on, with Bedrock's default field
        mapping: the one place it is built (MANAGED storage, the default table, `pgkb kb create --table`, eval)."""
        return {
            "type": "RDS",
            "rdsConfiguration": {
                "resourceArn": self.cluster_arn,
                "credentialsSecretArn": self.secret_arn,
                "databaseName": self.database_name,
                "tableName": table_name,
                "fieldMapping": FieldMapping().to_bedrock(),
            },
        }

    def create_knowledge_base(
        self,
        *,
        name: str,
        knowledgeBaseConfiguration: dict[str, Any],
        roleArn: str = DEFAULT_ROLE_ARN,
        storageConfiguration: dict[str, Any] | None = None,
        description: str | None = None,
        clientToken: str | None = None,
        tags: dict[str, str] | None = None,
        userContextModeForRetrieval: str | None = None,
        trustedIdentitySources: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        with self.db.connection() as conn:
            existing = catalog.find_by_client_token(conn, "knowledge_bases", clientToken)
        if existing:
            return {"knowledgeBase": shapes.knowledge_base(existing, self.region, self.account)}
        check_name(name)
        check_description(description)
        if tags and len(tags) > MAX_TAGS:
            raise ValidationError(f"a resource has at most {MAX_TAGS} tags, not {len(tags)}")
        mode = check_user_context_mode(userContextModeForRetrieval, trustedIdentitySources)
        model_id, dims = self._embedding(knowledgeBaseConfiguration)
        index_kind = self._vector_index(knowledgeBaseConfiguration, tags)
        build = kb_tags.check(tags)  # pgkb's own tags; the HNSW build of a table pgkb creates
        self._check_model_available(model_id)
        kb_id = catalog.new_id()
        managed = knowledgeBaseConfiguration.get("type") == "MANAGED"
        if managed:
            if storageConfiguration is not None:
                raise ValidationError(
                    "storageConfiguration must be left out for a MANAGED knowledge base: pgkb creates its storage"
                )
            storageConfiguration = self.home_storage(f"{MANAGED_SCHEMA}.kb_{kb_id.lower()}")
        if storageConfiguration is None:
            storageConfiguration = self.home_storage(default_table_name(name))
        if not isinstance(storageConfiguration, dict) or storageConfiguration.get("type") != "RDS":
            raise ValidationError("storageConfiguration.type must be RDS (PostgreSQL) for pgkb")
        rds = storageConfiguration.get("rdsConfiguration")
        if not isinstance(rds, dict):
            raise ValidationError("storageConfiguration.rdsConfiguration is required")
        for key in ("resourceArn", "credentialsSecretArn", "databaseName", "tableName", "fieldMapping"):
            if not rds.get(key):
                raise ValidationError(f"storageConfiguration.rdsConfiguration.{key} is required")
        database = self.database_for(rds)
        table = TableRef.parse(rds["tableName"])
        if table.schema in RESERVED_SCHEMAS or table.schema.startswith("pg_"):
            raise ValidationError(
                f"storageConfiguration.rdsConfiguration.tableName {rds['tableName']!r}: schema {table.schema!r} "
                "belongs to PostgreSQL or to pgkb's catalog; use another schema (the default is bedrock_integration)"
            )
        mapping = FieldMapping.from_bedrock(rds["fieldMapping"])
        with database.connection() as conn:
            # Two creates over one table would race in CREATE TABLE/INDEX; the second waits here
            # (until the first's transaction commits) and then finds the table made.
            conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"pgkb.table:{table}",))
            ensure_table(conn, table, mapping, dims, model_id, vector_index=index_kind, build=build)
            if managed:
                enable_acl(conn, table)  # every MANAGED row carries its ACL (pgkb.store.acl)
            install_bm25(conn, table, mapping)  # statistics for HYBRID search, kept by triggers
        with self.db.connection() as conn:
            row = catalog.insert_knowledge_base(
                conn,
                {
                    "id": kb_id,
                    "name": name,
                    "description": description,
                    "role_arn": roleArn,
                    "model_id": model_id,
                    "dimensions": dims,
                    "kb_config": knowledgeBaseConfiguration,
                    "storage": storageConfiguration,
                    "status": "ACTIVE",
                    "client_token": clientToken,
                    "tags": tags or {},
                    "user_context_mode": mode,
                },
            )
        return {"knowledgeBase": shapes.knowledge_base(row, self.region, self.account)}

    @staticmethod
    def _check_model_available(model_id: str) -> None:
        """A model whose provider is not configured is refused now, not at the first sync."""
        from pgkb.embeddings import get_spec

        if get_spec(model_id).provider != "local":
            from pgkb.embeddings import get_model

            try:
                get_model(model_id)
            except ModelNotAvailableError as exc:
                raise ValidationError(exc.message) from None

    def get_knowledge_base(self, *, knowledgeBaseId: str) -> dict[str, Any]:
        with self.db.connection() as conn:
            row = catalog.get_knowledge_base(conn, knowledgeBaseId)
        return {"knowledgeBase": shapes.knowledge_base(row, self.region, self.account)}

    def list_knowledge_bases(self, *, maxResults: int | None = None, nextToken: str | None = None) -> dict[str, Any]:
        offset, limit = shapes.decode_token(nextToken), shapes.page_limit(maxResults)
        with self.db.connection() as conn:
            rows = catalog.list_knowledge_bases(conn, offset, limit + 1)
        rows, token = shapes.paged(rows, offset, limit)
        out: dict[str, Any] = {"knowledgeBaseSummaries": [shapes.knowledge_base_summary(r) for r in rows]}
        if token:
            out["nextToken"] = token
        return out

    def update_knowledge_base(
        self,
        *,
        knowledgeBaseId: str,
        name: str,
        knowledgeBaseConfiguration: dict[str, Any],
        roleArn: str = DEFAULT_ROLE_ARN,
        storageConfiguration: dict[str, Any] | None = None,
        description: str | None = None,
        userContextModeForRetrieval: str | None = None,
        trustedIdentitySources: list[dict[str, Any]] | None = None,
        metadataConfigurations: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        check_name(name)
        check_description(description)
        with self.db.connection() as conn:
            row = catalog.get_knowledge_base(conn, knowledgeBaseId)
            managed = row["kb_config"].get("type") == "MANAGED"
            if not isinstance(knowledgeBaseConfiguration, dict) or (
                (knowledgeBaseConfiguration.get("type") == "MANAGED") != managed
            ):
                raise ValidationError("knowledgeBaseConfiguration.type cannot change after creation")
            if self._embedding(knowledgeBaseConfiguration) != (row["model_id"], row["dimensions"]):
                raise ValidationError(
                    "knowledgeBaseConfiguration cannot change: the embedding model and dimensions are fixed"
                )
            if managed and storageConfiguration is not None:
                raise ValidationError("storageConfiguration must be left out for a MANAGED knowledge base")
            if storageConfiguration is not None and storageConfiguration != row["storage"]:
                raise ValidationError("storageConfiguration cannot change after creation")
            fields: dict[str, Any] = {
                "name": name, "description": description, "role_arn": roleArn, "kb_config": knowledgeBaseConfiguration,
            }
            if userContextModeForRetrieval is not None or trustedIdentitySources is not None:
                fields["user_context_mode"] = check_user_context_mode(
                    userContextModeForRetrieval or row["user_context_mode"], trustedIdentitySources
                )
            if metadataConfigurations is not None:
                if not managed:
                    raise ValidationError("metadataConfigurations is for MANAGED knowledge bases")
                fields["metadata_configurations"] = check_metadata_configurations(metadataConfigurations)
            row = catalog.update_knowledge_base(conn, row["id"], **fields)
        self.forget(row["id"])
        return {"knowledgeBase": shapes.knowledge_base(row, self.region, self.account)}

    def delete_knowledge_base(self, *, knowledgeBaseId: str) -> dict[str, Any]:
        kb = self.resolve(knowledgeBaseId)
        with self.db.connection() as conn:
            sources = catalog.list_data_sources(conn, kb.id, 0, 100000)
        for ds in sources:
            self._delete_source_rows(kb.id, ds)
        with self.db.connection() as conn:
            catalog.delete_knowledge_base(conn, kb.id)
        if kb.managed:  # pgkb owns a MANAGED knowledge base's storage: it goes with it
            with kb.database.connection() as conn:
                uninstall_bm25(conn, kb.table)
                conn.execute(ddl.drop_table(kb.table))
                drop_acl(conn, kb.table)
        self.forget(kb.id)
        return {"knowledgeBaseId": kb.id, "status": "DELETING"}

    # ------------------------------------------------------------------ data sources

    @staticmethod
    def _source_type(cfg: dict[str, Any], kb_row: dict[str, Any] | None = None) -> SourceSettings:
        if not isinstance(cfg, dict):
            raise ValidationError("dataSourceConfiguration is required")
        settings = source_settings(cfg)
        if kb_row is not None and cfg.get("type") == MANAGED_CONNECTOR and kb_row["kb_config"].get("type") != "MANAGED":
            raise ValidationError(
                f"dataSourceConfiguration.type {MANAGED_CONNECTOR} needs a MANAGED knowledge base"
                f" ({kb_row['id']} is {kb_row['kb_config'].get('type', 'VECTOR')})"
            )
        return settings

    @staticmethod
    def _check_ingestion(cfg: dict[str, Any] | None) -> dict[str, Any]:
        from pgkb.chunking import validate_chunking_configuration

        cfg = cfg or {}
        if not isinstance(cfg, dict):
            raise ValidationError("vectorIngestionConfiguration must be an object")
        chunking = cfg.get("chunkingConfiguration")
        if isinstance(chunking, dict) and chunking.get("chunkingStrategy") == "DEFAULT":
            # MANAGED's DEFAULT is pgkb's default: fixed 300 tokens, 20% overlap.
            cfg = {k: v for k, v in cfg.items() if k != "chunkingConfiguration"}
        validate_chunking_configuration(cfg.get("chunkingConfiguration"))
        for unsupported in ("customTransformationConfiguration", "contextEnrichmentConfiguration"):
            if cfg.get(unsupported):
                raise ValidationError(f"vectorIngestionConfiguration.{unsupported} is not supported by pgkb")
        return cfg

    def create_data_source(
        self,
        *,
        knowledgeBaseId: str,
        name: str,
        dataSourceConfiguration: dict[str, Any],
        description: str | None = None,
        dataDeletionPolicy: str = "DELETE",
        vectorIngestionConfiguration: dict[str, Any] | None = None,
        serverSideEncryptionConfiguration: dict[str, Any] | None = None,
        clientToken: str | None = None,
    ) -> dict[str, Any]:
        with self.db.connection() as conn:
            existing = catalog.find_by_client_token(conn, "data_sources", clientToken)
            if existing:
                return {"dataSource": shapes.data_source(existing)}
            kb = catalog.get_knowledge_base(conn, knowledgeBaseId)
        check_name(name)
        check_description(description)
        settings = self._source_type(dataSourceConfiguration, kb)
        ingestion = self._check_ingestion(vectorIngestionConfiguration)
        if dataDeletionPolicy not in ("DELETE", "RETAIN"):
            raise ValidationError("dataDeletionPolicy must be DELETE or RETAIN")
        with self.db.connection() as conn:
            row = catalog.insert_data_source(
                conn,
                {
                    "id": catalog.new_id(),
                    "kb_id": kb["id"],
                    "name": name,
                    "description": description,
                    "source_type": settings.kind,
                    "acl_enabled": settings.acl_enabled,
                    "ds_config": dataSourceConfiguration,
                    "ingestion": ingestion,
                    "data_deletion_policy": dataDeletionPolicy,
                    "status": "AVAILABLE",
                    "client_token": clientToken,
                },
            )
        return {"dataSource": shapes.data_source(row)}

    def get_data_source(self, *, knowledgeBaseId: str, dataSourceId: str) -> dict[str, Any]:
        with self.db.connection() as conn:
            kb = catalog.get_knowledge_base(conn, knowledgeBaseId)
            row = catalog.get_data_source(conn, kb["id"], dataSourceId)
        return {"dataSource": shapes.data_source(row)}

    def list_data_sources(
        self, *, knowledgeBaseId: str, maxResults: int | None = None, nextToken: str | None = None
    ) -> dict[str, Any]:
        offset, limit = shapes.decode_token(nextToken), shapes.page_limit(maxResults)
        with self.db.connection() as conn:
            kb = catalog.get_knowledge_base(conn, knowledgeBaseId)
            rows = catalog.list_data_sources(conn, kb["id"], offset, limit + 1)
        rows, token = shapes.paged(rows, offset, limit)
        out: dict[str, Any] = {"dataSourceSummaries": [shapes.data_source_summary(r) for r in rows]}
        if token:
            out["nextToken"] = token
        return out

    def update_data_source(
        self,
        *,
        knowledgeBaseId: str,
        dataSourceId: str,
        name: str,
        dataSourceConfiguration: dict[str, Any],
        description: str | None = None,
        dataDeletionPolicy: str | None = None,
        vectorIngestionConfiguration: dict[str, Any] | None = None,
        serverSideEncryptionConfiguration: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        check_name(name)
        check_description(description)
        with self.db.connection() as conn:
            kb = catalog.get_knowledge_base(conn, knowledgeBaseId)
            row = catalog.get_data_source(conn, kb["id"], dataSourceId)
        settings = self._source_type(dataSourceConfiguration, kb)
        if settings.kind != row["source_type"] or dataSourceConfiguration.get("type") != row["ds_config"].get("type"):
            raise ValidationError("dataSourceConfiguration.type cannot change")
        if settings.acl_enabled != row["acl_enabled"]:
            raise ValidationError(
                "connectorParameters.aclEnabled cannot change after the data source is created;"
                " create another data source"
            )
        fields: dict[str, Any] = {"name": name, "description": description, "ds_config": dataSourceConfiguration}
        if vectorIngestionConfiguration is not None:
            ingestion = self._check_ingestion(vectorIngestionConfiguration)
            if ingestion.get("chunkingConfiguration") != row["ingestion"].get("chunkingConfiguration"):
                raise ValidationError("vectorIngestionConfiguration.chunkingConfiguration cannot change")
            fields["ingestion"] = ingestion
        if dataDeletionPolicy is not None:
            if dataDeletionPolicy not in ("DELETE", "RETAIN"):
                raise ValidationError("dataDeletionPolicy must be DELETE or RETAIN")
            fields["data_deletion_policy"] = dataDeletionPolicy
        with self.db.connection() as conn:
            row = catalog.update_data_source(conn, row["id"], **fields)
        return {"dataSource": shapes.data_source(row)}

    def _delete_source_rows(self, kb_id: str, ds: dict[str, Any]) -> None:
        """Remove a data source's vectors when its deletion policy says so."""
        if ds["data_deletion_policy"] != "DELETE":
            return
        from pgkb.ingestion.writer import DocumentWriter

        kb = self.resolve(kb_id)
        with self.db.connection() as conn:
            known = catalog.documents_of(conn, ds["id"])
        uris = list(known)
        writer = DocumentWriter(self.db, kb, ds["id"])
        for i in range(0, len(uris), 1000):
            writer.delete(uris[i : i + 1000], known)

    def delete_data_source(self, *, knowledgeBaseId: str, dataSourceId: str) -> dict[str, Any]:
        with self.db.connection() as conn:
            kb = catalog.get_knowledge_base(conn, knowledgeBaseId)
            ds = catalog.get_data_source(conn, kb["id"], dataSourceId)
        self._delete_source_rows(kb["id"], ds)
        with self.db.connection() as conn:
            catalog.delete_data_source(conn, ds["id"])
        return {"knowledgeBaseId": kb["id"], "dataSourceId": ds["id"], "status": "DELETING"}
