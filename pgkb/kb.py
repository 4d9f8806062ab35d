"""A knowledge base resolved for work: its catalog row, vector table, field mapping, model and database."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pgkb import kb_tags
from pgkb.db import Database
from pgkb.store.vector_table import FieldMapping, TableRef


@dataclass
class KnowledgeBase:
    row: dict[str, Any]
    table: TableRef
    mapping: FieldMapping
    database: Database  # where the vector table lives
    attribute_cols: dict[str, str] = field(default_factory=dict)  # per-attribute metadata columns

    @property
    def id(self) -> str:
        return str(self.row["id"])

    @property
    def managed(self) -> bool:
        """A MANAGED knowledge base: pgkb owns its table, whose rows carry ACL columns."""
        return (self.row.get("kb_config") or {}).get("type") == "MANAGED"

    @property
    def ef_search(self) -> int | None:
        """The search depth its tag `pgkb:efSearch` sets (checked when set); None: pgkb's rule."""
        return kb_tags.ef_search(self.row.get("tags"))

    @property
    def bm25_postings(self) -> int | None:
        """BM25 postings read per query term, from its tag `pgkb:bm25PostingsPerTerm`; None: pgkb's."""
        return kb_tags.bm25_postings(self.row.get("tags"))

    @property
    def model_id(self) -> str:
        return str(self.row["model_id"])

    @property
    def dimensions(self) -> int:
        return int(self.row["dimensions"])

    def model(self) -> Any:
        from pgkb.embeddings import get_model

        return get_model(self.model_id, self.dimensions)
