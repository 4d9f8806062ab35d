"""`pgkb sql install` / `uninstall`: the aws_bedrock schema, its dblink server and user mapping.

Installing needs a role that may CREATE EXTENSION dblink (superuser, rds_superuser, ...); calling the
functions afterwards needs only the grants made here. The endpoint's password goes into a user mapping
FOR PUBLIC, whose options only the server's owner and superusers can read.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources

import psycopg
from psycopg import sql

from pgkb.errors import ValidationError
from pgkb.store import ddl

SCHEMA = "aws_bedrock"
SERVER = "aws_bedrock_pgkb"
# Serialises concurrent installs into one database.
_INSTALL_LOCK = 0x70676B73  # "pgks"


def sql_file(name: str) -> str:
    return resources.files("pgkb.sql").joinpath("aws_bedrock", name).read_text()


def extension_schema(conn: psycopg.Connection, extension: str) -> str | None:
    row = conn.execute(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
        "WHERE e.extname = %s", (extension,)).fetchone()
    return row[0] if row else None


def render(conn: psycopg.Connection, name: str) -> str:
    """An SQL file with {{dblink}} / {{vector}} replaced by the quoted schemas of those extensions."""
    text = sql_file(name)
    for placeholder, ext in (("{{dblink}}", "dblink"), ("{{vector}}", "vector")):
        if placeholder in text:
            schema = extension_schema(conn, ext)
            if schema is None:
                raise ValidationError(f"extension {ext} is not installed in this database")
            text = text.replace(placeholder, sql.Identifier(schema).as_string(conn))
    return text


def _roles(grant_to: str | Sequence[str]) -> list[sql.Composable]:
    names = [grant_to] if isinstance(grant_to, str) else list(grant_to)
    out: list[sql.Composable] = []
    for n in names:
        out.append(sql.SQL("PUBLIC") if n.upper() == "PUBLIC" else sql.Identifier(n))
    return out


SSL_MODES = ("disable", "prefer", "require", "verify-ca", "verify-full")


def install(database_url: str, endpoint_host: str, endpoint_port: int, user: str, password: str,
            grant_to: str | Sequence[str] = "PUBLIC", connect_timeout_s: int = 5, *,
            sslmode: str = "prefer", sslrootcert: str | None = None) -> None:
    """Create or refresh schema aws_bedrock in the database at `database_url`. Idempotent.

    `sslmode` is libpq's, for the database's connections to the endpoint: `prefer` (default) uses TLS
    when the endpoint offers it (`pgkb sql serve --tls`), `require` insists on it, `verify-ca` /
    `verify-full` also check the endpoint's certificate against `sslrootcert`, a file on the database
    server's host."""
    if not (0 < int(endpoint_port) < 65536):
        raise ValidationError(f"invalid endpoint port {endpoint_port!r}")
    if sslmode not in SSL_MODES:
        raise ValidationError(f"sslmode must be one of {', '.join(SSL_MODES)}, not {sslmode!r}")
    if sslmode.startswith("verify") and not sslrootcert:
        raise ValidationError(f"sslmode {sslmode} needs sslrootcert: the endpoint's CA certificate on the database host")
    if not user or not password:
        raise ValidationError("the endpoint user and password must not be empty")
    roles = _roles(grant_to)
    with psycopg.connect(database_url) as conn:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_INSTALL_LOCK,))
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(SCHEMA)))
        if extension_schema(conn, "dblink") is None:
            conn.execute(sql.SQL("CREATE EXTENSION dblink SCHEMA {}").format(sql.Identifier(SCHEMA)))
        conn.execute(ddl.create_vector_extension())
        options = [("host", endpoint_host), ("port", str(int(endpoint_port))), ("dbname", "pgkb"),
                   ("sslmode", sslmode), ("connect_timeout", str(int(connect_timeout_s))),
                   ("application_name", "pgkb-aws_bedrock")]
        if sslrootcert:
            options.append(("sslrootcert", sslrootcert))
        server_version = conn.info.server_version
        if server_version >= 160000:
            # libpq then refuses to hand the password to anything that does not do SCRAM.
            options.append(("require_auth", "scram-sha-256"))
        # Server and mapping are recreated, not altered: ALTER ... OPTIONS cannot "set or add".
        conn.execute(sql.SQL("DROP SERVER IF EXISTS {} CASCADE").format(sql.Identifier(SERVER)))
        conn.execute(sql.SQL("CREATE SERVER {} FOREIGN DATA WRAPPER dblink_fdw OPTIONS ({})").format(
            sql.Identifier(SERVER),
            sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(k), sql.Literal(v)) for k, v in options)))
        conn.execute(sql.SQL("CREATE USER MAPPING FOR PUBLIC SERVER {} OPTIONS (user {}, password {})").format(
            sql.Identifier(SERVER), sql.Literal(user), sql.Literal(password)))
        conn.execute(render(conn, "functions.sql"))
        conn.execute(render(conn, "vectorizer.sql"))
        schema = sql.Identifier(SCHEMA)
        conn.execute(sql.SQL("REVOKE ALL ON ALL FUNCTIONS IN SCHEMA {} FROM PUBLIC").format(schema))
        for role in roles:
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, role))
            conn.execute(sql.SQL("GRANT USAGE ON FOREIGN SERVER {} TO {}").format(sql.Identifier(SERVER), role))
            conn.execute(sql.SQL("GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {} TO {}").format(schema, role))


def endpoint_user(database_url: str) -> str | None:
    """The endpoint user stored in the database's user mapping (readable by the installer only)."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT umoptions FROM pg_user_mappings WHERE srvname = %s AND usename = 'public'",
                           (SERVER,)).fetchone()
    for opt in (row[0] or []) if row else []:
        if opt.startswith("user="):
            return opt[len("user="):]
    return None


def uninstall(database_url: str) -> None:
    """Remove schema aws_bedrock (functions, vectorizer queues and their triggers) and the server."""
    with psycopg.connect(database_url) as conn:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_INSTALL_LOCK,))
        conn.execute(sql.SQL("DROP SERVER IF EXISTS {} CASCADE").format(sql.Identifier(SERVER)))
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SCHEMA)))


def is_installed(database_url: str) -> bool:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT to_regprocedure('aws_bedrock.invoke_model_get_embeddings(text,text,text,text)')"
                           " IS NOT NULL").fetchone()
        return bool(row and row[0])
