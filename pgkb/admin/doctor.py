"""`pgkb doctor`: check a table (and the role that will use it) against what a knowledge base needs.

Each problem comes with its fix. Errors block use (Bedrock would refuse the table, or pgkb cannot
write or search it); warnings are slow or over-privileged set-ups that still work.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from pgkb.admin.checks import Problem, check_server
from pgkb.store import ddl
from pgkb.store.vector_table import FieldMapping, TableRef

# attstorage codes; PLAIN keeps vectors in the heap row (pgvector #240).
_STORAGE = {"p": "PLAIN", "e": "EXTERNAL", "x": "EXTENDED", "m": "MAIN"}


@dataclass
class IndexInfo:
    name: str
    method: str
    definition: str
    columns: list[str]
    opclasses: list[str]
    expression: str | None
    valid: bool


def table_indexes(conn: psycopg.Connection, oid: int) -> list[IndexInfo]:
    rows = conn.execute(
        "SELECT c.relname, am.amname, pg_get_indexdef(i.indexrelid),"
        " ARRAY(SELECT a.attname::text FROM unnest(i.indkey) WITH ORDINALITY k(attnum, n)"
        "       JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum ORDER BY k.n),"
        " ARRAY(SELECT o.opcname::text FROM unnest(i.indclass) WITH ORDINALITY k(oid, n)"
        "       JOIN pg_opclass o ON o.oid = k.oid ORDER BY k.n),"
        " pg_get_expr(i.indexprs, i.indrelid), i.indisvalid"
        " FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam"
        " WHERE i.indrelid = %s",
        (oid,),
    ).fetchall()
    return [IndexInfo(r[0], r[1], r[2], list(r[3]), list(r[4]), r[5], bool(r[6])) for r in rows]


def _fix(*stmts: sql.Composable) -> str:
    """Statements as the fix a person pastes: each rendered and ended with a semicolon."""
    return " ".join(ddl.render(s) + ";" for s in stmts)


def has_hnsw(indexes: list[IndexInfo], column: str, opclass: str = "vector_cosine_ops") -> bool:
    return any(i.method == "hnsw" and i.columns == [column] and i.opclasses == [opclass] and i.valid for i in indexes)


def has_fts(indexes: list[IndexInfo], column: str) -> bool:
    # pg_get_expr prints e.g. to_tsvector('simple'::regconfig, chunks): the column as the last argument.
    quoted = ddl.render(sql.Identifier(column))
    arg = re.compile(rf"to_tsvector\((?:[^,()]+,\s*)?(?:{re.escape(column)}|{re.escape(quoted)})\)")

    def mentions(expr: str) -> bool:
        return bool(arg.search(expr))

    return any(i.method == "gin" and i.valid and i.expression and mentions(i.expression) for i in indexes)


def has_jsonb_gin(indexes: list[IndexInfo], column: str) -> bool:
    return any(i.method == "gin" and i.valid and i.columns == [column] and i.expression is None for i in indexes)


def diagnose(
    conn: psycopg.Connection,
    table: TableRef,
    mapping: FieldMapping,
    *,
    dimensions: int | None = None,
    role: str | None = None,
) -> list[Problem]:
    """Every problem with `table` for a knowledge base using `mapping` (and `role`, when given)."""
    problems = check_server(conn)
    row = conn.execute(
        "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')",
        (table.schema, table.name),
    ).fetchone()
    if row is None:
        problems.append(Problem("error", "table", f"table {table} does not exist.",
                                f"pgkb db setup --table {table.name} --schema {table.schema} (or CREATE TABLE {ddl.render(table.ident)} ...)"))
        return problems
    oid = int(row[0])
    cols = {
        r[0]: (r[1], r[2], r[3])
        for r in conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod), attstorage, atttypmod FROM pg_attribute"
            " WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped",
            (oid,),
        )
    }
    pk = [r[0] for r in conn.execute(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
        " WHERE i.indrelid = %s AND i.indisprimary", (oid,))]
    _check_columns(problems, table, cols, pk, mapping, dimensions)
    indexes = table_indexes(conn, oid)
    _check_indexes(problems, table, indexes, cols, mapping)
    if role:
        _check_role(conn, problems, table, oid, role)
    return problems


def _check_columns(problems: list[Problem], table: TableRef, cols: dict[str, tuple[str, str, int]], pk: list[str],
                   mapping: FieldMapping, dimensions: int | None) -> None:
    def missing(field: str, name: str, type_: ddl.Stmt) -> None:
        problems.append(Problem("error", "column", f"column {name!r} ({field}) is missing.",
                                _fix(ddl.add_column(table, name, type_))))

    def wrong(field: str, name: str, found: str, want: str, type_: ddl.Stmt) -> None:
        problems.append(Problem("error", "type", f"column {name!r} ({field}) is {found}; it must be {want}.",
                                _fix(ddl.alter_column_type(table, name, type_))))

    pkcol = cols.get(mapping.primary_key)
    if pkcol is None:
        missing("primaryKeyField", mapping.primary_key, sql.SQL("uuid PRIMARY KEY"))
    elif pkcol[0] != "uuid":
        wrong("primaryKeyField", mapping.primary_key, pkcol[0], "uuid", sql.SQL("uuid"))
    elif pk != [mapping.primary_key]:
        problems.append(Problem("error", "primary key", f"column {mapping.primary_key!r} is not the primary key "
                                f"(found {pk or 'none'}): re-ingestion upserts on it.",
                                _fix(ddl.add_primary_key(table, mapping.primary_key))))
    vec = cols.get(mapping.vector)
    want_vec = ddl.vector_type(dimensions) if dimensions else sql.SQL("vector(<dimensions>)")
    if vec is None:
        missing("vectorField", mapping.vector, want_vec)
    elif not vec[0].startswith("vector"):
        wrong("vectorField", mapping.vector, vec[0], ddl.render(want_vec), want_vec)
    else:
        found_dims = vec[2] if vec[2] > 0 else None
        if found_dims is None:
            problems.append(Problem("error", "dimensions", f"column {mapping.vector!r} is vector without dimensions; "
                                    "HNSW needs a fixed dimension.",
                                    _fix(ddl.alter_column_type(table, mapping.vector, want_vec, cast=False))))
        elif dimensions and found_dims != dimensions:
            problems.append(Problem(
                "error", "dimensions",
                f"column {mapping.vector!r} holds {found_dims}-dimensional vectors but the model produces {dimensions}.",
                f"Pick a model (or dimensions) of {found_dims}, or use a new table: "
                f"{_fix(ddl.alter_column_type(table, mapping.vector, want_vec, cast=False))} on an empty table "
                "(existing vectors must be re-embedded).",
            ))
        if vec[1] != "p":
            problems.append(Problem(
                "warning", "storage",
                f"column {mapping.vector!r} uses {_STORAGE.get(vec[1], vec[1])} storage: with long chunk text, vectors "
                "move out of line (TOAST) and every scan and HNSW search reads them back (pgvector #240).",
                _fix(ddl.storage_plain(table, mapping.vector)) + "  -- applies to rows written afterwards",
            ))
    txt = cols.get(mapping.text)
    if txt is None:
        missing("textField", mapping.text, sql.SQL("text"))
    elif txt[0] not in ("text", "character varying") and not txt[0].startswith("character varying("):
        wrong("textField", mapping.text, txt[0], "text", sql.SQL("text"))
    md = cols.get(mapping.metadata)
    if md is None:
        missing("metadataField", mapping.metadata, sql.SQL("json"))
    elif md[0] not in ("json", "jsonb"):
        wrong("metadataField", mapping.metadata, md[0], "json or jsonb", sql.SQL("jsonb"))
    if mapping.custom_metadata:
        cm = cols.get(mapping.custom_metadata)
        if cm is None:
            missing("customMetadataField", mapping.custom_metadata, sql.SQL("jsonb"))
        elif cm[0] != "jsonb":
            wrong("customMetadataField", mapping.custom_metadata, cm[0], "jsonb (filters use @> and its GIN index)", sql.SQL("jsonb"))


def _check_indexes(problems: list[Problem], table: TableRef, indexes: list[IndexInfo],
                   cols: dict[str, tuple[str, str, int]], mapping: FieldMapping) -> None:
    if mapping.vector in cols and cols[mapping.vector][0].startswith("vector") and not has_hnsw(indexes, mapping.vector):
        others = [i for i in indexes if i.method == "hnsw" and i.columns == [mapping.vector]]
        if others and others[0].valid:
            bad = others[0]
            problems.append(Problem(
                "error", "hnsw operator class",
                f"HNSW index {bad.name!r} uses {bad.opclasses[0]}, but knowledge bases search by cosine distance (<=>): "
                "the index is never used and every query scans the table.",
                _fix(ddl.drop_index(table.schema, bad.name), ddl.hnsw_index(table, mapping.vector)),
            ))
        elif others:
            problems.append(Problem("error", "hnsw index", f"HNSW index {others[0].name!r} is invalid (a failed build).",
                                    _fix(ddl.reindex(table.schema, others[0].name))))
        else:
            problems.append(Problem("error", "hnsw index", f"column {mapping.vector!r} has no HNSW index (cosine).",
                                    _fix(ddl.hnsw_index(table, mapping.vector))))
    if mapping.text in cols and not has_fts(indexes, mapping.text):
        problems.append(Problem("error", "full-text index", f"{mapping.text} column must be indexed (GIN full-text).",
                                _fix(ddl.fts_index(table, mapping.text))))
    cm = mapping.custom_metadata
    if cm and cm in cols and cols[cm][0] == "jsonb" and not has_jsonb_gin(indexes, cm):
        problems.append(Problem("warning", "jsonb index",
                                f"column {cm!r} has no GIN index: metadata filters scan every row.",
                                _fix(ddl.jsonb_index(table, cm))))


def _check_role(conn: psycopg.Connection, problems: list[Problem], table: TableRef, oid: int, role: str) -> None:
    r = conn.execute(
        "SELECT rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, pg_get_userbyid(%s) FROM pg_roles WHERE rolname = %s",
        (_owner(conn, oid), role),
    ).fetchone()
    if r is None:
        problems.append(Problem("error", "role", f"role {role!r} does not exist.",
                                f"pgkb db setup --role {role} (or {ddl.render(ddl.create_role(role))} PASSWORD '...';)"))
        return
    can_login, superuser, createrole, createdb, owner = r
    if not can_login:
        problems.append(Problem("error", "role", f"role {role!r} cannot log in.", _fix(ddl.allow_login(role))))
    if superuser or createrole or createdb:
        what = ", ".join(n for n, v in (("SUPERUSER", superuser), ("CREATEROLE", createrole), ("CREATEDB", createdb)) if v)
        problems.append(Problem("warning", "least privilege", f"role {role!r} has {what}: more than a knowledge base needs.",
                                _fix(ddl.revoke_powers(role))))
    if owner == role:
        problems.append(Problem("warning", "least privilege",
                                f"role {role!r} owns {table}: it can drop or alter the table.",
                                _fix(ddl.change_owner(table, sql.SQL("<admin role>")), ddl.grant_table(table, role))))
    if not conn.execute("SELECT has_schema_privilege(%s, %s, 'USAGE')", (role, table.schema)).fetchone()[0]:  # type: ignore[index]
        problems.append(Problem("error", "grants", f"role {role!r} lacks USAGE on schema {table.schema}.",
                                _fix(ddl.grant_schema_usage(table.schema, role))))
    lacking = [p for p in ("SELECT", "INSERT", "UPDATE", "DELETE")
               if not conn.execute("SELECT has_table_privilege(%s, %s::oid, %s)", (role, oid, p)).fetchone()[0]]  # type: ignore[index]
    if lacking:
        problems.append(Problem("error", "grants", f"role {role!r} lacks {', '.join(lacking)} on {table}.",
                                _fix(ddl.grant_table(table, role, lacking))))
    db_ok = conn.execute(
        "SELECT has_database_privilege(%s, current_database(), 'CONNECT'), has_database_privilege(%s, current_database(), 'TEMP'),"
        " current_database()", (role, role)).fetchone()
    assert db_ok is not None
    if not db_ok[0]:
        problems.append(Problem("error", "grants", f"role {role!r} may not connect to database {db_ok[2]}.",
                                _fix(ddl.grant_database(db_ok[2], role, ["CONNECT"]))))
    if not db_ok[1]:
        problems.append(Problem("error", "grants", f"role {role!r} may not create temporary tables: ingestion stages "
                                "each batch in one (binary COPY, then one upsert).",
                                _fix(ddl.grant_database(db_ok[2], role, ["TEMPORARY"]))))
    if conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = 'pgkb'").fetchone():
        tables = [r[0] for r in conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'pgkb' AND c.relkind = 'r' AND NOT ("
            " has_table_privilege(%s, c.oid, 'SELECT') AND has_table_privilege(%s, c.oid, 'INSERT')"
            " AND has_table_privilege(%s, c.oid, 'UPDATE') AND has_table_privilege(%s, c.oid, 'DELETE'))",
            (role, role, role, role))]
        if tables:
            problems.append(Problem("warning", "catalog grants",
                                    f"role {role!r} lacks DML on pgkb's catalog ({', '.join(sorted(tables))}): "
                                    "it cannot run pgkb against this database.",
                                    _fix(*ddl.grant_schema_rows(ddl.CATALOG_SCHEMA, role)[:2])))


def _owner(conn: psycopg.Connection, oid: int) -> int:
    return int(conn.execute("SELECT relowner FROM pg_class WHERE oid = %s", (oid,)).fetchone()[0])  # type: ignore[index]


def report(problems: list[Problem]) -> dict[str, Any]:
    errors = [p for p in problems if p.severity == "error"]
    return {"ok": not errors, "errors": len(errors), "warnings": len(problems) - len(errors),
            "problems": [p.to_dict() for p in problems]}


def diagnose_kb(kb: Any, role: str | None = None) -> list[Problem]:
    """The checks for a knowledge base as configured: its database (home or registered), table, mapping, model.

    `kb` is a resolved `pgkb.kb.KnowledgeBase`. Without `role`, a registered database's connected user is
    checked (the secret's role); the home database's is not (it is usually the owner or a superuser).
    """
    with kb.database.connection() as conn:
        user, superuser = conn.execute(
            "SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()  # type: ignore[misc]
        problems = diagnose(conn, kb.table, kb.mapping, dimensions=kb.dimensions,
                            role=role or (None if superuser else str(user)))
        return problems + check_lexical(conn, kb.table)


def check_lexical(conn: psycopg.Connection, table: TableRef) -> list[Problem]:
    """HYBRID's lexical side: BM25 statistics, current ones, or the simple-text index fallback."""
    from pgkb.retrieval import bm25

    ix = bm25.lookup(conn, table)
    setup = f"pgkb db setup --database-url ADMIN_URL --schema {table.schema} --table {table.name} (as an administrator)"
    if ix is None:
        return [Problem("warning", "bm25", f"table {table} has no BM25 statistics: HYBRID ranks its lexical side with the "
                        "simple-text index (msmarco-5k nDCG@10 0.8152 instead of 0.8245).", setup)]
    if not ix.has_df:
        return [Problem("warning", "bm25", f"the BM25 statistics of {table} were made by an older pgkb: queries count "
                        "document frequencies and read every posting (slower as the table grows).",
                        f"run an ingestion job on the knowledge base, or {setup}")]
    return []
