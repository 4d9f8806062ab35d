"""SQL of an ingestion job's work queue (`pgkb.job_batches`): enqueue, claim, finish, sum.

A claim is a row lock: `claim()` runs inside a transaction the caller keeps open while it works the
batch, and `finish()` records the outcome in that transaction before the caller commits. A worker
that dies never commits, PostgreSQL rolls its transaction back, and the batch is PENDING again for
the next claimer, so a batch's statistics are recorded exactly once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import psycopg

ACTIVE = "IN_PROGRESS"  # only a running job's batches are claimed (not STARTING, not STOPPING)


def enqueue(conn: psycopg.Connection, job_id: str, batches: Sequence[list[dict[str, Any]]], first: int = 0) -> None:
    """Write batches of document descriptors, numbered from `first`, in one statement."""
    if not batches:
        return
    conn.execute(
        "INSERT INTO pgkb.job_batches (job_id, seq, documents)"
        " SELECT %s, s, d FROM unnest(%s::int[], %s::jsonb[]) AS t(s, d)",
        (job_id, list(range(first, first + len(batches))), [json.dumps(b) for b in batches]),
    )


def claim(conn: psycopg.Connection, job_id: str | None = None) -> tuple[str, int, list[dict[str, Any]]] | None:
    """Inside the caller's transaction: lock one PENDING batch of a running job (of `job_id` when
    given) that nobody else holds; (job id, seq, documents) or None."""
    where = "AND b.job_id = %s" if job_id is not None else ""
    row = conn.execute(
        "SELECT b.job_id, b.seq, b.documents FROM pgkb.job_batches b"
        " JOIN pgkb.ingestion_jobs j ON j.id = b.job_id"
        f" WHERE b.status = 'PENDING' AND j.status = %s {where}"
        " ORDER BY b.job_id, b.seq LIMIT 1 FOR UPDATE OF b SKIP LOCKED",
        (ACTIVE, job_id) if job_id is not None else (ACTIVE,),
    ).fetchone()
    return (row[0], row[1], row[2]) if row else None


def finish(
    conn: psycopg.Connection, job_id: str, seq: int, *, status: str, statistics: dict[str, int],
    failure_reasons: list[str], chunks: int, worker: str,
) -> None:
    """Inside the claiming transaction: record the batch's outcome."""
    conn.execute(
        "UPDATE pgkb.job_batches SET status = %s, statistics = %s, failure_reasons = %s, chunks = %s,"
        " worker = %s, done_at = now() WHERE job_id = %s AND seq = %s",
        (status, json.dumps(statistics), json.dumps(failure_reasons), chunks, worker, job_id, seq),
    )


def totals(conn: psycopg.Connection, job_id: str, max_reasons: int) -> tuple[dict[str, int], list[str], int]:
    """(statistics summed over finished batches, their first failure reasons in batch order, chunks)."""
    stats = {
        k: int(v)
        for k, v in conn.execute(
            "SELECT s.key, sum(s.value::bigint) FROM pgkb.job_batches b, jsonb_each_text(b.statistics) s"
            " WHERE b.job_id = %s AND b.status <> 'PENDING' GROUP BY s.key",
            (job_id,),
        )
    }
    reasons = [
        r[0]
        for r in conn.execute(
            "SELECT f.reason FROM pgkb.job_batches b,"
            " jsonb_array_elements_text(b.failure_reasons) WITH ORDINALITY AS f(reason, n)"
            " WHERE b.job_id = %s AND b.status <> 'PENDING' ORDER BY b.seq, f.n LIMIT %s",
            (job_id, max_reasons),
        )
    ]
    row = conn.execute("SELECT coalesce(sum(chunks), 0) FROM pgkb.job_batches WHERE job_id = %s",
                       (job_id,)).fetchone()
    return stats, reasons, int(row[0]) if row else 0


def pending(conn: psycopg.Connection, job_id: str) -> int:
    """Batches not finished yet (claimed by a worker right now, or waiting)."""
    row = conn.execute("SELECT count(*) FROM pgkb.job_batches WHERE job_id = %s AND status = 'PENDING'",
                       (job_id,)).fetchone()
    return int(row[0]) if row else 0


def failed(conn: psycopg.Connection, job_id: str) -> str | None:
    """The reason of a batch a worker could not work (the job fails with it), if any."""
    row = conn.execute(
        "SELECT failure_reasons->>0 FROM pgkb.job_batches WHERE job_id = %s AND status = 'FAILED'"
        " ORDER BY seq LIMIT 1",
        (job_id,),
    ).fetchone()
    return str(row[0]) if row else None


def cancel_waiting(conn: psycopg.Connection, job_id: str) -> int:
    """A stopping job: batches nobody has claimed will not be worked. Claimed ones finish (or return
    to the queue and are cancelled by the next call). Returns how many were cancelled."""
    rows = conn.execute(
        "UPDATE pgkb.job_batches SET status = 'CANCELLED', done_at = now() WHERE (job_id, seq) IN"
        " (SELECT job_id, seq FROM pgkb.job_batches WHERE job_id = %s AND status = 'PENDING'"
        "  FOR UPDATE SKIP LOCKED) RETURNING seq",
        (job_id,),
    ).fetchall()
    return len(rows)


def clear(conn: psycopg.Connection, job_id: str) -> None:
    conn.execute("DELETE FROM pgkb.job_batches WHERE job_id = %s", (job_id,))


def clear_ended(conn: psycopg.Connection, ds_id: str) -> None:
    """Queues left by jobs of a data source that ended without clearing theirs (a killed process)."""
    conn.execute(
        "DELETE FROM pgkb.job_batches b USING pgkb.ingestion_jobs j"
        " WHERE b.job_id = j.id AND j.ds_id = %s AND j.status NOT IN ('STARTING', 'IN_PROGRESS', 'STOPPING')",
        (ds_id,),
    )


def jobs_with_work(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Running jobs that have batches waiting: (job id, kb id, ds id), oldest first."""
    rows = conn.execute(
        "SELECT j.id, j.kb_id, j.ds_id FROM pgkb.ingestion_jobs j WHERE j.status = %s AND EXISTS"
        " (SELECT 1 FROM pgkb.job_batches b WHERE b.job_id = j.id AND b.status = 'PENDING')"
        " ORDER BY j.started_at",
        (ACTIVE,),
    ).fetchall()
    return [{"id": r[0], "kb_id": r[1], "ds_id": r[2]} for r in rows]
