"""aws_bedrock.* SQL functions through pgkb's wire endpoint, on the embedded PostgreSQL, with the real model."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import corpus
import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector

from pgkb.embeddings.registry import REFERENCE_MODEL_ID, get_model
from pgkb.sqlfuncs.calls import Calls
from pgkb.sqlfuncs.credentials import set_user
from pgkb.sqlfuncs.install import install, is_installed, uninstall
from pgkb.sqlfuncs.wire import EndpointThread, WireServer, file_users

MODEL = REFERENCE_MODEL_ID

# The block from Aurora's guide, verbatim but for the model id and vector(384).
DO_BLOCK = """
DO
$embed$
    DECLARE
        doc RECORD;
        emb vector(384);
    BEGIN
        FOR doc in SELECT id, content FROM documents WHERE embedding IS NULL LOOP
            EXECUTE $$ SELECT aws_bedrock.invoke_model_get_embeddings(
                    model_id      := 'sentence-transformers.all-minilm-l6-v2',
                    content_type  := 'application/json',
                    json_key      := 'embedding',
                    model_input   := json_build_object('inputText', $1)::text)$$
                INTO emb
                USING doc.content;
            UPDATE documents SET embedding = emb WHERE id = doc.id;
            COMMIT;
        END LOOP;
    END;
$embed$ LANGUAGE plpgsql;
"""


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    user: str
    password: str
    data_dir: Path


@pytest.fixture(scope="module")
def model():
    return get_model(MODEL)


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    data_dir = tmp_path_factory.mktemp("sqlfuncs")
    password = set_user(data_dir, "pgkb_test")
    thread = EndpointThread(WireServer(file_users(data_dir), Calls()))
    host, port = thread.start()
    yield Endpoint(host, port, "pgkb_test", password, data_dir)
    thread.stop()


@pytest.fixture
def db_url(new_database_url: str, endpoint: Endpoint) -> str:
    install(new_database_url, endpoint.host, endpoint.port, endpoint.user, endpoint.password)
    return new_database_url


def _as_role(url: str, role: str) -> str:
    return url.replace("://postgres:@", f"://{role}:@", 1)


def _short_texts(n: int) -> list[str]:
    """Real sentences of 3-40 words (Python's own docs): short enough to keep 1,000 single calls quick."""
    return corpus.sentences(n)


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _documents(url: str, texts: list[str]) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE documents (id int PRIMARY KEY, content text, embedding vector(384))")
        with conn.cursor().copy("COPY documents (id, content) FROM STDIN") as cp:
            for i, t in enumerate(texts, 1):
                cp.write_row((i, t))


def _embeddings(url: str, table: str = "documents") -> dict[int, np.ndarray | None]:
    with psycopg.connect(url) as conn:
        register_vector(conn)
        return {i: (None if e is None else e.to_numpy())
                for i, e in conn.execute(f"SELECT id, embedding FROM {table} ORDER BY id").fetchall()}


def test_do_block_verbatim_over_1000_rows(db_url: str, model) -> None:
    texts = _short_texts(1000)
    assert len(texts) == 1000
    _documents(db_url, texts)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(DO_BLOCK)
    got = _embeddings(db_url)
    assert all(v is not None for v in got.values())
    mine = np.stack([got[i] for i in range(1, 1001)])
    ref = model.embed_documents(texts)
    assert _cos(mine, ref).min() >= 0.9999


def test_named_arguments_quoting_and_invoke_model(db_url: str, model) -> None:
    text = "it's a \\back\\slash, a 'quote', é ü 中文, a\nnewline and $$dollars$$"
    with psycopg.connect(db_url, autocommit=True) as conn:
        register_vector(conn)
        emb = conn.execute(
            "SELECT aws_bedrock.invoke_model_get_embeddings(model_id := %s, content_type := 'application/json', "
            "json_key := 'embedding', model_input := json_build_object('inputText', %s::text)::text)::vector",
            (MODEL, text)).fetchone()[0].to_numpy()
        body = conn.execute(
            "SELECT aws_bedrock.invoke_model(model_id := %s, content_type := 'application/json', "
            "accept_type := 'application/json', model_input := json_build_object('inputText', %s::text)::text)",
            (MODEL, text)).fetchone()[0]
        typ = conn.execute("SELECT pg_typeof(aws_bedrock.invoke_model_get_embeddings(%s, 'application/json', "
                           "'embedding', '{\"inputText\": \"x\"}'))::text", (MODEL,)).fetchone()[0]
    ref = model.embed_documents([text])
    assert _cos(emb[None], ref)[0] >= 0.9999
    doc = json.loads(body)
    assert set(doc) >= {"embedding", "inputTextTokenCount"}
    assert _cos(np.array([doc["embedding"]], dtype=np.float32), ref)[0] >= 0.9999
    assert typ == "real[]"


def test_batch_function(db_url: str, model) -> None:
    texts = ["first text", None, "third, with a 'quote' and \\"]
    with psycopg.connect(db_url, autocommit=True) as conn:
        register_vector(conn)
        rows = conn.execute("SELECT ord, embedding::vector FROM aws_bedrock.invoke_model_get_embeddings_batch(%s, %s)",
                            (MODEL, texts)).fetchall()
    assert [r[0] for r in rows] == [1, 2, 3]
    assert rows[1][1] is None
    ref = model.embed_documents([texts[0], texts[2]])
    got = np.stack([rows[0][1].to_numpy(), rows[2][1].to_numpy()])
    assert _cos(got, ref).min() >= 0.9999


def _sql_error(url: str, query: str, params: tuple = ()) -> psycopg.Error:
    with psycopg.connect(url, autocommit=True) as conn, pytest.raises(psycopg.Error) as info:
        conn.execute(query, params)
    return info.value


CALL = "SELECT aws_bedrock.invoke_model_get_embeddings(%s, 'application/json', %s, %s)"


def test_errors_arrive_as_sql_errors_with_sqlstate(db_url: str, model) -> None:
    good = json.dumps({"inputText": "hello"})
    err = _sql_error(db_url, CALL, ("no.such-model", "embedding", good))
    assert err.sqlstate == "42704" and "no.such-model" in err.diag.message_primary
    err = _sql_error(db_url, CALL, (MODEL, "vector", good))
    assert err.sqlstate == "2203A" and "json_key 'vector'" in err.diag.message_primary
    err = _sql_error(db_url, CALL, (MODEL, "embedding", "{not json"))
    assert err.sqlstate == "22P02" and "not valid JSON" in err.diag.message_primary
    err = _sql_error(db_url, CALL, (MODEL, "embedding", json.dumps({"prompt": "hello"})))
    assert err.sqlstate == "22023" and "inputText" in err.diag.message_primary
    cohere_none = json.dumps({"texts": ["word " * 400], "input_type": "search_document", "truncate": "NONE"})
    err = _sql_error(db_url, "SELECT aws_bedrock.invoke_model(%s, 'application/json', 'application/json', %s)",
                     (MODEL, cohere_none))
    assert err.sqlstate == "22001" and "Too many input tokens" in err.diag.message_primary
    err = _sql_error(db_url, CALL, (MODEL, "embedding", None))
    assert err.sqlstate == "22004"
    # After errors the session's connection to pgkb still works.
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert conn.execute(CALL, (MODEL, "embedding", good)).fetchone()[0]


def test_unreachable_endpoint_and_wrong_password(new_database_url: str, endpoint: Endpoint) -> None:
    good = json.dumps({"inputText": "hello"})
    # A port nobody listens on.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free_port = s.getsockname()[1]
    install(new_database_url, "127.0.0.1", free_port, endpoint.user, endpoint.password)
    err = _sql_error(new_database_url, CALL, (MODEL, "embedding", good))
    assert err.sqlstate == "08001" and "unreachable" in err.diag.message_primary
    install(new_database_url, endpoint.host, endpoint.port, endpoint.user, "wrong-password")
    err = _sql_error(new_database_url, CALL, (MODEL, "embedding", good))
    assert err.sqlstate == "28P01" and "rejected the credentials" in err.diag.message_primary
    install(new_database_url, endpoint.host, endpoint.port, "nobody", endpoint.password)
    err = _sql_error(new_database_url, CALL, (MODEL, "embedding", good))
    assert err.sqlstate == "28P01"


def test_endpoint_rejects_clients_without_credentials(endpoint: Endpoint) -> None:
    base = f"host={endpoint.host} port={endpoint.port} dbname=pgkb sslmode=disable user={endpoint.user}"
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(base + " password=nope")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(base)
    # The right password works with a plain libpq client (simple protocol).
    with psycopg.connect(base + f" password={endpoint.password}", autocommit=True,
                         cursor_factory=psycopg.ClientCursor) as conn:
        cur = conn.cursor()
        cur.execute("SELECT pgkb_invoke_get_embeddings(%s, 'application/json', 'embedding', '{\"inputText\": \"hi\"}')",
                    (MODEL,))
        assert len(cur.fetchone()[0]) == 384


def test_non_superuser_calls_and_grants(new_database_url: str, pg_url: str, endpoint: Endpoint) -> None:
    suffix = new_database_url.rsplit("/", 1)[1].split("?")[0]
    caller, outsider = f"caller_{suffix}", f"outsider_{suffix}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for role in (caller, outsider):
            conn.execute(f'CREATE ROLE "{role}" LOGIN NOSUPERUSER')
    try:
        install(new_database_url, endpoint.host, endpoint.port, endpoint.user, endpoint.password, grant_to=caller)
        install(new_database_url, endpoint.host, endpoint.port, endpoint.user, endpoint.password, grant_to=caller)
        good = json.dumps({"inputText": "hello"})
        with psycopg.connect(_as_role(new_database_url, caller), autocommit=True) as conn:
            assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0] is False
            assert len(conn.execute(CALL, (MODEL, "embedding", good)).fetchone()[0]) == 384
            # The password in the user mapping is not readable by callers.
            assert conn.execute("SELECT umoptions FROM pg_user_mappings WHERE srvname = 'aws_bedrock_pgkb'"
                                ).fetchone()[0] is None
        err = _sql_error(_as_role(new_database_url, outsider), CALL, (MODEL, "embedding", good))
        assert err.sqlstate == "42501"
        with psycopg.connect(new_database_url) as conn:
            src = " ".join(r[0] for r in conn.execute(
                "SELECT prosrc FROM pg_proc WHERE pronamespace = 'aws_bedrock'::regnamespace").fetchall())
        assert endpoint.password not in src
    finally:
        uninstall(new_database_url)
        with psycopg.connect(pg_url, autocommit=True) as conn:
            for role in (caller, outsider):
                conn.execute(f'DROP ROLE IF EXISTS "{role}"')


def test_texts_longer_than_the_window_embed_their_first_tokens(db_url: str, model) -> None:
    """Real documents run longer than a local model's 256-token window: the SQL functions embed the
    first 254 word pieces (as sentence-transformers does) instead of refusing the row."""
    long_text = " ".join(corpus.paragraphs(40))
    head = long_text[: model.tokenizer.offsets(long_text)[253][1]]
    want = model.embed_documents([head])[0]
    with psycopg.connect(db_url, autocommit=True) as conn:
        one = conn.execute(CALL, (MODEL, "embedding", json.dumps({"inputText": long_text}))).fetchone()[0]
        many = conn.execute("SELECT embedding FROM aws_bedrock.invoke_model_get_embeddings_batch(%s, %s) ORDER BY ord",
                            (MODEL, ["short", long_text])).fetchall()
    assert _cos(np.array([one]), np.array([want]))[0] >= 0.9999
    assert _cos(np.array([list(many[-1][0])]), np.array([want]))[0] >= 0.9999


def test_failure_inside_do_block_keeps_committed_rows(db_url: str) -> None:
    texts = ["alpha", "beta", "gamma", "", "epsilon"]  # Titan refuses an empty inputText
    _documents(db_url, texts)
    err = _sql_error(db_url, DO_BLOCK)
    assert err.sqlstate == "22023"
    got = _embeddings(db_url)
    assert [got[i] is not None for i in range(1, 6)] == [True, True, True, False, False]


def test_install_is_idempotent_and_uninstall_removes(new_database_url: str, endpoint: Endpoint) -> None:
    for _ in range(2):
        install(new_database_url, endpoint.host, endpoint.port, endpoint.user, endpoint.password)
    assert is_installed(new_database_url)
    with psycopg.connect(new_database_url) as conn:
        assert conn.execute("SELECT count(*) FROM pg_user_mappings WHERE srvname = 'aws_bedrock_pgkb'").fetchone()[0] == 1
    uninstall(new_database_url)
    uninstall(new_database_url)
    assert not is_installed(new_database_url)
    with psycopg.connect(new_database_url) as conn:
        assert conn.execute("SELECT count(*) FROM pg_foreign_server WHERE srvname = 'aws_bedrock_pgkb'").fetchone()[0] == 0


def test_endpoint_restart_is_transparent(new_database_url: str, endpoint: Endpoint) -> None:
    thread = EndpointThread(WireServer(file_users(endpoint.data_dir), Calls()))
    host, port = thread.start()
    install(new_database_url, host, port, endpoint.user, endpoint.password)
    good = json.dumps({"inputText": "hello"})
    with psycopg.connect(new_database_url, autocommit=True) as conn:
        assert conn.execute(CALL, (MODEL, "embedding", good)).fetchone()[0]
        thread.stop()
        thread = EndpointThread(WireServer(file_users(endpoint.data_dir), Calls(), port=port))
        thread.start()
        try:
            # The session's dblink connection died with the old endpoint; the call reconnects.
            assert conn.execute(CALL, (MODEL, "embedding", good)).fetchone()[0]
        finally:
            thread.stop()


def test_tls_endpoint(new_database_url: str, endpoint: Endpoint, tmp_path: Path) -> None:
    """An endpoint with a certificate requires TLS: libpq with sslmode=require gets in (the client a
    database's dblink uses, where that database's libpq has TLS), a plain connection is refused."""
    from pgkb.errors import ValidationError
    from pgkb.sqlfuncs.tls import ensure_certificate, server_context

    cert, key = ensure_certificate(endpoint.data_dir)
    assert key.stat().st_mode & 0o077 == 0
    assert ensure_certificate(endpoint.data_dir) == (cert, key) and cert.read_bytes() == cert.read_bytes()
    server = WireServer(file_users(endpoint.data_dir), Calls())
    server.ssl_context = server_context(cert, key)
    thread = EndpointThread(server)
    host, port = thread.start()
    try:
        direct = f"host={host} port={port} dbname=pgkb user={endpoint.user} password={endpoint.password}"
        with psycopg.connect(direct + " sslmode=require") as c:
            assert c.pgconn.ssl_in_use
        with pytest.raises(psycopg.OperationalError, match="requires TLS"):
            psycopg.connect(direct + " sslmode=disable")
        # The embedded server's libpq (dblink's) is built without TLS: a mode that needs it is a clear
        # 08001 naming the cause, never a silent fall back to plain text.
        install(new_database_url, host, port, endpoint.user, endpoint.password, sslmode="require")
        err = _sql_error(new_database_url, CALL, (MODEL, "embedding", json.dumps({"inputText": "hello"})))
        assert err.sqlstate == "08001" and "SSL support is not compiled in" in (err.diag.message_detail or "")
        # ... and `prefer` (the default) without TLS meets the endpoint's own refusal.
        install(new_database_url, host, port, endpoint.user, endpoint.password)
        err = _sql_error(new_database_url, CALL, (MODEL, "embedding", json.dumps({"inputText": "hello"})))
        assert "requires TLS" in (err.diag.message_detail or "") + err.diag.message_primary, err.diag.message_primary
    finally:
        thread.stop()
    with pytest.raises(ValidationError, match="sslrootcert"):
        install(new_database_url, host, port, endpoint.user, endpoint.password, sslmode="verify-full")
    bad = tmp_path / "bad.crt"
    bad.write_text("not a certificate")
    with pytest.raises(ValidationError, match="cannot use the TLS certificate"):
        server_context(bad, key)


def test_cli_install_serve_call_uninstall(new_database_url: str, tmp_path: Path) -> None:
    """The deployment path: `pgkb sql install`, `pgkb sql serve` as its own process, a call, `uninstall`."""
    import subprocess
    import sys

    from helpers.servers import free_port, wait_for_port

    port = free_port()
    env = {**os.environ, "PGKB_DATA_DIR": str(tmp_path)}
    pgkb = [sys.executable, "-m", "pgkb.cli", "sql"]
    subprocess.run([*pgkb, "install", "--database-url", new_database_url, "--endpoint-port", str(port)],
                   check=True, env=env, capture_output=True)
    users = tmp_path / "sqlfuncs" / "users.json"
    assert users.stat().st_mode & 0o077 == 0
    stored = users.read_text()
    with psycopg.connect(new_database_url) as conn:
        mapping = conn.execute("SELECT umoptions FROM pg_user_mappings WHERE srvname = 'aws_bedrock_pgkb'").fetchone()[0]
    password = next(o.split("=", 1)[1] for o in mapping if o.startswith("password="))
    assert password not in stored and "SCRAM-SHA-256$" in stored  # pgkb keeps only the verifier
    server = subprocess.Popen([*pgkb, "serve", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, server, 60)
        with psycopg.connect(new_database_url, autocommit=True) as conn:
            vec = conn.execute(CALL, (MODEL, "embedding", json.dumps({"inputText": "hello"}))).fetchone()[0]
        assert len(vec) == 384
    finally:
        server.terminate()
        server.wait(timeout=30)
    subprocess.run([*pgkb, "uninstall", "--database-url", new_database_url], check=True, env=env, capture_output=True)
    assert not is_installed(new_database_url)
    assert json.loads(users.read_text()) == {}


def test_pgkb_serve_runs_the_endpoint_too(new_database_url: str, tmp_path: Path) -> None:
    """`pgkb serve --sql-port`: one process serves the HTTP API and the SQL functions' endpoint."""
    import socket
    import subprocess
    import sys

    from helpers.servers import free_port, pgkb_serve

    sql_port = free_port()
    env = {**os.environ, "PGKB_DATA_DIR": str(tmp_path)}
    pgkb = [sys.executable, "-m", "pgkb.cli"]
    subprocess.run([*pgkb, "sql", "install", "--database-url", new_database_url, "--endpoint-port", str(sql_port)],
                   check=True, env=env, capture_output=True)
    log = tmp_path / "serve.log"
    args = ("--no-auth", "--sql-port", str(sql_port), "--database-url", new_database_url)
    with pgkb_serve(None, log, {"PGKB_DATA_DIR": str(tmp_path)}, args) as (_, server):
        with psycopg.connect(new_database_url, autocommit=True) as conn:
            vec = conn.execute(CALL, (MODEL, "embedding", json.dumps({"inputText": "hello"}))).fetchone()[0]
        assert len(vec) == 384
    assert server.returncode == 0, log.read_text()
    with pytest.raises(OSError):  # the endpoint went down with the server
        socket.create_connection(("127.0.0.1", sql_port), timeout=1).close()
    # A port already taken is a one-line error, not a traceback.
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        r = subprocess.run([*pgkb, "serve", "--no-auth", "--port", str(free_port()), "--sql-port",
                            str(busy.getsockname()[1]), "--database-url", new_database_url],
                           env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    assert "cannot listen" in r.stderr, r.stderr


class _SlowBackend:
    """A stand-in model (the database side is real): 50 ms per call, vector = (call size, text length)."""

    def __init__(self) -> None:
        from pgkb.sqlfuncs.calls import RegistryBackend

        self.real = RegistryBackend()
        self.calls = 0

    def invoke(self, model_id: str, body: bytes, content_type: str, accept: str) -> tuple[bytes, str]:
        raise AssertionError("plain Titan calls must take the batched path")

    def embed(self, model_id: str, texts) -> np.ndarray:
        self.calls += 1
        time.sleep(0.05)
        return np.array([[len(texts), len(t)] for t in texts], dtype=np.float32)


def test_concurrent_calls_share_model_calls(new_database_url: str, endpoint: Endpoint) -> None:
    from concurrent.futures import ThreadPoolExecutor

    backend = _SlowBackend()
    server = WireServer(file_users(endpoint.data_dir), Calls(backend))
    thread = EndpointThread(server)
    host, port = thread.start()
    try:
        install(new_database_url, host, port, endpoint.user, endpoint.password)

        def session(k: int) -> list[tuple[int, list[float]]]:
            out = []
            with psycopg.connect(new_database_url, autocommit=True) as conn:
                for j in range(5):
                    text = "x" * (k * 10 + j + 1)
                    out.append((len(text), conn.execute(CALL, (MODEL, "embedding", json.dumps({"inputText": text})))
                                .fetchone()[0]))
            return out

        with ThreadPoolExecutor(8) as pool:
            results = [r for rs in pool.map(session, range(8)) for r in rs]
        assert len(results) == 40
        assert all(vec[1] == n for n, vec in results)  # each caller got the vector of its own text
        assert server.coalescer is not None and server.coalescer.items == 40
        assert backend.calls == server.coalescer.batches < 40
        assert max(vec[0] for _, vec in results) > 1  # some model calls served several sessions
    finally:
        thread.stop()


def test_endpoint_query_parser() -> None:
    from pgkb.sqlfuncs import sqltext
    from pgkb.sqlfuncs.errors import SqlStateError

    call = sqltext.parse("SELECT pgkb_invoke('a''b', E'c\\\\d''e', NULL, 'x'::text);")
    assert call == sqltext.Call("pgkb_invoke", ["a'b", "c\\d'e", None, "x"], False)
    call = sqltext.parse("select * from PGKB_EMBED_BATCH('m', '[\"t\"]') AS t(ord int, e real[])")
    assert call == sqltext.Call("pgkb_embed_batch", ["m", '["t"]'], True)
    assert sqltext.parse("SET client_encoding TO 'UTF8'") == sqltext.SetCommand("client_encoding", "UTF8")
    assert sqltext.parse(" ; ") is None
    for bad in ("DROP TABLE x", "SELECT f('a') ; DROP TABLE x", "SELECT f(a)", "SELECT f('a'", "SELECT f('a) "):
        with pytest.raises(SqlStateError) as info:
            sqltext.parse(bad)
        assert info.value.sqlstate == "42601"


def test_arguments_cannot_inject(db_url: str) -> None:
    good = json.dumps({"inputText": "hello"})
    evil = "x', 'a', 'b', 'c'); SELECT pgkb_invoke('y"
    err = _sql_error(db_url, CALL, (evil, "embedding", good))
    assert err.sqlstate == "42704" and evil in err.diag.message_primary
