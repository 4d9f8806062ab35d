"""Initial loads (issue 19): a first sync into an empty table builds the HNSW and GIN indexes and the
BM25 statistics after the rows are in; later syncs insert into the existing indexes and keep the
statistics row by row; a first sync killed mid-way leaves the work for the next job to finish."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import corpus
import pytest
from helpers.jobs import folder_kb, wait_claim_released
from psycopg import sql

from pgkb.config import Settings
from pgkb.retrieval import bm25
from pgkb.service import KnowledgeBaseService
from pgkb.store import index_build
from pgkb.store.vector_table import chunk_id

ARN = "arn:aws:bedrock:us-east-1::foundation-model/sentence-transformers.all-minilm-l6-v2"


@pytest.fixture(scope="module")
def svc(settings: Settings) -> Any:
    with KnowledgeBaseService(settings) as s:
        yield s


def make_kb(svc: Any, folder: Path) -> tuple[str, str]:
    return folder_kb(svc, folder, ARN)


def synced_kb(svc: Any, tmp_path: Path, docs: int) -> tuple[str, str]:
    """A knowledge base over a folder of `docs` documents, after a first sync that completed."""
    folder = tmp_path / "docs"
    corpus.write_folder(folder, docs)
    kb_id, ds_id = make_kb(svc, folder)
    assert svc.run_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJob"]["status"] == "COMPLETE"
    return kb_id, ds_id


def hnsw(svc: Any, kb_id: str) -> list[tuple[int, bool, bool]]:
    """(oid, valid, ready) of the table's HNSW indexes."""
    kb = svc.resolve(kb_id)
    with kb.database.connection() as conn:
        return conn.execute(
            "SELECT i.indexrelid::bigint, i.indisvalid, i.indisready FROM pg_index i"
            " JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_am am ON am.oid = ic.relam"
            " JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relname = %s AND am.amname = 'hnsw'",
            (kb.table.schema, kb.table.name),
        ).fetchall()


def records(svc: Any, kb_id: str) -> int:
    with svc.db.connection() as conn:
        return conn.execute("SELECT count(*) FROM pgkb.deferred_indexes WHERE kb_id = %s", (kb_id,)).fetchone()[0]


def rows(svc: Any, kb_id: str) -> int:
    kb = svc.resolve(kb_id)
    with kb.database.connection() as conn:
        return conn.execute(f'SELECT count(*) FROM "{kb.table.schema}"."{kb.table.name}"').fetchone()[0]


def gin(svc: Any, kb_id: str) -> list[int]:
    """oids of the table's GIN indexes (full text, custom metadata)."""
    kb = svc.resolve(kb_id)
    with kb.database.connection() as conn:
        return [r[0] for r in conn.execute(
            "SELECT i.indexrelid::bigint FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid"
            " JOIN pg_am am ON am.oid = ic.relam WHERE i.indrelid = %s::regclass AND am.amname = 'gin' ORDER BY 1",
            (f'"{kb.table.schema}"."{kb.table.name}"',))]


def statistics(svc: Any, kb_id: str) -> tuple[bool, list[tuple[Any, ...]], set[tuple[Any, ...]], tuple[int, int]]:
    """(ready, postings as (term, chunk text, tf, dl), df as (term, d), stats (n, total)) of the KB's BM25 statistics."""
    kb = svc.resolve(kb_id)
    with kb.database.connection() as conn:
        ix = bm25.lookup(conn, kb.table)
        assert ix is not None
        t = f'"{kb.table.schema}"."{kb.table.name}"'
        p = f'"{bm25.SCHEMA}"."{ix.base}_postings"'
        post = sorted(tuple(r) for r in conn.execute(f"SELECT p.term, c.chunks, p.tf, p.dl FROM {p} p JOIN {t} c ON c.id = p.doc"))
        df = {tuple(r) for r in conn.execute(
            f'SELECT term, sum(d) FROM "{bm25.SCHEMA}"."{ix.base}_df" GROUP BY term HAVING sum(d) <> 0')}
        n, total = conn.execute(f'SELECT coalesce(sum(n), 0), coalesce(sum(total), 0) FROM "{bm25.SCHEMA}"."{ix.base}_stats"').fetchone()
    return ix.ready, post, df, (int(n), int(total))


def expected_statistics(svc: Any, kb_id: str) -> tuple[list[tuple[Any, ...]], tuple[int, int]]:
    """Postings (term, chunk text, tf, dl; a sorted multiset: chunks may repeat) and stats tokenised
    afresh from the table's rows."""
    kb = svc.resolve(kb_id)
    with kb.database.connection() as conn:
        t = f'"{kb.table.schema}"."{kb.table.name}"'
        post = sorted(tuple(r) for r in conn.execute(
            "WITH tok AS (SELECT c.id, c.chunks, u.lexeme, cardinality(u.positions) AS tf"
            f" FROM {t} c, unnest(to_tsvector('english', c.chunks)) u WHERE c.embedding IS NOT NULL)"
            " SELECT lexeme, chunks, tf, (sum(tf) OVER (PARTITION BY id))::int FROM tok"))
        n = conn.execute(f"SELECT count(*) FROM {t} WHERE embedding IS NOT NULL AND chunks IS NOT NULL").fetchone()[0]
    return post, (int(n), sum(p[2] for p in post))


def assert_statistics_exact(svc: Any, kb_id: str) -> None:
    ready, post, df, st = statistics(svc, kb_id)
    want, want_stats = expected_statistics(svc, kb_id)
    assert ready and post == want and st == want_stats
    counts: dict[str, int] = {}
    for term, *_ in want:
        counts[term] = counts.get(term, 0) + 1
    assert df == set(counts.items())


def assert_every_row_once(svc: Any, kb_id: str, ds_id: str) -> None:
    """The table holds exactly the rows the catalog's documents own: each chunk once, nothing stale."""
    with svc.db.connection() as conn:
        docs = conn.execute("SELECT uri, chunk_count, status FROM pgkb.documents WHERE ds_id = %s", (ds_id,)).fetchall()
    assert docs and all(st == "INDEXED" for _, _, st in docs)
    want = sorted(str(chunk_id(ds_id, uri, i)) for uri, n, _ in docs for i in range(n))
    kb = svc.resolve(kb_id)
    with kb.database.connection() as conn:
        got = sorted(str(r[0]) for r in conn.execute(f'SELECT id FROM "{kb.table.schema}"."{kb.table.name}"'))
    assert got == want


def writes(caplog: pytest.LogCaptureFixture) -> tuple[int, int]:
    """(batches copied straight into the table, batches upserted) that the writer logged."""
    msgs = [r.getMessage() for r in caplog.records if r.name == "pgkb.ingestion.writer"]
    return sum("copied straight" in m for m in msgs), sum("upserted into" in m for m in msgs)


def uses_hnsw(svc: Any, kb_id: str) -> bool:
    """Whether a nearest-neighbour query on the table plans an HNSW index scan."""
    kb = svc.resolve(kb_id)
    with kb.database.connection() as conn:
        conn.execute("SET LOCAL enable_seqscan = off")
        plan = conn.execute(
            f'EXPLAIN SELECT id FROM "{kb.table.schema}"."{kb.table.name}"'
            f" ORDER BY embedding <=> (SELECT embedding FROM \"{kb.table.schema}\".\"{kb.table.name}\" LIMIT 1) LIMIT 5"
        ).fetchall()
    return any("embedding_idx" in r[0] or "hnsw" in r[0].lower() for r in plan)


def test_first_sync_builds_the_index_after_the_rows_later_syncs_keep_it(svc: Any, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    corpus.write_folder(folder, 30)
    kb_id, ds_id = make_kb(svc, folder)
    (created, valid, _), = hnsw(svc, kb_id)
    gins = gin(svc, kb_id)
    assert valid and len(gins) == 2

    job = svc.run_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJob"]
    assert job["status"] == "COMPLETE"
    (first, valid, ready), = hnsw(svc, kb_id)
    assert first != created  # dropped before the load, built from the rows after it
    assert valid and ready and records(svc, kb_id) == 0
    assert uses_hnsw(svc, kb_id)
    first_gins = gin(svc, kb_id)
    assert len(first_gins) == 2 and not set(first_gins) & set(gins)  # GIN indexes built after the rows too
    assert_statistics_exact(svc, kb_id)  # BM25 statistics rebuilt in one pass, triggers back on

    corpus.write_folder(folder, 10, offset=500)
    (folder / "doc0001.txt").write_text(corpus.paragraphs(1, 600)[0])  # a modified document
    (folder / "doc0002.txt").unlink()  # a deleted one
    job = svc.run_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJob"]
    assert job["status"] == "COMPLETE" and job["statistics"]["numberOfNewDocumentsIndexed"] == 10
    (second, valid, _), = hnsw(svc, kb_id)
    assert second == first and valid  # the table was not empty: rows went into the existing index
    assert gin(svc, kb_id) == first_gins
    assert_statistics_exact(svc, kb_id)  # kept by the triggers, row by row
    hits = svc.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": "the"})["retrievalResults"]
    assert hits


def test_an_initial_load_copies_new_documents_straight_in_later_syncs_upsert(
    svc: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "docs"
    corpus.write_folder(folder, 20)
    kb_id, ds_id = make_kb(svc, folder)
    monkeypatch.setenv("PGKB_EMBED_BATCH", "16")  # several batches
    with caplog.at_level(logging.DEBUG, logger="pgkb.ingestion.writer"):
        assert svc.run_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJob"]["status"] == "COMPLETE"
    straight, upserted = writes(caplog)
    assert straight >= 2 and upserted == 0
    assert_every_row_once(svc, kb_id, ds_id)
    assert_statistics_exact(svc, kb_id)

    caplog.clear()
    corpus.write_folder(folder, 3, offset=400)  # new documents, but the table is not empty: upserted
    (folder / "doc0001.txt").write_text(corpus.paragraphs(1, 450)[0])
    (folder / "doc0003.txt").unlink()
    with caplog.at_level(logging.DEBUG, logger="pgkb.ingestion.writer"):
        job = svc.run_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJob"]
    assert job["status"] == "COMPLETE" and job["statistics"]["numberOfNewDocumentsIndexed"] == 3
    assert job["statistics"]["numberOfModifiedDocumentsIndexed"] == 1 and job["statistics"]["numberOfDocumentsDeleted"] == 1
    straight, upserted = writes(caplog)
    assert straight == 0 and upserted >= 1
    assert_every_row_once(svc, kb_id, ds_id)
    assert_statistics_exact(svc, kb_id)


def test_rows_already_there_for_documents_new_to_the_catalog_are_upserted(
    svc: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The straight COPY's fallback: an initial load owed (a record) while the table holds the rows of
    documents the catalog has forgotten. The COPY meets a duplicate, the batch is upserted instead."""
    kb_id, ds_id = synced_kb(svc, tmp_path, 6)
    with svc.db.connection() as conn:
        conn.execute("DELETE FROM pgkb.documents WHERE ds_id = %s", (ds_id,))
        index_build.record(conn, kb_id, [index_build.BM25_RECORD])
    kb = svc.resolve(kb_id)
    with kb.database.connection() as conn:
        assert bm25.suspend_bm25(conn, kb.table)
    with caplog.at_level(logging.DEBUG, logger="pgkb.ingestion.writer"):
        job = svc.run_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJob"]
    assert job["status"] == "COMPLETE" and job["statistics"]["numberOfNewDocumentsIndexed"] == 6
    assert any("already in" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert writes(caplog)[1] >= 1 and records(svc, kb_id) == 0
    assert_every_row_once(svc, kb_id, ds_id)
    assert_statistics_exact(svc, kb_id)


def test_defer_can_be_turned_off(svc: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "docs"
    corpus.write_folder(folder, 5)
    kb_id, ds_id = make_kb(svc, folder)
    (created, _, _), = hnsw(svc, kb_id)
    gins = gin(svc, kb_id)
    monkeypatch.setenv("PGKB_DEFER_HNSW", "0")
    monkeypatch.setenv("PGKB_DEFER_BM25", "0")
    assert svc.run_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJob"]["status"] == "COMPLETE"
    assert [h[0] for h in hnsw(svc, kb_id)] == [created]
    assert gin(svc, kb_id) == gins
    assert_statistics_exact(svc, kb_id)


def test_a_deferred_load_has_the_statistics_and_hybrid_ranking_of_a_row_by_row_load(
    svc: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "docs"
    corpus.write_folder(folder, 25)
    deferred_kb, deferred_ds = make_kb(svc, folder)
    kept_kb, kept_ds = make_kb(svc, folder)
    assert svc.run_ingestion_job(knowledgeBaseId=deferred_kb, dataSourceId=deferred_ds)["ingestionJob"]["status"] == "COMPLETE"
    monkeypatch.setenv("PGKB_DEFER_BM25", "0")
    assert svc.run_ingestion_job(knowledgeBaseId=kept_kb, dataSourceId=kept_ds)["ingestionJob"]["status"] == "COMPLETE"
    a, b = statistics(svc, deferred_kb), statistics(svc, kept_kb)
    assert a[0] and b[0] and a[1] and a[1:] == b[1:]

    def hybrid(kb_id: str) -> list[tuple[str, float]]:
        res = svc.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": corpus.paragraphs(1, 3)[0][:120]},
                           retrievalConfiguration={"vectorSearchConfiguration": {"numberOfResults": 8,
                                                                                 "overrideSearchType": "HYBRID"}})
        return [(r["content"]["text"], round(r["score"], 9)) for r in res["retrievalResults"]]

    assert hybrid(deferred_kb) == hybrid(kept_kb) and hybrid(deferred_kb)


def test_after_an_initial_load_queries_read_the_postings_index_only(svc: Any, tmp_path: Path) -> None:
    """The rebuilt postings are vacuumed by the load itself: their pages are all-visible at once, so a
    query reads them from the index alone (at 1M chunks, until autovacuum got to them, every posting
    read was also a heap fetch: HYBRID p50 12-43 ms instead of about 5)."""
    kb_id, ds_id = synced_kb(svc, tmp_path, 25)
    kb = svc.resolve(kb_id)
    with kb.database.connection() as conn:
        ix = bm25.lookup(conn, kb.table)
        assert ix is not None and ix.ready
        pages, visible = conn.execute("SELECT relpages, relallvisible FROM pg_class WHERE oid = %s::regclass",
                                      (f'"{bm25.SCHEMA}"."{ix.base}_postings"',)).fetchone()
        assert pages > 0 and visible == pages
        term = conn.execute(f'SELECT term FROM "{bm25.SCHEMA}"."{ix.base}_postings" LIMIT 1').fetchone()[0]
        conn.execute("SET LOCAL enable_seqscan = off")
        conn.execute("SET LOCAL enable_bitmapscan = off")
        plan = "\n".join(r[0] for r in conn.execute(
            f'EXPLAIN (ANALYZE) SELECT doc, tf, dl FROM "{bm25.SCHEMA}"."{ix.base}_postings" WHERE term = %s', (term,)))
    assert "Index Only Scan" in plan and "Heap Fetches: 0" in plan, plan


CHILD = textwrap.dedent(
    """
    import sys
    from pgkb.config import Settings
    from pgkb.service import KnowledgeBaseService
    s = Settings(data_dir=sys.argv[1], database_url=sys.argv[2])
    with KnowledgeBaseService(s) as svc:
        svc.run_ingestion_job(knowledgeBaseId=sys.argv[3], dataSourceId=sys.argv[4])
    """
)


def test_first_sync_killed_mid_way_then_rerun_leaves_a_valid_index(svc: Any, settings: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    corpus.write_folder(folder, 80)
    kb_id, ds_id = make_kb(svc, folder)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(settings.data_dir), settings.database_url or "", kb_id, ds_id],
        env={**os.environ, "PGKB_EMBED_BATCH": "8"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.time() + 120
    while time.time() < deadline and child.poll() is None and rows(svc, kb_id) < 40:
        time.sleep(0.01)
    assert child.poll() is None, "the sync ended before it could be killed"
    child.send_signal(signal.SIGKILL)
    child.wait()
    wait_claim_released(svc, ds_id)
    # What the kill left: rows without their HNSW and GIN indexes, BM25 statistics suspended, and the
    # records that all of it is owed.
    assert rows(svc, kb_id) >= 40
    assert hnsw(svc, kb_id) == [] and gin(svc, kb_id) == [] and records(svc, kb_id) == 4
    assert not statistics(svc, kb_id)[0]
    assert svc.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": "the"})["retrievalResults"]  # exact scan meanwhile
    hybrid = {"vectorSearchConfiguration": {"overrideSearchType": "HYBRID"}}  # the text-index fallback meanwhile
    assert svc.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": "the river"},
                        retrievalConfiguration=hybrid)["retrievalResults"]

    job = svc.run_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJob"]
    assert job["status"] == "COMPLETE"
    (_, valid, ready), = hnsw(svc, kb_id)
    assert valid and ready and records(svc, kb_id) == 0 and len(gin(svc, kb_id)) == 2
    assert uses_hnsw(svc, kb_id)
    assert_statistics_exact(svc, kb_id)
    assert_every_row_once(svc, kb_id, ds_id)  # the killed job's documents upserted, the others copied straight in


def test_a_job_with_nothing_to_index_still_builds_an_owed_index(svc: Any, tmp_path: Path) -> None:
    kb_id, ds_id = synced_kb(svc, tmp_path, 5)
    # Simulate a job killed after its last write but before its build: drop the index, keep the record.
    kb = svc.resolve(kb_id)
    with kb.database.connection() as conn:
        name, definition = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s AND tablename = %s AND indexdef LIKE %s",
            (kb.table.schema, kb.table.name, "%USING hnsw%"),
        ).fetchone()
    with svc.db.connection() as conn:
        conn.execute("INSERT INTO pgkb.deferred_indexes (kb_id, index_name, definition) VALUES (%s, %s, %s)",
                     (kb_id, name, definition))
    with kb.database.connection() as conn:
        conn.execute(f'DROP INDEX "{kb.table.schema}"."{name}"')
    job = svc.run_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJob"]
    assert job["status"] == "COMPLETE" and job["statistics"]["numberOfNewDocumentsIndexed"] == 0
    (_, valid, _), = hnsw(svc, kb_id)
    assert valid and records(svc, kb_id) == 0


def test_a_job_with_nothing_to_index_finishes_an_owed_bm25_rebuild(svc: Any, tmp_path: Path) -> None:
    kb_id, ds_id = synced_kb(svc, tmp_path, 6)
    # Simulate a job killed mid-load: the record, the triggers off, statistics that lag the rows.
    kb = svc.resolve(kb_id)
    with svc.db.connection() as conn:
        index_build.record(conn, kb_id, [index_build.BM25_RECORD])
    with kb.database.connection() as conn:
        assert bm25.suspend_bm25(conn, kb.table)
        ix = bm25.lookup(conn, kb.table)
        assert ix is not None
        conn.execute(f'DELETE FROM "{bm25.SCHEMA}"."{ix.base}_postings" WHERE term < %s', ("m",))
    assert not statistics(svc, kb_id)[0]
    job = svc.run_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJob"]
    assert job["status"] == "COMPLETE" and job["statistics"]["numberOfNewDocumentsIndexed"] == 0
    assert records(svc, kb_id) == 0
    assert_statistics_exact(svc, kb_id)


def test_the_statistics_and_the_indexes_of_an_initial_load_build_side_by_side(svc: Any, tmp_path: Path) -> None:
    """The end of an initial load builds the HNSW and GIN indexes while the BM25 statistics are being
    rebuilt (each only reads the rows), instead of after them: here the statistics are held up (a
    lock on their postings table), and the indexes are built all the same; once let go, the job
    completes with exact statistics and nothing owed."""
    import threading

    kb_id, ds_id = synced_kb(svc, tmp_path, 8)
    kb = svc.resolve(kb_id)
    with kb.database.connection() as conn:  # owe everything again, as a job killed mid-load leaves it
        defs = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s AND tablename = %s"
            " AND (indexdef LIKE '%%USING hnsw%%' OR indexdef LIKE '%%USING gin%%')",
            (kb.table.schema, kb.table.name)).fetchall()
    assert len(defs) == 3
    with svc.db.connection() as conn:
        index_build.record(conn, kb_id, [*defs, index_build.BM25_RECORD])
    with kb.database.connection() as conn:
        for name, _ in defs:
            conn.execute(f'DROP INDEX "{kb.table.schema}"."{name}"')
        assert bm25.suspend_bm25(conn, kb.table)
        ix = bm25.lookup(conn, kb.table)
        assert ix is not None
    jobs: list[dict[str, Any]] = []
    with kb.database.connection() as blocker:
        blocker.execute(f'LOCK TABLE "{bm25.SCHEMA}"."{ix.base}_postings" IN ACCESS SHARE MODE')
        runner = threading.Thread(target=lambda: jobs.append(
            svc.run_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJob"]))
        runner.start()
        deadline = time.time() + 120
        while not (len(hnsw(svc, kb_id)) == 1 and len(gin(svc, kb_id)) == 2):
            assert runner.is_alive() and time.time() < deadline, "the indexes waited for the statistics"
            time.sleep(0.1)
        assert runner.is_alive()  # the statistics still held up (reading them here would queue behind them)
    runner.join(120)
    assert jobs and jobs[0]["status"] == "COMPLETE"
    (_, valid, ready), = hnsw(svc, kb_id)
    assert valid and ready and records(svc, kb_id) == 0
    assert_statistics_exact(svc, kb_id)


def test_a_sync_that_outgrows_the_planner_statistics_analyzes_the_table(svc: Any, tmp_path: Path) -> None:
    """An ingestion job that leaves its table without column statistics, or grows it past
    autovacuum's share, ANALYZEs it at its end (pgkb.store.planner_stats; what a cached plan made
    for the smaller table costs: tests/test_planner_stats.py, bench/bench_stale_plans.py). A job of
    new documents only also folds its BM25 df deltas."""
    kb_id, ds_id = synced_kb(svc, tmp_path, 3)
    kb = svc.resolve(kb_id)

    def analyzed() -> Any:  # the last ANALYZE pgkb ran (autovacuum's are counted apart)
        with kb.database.connection() as conn:
            row = conn.execute("SELECT last_analyze FROM pg_stat_user_tables WHERE schemaname = %s AND relname = %s",
                               (kb.table.schema, kb.table.name)).fetchone()
        return row[0] if row else None

    first = analyzed()
    assert first is not None  # the initial load left a table without column statistics: analyzed

    corpus.write_folder(tmp_path / "docs", 400, offset=100)
    job = svc.run_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJob"]
    assert job["status"] == "COMPLETE" and job["statistics"]["numberOfNewDocumentsIndexed"] == 400
    assert analyzed() > first
    with kb.database.connection() as conn:
        ix = bm25.lookup(conn, kb.table)
        assert ix is not None
        terms = conn.execute(sql.SQL("SELECT count(*), count(DISTINCT term) FROM {}").format(ix.df)).fetchone()
    assert terms is not None and terms[0] == terms[1]  # one df row per term: folded
