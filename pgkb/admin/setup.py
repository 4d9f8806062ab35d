"""`pgkb db setup`: what the Aurora guide has users type by hand, done idempotently as the admin.

The extension, a schema, a login role with a generated password, the table (owned by the admin, so
the role cannot drop or alter it) with its HNSW, full-text and jsonb indexes, least-privilege grants,
and pgkb's catalog. The role's credentials go to a secret; only the secret's ARN is printed.
"""

from __future__ import annotations

import logging
import re
import secrets as pysecrets
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from pgkb.admin.checks import Problem, check_server, pgvector_versions
from pgkb.admin.doctor import diagnose, has_fts, has_hnsw, has_jsonb_gin, table_indexes
from pgkb.db.database import migrate, migration_files
from pgkb.errors import ValidationError
from pgkb.secrets import DbCredentials
from pgkb.store import ddl
from pgkb.store.vector_table import FieldMapping, TableRef

log = logging.getLogger(__name__)

PASSWORD_VAR = "pgkb_role_password"  # psql variable the printed SQL reads the password from
_IDENT = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_\-]{0,62}$")


@dataclass
class SetupPlan:
    schema: str = "bedrock_integration"
    role: str = "bedrock_user"
    table: str = "bedrock_kb"
    dimensions: int = 384
    mapping: FieldMapping = field(default_factory=FieldMapping)
    catalog: bool = True
    ef_construction: int | None = None  # None: chosen from the table's size
    maintenance_work_mem_mb: int | None = None

    def __post_init__(self) -> None:
        for what, name in (("schema", self.schema), ("role", self.role), ("table", self.table)):
            if not _IDENT.match(name):
                raise ValidationError(f"--{what} {name!r} must be a letter or _ then [a-zA-Z0-9_-], at most 63 characters")
        if self.role.lower() in ("postgres", "public", "pg_database_owner") or self.role.startswith("pg_"):
            raise ValidationError(f"--role {self.role!r} is reserved: choose a dedicated role name")
        if not 1 <= self.dimensions <= 16000:
            raise ValidationError(f"dimensions {self.dimensions} out of range (1..16000)")

    @property
    def ref(self) -> TableRef:
        return TableRef(self.schema, self.table)


def hnsw_parameters(rows: int, dimensions: int) -> tuple[int, int]:
    """(ef_construction, maintenance_work_mem in MB) for building an HNSW index over `rows` vectors.

    Small tables build in seconds, so they get a wide candidate list (the guide's 256: better recall);
    large ones a narrower one so builds and later inserts stay affordable. Memory: the graph must fit
    in maintenance_work_mem or the build slows down by an order of magnitude (about 4 bytes per
    dimension plus ~700 bytes of graph per vector), capped so a small instance is not starved.
    """
    ef = 256 if rows < 100_000 else 128 if rows < 2_000_000 else 64
    need_mb = int(rows * (4 * dimensions + 700) * 1.2 / 2**20) + 1
    return ef, max(64, min(need_mb, 4096))


#: Where `--print-sql` puts the password: psql interpolates the variable as a quoted literal.
PSQL_PASSWORD = sql.SQL(":'" + PASSWORD_VAR + "'")


def statements(plan: SetupPlan, dbname: str, *, rows: int = 0, existing: list[Any] | None = None,
               role_exists: bool = False, password: sql.Composable | None = PSQL_PASSWORD) -> list[ddl.Stmt]:
    """The setup SQL, in order. `password`: PSQL_PASSWORD for the psql script (the role is then created
    with \\gexec when missing), a literal to set, or None to keep the role's working password."""
    t, m = plan.ref, plan.mapping
    ef, mem = hnsw_parameters(rows, plan.dimensions)
    ef = plan.ef_construction or ef
    mem = plan.maintenance_work_mem_mb or mem
    out: list[ddl.Stmt] = [ddl.create_vector_extension(), ddl.create_schema(plan.schema)]
    if password is PSQL_PASSWORD:
        out.append(sql.SQL("SELECT {} WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {})\\gexec").format(
            sql.Literal(ddl.render(ddl.create_role(plan.role))), sql.Literal(plan.role)))
    elif not role_exists:
        out.append(ddl.create_role(plan.role))
    out.append(ddl.alter_role(plan.role, password))
    # CONNECT, and TEMP for the staging table of each binary-COPY batch; nothing else on the database.
    out.append(ddl.grant_database(dbname, plan.role, ["CONNECT", "TEMPORARY"]))
    out.append(ddl.grant_schema_usage(plan.schema, plan.role))
    out.append(ddl.create_table(t, m, plan.dimensions, if_not_exists=True))
    out.append(ddl.storage_plain(t, m.vector))
    idx = existing or []
    if not has_hnsw(idx, m.vector):
        out.append(sql.SQL("SET maintenance_work_mem = {}").format(sql.Literal(f"{int(mem)}MB")))
        out.append(ddl.hnsw_index(t, m.vector, ef_construction=ef, name=ddl.index_name(t.name, f"{m.vector}_hnsw")))
        out.append(sql.SQL("RESET maintenance_work_mem"))
    if not has_fts(idx, m.text):
        out.append(ddl.fts_index(t, m.text, name=ddl.index_name(t.name, f"{m.text}_fts")))
    if m.custom_metadata and not has_jsonb_gin(idx, m.custom_metadata):
        out.append(ddl.jsonb_index(t, m.custom_metadata, name=ddl.index_name(t.name, f"{m.custom_metadata}_gin")))
    # Rows only: no TRUNCATE, TRIGGER or REFERENCES, and the admin keeps ownership (no DROP/ALTER).
    out.append(ddl.grant_table(t, plan.role))
    return out


def catalog_grants(role: str) -> list[ddl.Stmt]:
    # Default privileges cover the tables later migrations add (run by the admin).
    return ddl.grant_schema_rows(ddl.CATALOG_SCHEMA, role)


def print_sql(plan: SetupPlan, dbname: str) -> str:
    """The whole setup as a psql script: `psql -v pgkb_role_password=... -f setup.sql`."""
    lines = [
        "-- pgkb db setup, as SQL for a DBA. Run as the admin with psql:",
        f"--   psql \"$ADMIN_URL\" -v {PASSWORD_VAR}=\"$(openssl rand -base64 32)\" -v ON_ERROR_STOP=1 -f setup.sql",
        "-- Then store the role's credentials as a secret (RDS-credentials JSON) and register it:",
        "--   pgkb secrets put NAME --username ... --host ... ; pgkb db register NAME --secret NAME",
        "\\set ON_ERROR_STOP on",
        "BEGIN;",
    ]
    for stmt in statements(plan, dbname):
        text = ddl.render(stmt)
        lines.append(text if text.endswith("\\gexec") else text + ";")
    lines.append("COMMIT;")
    if plan.catalog:
        lines.append("-- pgkb's catalog (schema pgkb), as `pgkb db setup` applies it:")
        lines.append("BEGIN;")
        lines += [ddl.render(s) + ";" for s in ddl.migrations_ledger()]
        for version, name, body in migration_files():
            lines.append(f"-- migration {version:03d}_{name}")
            # psql's \if skips migrations already applied, as pgkb's own runner does.
            lines.append(ddl.render(sql.SQL("SELECT NOT EXISTS (SELECT FROM pgkb.schema_migrations WHERE version = {})"
                                            " AS pgkb_apply \\gset").format(sql.Literal(version))))
            lines.append("\\if :pgkb_apply")
            lines.append(body.strip())
            lines.append(ddl.render(sql.SQL("INSERT INTO pgkb.schema_migrations (version, name) VALUES ({}, {});").format(
                sql.Literal(version), sql.Literal(name))))
            lines.append("\\endif")
        lines += [ddl.render(s) + ";" for s in catalog_grants(plan.role)]
        lines.append("COMMIT;")
    return "\n".join(lines) + "\n"


@dataclass
class SetupResult:
    created_role: bool
    password_changed: bool
    created_table: bool
    credentials: DbCredentials
    warnings: list[Problem]
    statements: int


def new_password() -> str:
    # 43 URL-safe characters (256 bits): no quoting issues in URLs, .pgpass or shells.
    return pysecrets.token_urlsafe(32)


def role_credentials(admin_url: str, role: str, password: str, dbname: str) -> DbCredentials:
    """The runtime role's credentials, reaching the server the way the admin URL does (TLS settings kept)."""
    params = conninfo_to_dict(admin_url)
    extra = {k: str(params[k]) for k in ("sslmode", "sslrootcert", "sslcert", "sslkey") if params.get(k)}
    host = str(params.get("host") or params.get("hostaddr") or "") or None
    port = int(str(params["port"])) if params.get("port") else None
    return DbCredentials(username=role, password=password, host=host, port=port, dbname=dbname, extra=extra)


def can_login(creds: DbCredentials) -> bool:
    try:
        with psycopg.connect(creds.conninfo(), connect_timeout=5):
            return True
    except psycopg.OperationalError:
        return False


def run_setup(admin_url: str, plan: SetupPlan, *, existing_password: str | None = None,
              rotate: bool = False) -> SetupResult:
    """Apply the plan as the admin. `existing_password`: the role's stored password, kept when it still works."""
    with psycopg.connect(admin_url, autocommit=False) as conn:
        errors = [p for p in check_server(conn, need_installed=False) if p.severity == "error"]
        if errors:
            raise ValidationError("; ".join(f"{p.message} Fix: {p.fix}" for p in errors))
        installed, available = pgvector_versions(conn)
        dbname = str(conn.execute("SELECT current_database()").fetchone()[0])  # type: ignore[index]
        role_row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (plan.role,)).fetchone()
        role_exists = role_row is not None
        if role_row and role_row[0]:
            raise ValidationError(f"role {plan.role!r} exists and is a superuser: pick another --role for knowledge bases")
        qualified = ddl.render(plan.ref.ident)
        reg = conn.execute("SELECT to_regclass(%s)", (qualified,)).fetchone()
        table_oid = None
        if reg and reg[0]:
            table_oid = conn.execute("SELECT %s::regclass::oid", (qualified,)).fetchone()[0]  # type: ignore[index]
        conn.rollback()

        password = existing_password
        password_changed = False
        if not role_exists or rotate or not password or not can_login(
            role_credentials(admin_url, plan.role, password, dbname)
        ):
            password, password_changed = new_password(), True
        creds = role_credentials(admin_url, plan.role, password, dbname)

        rows, existing = 0, []
        if table_oid is not None:
            # An existing table that cannot hold this knowledge base is refused before anything changes.
            misfit = [p for p in diagnose(conn, plan.ref, plan.mapping, dimensions=plan.dimensions)
                      if p.severity == "error" and p.check in ("table", "column", "type", "dimensions", "primary key")]
            if misfit:
                raise ValidationError(f"table {plan.ref} exists but does not fit: "
                                      + "; ".join(f"{p.message} Fix: {p.fix}" for p in misfit))
            existing = table_indexes(conn, table_oid)
            rows = int(conn.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = %s",
                                    (table_oid,)).fetchone()[0])  # type: ignore[index]
            if rows < 0 and not has_hnsw(existing, plan.mapping.vector):  # never analysed: count, to size the build
                rows = int(conn.execute(sql.SQL("SELECT count(*) FROM {}").format(plan.ref.ident)).fetchone()[0])  # type: ignore[index]
            conn.rollback()
        # The password is a literal: ALTER ROLE takes no parameters (psycopg quotes it). An
        # unchanged password is left out, so the role's working one stays.
        stmts = statements(plan, dbname, rows=max(rows, 0), existing=existing, role_exists=role_exists,
                           password=sql.Literal(password) if password_changed else None)
        with conn.transaction():
            if installed and ddl.version_tuple(installed) < (0, 5) and available:
                try:
                    with conn.transaction():
                        conn.execute("ALTER EXTENSION vector UPDATE")
                except psycopg.Error as exc:
                    raise ValidationError(
                        f"pgvector {installed} is installed and HNSW needs 0.5.0 or later; updating it to {available} "
                        f"failed: {str(exc).splitlines()[0]}. Fix: update pgvector on the server, then "
                        "ALTER EXTENSION vector UPDATE;"
                    ) from None
            for stmt in stmts:
                conn.execute(stmt)
        if plan.catalog:
            migrate(conn)
            conn.commit()
            with conn.transaction():
                for stmt in catalog_grants(plan.role):
                    conn.execute(stmt)
        _install_lexical(conn, plan)
        warnings = [p for p in diagnose(conn, plan.ref, plan.mapping, dimensions=plan.dimensions, role=plan.role)]
        conn.rollback()
    errors = [p for p in warnings if p.severity == "error"]
    if errors:
        raise ValidationError(
            f"table {plan.ref} exists but does not fit: " + "; ".join(f"{p.message} Fix: {p.fix}" for p in errors)
        )
    return SetupResult(not role_exists, password_changed, table_oid is None, creds, warnings, len(stmts))


def _install_lexical(conn: psycopg.Connection, plan: SetupPlan) -> None:
    """BM25 side tables for hybrid search, installed by the admin; the role gets DML on them (its triggers write there)."""
    try:
        from pgkb.retrieval.bm25 import SCHEMA, install_bm25
    except ImportError:
        return
    try:
        install_bm25(conn, plan.ref, plan.mapping)
        with conn.transaction():
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(SCHEMA), sql.Identifier(plan.role)))
            conn.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {} TO {}").format(
                sql.Identifier(SCHEMA), sql.Identifier(plan.role)))
        conn.commit()
    except psycopg.Error as exc:  # hybrid search falls back to the full-text index
        conn.rollback()
        log.warning("BM25 statistics not installed on %s: %s", plan.ref, str(exc).splitlines()[0])
