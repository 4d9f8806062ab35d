"""A knowledge base's vector index kind (pgkb.store.vector_index): float32 (Bedrock's), halfvec, and a
binary-quantized index with exact re-ranking, chosen per knowledge base at creation (the tag
`pgkb:vectorIndex`, or Bedrock's embeddingDataType BINARY). Each kind answers Retrieve with the same
top results as float32 on the same documents, its search statement is planned on its own index, and
a table that already exists (Bedrock-made) keeps the index it has."""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import corpus
import numpy as np
import psycopg
import pytest
from helpers.acl import custom_source, inline_doc, managed_kb, retrieve, unique, uris
from pgvector.psycopg import register_vector
from psycopg import sql
from test_admin import fresh_db, server  # noqa: F401  (fixtures: a fresh database on a password server)

from pgkb.config import Settings
from pgkb.embeddings import DEFAULT_MODEL_ID, model_arn
from pgkb.errors import ValidationError
from pgkb.kb_tags import BM25_POSTINGS_TAG, EF_CONSTRUCTION_TAG, EF_SEARCH_TAG, M_TAG
from pgkb.retrieval.search import build_query, search
from pgkb.service import KnowledgeBaseService
from pgkb.store import ddl
from pgkb.store.vector_index import FLOAT32, VECTOR_INDEX_TAG, VectorIndex, classify, detect
from pgkb.store.vector_table import FieldMapping, TableRef

search_module = importlib.import_module("pgkb.retrieval.search")  # the module (the package exports the function)
DOCS = corpus.paragraphs(24)  # one ingestion call (at most 25 documents)
# Queries: a few words of some documents (each should find its own document first).
QUERIES = [" ".join(DOCS[i].split()[:12]) for i in (0, 6, 12, 18, 23)]


@pytest.fixture(scope="module")
def svc(settings: Settings) -> Iterator[KnowledgeBaseService]:
    with KnowledgeBaseService(settings) as s:
        yield s


def _fill(svc: KnowledgeBaseService, kb_id: str) -> str:
    ds = custom_source(svc, kb_id, acl=False)
    out = svc.ingest_knowledge_base_documents(
        knowledgeBaseId=kb_id, dataSourceId=ds, documents=[inline_doc(f"doc-{i:02d}", t) for i, t in enumerate(DOCS)]
    )["documentDetails"]
    assert {d["status"] for d in out} == {"INDEXED"}, out
    return kb_id


@pytest.fixture(scope="module")
def kbs(svc: KnowledgeBaseService) -> dict[str, str]:
    binary_by_type = svc.create_knowledge_base(
        name=unique("bindt"),
        knowledgeBaseConfiguration={"type": "MANAGED", "managedKnowledgeBaseConfiguration": {
            "embeddingModelType": "CUSTOM", "embeddingModelArn": model_arn(DEFAULT_MODEL_ID, svc.region),
            "embeddingModelConfiguration": {"bedrockEmbeddingModelConfiguration": {"embeddingDataType": "BINARY"}}}},
    )["knowledgeBase"]["knowledgeBaseId"]
    return {
        "float32": _fill(svc, managed_kb(svc)),
        "halfvec": _fill(svc, managed_kb(svc, tags={VECTOR_INDEX_TAG: "halfvec"})),
        "binary": _fill(svc, managed_kb(svc, tags={VECTOR_INDEX_TAG: "binary"})),
        "BINARY": _fill(svc, binary_by_type),
    }


def _hnsw(svc: KnowledgeBaseService, kb_id: str) -> list[tuple[str, str]]:
    kb = svc.resolve(kb_id)
    with kb.database.connection() as conn:
        return [(n, d) for n, d in conn.execute(
            "SELECT ic.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid"
            " JOIN pg_am am ON am.oid = ic.relam JOIN pg_class c ON c.oid = i.indrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s AND am.amname = 'hnsw'",
            (kb.table.schema, kb.table.name))]


def test_each_knowledge_base_gets_the_index_it_asked_for(svc: KnowledgeBaseService, kbs: dict[str, str]) -> None:
    want = {"float32": FLOAT32, "halfvec": VectorIndex("halfvec", 384), "binary": VectorIndex("binary", 384),
            "BINARY": VectorIndex("binary", 384)}
    for label, kb_id in kbs.items():
        (_, definition), = _hnsw(svc, kb_id)  # one HNSW index, rebuilt after the first load
        assert classify(definition, "embedding") == want[label], definition
        # pgkb's build defaults (docs/scaling.md); halfvec links fewer neighbours so 8 nodes fit a page
        m = ddl.HALFVEC_HNSW_M if label == "halfvec" else ddl.HNSW_M
        assert f"m='{m}', ef_construction='128'" in definition, definition
        kb = svc.resolve(kb_id)
        with kb.database.connection() as conn:
            assert detect(conn, kb.table.schema, kb.table.name, "embedding") == want[label]
            # the Bedrock layout's column stays vector(384) whatever the index
            assert conn.execute(
                "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = %s::regclass"
                " AND attname = 'embedding'", (f'"{kb.table.schema}"."{kb.table.name}"',)).fetchone()[0] == "vector(384)"


def test_halfvec_m_packs_eight_nodes_a_page(session_db_url: str) -> None:
    """Why halfvec indexes get their own m: pgvector keeps each node's vector and layer-0 links on one
    8 KB page, and 384-d halfvec nodes fit 8 a page at m 13 but only 7 at m 16 (ddl.HALFVEC_HNSW_M).
    A guard on pgvector's layout: if it changes, the constant's reason is gone."""
    rng = np.random.default_rng(7)
    vecs = rng.standard_normal((4000, 384)).astype(np.float32)
    t = TableRef("public", unique("halfpack"))
    pages: dict[str, int] = {}
    names = {kind: f"{t.name}_{kind}" for kind in ("halfvec", "halfvec16", "float32")}
    stmts = {
        "halfvec": ddl.hnsw_index(t, "embedding", ef_construction=32, name=names["halfvec"], kind="halfvec", dimensions=384),
        "halfvec16": sql.SQL("CREATE INDEX {} ON {} USING hnsw ({}) WITH (m = 16, ef_construction = 32)").format(
            sql.Identifier(names["halfvec16"]), t.ident, ddl.hnsw_expression("embedding", "halfvec", 384)),
        "float32": ddl.hnsw_index(t, "embedding", ef_construction=32, name=names["float32"]),
    }
    with psycopg.connect(session_db_url, autocommit=True) as conn:
        register_vector(conn)
        conn.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, embedding vector(384))").format(t.ident))
        try:
            with conn.cursor().copy(sql.SQL("COPY {} (id, embedding) FROM STDIN WITH (FORMAT BINARY)").format(t.ident)) as cp:
                cp.set_types(["int4", "vector"])
                for i, v in enumerate(vecs):
                    cp.write_row((i, v))
            for kind, stmt in stmts.items():
                conn.execute(stmt)
                pages[kind] = conn.execute("SELECT pg_relation_size(%s::regclass) / 8192",
                                           (f'"{t.schema}"."{names[kind]}"',)).fetchone()[0]
        finally:
            conn.execute(sql.SQL("DROP TABLE {}").format(t.ident))
    # nodes per page (a few pages are the metapage and upper layers' larger link lists)
    assert 4000 / pages["float32"] < 4.1 and 4000 / pages["halfvec16"] < 7.1, pages
    assert 4000 / pages["halfvec"] > 7.3, pages
    assert pages["halfvec"] < 0.55 * pages["float32"], pages


def ef_searches_seen(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The hnsw.ef_search of every search statement run from now on (appended as they run)."""
    seen: list[str] = []
    real = search_module.statement_settings

    def spy(*args: Any, **kwargs: Any) -> list[tuple[str, str]]:
        out = real(*args, **kwargs)
        seen.append(dict(out)["hnsw.ef_search"])
        return out

    monkeypatch.setattr(search_module, "statement_settings", spy)
    return seen


def test_halfvec_searches_at_its_own_ef_search(
    svc: KnowledgeBaseService, kbs: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retrieve on a halfvec knowledge base searches its graph deeper than on float32 (these MANAGED
    knowledge bases' searches carry the visibility predicate, so both get the filtered rule)."""
    seen = ef_searches_seen(monkeypatch)
    for label, want in (("halfvec", 2 * search_module.HALFVEC_EF_SEARCH), ("float32", search_module.FILTERED_EF_SEARCH)):
        seen.clear()
        assert retrieve(svc, kbs[label], QUERIES[0], k=5)
        assert seen == [str(want)], (label, seen)


def test_tags_choose_a_knowledge_bases_hnsw_build_and_search_depth(
    svc: KnowledgeBaseService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pgkb:hnswM / pgkb:hnswEfConstruction build the graph of the table pgkb creates (kept through the
    first load's deferred build); pgkb:efSearch sets the search depth, and TagResource changes it at once."""
    kb_id = _fill(svc, managed_kb(svc, tags={M_TAG: "24", EF_CONSTRUCTION_TAG: "96", EF_SEARCH_TAG: "150"}))
    (_, definition), = _hnsw(svc, kb_id)  # after the first load rebuilt it
    assert "m='24', ef_construction='96'" in definition, definition
    seen = ef_searches_seen(monkeypatch)
    assert retrieve(svc, kb_id, QUERIES[0], k=5)["retrievalResults"]
    assert seen == ["300"]  # a MANAGED knowledge base's search is filtered (its ACL): twice the tag's 150
    arn = svc.get_knowledge_base(knowledgeBaseId=kb_id)["knowledgeBase"]["knowledgeBaseArn"]
    svc.tag_resource(resourceArn=arn, tags={EF_SEARCH_TAG: "40"})
    seen.clear()
    assert retrieve(svc, kb_id, QUERIES[0], k=5)["retrievalResults"]
    assert seen == ["80"]
    svc.untag_resource(resourceArn=arn, tagKeys=[EF_SEARCH_TAG])
    seen.clear()
    retrieve(svc, kb_id, QUERIES[0], k=5)
    assert seen == [str(search_module.FILTERED_EF_SEARCH)]  # pgkb's rule again


def test_a_tag_sets_the_bm25_postings_a_search_reads(svc: KnowledgeBaseService, kbs: dict[str, str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """pgkb:bm25PostingsPerTerm reaches the statement of the knowledge base's HYBRID searches."""
    seen: list[int | None] = []
    real = search_module._statement

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs.get("postings_per_term"))
        return real(*args, **kwargs)

    monkeypatch.setattr(search_module, "_statement", spy)
    kb_id = kbs["float32"]
    arn = svc.get_knowledge_base(knowledgeBaseId=kb_id)["knowledgeBase"]["knowledgeBaseArn"]
    svc.tag_resource(resourceArn=arn, tags={BM25_POSTINGS_TAG: "5000"})
    try:
        assert retrieve(svc, kb_id, QUERIES[0], k=5)["retrievalResults"]
        assert seen == [5000]
    finally:
        svc.untag_resource(resourceArn=arn, tagKeys=[BM25_POSTINGS_TAG])
    seen.clear()
    retrieve(svc, kb_id, QUERIES[0], k=5)
    assert seen == [None]  # pgkb's default


@pytest.mark.parametrize("tags", [
    {M_TAG: "abc"}, {M_TAG: "1"}, {M_TAG: "101"}, {M_TAG: "16.5"}, {EF_CONSTRUCTION_TAG: "2000"},
    {M_TAG: "32", EF_CONSTRUCTION_TAG: "40"},  # pgvector: ef_construction must be at least 2 m
    {EF_SEARCH_TAG: "0"}, {EF_SEARCH_TAG: "1001"}, {EF_SEARCH_TAG: "-5"}, {EF_SEARCH_TAG: ""},
    {BM25_POSTINGS_TAG: "9"}, {BM25_POSTINGS_TAG: "lots"}, {EF_SEARCH_TAG: "²"}, {EF_SEARCH_TAG: "٣"},
    {BM25_POSTINGS_TAG: "1" * 5000}, {M_TAG: "0x10"}, {M_TAG: "1e1"},
])
def test_bad_hnsw_tags_are_refused(svc: KnowledgeBaseService, tags: dict[str, str]) -> None:
    name = unique("badtag")
    with pytest.raises(ValidationError, match="tag pgkb:"):
        managed_kb(svc, name=name, tags=tags)
    assert name not in [k["name"] for k in svc.list_knowledge_bases(maxResults=1000)["knowledgeBaseSummaries"]]


def test_tag_resource_refuses_a_bad_search_depth_and_keeps_the_tags(svc: KnowledgeBaseService, kbs: dict[str, str]) -> None:
    arn = svc.get_knowledge_base(knowledgeBaseId=kbs["float32"])["knowledgeBase"]["knowledgeBaseArn"]
    before = svc.list_tags_for_resource(resourceArn=arn)["tags"]
    with pytest.raises(ValidationError, match="pgkb:efSearch"):
        svc.tag_resource(resourceArn=arn, tags={EF_SEARCH_TAG: "many", "team": "x"})
    assert svc.list_tags_for_resource(resourceArn=arn)["tags"] == before


def test_retrieve_returns_the_same_top_results_as_float32(svc: KnowledgeBaseService, kbs: dict[str, str]) -> None:
    for q in QUERIES:
        ref = uris(retrieve(svc, kbs["float32"], q, k=5))
        assert ref, q
        for label in ("halfvec", "binary", "BINARY"):
            got = uris(retrieve(svc, kbs[label], q, k=5))
            assert got[:3] == ref[:3], (label, q, got, ref)
            assert set(got) == set(ref), (label, q, got, ref)


def test_semantic_search_scores_match_float32(svc: KnowledgeBaseService, kbs: dict[str, str]) -> None:
    model = svc.resolve(kbs["float32"]).model()
    qv = model.embed_queries(QUERIES)

    def run(kb_id: str, v: Any) -> list[tuple[str, float]]:
        kb = svc.resolve(kb_id)
        with kb.database.connection() as conn:
            hits = search(conn, kb.table, kb.mapping, query_embedding=v, query_text=None, k=5)
        return [(h.metadata.get("x-amz-bedrock-kb-chunk-id", h.id), h.score) for h in hits]

    for v in qv:
        ref = run(kbs["float32"], v)
        for label in ("halfvec", "binary"):
            got = run(kbs[label], v)
            assert len(got) == len(ref) == 5
            # binary re-ranks on the stored float32 vectors: the same scores; halfvec within its precision
            for (_, a), (_, b) in zip(got, ref, strict=True):
                assert abs(a - b) < (1e-6 if label == "binary" else 2e-3), (label, got, ref)


def _plan(conn: psycopg.Connection, table: TableRef, index: VectorIndex, k: int = 5, search_type: Any = "SEMANTIC") -> str:
    stmt, params = build_query(table, FieldMapping(), k=k, search_type=search_type, filter=None, attribute_cols={},
                               bm25_index=None, index=index)
    qvec = "[" + ",".join(["0.05"] * 384) + "]"
    with conn.transaction():
        conn.execute("SET LOCAL enable_seqscan = off")  # a 24-row table: make the planner show what it can use
        return "\n".join(r[0] for r in conn.execute(sql.SQL("EXPLAIN ") + stmt,
                                                    {**params, "qvec": qvec, "qtext": "zephyr", "dtrust": 1.0, "tbl_schema": table.schema,
                                                     "tbl_name": table.name}))


def test_the_search_statement_is_planned_on_the_knowledge_bases_index(svc: KnowledgeBaseService, kbs: dict[str, str]) -> None:
    for label in ("float32", "halfvec", "binary"):
        kb = svc.resolve(kbs[label])
        (name, _), = _hnsw(svc, kbs[label])
        with kb.database.connection() as conn:
            index = detect(conn, kb.table.schema, kb.table.name, "embedding")
            for st in ("SEMANTIC", "HYBRID"):
                plan = _plan(conn, kb.table, index, search_type=st)
                assert f"Index Scan using {name}" in plan, (label, st, plan)
            if label != "float32":
                # the float32 expression cannot use a halfvec or binary index: the expression matters
                assert name not in _plan(conn, kb.table, FLOAT32), label


def test_an_existing_table_keeps_its_index(svc: KnowledgeBaseService, settings: Settings) -> None:
    """A table made the Bedrock way (float32 HNSW): a knowledge base asking for halfvec adopts it as
    it is, and searches it through its float32 index."""
    table = TableRef("bedrock_integration", unique("bedrock_made_"))
    with psycopg.connect(str(settings.database_url), autocommit=True) as conn:
        for stmt in ddl.table_statements(table, FieldMapping(), 384):  # what Bedrock's guide runs
            conn.execute(stmt)
        before = sorted(r[0] for r in conn.execute(
            "SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = %s::regclass", (str(table),)))
    kb_id = svc.create_knowledge_base(
        name=unique("adopt"), storageConfiguration=svc.home_storage(str(table)), tags={VECTOR_INDEX_TAG: "halfvec"},
        knowledgeBaseConfiguration={"type": "VECTOR", "vectorKnowledgeBaseConfiguration": {
            "embeddingModelArn": model_arn(DEFAULT_MODEL_ID, svc.region)}},
    )["knowledgeBase"]["knowledgeBaseId"]
    with psycopg.connect(str(settings.database_url)) as conn:
        after = sorted(r[0] for r in conn.execute(
            "SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = %s::regclass", (str(table),)))
        assert after == before
        assert detect(conn, table.schema, table.name, "embedding") == FLOAT32
    svc.delete_knowledge_base(knowledgeBaseId=kb_id)


def test_bad_choices_are_refused(svc: KnowledgeBaseService) -> None:
    with pytest.raises(ValidationError, match="must be one of float32, halfvec, binary"):
        managed_kb(svc, tags={VECTOR_INDEX_TAG: "int8"})
    with pytest.raises(ValidationError, match="BINARY"):
        svc.create_knowledge_base(
            name=unique("bad"), tags={VECTOR_INDEX_TAG: "halfvec"},
            knowledgeBaseConfiguration={"type": "MANAGED", "managedKnowledgeBaseConfiguration": {
                "embeddingModelType": "CUSTOM", "embeddingModelArn": model_arn(DEFAULT_MODEL_ID, svc.region),
                "embeddingModelConfiguration": {"bedrockEmbeddingModelConfiguration": {"embeddingDataType": "BINARY"}}}})
    with pytest.raises(ValidationError, match="FLOAT32 or BINARY"):
        svc.create_knowledge_base(
            name=unique("bad"),
            knowledgeBaseConfiguration={"type": "MANAGED", "managedKnowledgeBaseConfiguration": {
                "embeddingModelType": "CUSTOM", "embeddingModelArn": model_arn(DEFAULT_MODEL_ID, svc.region),
                "embeddingModelConfiguration": {"bedrockEmbeddingModelConfiguration": {"embeddingDataType": "INT8"}}}})


def test_classify_reads_postgresqls_own_index_definitions() -> None:
    d = 'CREATE INDEX i ON s.t USING hnsw ((("Vec")::halfvec(1024)) halfvec_cosine_ops) WITH (m=\'16\')'
    assert classify(d, "Vec") == VectorIndex("halfvec", 1024)
    assert classify(d, "vec") is None
    assert classify("CREATE INDEX i ON s.t USING hnsw (((binary_quantize(embedding))::bit(384)) bit_hamming_ops)",
                    "embedding") == VectorIndex("binary", 384)
    assert classify("CREATE INDEX i ON s.t USING hnsw (embedding vector_l2_ops)", "embedding") is None
    assert classify("CREATE INDEX i ON s.t USING gin (embedding)", "embedding") is None


def test_kb_create_takes_the_index_kind(session_db_url: str, tmp_path: Path, svc: KnowledgeBaseService) -> None:
    from test_cli import run

    db = ["--database-url", session_db_url, "--data-dir", str(tmp_path)]
    name = unique("cli")
    r = run("kb", "create", name, "--vector-index", "halfvec", "--json", *db)
    assert r.returncode == 0, r.stderr
    kb_id = json.loads(r.stdout)["knowledgeBaseId"]
    (_, definition), = _hnsw(svc, kb_id)
    assert classify(definition, "embedding") == VectorIndex("halfvec", 384)
    r = run("kb", "create", unique("cli"), "--vector-index", "int8", *db)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode != 0 and len(lines) == 1 and "float32, halfvec, binary" in lines[0], r.stderr
    r = run("kb", "create", unique("cli"), "--hnsw-m", "24", "--ef-construction", "96", "--ef-search", "150", "--json", *db)
    assert r.returncode == 0, r.stderr
    kb_id = json.loads(r.stdout)["knowledgeBaseId"]
    (_, definition), = _hnsw(svc, kb_id)
    assert "m='24', ef_construction='96'" in definition, definition
    assert svc.resolve(kb_id).ef_search == 150
    r = run("kb", "create", unique("cli"), "--ef-search", "5000", *db)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode != 0 and len(lines) == 1 and "pgkb:efSearch" in lines[0], r.stderr


def test_db_setup_makes_the_chosen_index_and_doctor_accepts_it(fresh_db: str) -> None:  # noqa: F811
    """`pgkb db setup --vector-index halfvec` (an RDS table for Bedrock or pgkb): the halfvec index over
    the vector(n) column; doctor finds nothing to fix; a second run adds no float32 index beside it."""
    from test_admin import unique_role

    from pgkb.admin.doctor import diagnose
    from pgkb.admin.setup import SetupPlan, run_setup

    plan = SetupPlan(role=unique_role(), schema="kb", table="docs", vector_index="halfvec")
    for _ in range(2):
        run_setup(fresh_db, plan)
    with psycopg.connect(fresh_db) as conn:
        defs = [r[0] for r in conn.execute(
            "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid"
            " JOIN pg_am am ON am.oid = ic.relam WHERE i.indrelid = 'kb.docs'::regclass AND am.amname = 'hnsw'")]
        assert [classify(d, "embedding") for d in defs] == [VectorIndex("halfvec", 384)], defs
        problems = diagnose(conn, TableRef("kb", "docs"), FieldMapping(), dimensions=384, role=plan.role)
    assert not [p for p in problems if p.level == "error"], [p.to_dict() for p in problems]
    with pytest.raises(ValidationError, match="--vector-index"):
        SetupPlan(vector_index="pq")
