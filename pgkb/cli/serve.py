"""`pgkb serve`: the HTTP server (implementation in pgkb/server)."""

from __future__ import annotations

from typing import Annotated

import typer

from pgkb.cli.common import DatabaseUrl, DataDir, settings_for


def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8400,
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="Accept unsigned requests (loopback hosts only).")
    ] = False,
    log_level: Annotated[str, typer.Option("--log-level")] = "info",
    sql_port: Annotated[
        int | None,
        typer.Option("--sql-port", help="Also serve the aws_bedrock SQL functions' endpoint on this port (see `pgkb sql`)."),
    ] = None,
    sql_host: Annotated[
        str, typer.Option("--sql-host", help="Address of that endpoint (keep it private).")
    ] = "127.0.0.1",
    sql_tls: Annotated[
        bool, typer.Option("--sql-tls", help="That endpoint requires TLS (see `pgkb sql serve --tls`).")
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option("--workers", help="Server processes sharing the port, each with its own model and pool (default 1; one per core for throughput)."),
    ] = None,
    tls_cert: Annotated[
        str | None, typer.Option("--tls-cert", help="Serve HTTPS (HTTP/2 by ALPN) with this PEM certificate (with --tls-key).")
    ] = None,
    tls_key: Annotated[str | None, typer.Option("--tls-key", help="The certificate's PEM private key.")] = None,
    tls: Annotated[
        bool, typer.Option("--tls", help="Serve HTTPS with the data dir's self-signed certificate (made on first use).")
    ] = False,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Serve bedrock-agent, bedrock-agent-runtime and bedrock-runtime over HTTP/1.1 and HTTP/2 (boto3 endpoint_url)."""
    from pgkb.server.run import serve as run_server
    from pgkb.server.run import tls_pair

    settings = settings_for(database_url, data_dir)
    run_server(settings, host, port, no_auth, log_level=log_level,
               sql_port=sql_port, sql_host=sql_host, sql_tls=sql_tls, workers=workers,
               tls=tls_pair(settings, host, tls_cert, tls_key, tls))

