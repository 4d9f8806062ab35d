"""`pgkb serve`: the service, the key store and the ASGI app under uvicorn.

uvicorn handles SIGTERM/SIGINT: it stops accepting, finishes in-flight requests, then runs the
lifespan shutdown, where the app stops running ingestion jobs and closes the service's pool and the key
store. The embedded PostgreSQL is stopped too when this server started it; one that was already running
(shared with other pgkb processes on the data dir) keeps running.
"""

from __future__ import annotations

import ipaddress
import logging
import signal
import socket
from typing import Any

from pgkb.config import Settings
from pgkb.errors import ValidationError

log = logging.getLogger("pgkb.server")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8400


def is_loopback(host: str) -> bool:
    """True when every address `host` resolves to is a loopback address."""
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0].split("%")[0]).is_loopback for i in infos)


def install_batching(service: Any) -> None:
    """Route the service's query embeddings through the per-model micro-batcher."""
    if not hasattr(service, "query_embedder"):
        return
    from pgkb.server.batching import batched

    service.query_embedder = lambda model, text: batched(model).embed_queries([text])[0]


def build_app(settings: Settings, *, no_auth: bool = False, service: Any = None) -> Any:
    """The app over a new KnowledgeBaseService (or `service`), verifying SigV4 unless `no_auth`."""
    from pgkb.db import open_database
    from pgkb.server.app import create_app
    from pgkb.server.auth import SigV4Verifier
    from pgkb.server.keys import KeyStore

    if service is None:
        from pgkb.service import KnowledgeBaseService

        service = KnowledgeBaseService(settings)
    install_batching(service)
    key_db = None
    auth = None
    if not no_auth:
        from dataclasses import replace

        key_db = open_database(replace(settings, pool_max_size=2))
        auth = SigV4Verifier(KeyStore(key_db, settings.data_dir).secret_for)

    def shutdown() -> None:
        from pgkb.server.batching import stats

        for st in stats():
            log.info(
                "query micro-batching for %s: %d model calls for %d queries",
                st["model"],
                st["calls"],
                st["queries"],
            )
        close = getattr(service, "close", None)
        if callable(close):
            close()
        if key_db is not None:
            key_db.close()

    return create_app(service, auth, on_shutdown=shutdown)


def serve(
    settings: Settings,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    no_auth: bool = False,
    *,
    log_level: str = "info",
    sql_port: int | None = None,
    sql_host: str = DEFAULT_HOST,
    sql_tls: bool = False,
) -> None:
    """Run the server until SIGTERM/SIGINT. Refuses `no_auth` on a non-loopback host.

    `sql_port`: also run the endpoint that the `aws_bedrock.*` SQL functions call (as `pgkb sql serve`
    would), in this process, with the same data dir's endpoint users."""
    if no_auth and not is_loopback(host):
        raise ValidationError(f"--no-auth is only allowed on a loopback host, not {host!r}")
    import uvicorn

    # The embedded PostgreSQL is shared by every pgkb process on the data dir: stop it on shutdown
    # only when this server is the one that started it.
    started_embedded = False
    if not settings.database_url:
        from pgkb.db.embedded import embedded_running

        started_embedded = not embedded_running(settings.data_dir)
    app = build_app(settings, no_auth=no_auth)
    logging.basicConfig(
        level=getattr(logging, log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    log.info(
        "pgkb serving bedrock-agent, bedrock-agent-runtime, bedrock-runtime on http://%s:%d%s",
        host,
        port,
        " (no auth)" if no_auth else "",
    )
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        log_level=log_level,
        access_log=False,  # request lines may carry ids users consider private; errors are logged
        timeout_keep_alive=75,
        server_header=False,
    )
    # uvicorn re-raises the signal it caught once it has shut down; with this handler in place that
    # ends the process with status 0 instead of "killed by SIGTERM".
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_quietly)
    log.info("web console: http://%s:%d/console", host, port)
    endpoint = None
    try:
        if sql_port is not None:
            from pgkb.sqlfuncs.wire import start_in_background

            try:
                endpoint = start_in_background(settings.data_dir, sql_host, sql_port, tls=sql_tls)
            except OSError as exc:
                raise ValidationError(f"the SQL functions' endpoint cannot listen on {sql_host}:{sql_port}: {exc.strerror}") from None
            log.info("aws_bedrock SQL functions' endpoint on %s:%d", sql_host, sql_port)
        uvicorn.Server(config).run()
    finally:
        if endpoint is not None:
            endpoint.stop()
        if started_embedded:
            from pgkb.db.embedded import stop_embedded

            stop_embedded(settings.data_dir)  # this server started it, so it stops it
            log.info("stopped the embedded PostgreSQL")


def _exit_quietly(signum: int, frame: Any) -> None:
    raise SystemExit(0)


def main() -> None:  # `python -m pgkb.server.run` for environments without the CLI wired yet
    import argparse

    p = argparse.ArgumentParser(prog="pgkb-serve")
    p.add_argument("--host", default=DEFAULT_HOST)
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--data-dir")
    p.add_argument("--database-url")
    p.add_argument("--no-auth", action="store_true")
    p.add_argument("--log-level", default="info")
    a = p.parse_args()
    settings = Settings().with_overrides(data_dir=a.data_dir, database_url=a.database_url)
    try:
        serve(settings, a.host, a.port, a.no_auth, log_level=a.log_level)
    except ValidationError as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
