"""A job's documents to index as work-queue entries, and a batch of them claimed by one worker.

`describe()` turns a document the scan decided to (re)index into plain JSON (uri, kind, fingerprint,
sidecar bytes, location, ACL) that any process can `restore()`, reading the bytes through its own
source. `ClaimedBatch` holds its claim's open transaction (`pgkb.store.work_queue`) and the batch's
statistics until the last of its documents is written, then records them and commits: the rows of a
batch and its statistics are settled together, or not at all.
"""

from __future__ import annotations

import base64
import contextlib
import os
import socket
from dataclasses import dataclass, field
from typing import Any, Protocol

import psycopg

from pgkb.ingestion.acl import DocAcl
from pgkb.ingestion.sources import SourceDocument
from pgkb.store import work_queue

WORKER_NAME = f"{socket.gethostname()}:{os.getpid()}"
# The claim connections' application_name: pg_stat_activity shows who holds which batch ("idle in
# transaction" while the batch is worked).
APPLICATION_NAME = f"pgkb batch {os.getpid()}"[:63]


@dataclass
class WorkItem:
    doc: SourceDocument
    kind: str  # "new" | "modified"
    acl: Any = None  # its DocAcl, on an ACL-enabled source


class ReadsByUri(Protocol):
    def get_uri(self, uri: str) -> bytes: ...


def describe(w: WorkItem) -> dict[str, Any]:
    d = w.doc
    acl = w.acl
    return {
        "uri": d.uri, "kind": w.kind, "size": d.size, "fingerprint": d.fingerprint,
        "sidecar": base64.b64encode(d.sidecar).decode() if d.sidecar is not None else None,
        "location": d.location,
        "acl": {"allow": list(acl.allow), "deny": list(acl.deny), "origin": acl.origin} if acl is not None else None,
    }


def restore(item: dict[str, Any], source: ReadsByUri, local: dict[str, SourceDocument] | None = None) -> WorkItem:
    """The work item again; `local` (the scan of this process) supplies the document's own reader."""
    uri = item["uri"]
    sidecar = base64.b64decode(item["sidecar"]) if item.get("sidecar") is not None else None
    own = (local or {}).get(uri)
    read = own.read if own is not None else (lambda: source.get_uri(uri))
    doc = SourceDocument(uri, int(item.get("size") or 0), item.get("fingerprint"), read, sidecar,
                         item.get("location"))
    a = item.get("acl")
    acl = DocAcl(tuple(a["allow"]), tuple(a["deny"]), a.get("origin", "")) if a else None
    return WorkItem(doc, item["kind"], acl)


@dataclass
class ClaimedBatch:
    """One claimed batch: its open transaction, its documents, what became of them so far."""

    job_id: str
    seq: int
    conn: psycopg.Connection
    items: list[WorkItem]
    remaining: int = 0
    stats: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    chunks: int = 0
    settled: bool = False

    def __post_init__(self) -> None:
        self.remaining = len(self.items)

    def count(self, key: str, n: int = 1) -> None:
        self.stats[key] = self.stats.get(key, 0) + n

    def settle(self, status: str, max_reasons: int, extra_reason: str | None = None) -> None:
        """Record the batch's outcome in its claiming transaction and commit."""
        reasons = ([extra_reason] if extra_reason else []) + self.failures
        work_queue.finish(self.conn, self.job_id, self.seq, status=status, statistics=self.stats,
                          failure_reasons=reasons[:max_reasons], chunks=self.chunks, worker=WORKER_NAME)
        self.conn.commit()
        self.settled = True

    def abandon(self) -> None:
        """Roll the claim back: the batch returns to the queue, counted by whoever finishes it."""
        with contextlib.suppress(psycopg.Error):
            self.conn.rollback()
        self.settled = True


class Claimer:
    """Claims batches of one job for one worker, each on its own connection (kept for reuse)."""

    def __init__(self, url: str, job_id: str, source: ReadsByUri,
                 local: dict[str, SourceDocument] | None = None) -> None:
        self.url = url
        self.job_id = job_id
        self.source = source
        self.local = local
        self._idle: list[psycopg.Connection] = []

    def next(self) -> ClaimedBatch | None:
        conn = self._idle.pop() if self._idle else psycopg.connect(
            self.url, autocommit=False, application_name=APPLICATION_NAME)
        try:
            found = work_queue.claim(conn, self.job_id)
        except BaseException:
            conn.close()
            raise
        if found is None:
            conn.rollback()
            self._idle.append(conn)
            return None
        job_id, seq, docs = found
        return ClaimedBatch(job_id, seq, conn, [restore(d, self.source, self.local) for d in docs])

    def give_back(self, batch: ClaimedBatch) -> None:
        if not batch.conn.closed and batch.settled:
            self._idle.append(batch.conn)
        else:
            batch.conn.close()

    def close(self) -> None:
        for c in self._idle:
            c.close()
        self._idle.clear()
