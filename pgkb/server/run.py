"""`pgkb serve`: the service, the key store and the ASGI app under granian (HTTP/1.1 and HTTP/2).

granian handles SIGTERM/SIGINT: it stops accepting, finishes in-flight requests, then each worker runs
the lifespan shutdown, where the app stops running ingestion jobs and closes the service's pool and the
key store. The embedded PostgreSQL is stopped too when this server started it; one that was already
running (shared with other pgkb processes on the data dir) keeps running.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import socket
from functools import partial
from pathlib import Path
from typing import Any

from pgkb import config
from pgkb.config import Settings
from pgkb.errors import ValidationError
from pgkb.server.keys import DEFAULT_KEY_CACHE_TTL_S

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
    return bool(infos) and all(ipaddress.ip_address(str(i[4][0]).split("%")[0]).is_loopback for i in infos)


def install_batching(service: Any) -> None:
    """Route the service's query embeddings through the per-model micro-batcher."""
    if not hasattr(service, "query_embedder"):
        return
    from pgkb.server.batching import batched

    service.query_embedder = lambda model, text: batched(model).embed_queries([text])[0]


def worker_settings(settings: Settings, workers: int) -> Settings:
    """Each of `workers` processes gets its share of the cores for its model (cores / workers, at least
    one), unless PGKB_MODEL_THREADS says otherwise: N models each sized to every core would make
    N x cores threads fight for the cores."""
    if settings.model_threads is not None or workers <= 1:
        return settings
    return settings.replace(model_threads=max(1, (os.cpu_count() or 1) // workers))


KEY_CACHE_TTL_ENV = "PGKB_KEY_CACHE_TTL_S"


def key_cache_ttl() -> float:
    """Seconds a looked-up key stays cached: a key revoked by another process (`pgkb keys revoke`) is
    refused by every request that arrives this long after the revocation committed."""
    raw = config.current().key_cache_ttl_s
    if not raw:
        return DEFAULT_KEY_CACHE_TTL_S
    try:
        ttl = float(raw)
    except ValueError:
        raise ValidationError(f"{KEY_CACHE_TTL_ENV} must be a number of seconds, not {raw!r}") from None
    if not 0 <= ttl <= 3600:
        raise ValidationError(f"{KEY_CACHE_TTL_ENV} must be between 0 and 3600 seconds")
    return ttl


def build_app(settings: Settings, *, no_auth: bool = False, service: Any = None) -> Any:
    """The app over a new KnowledgeBaseService (or `service`), verifying SigV4 unless `no_auth`."""
    from pgkb.db import open_database
    from pgkb.embeddings.base import model_threads, use_threads
    from pgkb.server.app import create_app
    from pgkb.server.auth import SigV4Verifier
    from pgkb.server.keys import KeyStore

    use_threads(settings.model_threads)  # before any model loads in this (worker) process
    log.info("server process %d: local embedding models compute with %d thread(s)", os.getpid(), model_threads())
    if service is None:
        from pgkb.service import KnowledgeBaseService

        service = KnowledgeBaseService(settings)
    install_batching(service)
    key_db = None
    auth = None
    if not no_auth:

        key_db = open_database(settings.replace(pool_max_size=2))
        auth = SigV4Verifier(KeyStore(key_db, settings.data_dir, ttl_s=key_cache_ttl()).secret_for)

    def shutdown() -> None:
        from pgkb.server.batching import stats

        for st in stats():
            log.info(
                "query micro-batching for %s: %d model calls for %d queries (%d run by a lone request itself)",
                st["model"],
                st["calls"],
                st["queries"],
                st["inline"],
            )
        close = getattr(service, "close", None)
        if callable(close):
            close()
        if key_db is not None:
            key_db.close()

    return create_app(service, auth, on_shutdown=shutdown)


def tls_pair(settings: Settings, host: str, cert: str | None, key: str | None, self_signed: bool) -> tuple[str, str] | None:
    """(certificate, key) paths to serve HTTPS with, checked now so a bad pair is a one-line error;
    `self_signed` uses the data dir's self-signed pair (the SQL endpoint's, made on first use)."""
    from pgkb.sqlfuncs.tls import ensure_certificate, server_context

    if (cert is None) != (key is None):
        raise ValidationError("--tls-cert and --tls-key go together")
    if cert is None or key is None:
        if not self_signed:
            return None
        made = ensure_certificate(settings.data_dir, [host])
        cert, key = str(made[0]), str(made[1])
    server_context(cert, key)  # raises ValidationError naming the files when they are unusable
    return cert, key


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
    workers: int | None = None,
    tls: tuple[str, str] | None = None,
    engine: str = "granian",
) -> None:
    """Run the server until SIGTERM/SIGINT. Refuses `no_auth` on a non-loopback host.

    HTTP/1.1 and HTTP/2 (prior knowledge, as the JavaScript SDK's default handler speaks it) share the
    port; with `tls` (certificate, key) it is HTTPS, HTTP/2 chosen by ALPN. `workers` server processes
    share the port, each with its own service, model and connection pool. `engine="uvicorn"` is the
    previous HTTP/1.1-only server, one process, kept for the benchmark's before/after comparison.

    `sql_port`: also run the endpoint that the `aws_bedrock.*` SQL functions call (as `pgkb sql serve`
    would), in this process, with the same data dir's endpoint users."""
    if no_auth and not is_loopback(host):
        raise ValidationError(f"--no-auth is only allowed on a loopback host, not {host!r}")
    if engine not in ("granian", "uvicorn"):
        raise ValidationError(f"unknown server engine {engine!r}")
    workers = 1 if workers is None else workers
    if workers < 1:
        raise ValidationError("--workers must be at least 1")
    settings = worker_settings(settings, workers)

    # The embedded PostgreSQL is shared by every pgkb process on the data dir: stop it on shutdown
    # only when this server is the one that started it.
    started_embedded = False
    if not settings.database_url:
        from pgkb.db.embedded import embedded_running, ensure_embedded

        started_embedded = not embedded_running(settings.data_dir)
        ensure_embedded(settings.data_dir)  # before the workers start, so they join one server
    logging.basicConfig(
        level=getattr(logging, log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    scheme = "https" if tls else "http"
    log.info(
        "pgkb serving bedrock-agent, bedrock-agent-runtime, bedrock-runtime on %s://%s:%d (%s)%s",
        scheme,
        host,
        port,
        "HTTP/1.1" if engine == "uvicorn" else f"HTTP/1.1 and HTTP/2, {workers} worker process(es)",
        " (no auth)" if no_auth else "",
    )
    log.info("web console: %s://%s:%d/console", scheme, host, port)
    endpoint = None
    try:
        if sql_port is not None:
            from pgkb.sqlfuncs.wire import start_in_background

            try:
                endpoint = start_in_background(settings.data_dir, sql_host, sql_port, tls=sql_tls)
            except OSError as exc:
                raise ValidationError(f"the SQL functions' endpoint cannot listen on {sql_host}:{sql_port}: {exc.strerror}") from None
            log.info("aws_bedrock SQL functions' endpoint on %s:%d", sql_host, sql_port)
        if engine == "uvicorn":
            _run_uvicorn(build_app(settings, no_auth=no_auth), host, port, log_level, tls)
        else:
            _run_granian(settings, no_auth, host, port, log_level, workers, tls)
    finally:
        if endpoint is not None:
            endpoint.stop()
        if started_embedded:
            from pgkb.db.embedded import stop_embedded

            stop_embedded(settings.data_dir)  # this server started it, so it stops it
            log.info("stopped the embedded PostgreSQL")


def _run_granian(
    settings: Settings, no_auth: bool, host: str, port: int, log_level: str, workers: int, tls: tuple[str, str] | None
) -> None:
    """Granian (Rust, hyper): HTTP/1.1 and HTTP/2 on one port. Its main process forks `workers`
    processes that each build the app (so each has its own model and pool) and share the socket; on
    SIGTERM/SIGINT each finishes its requests and runs the app's lifespan shutdown."""
    from granian.constants import HTTPModes, Interfaces, SSLProtocols
    from granian.log import LogLevels
    from granian.server import Server

    level = log_level.lower() if log_level.lower() in {lv.value for lv in LogLevels} else "info"
    server = Server(
        "pgkb.server.app:BedrockApp",  # a label only: the loader below builds the app in each worker
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        workers=workers,
        http=HTTPModes.auto,
        websockets=False,
        log_level=LogLevels(level),
        log_access=False,  # request lines may carry ids users consider private; errors are logged
        ssl_cert=Path(tls[0]) if tls else None,
        ssl_key=Path(tls[1]) if tls else None,
        ssl_protocol_min=SSLProtocols.tls12,
        workers_kill_timeout=60,
    )
    server.serve(target_loader=partial(build_app, settings, no_auth=no_auth), wrap_loader=False)


def _run_uvicorn(app: Any, host: str, port: int, log_level: str, tls: tuple[str, str] | None) -> None:
    import uvicorn

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        log_level=log_level,
        access_log=False,
        timeout_keep_alive=75,
        server_header=False,
        ssl_certfile=tls[0] if tls else None,
        ssl_keyfile=tls[1] if tls else None,
    )
    # uvicorn re-raises the signal it caught once it has shut down; with this handler in place that
    # ends the process with status 0 instead of "killed by SIGTERM".
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_quietly)
    uvicorn.Server(config).run()


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
    p.add_argument("--workers", type=int)
    p.add_argument("--engine", default="granian", choices=["granian", "uvicorn"])
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--tls", action="store_true")
    a = p.parse_args()
    settings = config.current().with_overrides(data_dir=a.data_dir, database_url=a.database_url)
    try:
        tls = tls_pair(settings, a.host, a.tls_cert, a.tls_key, a.tls)
        serve(settings, a.host, a.port, a.no_auth, log_level=a.log_level, workers=a.workers, tls=tls, engine=a.engine)
    except ValidationError as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
