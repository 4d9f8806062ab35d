"""`pgkb sql ...`: install the aws_bedrock functions, run the endpoint, fill tables, run vectorizers."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Annotated

import typer

from pgkb.config import Settings, current
from pgkb.errors import PgkbError

sql_app = typer.Typer(no_args_is_help=True, help="Aurora ML's aws_bedrock.* SQL functions on any PostgreSQL.")
vectorizer_app = typer.Typer(no_args_is_help=True, help="Keep a table's embeddings in sync with its text.")
sql_app.add_typer(vectorizer_app, name="vectorizer")

DEFAULT_PORT = 5444

DatabaseUrl = Annotated[
    str | None,
    typer.Option("--database-url", envvar="PGKB_DATABASE_URL", help="PostgreSQL URL (default: the embedded server)."),
]
DataDir = Annotated[Path | None, typer.Option("--data-dir", envvar="PGKB_DATA_DIR", help="Where pgkb keeps its data.")]
Model = Annotated[str, typer.Option("--model", help="Embedding model id.")]


def _settings(data_dir: Path | None) -> Settings:
    return current().with_overrides(data_dir=data_dir)


def _url(database_url: str | None, data_dir: Path | None) -> str:
    from pgkb.db.database import resolve_url

    return resolve_url(_settings(data_dir).with_overrides(database_url=database_url))


def default_user(database_url: str) -> str:
    """One endpoint user per database, so installing into another database never breaks this one."""
    from pgkb.db.database import redact_url

    dbname = re.sub(r"[^A-Za-z0-9_]", "_", database_url.split("?")[0].rsplit("/", 1)[-1])[:40] or "db"
    digest = hashlib.sha256(redact_url(database_url).encode()).hexdigest()[:8]
    return f"{dbname}_{digest}"


@sql_app.command("install")
def install_cmd(
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
    endpoint_host: Annotated[str, typer.Option(help="Where the database reaches pgkb's endpoint.")] = "127.0.0.1",
    endpoint_port: Annotated[int, typer.Option(help="The endpoint's port (pgkb sql serve --port).")] = DEFAULT_PORT,
    user: Annotated[str | None, typer.Option(help="Endpoint user (default: one per database).")] = None,
    grant_to: Annotated[list[str] | None, typer.Option(help="Roles allowed to call the functions (default PUBLIC).")] = None,
    sslmode: Annotated[str, typer.Option(
        help="libpq sslmode of the database's connections to the endpoint: disable, prefer (TLS when the "
             "endpoint offers it), require, verify-ca, verify-full.")] = "prefer",
    sslrootcert: Annotated[str | None, typer.Option(
        help="For verify-ca/verify-full: the endpoint's CA certificate, a path on the database server's host.")] = None,
) -> None:
    """Install (or refresh) schema aws_bedrock with fresh endpoint credentials in a user mapping."""
    from pgkb.sqlfuncs.credentials import set_user
    from pgkb.sqlfuncs.install import SSL_MODES, install

    if sslmode not in SSL_MODES:  # before a new password is stored for nothing
        raise PgkbError(f"--sslmode must be one of {', '.join(SSL_MODES)}, not {sslmode!r}")
    url = _url(database_url, data_dir)
    name = user or default_user(url)
    password = set_user(_settings(data_dir).data_dir, name)
    install(url, endpoint_host, endpoint_port, name, password, grant_to=grant_to or "PUBLIC",
            sslmode=sslmode, sslrootcert=sslrootcert)
    typer.echo(f"aws_bedrock installed; endpoint user {name} at {endpoint_host}:{endpoint_port} "
               "(start it with: pgkb sql serve)")


@sql_app.command("uninstall")
def uninstall_cmd(database_url: DatabaseUrl = None, data_dir: DataDir = None) -> None:
    """Remove schema aws_bedrock, its server and user mapping, and the endpoint user."""
    from pgkb.sqlfuncs.credentials import remove_user
    from pgkb.sqlfuncs.install import endpoint_user, uninstall

    url = _url(database_url, data_dir)
    name = endpoint_user(url)
    uninstall(url)
    if name:
        remove_user(_settings(data_dir).data_dir, name)
    typer.echo("aws_bedrock removed")


@sql_app.command("serve")
def serve_cmd(
    data_dir: DataDir = None,
    host: Annotated[str, typer.Option(help="Address to listen on (keep it private: loopback or a VPC address).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = DEFAULT_PORT,
    workers: Annotated[int, typer.Option(help="Threads running model calls.")] = 4,
    tls: Annotated[bool, typer.Option("--tls", help="Require TLS, with <data dir>/sqlfuncs/tls/server.crt and "
                                      "server.key (a self-signed pair is made on first use).")] = False,
) -> None:
    """Run the endpoint the aws_bedrock functions call (PostgreSQL protocol, SCRAM authentication)."""
    from pgkb.sqlfuncs.wire import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(_settings(data_dir).data_dir, host, port, workers, tls=tls)


@sql_app.command("fill")
def fill_cmd(
    table: Annotated[str, typer.Argument(help="name or schema.name")],
    text_column: Annotated[str, typer.Option("--text-column")] = "content",
    vector_column: Annotated[str, typer.Option("--vector-column")] = "embedding",
    model: Model = "sentence-transformers.all-minilm-l6-v2",
    batch_size: Annotated[int, typer.Option(help="Rows per model call and per commit.")] = 128,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Embed every row whose vector is NULL (resumable; run several at once to share the work)."""
    from pgkb.sqlfuncs.fill import fill_embeddings

    stats = fill_embeddings(_url(database_url, data_dir), table, text_column, vector_column, model, batch_size)
    typer.echo(f"{stats.rows} rows embedded in {stats.seconds:.1f}s ({stats.rows_per_s:.0f} rows/s)")


@vectorizer_app.command("create")
def vectorizer_create(
    table: Annotated[str, typer.Argument(help="name or schema.name (needs a primary key)")],
    text_column: Annotated[str, typer.Option("--text-column")] = "content",
    vector_column: Annotated[str, typer.Option("--vector-column")] = "embedding",
    model: Model = "sentence-transformers.all-minilm-l6-v2",
    backfill: Annotated[bool, typer.Option(help="Queue existing rows whose vector is NULL.")] = True,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Register (or re-configure) a vectorizer."""
    from pgkb.sqlfuncs.vectorizer import register

    vid = register(_url(database_url, data_dir), table, text_column, vector_column, model, backfill)
    typer.echo(f"vectorizer {vid}")


@vectorizer_app.command("drop")
def vectorizer_drop(vectorizer_id: int, database_url: DatabaseUrl = None, data_dir: DataDir = None) -> None:
    """Remove a vectorizer's triggers and queue (the vectors stay)."""
    from pgkb.sqlfuncs.vectorizer import unregister

    unregister(_url(database_url, data_dir), vectorizer_id)


@vectorizer_app.command("status")
def vectorizer_status(database_url: DatabaseUrl = None, data_dir: DataDir = None) -> None:
    """Queue length and failures per vectorizer."""
    from pgkb.sqlfuncs.vectorizer import status

    typer.echo(json.dumps(status(_url(database_url, data_dir)), default=str, indent=1))


@vectorizer_app.command("worker")
def vectorizer_worker(
    once: Annotated[bool, typer.Option(help="Process what is due now, then exit.")] = False,
    batch_size: Annotated[int, typer.Option()] = 64,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Fill queued embeddings; without --once, keep running (woken by the triggers' NOTIFY)."""
    from pgkb.sqlfuncs.vectorizer import run_worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stats = run_worker(_url(database_url, data_dir), once=once, batch_size=batch_size)
    typer.echo(f"{stats.embedded} embedded, {stats.failed} failed")
