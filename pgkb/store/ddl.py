"""All DDL pgkb generates, in one place, as `psycopg.sql` composables.

Identifiers always go through `sql.Identifier` (always quoted, so uppercase, dots, quotes and
non-ASCII names survive), numbers and the few strings DDL cannot take as parameters through
`sql.Literal`; nothing is pasted into SQL with an f-string. Callers execute the composables, or
`render()` them for SQL a person reads (`pgkb doctor` fixes, `pgkb db setup --print-sql`, error
messages). Rendering needs no connection, so the text shown is the text that runs.

Contents:
- the vector table in Bedrock's layout (contract §4.2): schema, table, `SET STORAGE PLAIN` on the
  vector, and its three indexes (HNSW cosine, GIN full-text on `to_tsvector('simple', text)`,
  GIN on the custom-metadata jsonb); the column, key and index fixes doctor and validation suggest;
- index drops, REINDEX and the idempotent re-run of a recorded `pg_get_indexdef` definition;
- the role, grant and database-privilege statements setup runs and doctor suggests;
- pgkb's migration ledger and the BM25 registry table;
- `version_tuple()`, the one parser of server and extension version strings.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, TypeAlias

from psycopg import sql

if TYPE_CHECKING:  # vector_table builds its tables from this module: no import cycle at runtime
    from pgkb.store.vector_table import FieldMapping, TableRef

#: What every function here returns: a statement (or a fragment) to execute or render.
Stmt: TypeAlias = sql.SQL | sql.Composed

#: Columns an HNSW graph links per node (pgvector's default, said out loud where setup tunes a build).
HNSW_M = 16
#: m of a halfvec index. pgvector keeps a node's element tuple (72 bytes + its vector) and its layer-0
#: neighbour tuple (4 + 2m x 6 bytes, 8-aligned) on one 8 KB page (8,160 usable bytes, 4 more per
#: line pointer): for 384-d halfvecs a node takes 848 + 200 + 8 bytes at m = 16, so 7 fit a page, and
#: 848 + 160 + 8 at m = 13, so 8 do; float32 nodes (1,616 bytes + links) fit 4 a page at any m up to
#: 32. m 13 makes the halfvec index about half the float32 one instead of 43 % smaller
#: (docs/scaling.md, "halfvec").
HALFVEC_HNSW_M = 13
#: Candidate list while building the graph of a table pgkb creates. pgvector's default, 64, gave
#: recall@10 0.945 at ef_search 64 on 100k realistic chunks; 128 gave 0.993 for 1.8x the build time
#: (docs/scaling.md, "Defaults").
HNSW_EF_CONSTRUCTION = 128


def render(stmt: sql.Composable) -> str:
    """The statement as text for a person to read or paste (identifiers quoted, literals escaped)."""
    return stmt.as_string(None)


def ident(*names: str) -> sql.Identifier:
    return sql.Identifier(*names)


def version_tuple(text: str | None) -> tuple[int, ...]:
    """'0.8.0' → (0, 8, 0); '0.8.0-dev' → (0, 8, 0); '' or None → (0,). Compares as versions do."""
    out: list[int] = []
    for part in (text or "").split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        out.append(int(digits))
    return tuple(out) or (0,)


def index_name(table_name: str, suffix: str) -> str:
    """`<table>_<suffix>`, the table part cut so the whole fits PostgreSQL's 63 characters."""
    return f"{table_name[: 63 - len(suffix) - 1]}_{suffix}"


# ---------------------------------------------------------------------------- the vector table


def create_vector_extension() -> Stmt:
    return sql.SQL("CREATE EXTENSION IF NOT EXISTS vector")


def create_schema(schema: str) -> Stmt:
    return sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))


def vector_type(dimensions: int) -> Stmt:
    return sql.SQL("vector({})").format(sql.Literal(int(dimensions)))


def create_table(table: TableRef, mapping: FieldMapping, dimensions: int, *, if_not_exists: bool = False) -> Stmt:
    """The table in Bedrock's layout, column names from the mapping."""
    cols = [
        sql.SQL("{} uuid PRIMARY KEY").format(sql.Identifier(mapping.primary_key)),
        sql.SQL("{} {}").format(sql.Identifier(mapping.vector), vector_type(dimensions)),
        sql.SQL("{} text").format(sql.Identifier(mapping.text)),
        sql.SQL("{} json").format(sql.Identifier(mapping.metadata)),
    ]
    if mapping.custom_metadata:
        cols.append(sql.SQL("{} jsonb").format(sql.Identifier(mapping.custom_metadata)))
    head = "CREATE TABLE IF NOT EXISTS {} ({})" if if_not_exists else "CREATE TABLE {} ({})"
    return sql.SQL(head).format(table.ident, sql.SQL(", ").join(cols))


def storage_plain(table: TableRef, column: str) -> Stmt:
    """Keep vectors inline: long chunk text must not push them out of line (pgvector #240)."""
    return sql.SQL("ALTER TABLE {} ALTER COLUMN {} SET STORAGE PLAIN").format(table.ident, sql.Identifier(column))


def _create_index(name: str | None) -> Stmt:
    # A named index is created IF NOT EXISTS (setup re-runs); an unnamed one cannot be.
    return sql.SQL("CREATE INDEX IF NOT EXISTS {} ON").format(sql.Identifier(name)) if name else sql.SQL("CREATE INDEX ON")


def hnsw_expression(column: str, kind: str = "float32", dimensions: int = 0) -> Stmt:
    """`expression opclass` of a knowledge-base table's HNSW index (pgkb.store.vector_index):
    float32 over the column itself, halfvec over `column::halfvec(n)`, binary over
    `binary_quantize(column)::bit(n)` (hamming; searches re-rank its candidates exactly)."""
    col = sql.Identifier(column)
    if kind == "halfvec":
        return sql.SQL("({}::halfvec({})) halfvec_cosine_ops").format(col, sql.Literal(int(dimensions)))
    if kind == "binary":
        return sql.SQL("(binary_quantize({})::bit({})) bit_hamming_ops").format(col, sql.Literal(int(dimensions)))
    if kind != "float32":
        raise ValueError(f"vector index kind {kind!r}")
    return sql.SQL("{} vector_cosine_ops").format(col)


def hnsw_index(table: TableRef, column: str, *, ef_construction: int | None = None, name: str | None = None,
               kind: str = "float32", dimensions: int = 0, m: int | None = None) -> Stmt:
    """HNSW with cosine distance, the operator (<=>) every knowledge-base search uses (binary: hamming,
    then cosine on the candidates). `kind` and `dimensions`: hnsw_expression(). `m`: the links per
    node, else the kind's default (HNSW_M, HALFVEC_HNSW_M)."""
    stmt = sql.SQL("{} {} USING hnsw ({})").format(
        _create_index(name), table.ident, hnsw_expression(column, kind, dimensions))
    opts = []
    if m or ef_construction or kind == "halfvec":  # halfvec: never pgvector's default m (HALFVEC_HNSW_M)
        m = m or (HALFVEC_HNSW_M if kind == "halfvec" else HNSW_M)
        opts.append(sql.SQL("m = {}").format(sql.Literal(int(m))))
    if ef_construction:
        opts.append(sql.SQL("ef_construction = {}").format(sql.Literal(int(ef_construction))))
    if opts:
        stmt += sql.SQL(" WITH ({})").format(sql.SQL(", ").join(opts))
    return stmt


def fts_index(table: TableRef, column: str, *, name: str | None = None) -> Stmt:
    """GIN over `to_tsvector('simple', text)`: Bedrock requires the text column indexed this way."""
    return sql.SQL("{} {} USING gin (to_tsvector('simple', {}))").format(
        _create_index(name), table.ident, sql.Identifier(column)
    )


def jsonb_index(table: TableRef, column: str, *, name: str | None = None, path_ops: bool = False) -> Stmt:
    """GIN on the custom-metadata jsonb: what metadata filters (@>) use. `path_ops` (tables pgkb
    creates): jsonb_path_ops hashes each (key, value) path, so `{"k": "v"}` containment fetches only
    matching rows; the default jsonb_ops indexes keys and values apart and fetched every row with any
    attribute equal to "v" (100x the rows of a 0.5 % filter). Fixes for other tables keep the guide's."""
    opclass = sql.SQL(" jsonb_path_ops") if path_ops else sql.SQL("")
    return sql.SQL("{} {} USING gin ({}{})").format(_create_index(name), table.ident, sql.Identifier(column), opclass)


def vector_indexes(table: TableRef, mapping: FieldMapping, *, ef_construction: int | None = None,
                   kind: str = "float32", dimensions: int = 0, m: int | None = None) -> list[Stmt]:
    """The indexes a knowledge-base table needs: [HNSW, full-text] plus jsonb GIN with custom metadata."""
    out = [hnsw_index(table, mapping.vector, ef_construction=ef_construction, kind=kind, dimensions=dimensions, m=m),
           fts_index(table, mapping.text)]
    if mapping.custom_metadata:
        out.append(jsonb_index(table, mapping.custom_metadata, path_ops=True))
    return out


def table_statements(table: TableRef, mapping: FieldMapping, dimensions: int, kind: str = "float32",
                     m: int | None = None, ef_construction: int | None = None) -> list[Stmt]:
    """A new knowledge-base table: schema, table, vector storage, indexes (the Aurora guide's SQL;
    `kind`, `m`, `ef_construction` the HNSW index's, pgkb.store.vector_index; None: pgkb's defaults)."""
    return [
        create_schema(table.schema),
        create_table(table, mapping, dimensions),
        storage_plain(table, mapping.vector),
        *vector_indexes(table, mapping, kind=kind, dimensions=dimensions, m=m,
                        ef_construction=ef_construction or HNSW_EF_CONSTRUCTION),
    ]


def drop_table(table: TableRef) -> Stmt:
    return sql.SQL("DROP TABLE IF EXISTS {}").format(table.ident)


def acl_columns(table: TableRef, allow: str, deny: str, principals: TableRef) -> list[Stmt]:
    """MANAGED tables' ACL columns (pgkb.store.acl), the GIN index on the allow list and the
    principals table interning user ids; each idempotent."""
    return [
        sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} int4[], ADD COLUMN IF NOT EXISTS {} int4[]").format(
            table.ident, sql.Identifier(allow), sql.Identifier(deny)
        ),
        # Keep the lists in the row: every candidate a filtered search visits is checked against its
        # allow list, and a list TOAST moved out of line costs a TOAST index probe and fetch per
        # candidate (2.1x the check's time at 185 users per row); MAIN moves them out only when a row
        # would not otherwise fit in a page, and chunk text (EXTENDED) goes out first.
        sql.SQL("ALTER TABLE {} ALTER COLUMN {} SET STORAGE MAIN, ALTER COLUMN {} SET STORAGE MAIN").format(
            table.ident, sql.Identifier(allow), sql.Identifier(deny)
        ),
        sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} USING gin ({})").format(
            sql.Identifier((table.name + "_" + allow)[:63]), table.ident, sql.Identifier(allow)
        ),
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (id int4 GENERATED BY DEFAULT AS IDENTITY (START WITH 1) PRIMARY KEY,"
            " name text NOT NULL UNIQUE)"
        ).format(principals.ident),
    ]


# ---------------------------------------------------------------------------- fixes to an existing table


def add_column(table: TableRef, column: str, type_: Stmt) -> Stmt:
    return sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(table.ident, sql.Identifier(column), type_)


def alter_column_type(table: TableRef, column: str, type_: Stmt, *, cast: bool = True) -> Stmt:
    """Change a column's type, with `USING col::type` when existing values must be converted."""
    col = sql.Identifier(column)
    stmt = sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE {}").format(table.ident, col, type_)
    return stmt + sql.SQL(" USING {}::{}").format(col, type_) if cast else stmt


def add_primary_key(table: TableRef, column: str) -> Stmt:
    return sql.SQL("ALTER TABLE {} ADD PRIMARY KEY ({})").format(table.ident, sql.Identifier(column))


def change_owner(table: TableRef, owner: Stmt) -> Stmt:
    return sql.SQL("ALTER TABLE {} OWNER TO {}").format(table.ident, owner)


def drop_index(schema: str, name: str, *, if_exists: bool = False) -> Stmt:
    return sql.SQL("DROP INDEX IF EXISTS {}" if if_exists else "DROP INDEX {}").format(sql.Identifier(schema, name))


def reindex(schema: str, name: str) -> Stmt:
    return sql.SQL("REINDEX INDEX {}").format(sql.Identifier(schema, name))


def recreate_index(definition: str) -> Stmt:
    """A recorded `pg_get_indexdef` definition made idempotent (CREATE INDEX IF NOT EXISTS ...).
    The text is PostgreSQL's own rendering of an index it had, never user input."""
    if not definition.startswith("CREATE INDEX "):
        raise ValueError(f"not an index definition: {definition[:80]!r}")
    return sql.SQL("CREATE INDEX IF NOT EXISTS " + definition[len("CREATE INDEX "):])


# ---------------------------------------------------------------------------- roles and grants


def create_role(role: str) -> Stmt:
    # NOSUPERUSER etc. are the defaults; said out loud so a DBA reading the SQL sees them.
    return sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE").format(sql.Identifier(role))


def alter_role(role: str, password: sql.Composable | None = None) -> Stmt:
    """Login without extra powers; `password` a literal (ALTER ROLE takes no parameters) or psql's :'var'."""
    stmt = sql.SQL("ALTER ROLE {} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE").format(sql.Identifier(role))
    return stmt + sql.SQL(" PASSWORD {}").format(password) if password is not None else stmt


def revoke_powers(role: str) -> Stmt:
    return sql.SQL("ALTER ROLE {} NOSUPERUSER NOCREATEROLE NOCREATEDB").format(sql.Identifier(role))


def allow_login(role: str) -> Stmt:
    return sql.SQL("ALTER ROLE {} LOGIN").format(sql.Identifier(role))


def _privileges(privileges: Iterable[str]) -> Stmt:
    return sql.SQL(", ").join(sql.SQL(p) for p in privileges)  # keywords from our code


def grant_database(dbname: str, role: str, privileges: Iterable[str]) -> Stmt:
    return sql.SQL("GRANT {} ON DATABASE {} TO {}").format(_privileges(privileges), sql.Identifier(dbname), sql.Identifier(role))


def grant_schema_usage(schema: str, role: str) -> Stmt:
    return sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema), sql.Identifier(role))


ROW_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE")


def grant_table(table: TableRef, role: str, privileges: Iterable[str] = ROW_PRIVILEGES) -> Stmt:
    return sql.SQL("GRANT {} ON TABLE {} TO {}").format(_privileges(privileges), table.ident, sql.Identifier(role))


def grant_schema_rows(schema: str, role: str) -> list[Stmt]:
    """Row privileges on every table and sequence of a schema, now and (for tables the admin adds later) hereafter."""
    s, r = sql.Identifier(schema), sql.Identifier(role)
    return [
        grant_schema_usage(schema, role),
        sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {} TO {}").format(s, r),
        sql.SQL("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {} TO {}").format(s, r),
        sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {}").format(s, r),
        sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT USAGE, SELECT ON SEQUENCES TO {}").format(s, r),
    ]


# ---------------------------------------------------------------------------- pgkb's own tables


CATALOG_SCHEMA = "pgkb"


def migrations_ledger() -> list[Stmt]:
    """pgkb's schema and the table recording which migrations ran (migrate() and setup's psql script)."""
    return [
        create_schema(CATALOG_SCHEMA),
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (version int PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        ).format(sql.Identifier(CATALOG_SCHEMA, "schema_migrations")),
    ]


def bm25_registry(schema: str) -> list[Stmt]:
    """The BM25 schema and its registry: which tables have statistics, and how they were tokenised."""
    return [
        create_schema(schema),
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} ("
            " schema_name text NOT NULL, table_name text NOT NULL, base text NOT NULL,"
            " text_column text NOT NULL, key_column text NOT NULL, vector_column text NOT NULL,"
            " config regconfig NOT NULL, k1 float8 NOT NULL, b float8 NOT NULL,"
            " installed_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (schema_name, table_name))"
        ).format(sql.Identifier(schema, "tables")),
    ]
