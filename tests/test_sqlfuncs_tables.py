"""The table fast path (fill_embeddings) and vectorizers, on the embedded PostgreSQL with the real model."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Sequence

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector

from pgkb.embeddings.registry import REFERENCE_MODEL_ID, get_model
from pgkb.errors import ValidationError
from pgkb.sqlfuncs.fill import fill_embeddings
from pgkb.sqlfuncs.install import install
from pgkb.sqlfuncs.vectorizer import register, run_worker, status, unregister

MODEL = REFERENCE_MODEL_ID
N_ROWS = 400


@pytest.fixture(scope="module")
def model():
    return get_model(MODEL)


def _texts(n: int) -> list[str]:
    topics = ["rivers", "compilers", "bread", "volcanoes", "chess", "jazz", "tides", "orchids"]
    return [f"note {i}: a short remark about {topics[i % len(topics)]} number {i * 7 % 101}" for i in range(n)]


def _table_with_log(url: str, texts: Sequence[str]) -> None:
    """A documents table whose every embedding write is logged, in the writing transaction, per row and
    backend: a row embedded twice would show twice."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.execute("CREATE TABLE documents (id int PRIMARY KEY, content text, embedding vector(384))")
        conn.execute("CREATE TABLE embed_log (id int, backend int)")
        conn.execute("""CREATE FUNCTION log_embedding() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN INSERT INTO embed_log VALUES (NEW.id, pg_backend_pid()); RETURN NULL; END $$""")
        conn.execute("CREATE TRIGGER log_embedding AFTER UPDATE OF embedding ON documents FOR EACH ROW "
                     "WHEN (NEW.embedding IS NOT NULL) EXECUTE FUNCTION log_embedding()")
        with conn.cursor().copy("COPY documents (id, content) FROM STDIN") as cp:
            for i, t in enumerate(texts, 1):
                cp.write_row((i, t))


def _check_complete_once(url: str, model, texts: Sequence[str]) -> psycopg.rows.Row:
    with psycopg.connect(url) as conn:
        register_vector(conn)
        rows = conn.execute("SELECT id, embedding FROM documents ORDER BY id").fetchall()
        counts = conn.execute("SELECT count(*), count(DISTINCT id), max(c) FROM "
                              "(SELECT id, count(*) AS c FROM embed_log GROUP BY id) s").fetchone()
        backends = conn.execute("SELECT count(DISTINCT backend) FROM embed_log").fetchone()[0]
    assert all(e is not None for _, e in rows)
    got = np.stack([e.to_numpy() for _, e in rows])
    ref = model.embed_documents(list(texts))
    assert ((got * ref).sum(1)).min() >= 0.9999
    assert counts == (len(texts), len(texts), 1), "every row embedded exactly once"
    return backends


def _fill_process(url: str, batch_size: int) -> subprocess.Popen:
    # One torch thread per worker: two workers share the machine's cores without oversubscribing them.
    code = ("import torch; from pgkb.embeddings.registry import get_model; "
            f"get_model({MODEL!r}); torch.set_num_threads(1); "
            "from pgkb.sqlfuncs.fill import fill_embeddings; "
            f"fill_embeddings({url!r}, 'documents', 'content', 'embedding', {MODEL!r}, batch_size={batch_size})")
    return subprocess.Popen([sys.executable, "-c", code])


def _logged(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM embed_log").fetchone()[0]


def test_fast_path_killed_mid_table_then_resumed(new_database_url: str, model) -> None:
    texts = _texts(N_ROWS)
    _table_with_log(new_database_url, texts)
    proc = _fill_process(new_database_url, batch_size=25)
    deadline = time.monotonic() + 120
    while _logged(new_database_url) < 100 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.kill()  # SIGKILL: no cleanup, its open batch is rolled back by PostgreSQL
    proc.wait()
    done = _logged(new_database_url)
    assert 0 < done < N_ROWS, "killed mid-table"
    stats = fill_embeddings(new_database_url, "documents", "content", "embedding", MODEL, batch_size=100)
    assert stats.rows == N_ROWS - done
    _check_complete_once(new_database_url, model, texts)
    # A run over a complete table does nothing.
    assert fill_embeddings(new_database_url, "documents", "content", "embedding", MODEL).rows == 0


def test_two_fast_path_processes_share_a_table(new_database_url: str, model) -> None:
    texts = _texts(N_ROWS)
    _table_with_log(new_database_url, texts)
    procs = [_fill_process(new_database_url, batch_size=10) for _ in range(2)]
    for p in procs:
        assert p.wait(timeout=300) == 0
    _check_complete_once(new_database_url, model, texts)


def test_fast_path_checks_dimensions(new_database_url: str) -> None:
    with psycopg.connect(new_database_url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.execute("CREATE TABLE d (id int PRIMARY KEY, content text, embedding vector(1024))")
    with pytest.raises(ValidationError, match="1024"):
        fill_embeddings(new_database_url, "d", "content", "embedding", MODEL)


# -- vectorizer ------------------------------------------------------------------------------------------


@pytest.fixture
def vdb(new_database_url: str) -> str:
    # The vectorizer needs no endpoint; install still records one (unused here).
    install(new_database_url, "127.0.0.1", 9, "pgkb", "unused-password")
    with psycopg.connect(new_database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE notes (id bigint PRIMARY KEY, body text, tag text, embedding vector(384))")
    return new_database_url


def _notes(url: str) -> dict[int, np.ndarray | None]:
    with psycopg.connect(url) as conn:
        register_vector(conn)
        return {i: None if e is None else e.to_numpy()
                for i, e in conn.execute("SELECT id, embedding FROM notes ORDER BY id").fetchall()}


def _queue(url: str, vid: int) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            f"SELECT id, attempts, last_error, next_attempt_at > now() FROM aws_bedrock.vectorizer_queue_{vid} ORDER BY id"
        ).fetchall()


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    return float(a @ b) >= 0.9999


def test_vectorizer_insert_update_and_noop_update(vdb: str, model) -> None:
    with psycopg.connect(vdb, autocommit=True) as conn:
        conn.execute("INSERT INTO notes (id, body, tag) VALUES (1, 'the tide comes in', 'a'), (2, 'bread rises', 'b')")
    vid = register(vdb, "notes", "body", "embedding", MODEL)
    with psycopg.connect(vdb, autocommit=True) as conn:
        conn.execute("INSERT INTO notes (id, body, tag) SELECT g, 'row ' || g, 'c' FROM generate_series(3, 5) g")
        conn.execute("INSERT INTO notes (id, body) VALUES (6, NULL)")
    assert [r[0] for r in _queue(vdb, vid)] == [1, 2, 3, 4, 5, 6]  # backfill + inserts
    stats = run_worker(vdb, once=True)
    assert stats.embedded == 6 and stats.failed == 0
    got = _notes(vdb)
    assert _close(got[1], model.embed_documents(["the tide comes in"])[0])
    assert _close(got[4], model.embed_documents(["row 4"])[0])
    assert got[6] is None
    assert _queue(vdb, vid) == []
    # An update that changes the text re-embeds; one that does not (same text, or another column) does not.
    with psycopg.connect(vdb, autocommit=True) as conn:
        conn.execute("UPDATE notes SET body = 'the tide goes out' WHERE id = 1")
        conn.execute("UPDATE notes SET body = 'bread rises', tag = 'z' WHERE id = 2")
        conn.execute("UPDATE notes SET tag = 'y' WHERE id = 3")
    assert [r[0] for r in _queue(vdb, vid)] == [1]
    before = _notes(vdb)
    assert run_worker(vdb, once=True).embedded == 1
    after = _notes(vdb)
    assert _close(after[1], model.embed_documents(["the tide goes out"])[0])
    assert np.array_equal(before[2], after[2]) and np.array_equal(before[3], after[3])
    st = status(vdb)
    assert st[0]["pending"] == 0 and st[0]["model_id"] == MODEL
    unregister(vdb, vid)
    with psycopg.connect(vdb, autocommit=True) as conn:
        conn.execute("UPDATE notes SET body = 'after unregister' WHERE id = 1")
        assert conn.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'notes'::regclass "
                            "AND NOT tgisinternal").fetchone()[0] == 0


def test_vectorizer_failures_are_recorded_and_retried_with_backoff(vdb: str, model) -> None:
    vid = register(vdb, "notes", "body", "embedding", MODEL)
    with psycopg.connect(vdb, autocommit=True) as conn:
        conn.execute("INSERT INTO notes (id, body) VALUES (1, 'fine'), (2, 'POISON pill'), (3, 'also fine')")
    broken = {"on": True}

    def embed(model_id: str, texts: Sequence[str]) -> np.ndarray:
        if broken["on"] and any("POISON" in t for t in texts):
            raise RuntimeError("provider refused the text")
        return model.embed_documents(list(texts))

    stats = run_worker(vdb, once=True, embed=embed, base_delay_s=0.5, max_delay_s=60)
    assert stats.embedded == 2 and stats.failed == 1
    q = _queue(vdb, vid)
    assert len(q) == 1 and q[0][0] == 2 and q[0][1] == 1 and "provider refused" in q[0][2] and q[0][3]
    assert _notes(vdb)[2] is None and _notes(vdb)[1] is not None
    # Not due yet: a second pass does nothing.
    assert run_worker(vdb, once=True, embed=embed, base_delay_s=0.5).failed == 0
    time.sleep(0.6)
    run_worker(vdb, once=True, embed=embed, base_delay_s=0.5, max_delay_s=60)
    with psycopg.connect(vdb) as conn:
        attempts, delay = conn.execute(
            f"SELECT attempts, extract(epoch FROM next_attempt_at - last_failed_at) FROM aws_bedrock.vectorizer_queue_{vid}"
        ).fetchone()
    assert attempts == 2 and 0.9 <= float(delay) <= 1.1  # 0.5 s doubled
    broken["on"] = False
    with psycopg.connect(vdb, autocommit=True) as conn:
        assert conn.execute("SELECT aws_bedrock.vectorizer_retry_now(%s)", (vid,)).fetchone()[0] == 1
    assert run_worker(vdb, once=True, embed=embed).embedded == 1
    assert _queue(vdb, vid) == []
    assert _close(_notes(vdb)[2], model.embed_documents(["POISON pill"])[0])


def test_vectorizer_model_change_and_unknown_model(vdb: str, model) -> None:
    vid = register(vdb, "notes", "body", "embedding", "no.such-model")
    with psycopg.connect(vdb, autocommit=True) as conn:
        conn.execute("INSERT INTO notes (id, body) VALUES (1, 'one'), (2, 'two')")
    stats = run_worker(vdb, once=True)
    assert stats.failed == 2 and "no.such-model" in stats.errors[0]
    assert all(r[2] and "no.such-model" in r[2] for r in _queue(vdb, vid))
    # Re-registering changes the configuration in place (same id, same queue); then retry.
    assert register(vdb, "notes", "body", "embedding", MODEL) == vid
    with psycopg.connect(vdb, autocommit=True) as conn:
        conn.execute("SELECT aws_bedrock.vectorizer_retry_now(%s)", (vid,))
    assert run_worker(vdb, once=True).embedded == 2
    assert all(v is not None for v in _notes(vdb).values())


def test_vectorizer_text_changed_while_embedding_is_not_overwritten(vdb: str, model) -> None:
    vid = register(vdb, "notes", "body", "embedding", MODEL)
    with psycopg.connect(vdb, autocommit=True) as conn:
        conn.execute("INSERT INTO notes (id, body) VALUES (1, 'old text')")

    def embed(model_id: str, texts: Sequence[str]) -> np.ndarray:
        # The application edits the row while the model runs (no lock is held meanwhile).
        with psycopg.connect(vdb, autocommit=True) as conn:
            conn.execute("UPDATE notes SET body = 'new text' WHERE id = 1")
        return model.embed_documents(list(texts))

    from pgkb.sqlfuncs.vectorizer import Worker

    worker = Worker(vdb, embed=embed)
    with psycopg.connect(vdb) as conn:
        register_vector(conn)
        from pgkb.sqlfuncs.vectorizer import WorkerStats

        worker.run_once(conn, vid, MODEL, WorkerStats())
    assert _notes(vdb)[1] is None  # the stale vector of 'old text' was not written
    assert [r[0] for r in _queue(vdb, vid)] == [1]  # re-queued by the trigger
    run_worker(vdb, once=True)
    assert _close(_notes(vdb)[1], model.embed_documents(["new text"])[0])


def test_vectorizer_worker_wakes_on_insert(vdb: str, model) -> None:
    import threading

    register(vdb, "notes", "body", "embedding", MODEL)
    stop = threading.Event()
    worker = threading.Thread(target=run_worker, args=(vdb,), kwargs={"poll_s": 600, "stop": stop})
    worker.start()
    try:
        time.sleep(0.5)  # the worker is asleep on LISTEN with a 10-minute poll interval
        with psycopg.connect(vdb, autocommit=True) as conn:
            conn.execute("INSERT INTO notes (id, body) VALUES (1, 'woken by a notify')")
        deadline = time.monotonic() + 120
        while _notes(vdb)[1] is None:
            assert time.monotonic() < deadline, "the worker did not wake on the trigger's NOTIFY"
            time.sleep(0.1)
        assert _close(_notes(vdb)[1], model.embed_documents(["woken by a notify"])[0])
    finally:
        stop.set()
        worker.join(timeout=30)
    assert not worker.is_alive()
