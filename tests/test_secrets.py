"""Secrets: env, pgkb's 0600 store, Secrets Manager (moto server); rotation on 28P01; no password leaks anywhere."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
from helpers.byo import shared_password_server, socket_dir
from helpers.moto import moto_server
from helpers.servers import free_port

from pgkb.config import Settings
from pgkb.db import Database, DatabaseAuthError
from pgkb.errors import DependencyFailedError, NotFoundError, ValidationError
from pgkb.secrets import DbCredentials, LocalSecretStore, SecretResolver, env_var_for


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    yield shared_password_server()


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def aws(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                 "PGKB_SECRETSMANAGER_ENDPOINT_URL": moto_url}.items():
        monkeypatch.setenv(k, v)
    return boto3.client("secretsmanager", region_name="us-east-1", endpoint_url=moto_url)


def make_role(server: str, password: str) -> str:
    role = "r_" + uuid.uuid4().hex[:8]
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            psycopg.sql.Identifier(role), psycopg.sql.Literal(password)))
    return role


def rds_json(server: str, role: str, password: str, **extra: Any) -> str:
    return json.dumps({"username": role, "password": password, "engine": "postgres", "host": socket_dir(server),
                       "port": 5432, "dbname": "postgres", **extra})


def test_local_store_is_0600_and_keeps_values_out_of_errors(tmp_path: Path) -> None:
    r = SecretResolver(tmp_path, "us-east-1", "000000000000")
    arn = r.put_local("team/db", DbCredentials(username="u", password="pw-local-1", host="h", port=5433, dbname="d"))
    assert arn == "arn:aws:secretsmanager:us-east-1:000000000000:secret:team/db"
    assert stat.S_IMODE(LocalSecretStore(tmp_path).path.stat().st_mode) == 0o600
    creds = r.resolve(arn)
    assert (creds.username, creds.host, creds.port, creds.dbname) == ("u", "h", 5433, "d")
    assert r.resolve("team/db") is creds  # a bare name is the same secret, cached
    assert "pw-local-1" not in repr(creds) and "pw-local-1" not in creds.describe()
    with pytest.raises(NotFoundError, match=env_var_for("missing")):
        r.resolve("missing")


def test_environment_variable_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r = SecretResolver(tmp_path, "us-east-1", "000000000000")
    r.put_local("my-db", DbCredentials(username="local", password="a"))
    monkeypatch.setenv("PGKB_SECRET_MY_DB", json.dumps({"username": "fromenv", "password": "b", "host": "e"}))
    assert r.resolve("my-db").username == "fromenv"


@pytest.mark.parametrize("value, needle", [
    ("not json at all hunter2", "not JSON"),
    ('["hunter2"]', "JSON object"),
    ('{"password": "hunter2"}', "no 'username'"),
    ('{"username": "u", "password": "hunter2", "engine": "mysql"}', "not PostgreSQL"),
])
def test_bad_secrets_are_validation_errors_without_the_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             value: str, needle: str) -> None:
    monkeypatch.setenv("PGKB_SECRET_BAD", value)
    with pytest.raises(ValidationError) as err:
        SecretResolver(tmp_path, "us-east-1", "000000000000").resolve("bad")
    assert needle in str(err.value) and "hunter2" not in str(err.value)


def test_secrets_manager_by_arn(aws: Any, tmp_path: Path) -> None:
    arn = aws.create_secret(Name="prod/kb", SecretString=json.dumps(
        {"username": "u", "password": "sm-pw", "host": "db.example", "port": "5432", "dbname": "kb", "engine": "postgres",
         "sslmode": "verify-full", "sslrootcert": "/etc/rds.pem"}))["ARN"]
    creds = SecretResolver(tmp_path, "us-east-1", "000000000000").resolve(arn)
    assert (creds.username, creds.password, creds.port, creds.dbname) == ("u", "sm-pw", 5432, "kb")
    info = psycopg.conninfo.conninfo_to_dict(creds.conninfo())
    assert info["sslmode"] == "verify-full" and info["sslrootcert"] == "/etc/rds.pem" and info["host"] == "db.example"


def test_secrets_manager_errors(aws: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r = SecretResolver(tmp_path, "us-east-1", "000000000000")
    with pytest.raises(NotFoundError):
        r.resolve("arn:aws:secretsmanager:us-east-1:123456789012:secret:nope-AbCdEf")
    monkeypatch.setenv("PGKB_SECRETSMANAGER_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(DependencyFailedError, match="unreachable"):
        r.resolve("arn:aws:secretsmanager:us-east-1:123456789012:secret:other-AbCdEf")


def test_rotation_in_secrets_manager_is_picked_up_by_a_running_pool(server: str, aws: Any, tmp_path: Path) -> None:
    role = make_role(server, "first-pw-1")
    arn = aws.create_secret(Name=f"rot/{role}", SecretString=rds_json(server, role, "first-pw-1"))["ARN"]
    resolver = SecretResolver(tmp_path, "us-east-1", "000000000000")
    db = Database(resolver.resolve(arn).conninfo(), timeout_s=10,
                  refresh=lambda: resolver.resolve(arn, refresh=True).conninfo()).open()
    try:
        with db.connection() as conn:
            assert conn.execute("SELECT current_user").fetchone()[0] == role
        # Rotate as Secrets Manager's rotation lambda would: new password on the role, then in the secret.
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f"ALTER ROLE {role} PASSWORD 'second-pw-2'")
            aws.put_secret_value(SecretId=arn, SecretString=rds_json(server, role, "second-pw-2"))
            # With a timeout, pg_terminate_backend returns once the backend is gone (PostgreSQL 14+):
            # without it, the next checkout could race the FATAL and get a connection still dying.
            conn.execute("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE usename = %s", (role,))
        with db.connection() as conn:  # the dead connection is replaced; 28P01 -> secret re-read -> connected
            assert conn.execute("SELECT current_user").fetchone()[0] == role
        assert "second-pw-2" in db.url
    finally:
        db.close()


def test_stale_cached_password_is_reread_once_at_open(server: str, tmp_path: Path) -> None:
    role = make_role(server, "old-pw-1")
    resolver = SecretResolver(tmp_path, "us-east-1", "000000000000")
    store = LocalSecretStore(tmp_path)
    store.put("s", json.loads(rds_json(server, role, "old-pw-1")))
    stale = resolver.resolve("s").conninfo()
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"ALTER ROLE {role} PASSWORD 'new-pw-2'")
    store.put("s", json.loads(rds_json(server, role, "new-pw-2")))
    calls = []

    def refresh() -> str:
        calls.append(1)
        return resolver.resolve("s", refresh=True).conninfo()

    db = Database(stale, timeout_s=10, refresh=refresh).open()
    db.close()
    assert len(calls) == 1


def test_wrong_password_fails_fast_in_one_line(server: str, tmp_path: Path) -> None:
    role = make_role(server, "right-pw-1")
    store = LocalSecretStore(tmp_path)
    store.put("w", json.loads(rds_json(server, role, "wrong-pw-9")))
    resolver = SecretResolver(tmp_path, "us-east-1", "000000000000")
    with pytest.raises(DatabaseAuthError) as err:
        Database(resolver.resolve("w").conninfo(), timeout_s=30,
                 refresh=lambda: resolver.resolve("w", refresh=True).conninfo()).open()
    msg = str(err.value)
    assert "password authentication failed" in msg and "\n" not in msg and "wrong-pw-9" not in msg


def _cli(args: list[str], data_dir: Path, env: dict[str, str]) -> str:
    """Run the CLI with every logger at DEBUG; returns stdout + stderr."""
    code = ("import logging, sys; logging.basicConfig(level=logging.DEBUG); "
            f"sys.argv = ['pgkb'] + {args + ['--data-dir', str(data_dir)]!r}; from pgkb.cli import main; main()")
    e = {k: v for k, v in os.environ.items() if k != "PGKB_DATABASE_URL"}
    e.update({"PGKB_CONNECT_TIMEOUT": "2", **env})
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e, timeout=120)
    return f"[{args[:2]} rc={r.returncode}]\n{r.stdout}{r.stderr}"


def test_no_password_in_output_logs_or_errors(server: str, aws: Any, moto_url: str, tmp_path: Path,
                                              settings: Settings, db: Any) -> None:
    right, wrong = "Right-Pw-" + uuid.uuid4().hex, "Wrong-Pw-" + uuid.uuid4().hex
    role = make_role(server, right)
    sm_arn = aws.create_secret(Name=f"leak/{role}", SecretString=rds_json(server, role, wrong))["ARN"]
    env = {
        "PGKB_SECRET_WRONGPW": rds_json(server, role, wrong),
        "PGKB_SECRET_UNREACHABLE": json.dumps({"username": role, "password": wrong, "host": "127.0.0.1", "port": 1}),
        "PGKB_SECRET_NOTJSON": f"password={wrong} user={role}",
        "PGKB_SECRET_GOOD": rds_json(server, role, right),
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "PGKB_SECRETSMANAGER_ENDPOINT_URL": moto_url,
    }
    home = {"PGKB_DATABASE_URL": settings.database_url or ""}
    runs = [
        (["doctor", "--table", "x.y", "--secret", "wrongpw"], env),
        (["doctor", "--table", "x.y", "--secret", "unreachable"], env),
        (["doctor", "--table", "x.y", "--secret", "notjson"], env),
        (["doctor", "--table", "x.y", "--secret", sm_arn], env),
        (["doctor", "--table", "x.y", "--secret", "good"], env),
        (["doctor", "--table", "x.y", "--database-url", f"postgresql://{role}:{wrong}@127.0.0.1:1/x"], env),
        (["secrets", "show", "good", "--json"], env),
        (["db", "register", "leaky", "--secret", "wrongpw"], {**env, **home}),
        (["db", "register", "leaky-sm", "--secret", sm_arn], {**env, **home}),
        (["db", "setup", "--database-url", server, "--role", "leak_" + role, "--no-catalog"], env),
    ]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:  # independent processes: run them side by side
        outputs = list(pool.map(lambda run: _cli(run[0], tmp_path, run[1]), runs))
    text = "\n".join(outputs)
    generated = LocalSecretStore(tmp_path).get(f"pgkb-leak_{role}")
    assert generated is not None, text
    # Each failure was exercised (and said what went wrong) ...
    assert text.count("password authentication failed") >= 3, text
    assert "cannot reach the database" in text and "not JSON" in text and "hasPassword" in text
    # ... and no password is anywhere in stdout, stderr or the DEBUG logs.
    for secret in (right, wrong, generated["password"]):
        assert secret not in text
    # API responses and errors from the service layer: a KB on a registered database whose secret is wrong.
    from pgkb.service import KnowledgeBaseService

    svc = KnowledgeBaseService(settings, database=db)
    try:
        os.environ["PGKB_SECRET_LEAK_GOOD"] = rds_json(server, role, right)
        from pgkb.admin.registry import register_database

        reg = register_database(db, settings, "leak-" + role.replace("_", "-"), "leak-good")
        rds = {"resourceArn": reg["resourceArn"], "credentialsSecretArn": "wrongpw-svc", "databaseName": "postgres",
               "tableName": "bedrock_integration.t", "fieldMapping": {"primaryKeyField": "id", "vectorField": "embedding",
                                                                      "textField": "chunks", "metadataField": "metadata"}}
        os.environ["PGKB_SECRET_WRONGPW_SVC"] = rds_json(server, role, wrong)
        with pytest.raises(DatabaseAuthError) as err:
            svc.database_for(rds)
        assert wrong not in str(err.value) and right not in str(err.value)
        assert wrong not in json.dumps(reg, default=str) and right not in json.dumps(reg, default=str)
    finally:
        os.environ.pop("PGKB_SECRET_LEAK_GOOD", None)
        os.environ.pop("PGKB_SECRET_WRONGPW_SVC", None)
        svc.close()


def test_secrets_put_reads_the_password_from_stdin(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PGKB_DATABASE_URL"}
    r = subprocess.run([sys.executable, "-m", "pgkb.cli", "secrets", "put", "team-db", "--username", "u", "--host", "h",
                        "--port", "6432", "--dbname", "kb", "--sslmode", "require", "--password-stdin",
                        "--data-dir", str(tmp_path)], input="Stdin-Pw-1\n", capture_output=True, text=True, env=env,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "arn:aws:secretsmanager:us-east-1:000000000000:secret:team-db"
    assert "Stdin-Pw-1" not in r.stdout + r.stderr
    stored = LocalSecretStore(tmp_path).get("team-db")
    assert stored == {"username": "u", "password": "Stdin-Pw-1", "host": "h", "port": 6432, "dbname": "kb",
                      "engine": "postgres", "sslmode": "require"}


def test_setup_stores_the_role_in_secrets_manager(server: str, aws: Any, moto_url: str, tmp_path: Path) -> None:
    role = "sm_" + uuid.uuid4().hex[:8]
    env = {k: v for k, v in os.environ.items() if k != "PGKB_DATABASE_URL"}
    args = [sys.executable, "-m", "pgkb.cli", "db", "setup", "--database-url", server, "--role", role, "--table",
            f"t_{role}", "--no-catalog", "--secrets-manager", "--json", "--data-dir", str(tmp_path)]
    first = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
    assert first.returncode == 0, first.stderr
    arn = json.loads(first.stdout)["credentialsSecretArn"]
    assert arn.startswith(f"arn:aws:secretsmanager:us-east-1:123456789012:secret:pgkb-{role}")
    value = json.loads(aws.get_secret_value(SecretId=arn)["SecretString"])
    assert value["username"] == role and value["password"] not in first.stdout + first.stderr
    assert LocalSecretStore(tmp_path).get(f"pgkb-{role}") is None  # not in the local store
    again = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode == 0 and not json.loads(again.stdout)["passwordChanged"], again.stderr
    # The secret resolves by its ARN and logs the role in.
    creds = SecretResolver(tmp_path, "us-east-1", "000000000000").resolve(arn)
    with psycopg.connect(creds.conninfo()) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == role
