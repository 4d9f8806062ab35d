"""The vector table in Bedrock's Aurora layout: create it, validate an existing one, write and delete rows.

Layout (contract §4.2): `id uuid PRIMARY KEY, embedding vector(n), chunks text, metadata json,
custom_metadata jsonb` with an HNSW cosine index on the vector, a GIN full-text index on
`to_tsvector('simple', chunks)` and a GIN index on `custom_metadata` (jsonb_path_ops on tables pgkb
creates; either operator class on tables it validates). Column names come from the knowledge base's
field mapping.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from pgkb.errors import ValidationError
from pgkb.store import ddl
from pgkb.store.vector_index import HnswBuild, VectorIndexKind, classify

_COLUMN = re.compile(r"^[a-zA-Z0-9_\-]{1,63}$")
_TABLE = re.compile(r"^[a-zA-Z0-9_\.\-]{1,63}$")

DEFAULT_SCHEMA = "bedrock_integration"

# System keys of a row's `metadata` json (Bedrock's names, plus pgkb's parent link for HIERARCHICAL).
SOURCE_URI = "x-amz-bedrock-kb-source-uri"
DATA_SOURCE_ID = "x-amz-bedrock-kb-data-source-id"
PAGE_NUMBER = "x-amz-bedrock-kb-document-page-number"
CHUNK_ID = "x-amz-bedrock-kb-chunk-id"
PARENT_ID = "x-pgkb-parent-id"
# Namespace for chunk ids: uuid5(namespace, "<data source id>/<document uri>#<position>").
CHUNK_NAMESPACE = uuid.UUID("4f1d9a52-5b1c-4a55-9d63-7a0c2b8f6e11")


def chunk_id(ds_id: str, uri: str, position: int) -> uuid.UUID:
    return uuid.uuid5(CHUNK_NAMESPACE, f"{ds_id}/{uri}#{position}")


@dataclass(frozen=True)
class FieldMapping:
    """Bedrock's `rdsConfiguration.fieldMapping`, with the guide's default names."""

    primary_key: str = "id"
    vector: str = "embedding"
    text: str = "chunks"
    metadata: str = "metadata"
    custom_metadata: str | None = "custom_metadata"

    @classmethod
    def from_bedrock(cls, fm: dict[str, Any] | None) -> FieldMapping:
        fm = fm or {}
        m = cls(
            primary_key=fm.get("primaryKeyField", "id"),
            vector=fm.get("vectorField", "embedding"),
            text=fm.get("textField", "chunks"),
            metadata=fm.get("metadataField", "metadata"),
            custom_metadata=fm.get("customMetadataField") if fm else "custom_metadata",
        )
        for name, value in m.to_bedrock().items():
            if not _COLUMN.match(value):
                raise ValidationError(
                    f"fieldMapping.{name}: {value!r} is not a valid column name ([a-zA-Z0-9_-], at most 63 characters)"
                )
        return m

    def to_bedrock(self) -> dict[str, str]:
        """The mapping in Bedrock's shape (also: which column each field names)."""
        out = {
            "primaryKeyField": self.primary_key,
            "vectorField": self.vector,
            "textField": self.text,
            "metadataField": self.metadata,
        }
        if self.custom_metadata:
            out["customMetadataField"] = self.custom_metadata
        return out


@dataclass(frozen=True)
class TableRef:
    schema: str
    name: str

    @classmethod
    def parse(cls, table_name: str) -> TableRef:
        if not _TABLE.match(table_name or ""):
            raise ValidationError(
                f"tableName {table_name!r} must match [a-zA-Z0-9_.-]{{1,63}} (optionally schema-qualified)"
            )
        if "." in table_name:
            schema, _, name = table_name.partition(".")
            if not schema or not name or "." in name:
                raise ValidationError(f"tableName {table_name!r} must be 'table' or 'schema.table'")
            return cls(schema, name)
        return cls(DEFAULT_SCHEMA, table_name)

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass
class Problem:
    """One thing wrong with an existing table, with the SQL that would fix it."""

    column: str | None
    expected: str
    found: str
    fix: str

    def message(self, table: TableRef) -> str:
        where = f"column {self.column!r} of {table}" if self.column else f"table {table}"
        return f"{where}: expected {self.expected}, found {self.found}. Fix: {self.fix}"


@dataclass
class TableInfo:
    exists: bool
    columns: dict[str, str] = field(default_factory=dict)  # name -> formatted type
    indexes: list[str] = field(default_factory=list)  # index definitions
    primary_key: list[str] = field(default_factory=list)


def inspect_table(conn: psycopg.Connection, table: TableRef) -> TableInfo:
    row = conn.execute(
        "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')",
        (table.schema, table.name),
    ).fetchone()
    if not row:
        return TableInfo(exists=False)
    oid = row[0]
    cols = {
        name: typ
        for name, typ in conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped",
            (oid,),
        )
    }
    idx = [
        r[0]
        for r in conn.execute(
            "SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = %s", (oid,)
        )
    ]
    pk = [
        r[0]
        for r in conn.execute(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid"
            " AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s AND i.indisprimary",
            (oid,),
        )
    ]
    return TableInfo(exists=True, columns=cols, indexes=idx, primary_key=pk)


def create_table(
    conn: psycopg.Connection, table: TableRef, mapping: FieldMapping, dimensions: int,
    vector_index: VectorIndexKind = "float32", build: HnswBuild | None = None,
) -> None:
    """Create the table and its indexes (one transaction; the caller commits). `vector_index`: the
    HNSW index's kind, `build` its m and ef_construction (pgkb.store.vector_index)."""
    build = build or HnswBuild()
    for stmt in ddl.table_statements(table, mapping, dimensions, vector_index, m=build.m,
                                     ef_construction=build.ef_construction):
        conn.execute(stmt)


def _fix(stmt: sql.Composable) -> str:
    return ddl.render(stmt) + ";"


def _as_indexdef(column: str) -> str:
    """A column as pg_get_indexdef prints it: quoted only when it has to be."""
    return column if column.isidentifier() and column.lower() == column else ddl.render(sql.Identifier(column))


def _has_index(indexes: Iterable[str], method: str, needle: str) -> bool:
    return any(f"USING {method} " in d and needle in d for d in indexes)


def validate_table(
    conn: psycopg.Connection, table: TableRef, mapping: FieldMapping, dimensions: int
) -> list[Problem]:
    """Check an existing table against the knowledge base's mapping and model. Empty list = usable."""
    info = inspect_table(conn, table)
    if not info.exists:
        return [Problem(None, "an existing table", "none",
                        "; ".join(ddl.render(s) for s in ddl.table_statements(table, mapping, dimensions)))]
    problems: list[Problem] = []

    def col(name: str, expected: Sequence[str], ddl_type: str) -> None:
        found = info.columns.get(name)
        type_ = sql.SQL(ddl_type)  # one of the type names below
        if found is None:
            problems.append(Problem(name, ddl_type, "no such column", _fix(ddl.add_column(table, name, type_))))
        elif not any(found == e or (e.endswith("(") and found.startswith(e)) for e in expected):
            problems.append(Problem(name, ddl_type, found, _fix(ddl.alter_column_type(table, name, type_))))

    col(mapping.primary_key, ["uuid"], "uuid")
    col(mapping.vector, [f"vector({dimensions})"], f"vector({dimensions})")
    col(mapping.text, ["text", "character varying"], "text")
    col(mapping.metadata, ["json", "jsonb"], "json")
    if mapping.custom_metadata:
        col(mapping.custom_metadata, ["jsonb"], "jsonb")
    if mapping.primary_key in info.columns and info.primary_key != [mapping.primary_key]:
        problems.append(
            Problem(mapping.primary_key, "the primary key", f"primary key {info.primary_key or 'none'}",
                    _fix(ddl.add_primary_key(table, mapping.primary_key)))
        )
    stmts = [_fix(s) for s in ddl.vector_indexes(table, mapping)]
    vec, txt = _as_indexdef(mapping.vector), _as_indexdef(mapping.text)
    if not any(classify(d, mapping.vector) for d in info.indexes):  # float32, halfvec or binary (vector_index)
        other = [d for d in info.indexes if "USING hnsw " in d and vec in d]
        found = f"HNSW index with another operator class ({other[0]})" if other else "no HNSW cosine index"
        problems.append(Problem(mapping.vector, "an HNSW index with vector_cosine_ops", found, stmts[0]))
    if not _has_index(info.indexes, "gin", f"to_tsvector('simple'::regconfig, {txt})"):
        problems.append(
            Problem(mapping.text, "a GIN full-text index (the chunks column must be indexed)", "none", stmts[1])
        )
    if mapping.custom_metadata:
        cm = _as_indexdef(mapping.custom_metadata)
        if not _has_index(info.indexes, "gin", f"({cm})") and not _has_index(info.indexes, "gin", f"({cm} jsonb_path_ops)"):
            problems.append(Problem(mapping.custom_metadata, "a GIN index on the custom metadata", "none", stmts[2]))
    return problems


_MODEL_TAG = "pgkb embedding model: "


def vector_model(conn: psycopg.Connection, table: TableRef, mapping: FieldMapping) -> str | None:
    """The model id recorded on the vector column (None for tables pgkb did not tag)."""
    row = conn.execute(
        "SELECT col_description(c.oid, a.attnum) FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_attribute a ON a.attrelid = c.oid"
        " WHERE n.nspname = %s AND c.relname = %s AND a.attname = %s",
        (table.schema, table.name, mapping.vector),
    ).fetchone()
    comment = row[0] if row else None
    return comment[len(_MODEL_TAG):] if comment and comment.startswith(_MODEL_TAG) else None


def _tag_model(conn: psycopg.Connection, table: TableRef, mapping: FieldMapping, model_id: str) -> None:
    conn.execute(
        sql.SQL("COMMENT ON COLUMN {}.{} IS {}").format(
            table.ident, sql.Identifier(mapping.vector), sql.Literal(_MODEL_TAG + model_id)
        )
    )


def ensure_table(
    conn: psycopg.Connection, table: TableRef, mapping: FieldMapping, dimensions: int, model_id: str | None = None,
    vector_index: VectorIndexKind = "float32", build: HnswBuild | None = None,
) -> bool:
    """Create the table if it does not exist, else validate it. Returns True when created.

    `vector_index` (and `build`) is the HNSW index a new table gets; an existing table keeps the one
    it has.

    The vector column records which model wrote it: vectors of two models (or two variants of one
    model) in one table would make every score meaningless, so a different model is refused.
    Raises ValidationError naming the table, each problem and the SQL that fixes it.
    """
    if not inspect_table(conn, table).exists:
        create_table(conn, table, mapping, dimensions, vector_index, build)
        if model_id:
            _tag_model(conn, table, mapping, model_id)
        return True
    problems = validate_table(conn, table, mapping, dimensions)
    if problems:
        detail = " | ".join(p.message(table) for p in problems)
        raise ValidationError(f"The knowledge base storage configuration provided is invalid... {detail}")
    if model_id:
        recorded = vector_model(conn, table, mapping)
        if recorded and recorded != model_id:
            raise ValidationError(
                f"The knowledge base storage configuration provided is invalid... table {table} holds vectors"
                f" of {recorded}; a knowledge base using {model_id} cannot share it (use another tableName)"
            )
    return False


def attribute_columns(conn: psycopg.Connection, table: TableRef, mapping: FieldMapping) -> dict[str, str]:
    """Per-attribute metadata columns (every column not in the mapping), name -> type. One catalog query."""
    mapped = set(mapping.to_bedrock().values())
    rows = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a"
        " JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped",
        (table.schema, table.name),
    ).fetchall()
    return {name: typ for name, typ in rows if name not in mapped}


@dataclass
class ChunkRow:
    id: uuid.UUID
    text: str
    embedding: np.ndarray | None
    metadata: dict[str, Any]
    custom_metadata: dict[str, Any]
    acl: tuple[list[int], list[int]] | None = None  # (acl_allow, acl_deny) on tables with ACL columns


def write_rows(
    conn: psycopg.Connection,
    table: TableRef,
    mapping: FieldMapping,
    rows: Sequence[ChunkRow],
    *,
    attribute_cols: dict[str, str] | None = None,
    acl: bool = False,
    new: bool = False,
) -> None:
    """Write rows with binary COPY, one transaction per call.

    By default into a temp table, then upserted: idempotent, whatever the table holds. With `new`
    (the caller knows no row with these ids exists: an initial load's documents that the catalog has
    never seen) the COPY goes straight into the table, with no staging table, no second statement and
    no catalog churn; a row that exists after all raises UniqueViolation and leaves the table unchanged."""
    if not rows:
        return
    attribute_cols = attribute_cols or {}
    extra = list(attribute_cols) if not mapping.custom_metadata else []
    cols = [mapping.primary_key, mapping.vector, mapping.text, mapping.metadata]
    if mapping.custom_metadata:
        cols.append(mapping.custom_metadata)
    cols += extra
    if acl:  # MANAGED tables: every row is written with its ACL (pgkb.store.acl)
        cols += ["acl_allow", "acl_deny"]
    col_ids = sql.SQL(", ").join(sql.Identifier(c) for c in cols)
    types = ["uuid", "vector", "text", "json"] + (["jsonb"] if mapping.custom_metadata else [])
    types += [attribute_cols[c] for c in extra]
    if acl:
        types += ["int4[]", "int4[]"]

    def copy_into(cur: psycopg.Cursor[Any], target: sql.Composable) -> None:
        with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT BINARY)").format(target, col_ids)) as copy:
            copy.set_types(types)
            for r in rows:
                # json/jsonb columns: set_types makes psycopg serialise the dicts itself.
                values: list[Any] = [r.id, r.embedding, r.text, r.metadata]
                if mapping.custom_metadata:
                    values.append(r.custom_metadata)
                for c in extra:
                    values.append(_attribute_value(r.custom_metadata.get(c), attribute_cols[c]))
                if acl:
                    values += list(r.acl) if r.acl is not None else [None, None]
                copy.write_row(values)

    if new:
        with conn.transaction(), conn.cursor() as cur:
            copy_into(cur, table.ident)
        return
    updates = sql.SQL(", ").join(
        sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c), sql.Identifier(c)) for c in cols[1:]
    )
    # A staging table per call, shaped like this target table, dropped when done: works on autocommit
    # connections and for several tables on one connection.
    stage = sql.Identifier("pgkb_stage_" + uuid.uuid4().hex[:12])
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE TEMP TABLE {} (LIKE {}) ON COMMIT DROP").format(stage, table.ident))
        copy_into(cur, stage)
        cur.execute(
            sql.SQL("INSERT INTO {t} ({c}) SELECT {c} FROM {s} ON CONFLICT ({pk}) DO UPDATE SET {u}").format(
                t=table.ident, c=col_ids, s=stage, pk=sql.Identifier(mapping.primary_key), u=updates
            )
        )
        cur.execute(sql.SQL("DROP TABLE {}").format(stage))


def _attribute_value(value: Any, pg_type: str) -> Any:
    """A metadata value for a per-attribute column; lists become JSON text unless the column is an array."""
    if value is None:
        return None
    if isinstance(value, list):
        return value if pg_type.endswith("[]") else json.dumps(value)
    if pg_type in ("json", "jsonb"):
        return value
    if pg_type in ("text", "character varying"):
        return str(value)
    return value


def delete_rows(conn: psycopg.Connection, table: TableRef, mapping: FieldMapping, ids: Sequence[uuid.UUID]) -> int:
    if not ids:
        return 0
    cur = conn.execute(
        sql.SQL("DELETE FROM {} WHERE {} = ANY(%s)").format(table.ident, sql.Identifier(mapping.primary_key)),
        (list(ids),),
    )
    return cur.rowcount
