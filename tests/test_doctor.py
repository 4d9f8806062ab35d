"""pgkb doctor: a table made with the Aurora guide's SQL passes; each problem, introduced alone, is caught."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from helpers.byo import shared_password_server
from helpers.databases import fresh_database

from pgkb.admin.doctor import diagnose, report
from pgkb.store.vector_table import FieldMapping, TableRef

ROLE = "bedrock_user"
TABLE = TableRef("bedrock_integration", "bedrock_kb")
T = "bedrock_integration.bedrock_kb"

# Contract §4.2, verbatim (n = 384), minus CREATE ROLE (the role is cluster-wide: made once per module).
AURORA_ADMIN = """
CREATE EXTENSION IF NOT EXISTS vector;
SELECT extversion FROM pg_extension WHERE extname='vector';
CREATE SCHEMA bedrock_integration;
GRANT ALL ON SCHEMA bedrock_integration to bedrock_user;
"""
AURORA_AS_ROLE = """
CREATE TABLE bedrock_integration.bedrock_kb (id uuid PRIMARY KEY, embedding vector(384), chunks text, metadata json, custom_metadata jsonb);
CREATE INDEX ON bedrock_integration.bedrock_kb USING hnsw (embedding vector_cosine_ops);
CREATE INDEX ON bedrock_integration.bedrock_kb USING hnsw (embedding vector_cosine_ops) WITH (ef_construction=256);
CREATE INDEX ON bedrock_integration.bedrock_kb USING gin (to_tsvector('simple', chunks));
CREATE INDEX ON bedrock_integration.bedrock_kb USING gin (custom_metadata);
"""


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    url = shared_password_server()
    with psycopg.connect(url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'bedrock_user'").fetchone():
            conn.execute("CREATE ROLE bedrock_user WITH PASSWORD 'password' LOGIN")
    yield url


@pytest.fixture
def guide_db(server: str) -> Iterator[str]:
    """A fresh database set up exactly as the Aurora guide says; yields its admin URL."""
    with fresh_database(server, "d_") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(AURORA_ADMIN)
            conn.execute("SET ROLE bedrock_user")
            conn.execute(AURORA_AS_ROLE)
        yield url


def run(url: str, *stmts: str, dimensions: int | None = 384, role: str | None = ROLE,
        mapping: FieldMapping | None = None) -> list:
    with psycopg.connect(url, autocommit=True) as conn:
        for s in stmts:
            conn.execute(s)
        return diagnose(conn, TABLE, mapping or FieldMapping(), dimensions=dimensions, role=role)


def errors(problems: list) -> list:
    return [p for p in problems if p.severity == "error"]


def only(problems: list, check: str, severity: str = "error") -> object:
    hits = [p for p in problems if p.check == check and p.severity == severity]
    assert hits, [p.to_dict() for p in problems]
    others = [p for p in errors(problems) if p.check != check]
    assert not others, [p.to_dict() for p in others]
    return hits[0]


def test_aurora_guide_table_passes(guide_db: str) -> None:
    problems = run(guide_db)
    assert report(problems)["ok"], [p.to_dict() for p in problems]
    # The guide's role owns its table: pgkb says it could drop it, as a warning only.
    assert {p.check for p in problems} <= {"least privilege", "storage"}


def test_pgvector_missing(server: str) -> None:
    with fresh_database(server, "d_") as url:
        problems = run(url, role=None)
        p = [p for p in problems if p.check == "pgvector"][0]
        assert p.severity == "error" and "not installed" in p.message
        assert p.fix == "CREATE EXTENSION IF NOT EXISTS vector;"


def test_pgvector_older_than_0_5(server: str) -> None:
    """An old pgvector, faked in the catalog of a throwaway database (no 0.4 build to install)."""
    from pgkb.admin.setup import SetupPlan, run_setup
    from pgkb.errors import ValidationError

    with fresh_database(server, "d_") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION vector")
            conn.execute("UPDATE pg_extension SET extversion = '0.4.4' WHERE extname = 'vector'")
        p = [p for p in run(url, role=None) if p.check == "pgvector"][0]
        assert p.severity == "error" and "pgvector 0.4.4 is installed" in p.message and "0.5.0" in p.message
        assert p.fix.startswith("ALTER EXTENSION vector UPDATE;")
        with pytest.raises(ValidationError, match="pgvector 0.4.4 is installed"):
            run_setup(url, SetupPlan(role="kb_" + uuid.uuid4().hex[:8]))


def test_missing_column(guide_db: str) -> None:
    p = only(run(guide_db, f"ALTER TABLE {T} DROP COLUMN metadata"), "column")
    assert "'metadata'" in p.message
    assert p.fix == 'ALTER TABLE "bedrock_integration"."bedrock_kb" ADD COLUMN "metadata" json;'


def test_metadata_must_be_json(guide_db: str) -> None:
    p = only(run(guide_db, f"ALTER TABLE {T} ALTER COLUMN metadata TYPE text"), "type")
    assert "json or jsonb" in p.message and "TYPE jsonb" in p.fix


def test_metadata_jsonb_is_fine(guide_db: str) -> None:
    assert not errors(run(guide_db, f"ALTER TABLE {T} ALTER COLUMN metadata TYPE jsonb"))


def test_id_must_be_uuid(guide_db: str) -> None:
    p = only(run(guide_db, f"ALTER TABLE {T} ALTER COLUMN id TYPE text"), "type")
    assert "'id'" in p.message and "uuid" in p.message


def test_dimensions_differ_from_model(guide_db: str) -> None:
    p = only(run(guide_db, dimensions=1024), "dimensions")
    assert "384" in p.message and "1024" in p.message


def test_missing_hnsw_index(guide_db: str) -> None:
    with psycopg.connect(guide_db, autocommit=True) as conn:
        for (name,) in conn.execute("SELECT indexname FROM pg_indexes WHERE indexdef LIKE '%USING hnsw%'").fetchall():
            conn.execute(f'DROP INDEX bedrock_integration."{name}"')
    p = only(run(guide_db), "hnsw index")
    assert p.fix == 'CREATE INDEX ON "bedrock_integration"."bedrock_kb" USING hnsw ("embedding" vector_cosine_ops);'


def test_hnsw_with_wrong_operator_class(guide_db: str) -> None:
    with psycopg.connect(guide_db, autocommit=True) as conn:
        for (name,) in conn.execute("SELECT indexname FROM pg_indexes WHERE indexdef LIKE '%USING hnsw%'").fetchall():
            conn.execute(f'DROP INDEX bedrock_integration."{name}"')
        conn.execute(f"CREATE INDEX l2_idx ON {T} USING hnsw (embedding vector_l2_ops)")
    p = only(run(guide_db), "hnsw operator class")
    assert "vector_l2_ops" in p.message
    assert p.fix.startswith('DROP INDEX "bedrock_integration"."l2_idx"; CREATE INDEX ON') and "vector_cosine_ops" in p.fix


def test_missing_full_text_index(guide_db: str) -> None:
    with psycopg.connect(guide_db, autocommit=True) as conn:
        (name,) = conn.execute("SELECT indexname FROM pg_indexes WHERE indexdef LIKE '%to_tsvector%'").fetchone()
        conn.execute(f'DROP INDEX bedrock_integration."{name}"')
    p = only(run(guide_db), "full-text index")
    assert "chunks column must be indexed" in p.message
    assert p.fix == "CREATE INDEX ON \"bedrock_integration\".\"bedrock_kb\" USING gin (to_tsvector('simple', \"chunks\"));"


def test_missing_jsonb_index_is_a_warning(guide_db: str) -> None:
    with psycopg.connect(guide_db, autocommit=True) as conn:
        (name,) = conn.execute(
            "SELECT indexname FROM pg_indexes WHERE indexdef LIKE '%USING gin (custom_metadata)%'").fetchone()
        conn.execute(f'DROP INDEX bedrock_integration."{name}"')
    problems = run(guide_db)
    p = [p for p in problems if p.check == "jsonb index"][0]
    assert p.severity == "warning"
    assert p.fix == 'CREATE INDEX ON "bedrock_integration"."bedrock_kb" USING gin ("custom_metadata");'
    assert report(problems)["ok"]


def test_role_lacking_grants(guide_db: str) -> None:
    with psycopg.connect(guide_db, autocommit=True) as conn:
        conn.execute(f"ALTER TABLE {T} OWNER TO postgres")
        conn.execute(f"GRANT SELECT, UPDATE ON {T} TO bedrock_user")
    p = only(run(guide_db), "grants")
    assert "INSERT, DELETE" in p.message
    assert p.fix == 'GRANT INSERT, DELETE ON TABLE "bedrock_integration"."bedrock_kb" TO "bedrock_user";'


def test_role_without_temp(guide_db: str) -> None:
    dbname = psycopg.conninfo.conninfo_to_dict(guide_db)["dbname"]
    with psycopg.connect(guide_db, autocommit=True) as conn:
        conn.execute(f'REVOKE TEMPORARY ON DATABASE "{dbname}" FROM PUBLIC')
    p = only(run(guide_db), "grants")
    assert "temporary" in p.message and p.fix.startswith("GRANT TEMPORARY ON DATABASE")


def test_vector_storage_external_is_a_warning_until_plain(guide_db: str) -> None:
    with psycopg.connect(guide_db, autocommit=True) as conn:
        conn.execute(f"ALTER TABLE {T} ALTER COLUMN embedding SET STORAGE EXTERNAL")
    problems = run(guide_db)
    p = [p for p in problems if p.check == "storage"][0]
    assert p.severity == "warning" and "EXTERNAL" in p.message and "SET STORAGE PLAIN" in p.fix
    problems = run(guide_db, f"ALTER TABLE {T} ALTER COLUMN embedding SET STORAGE PLAIN")
    assert not [p for p in problems if p.check == "storage"]


def test_custom_column_names(guide_db: str) -> None:
    mapping = FieldMapping(primary_key="id", vector="embedding", text="chunks", metadata="metadata", custom_metadata="attrs")
    p = only(run(guide_db, mapping=mapping), "column")
    assert "'attrs'" in p.message


def test_cli_exit_codes_and_fixes(guide_db: str, tmp_path: Path) -> None:
    base = [sys.executable, "-m", "pgkb.cli", "doctor", "--database-url", guide_db, "--table", T, "--role", ROLE,
            "--data-dir", str(tmp_path)]
    ok = subprocess.run(base + ["--model", "sentence-transformers.all-minilm-l6-v2"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "0 error(s)" in ok.stdout and "[least privilege]" in ok.stdout  # checks print verbatim, not as markup
    bad = subprocess.run(base + ["--dimensions", "1024", "--json"], capture_output=True, text=True)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    import json

    rep = json.loads(bad.stdout)
    assert not rep["ok"] and rep["problems"][0]["check"] == "dimensions"


def test_doctor_reports_the_lexical_side_of_hybrid(settings) -> None:
    """BM25 statistics present and current: nothing to say; missing or from an older pgkb: a warning
    with the command that fixes it."""
    from psycopg import sql

    from pgkb.admin.doctor import diagnose_kb
    from pgkb.embeddings import model_arn
    from pgkb.retrieval import bm25
    from pgkb.service import KnowledgeBaseService

    with KnowledgeBaseService(settings) as svc:
        kb_id = svc.create_knowledge_base(
            name="doc" + uuid.uuid4().hex[:8], knowledgeBaseConfiguration={"type": "VECTOR", "vectorKnowledgeBaseConfiguration": {
                "embeddingModelArn": model_arn("sentence-transformers.all-minilm-l6-v2", settings.region)}},
        )["knowledgeBase"]["knowledgeBaseId"]
        kb = svc.resolve(kb_id)

        def bm25_problems() -> list[str]:
            return [p.message for p in diagnose_kb(kb) if p.check == "bm25"]

        assert bm25_problems() == []
        with kb.database.connection() as conn:
            ix = bm25.lookup(conn, kb.table)
            conn.execute(sql.SQL("DROP TABLE {}").format(ix.df))
        assert [m for m in bm25_problems() if "older pgkb" in m]
        with kb.database.connection() as conn:
            bm25.uninstall_bm25(conn, kb.table)
        problems = [p for p in diagnose_kb(kb) if p.check == "bm25"]
        assert len(problems) == 1 and "no BM25 statistics" in problems[0].message
        assert problems[0].severity == "warning" and "pgkb db setup" in problems[0].fix
        svc.delete_knowledge_base(knowledgeBaseId=kb_id)
