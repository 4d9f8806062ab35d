"""An ingestion job: scan a source, classify each document, index what changed, remove what went away.

The process that starts the job (the coordinator) scans, classifies, deletes and rewrites metadata
itself, then writes the documents to index to the job's work queue in batches and works the queue
(`pgkb.ingestion.worker`) alongside any `pgkb worker` process of the database. When the queue is
drained it sums the batches' statistics in SQL, builds a deferred HNSW index and ends the job. Alone,
it is one process doing what it always did: parsing, the model and writes overlap in three threads.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pgkb import config
from pgkb.db import Database
from pgkb.errors import PgkbError
from pgkb.ingestion.acl import NO_ACL_SKIPPED, GlobalAcl, effective_acl
from pgkb.ingestion.batches import WorkItem, describe
from pgkb.ingestion.claim import ClaimLost, JobClaim
from pgkb.ingestion.documents import read_sidecar
from pgkb.ingestion.reading import READ_AHEAD_BYTES, READ_AHEAD_DOCS, READ_WORKERS, read_ahead
from pgkb.ingestion.sources import Source, SourceDocument
from pgkb.ingestion.worker import BatchWorker, Stopped
from pgkb.ingestion.writer import DocumentWriter
from pgkb.kb import KnowledgeBase
from pgkb.parsing import MAX_FILE_BYTES
from pgkb.store import catalog, work_queue

__all__ = ["READ_AHEAD_BYTES", "READ_AHEAD_DOCS", "READ_WORKERS", "IngestionRun", "JobProgress", "Stopped",
           "classify", "read_ahead"]

log = logging.getLogger(__name__)

MAX_FAILURE_REASONS = 50

STAT_NAMES = (
    "numberOfDocumentsScanned",
    "numberOfMetadataDocumentsScanned",
    "numberOfNewDocumentsIndexed",
    "numberOfModifiedDocumentsIndexed",
    "numberOfMetadataDocumentsModified",
    "numberOfDocumentsDeleted",
    "numberOfDocumentsFailed",
    "numberOfDocumentsSkipped",
)


@dataclass
class JobProgress:
    stats: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STAT_NAMES, 0))
    failures: list[str] = field(default_factory=list)
    to_index: int = 0  # documents that need parsing and embedding
    indexed: int = 0
    chunks: int = 0

    def fail(self, uri: str, reason: str) -> None:
        self.stats["numberOfDocumentsFailed"] += 1
        if len(self.failures) < MAX_FAILURE_REASONS:
            self.failures.append(f"{uri}: {reason}")


_Work = WorkItem
# How long a stopping job waits for the batches other workers are in the middle of.
STOP_WAIT_S = 60.0


def _supported(name: str) -> bool:
    from pgkb import parsing

    return bool(parsing.is_supported(name))


def classify(
    scanned: list[SourceDocument], known: dict[str, dict[str, Any]], progress: JobProgress
) -> tuple[list[_Work], list[tuple[SourceDocument, dict[str, Any]]], list[str], list[tuple[str, str]], list[tuple[str, str]]]:
    """Split a scan into (to index, metadata-only changes, deleted uris, failures, skips)."""
    work: list[_Work] = []
    meta_only: list[tuple[SourceDocument, dict[str, Any]]] = []
    failures: list[tuple[str, str]] = []
    skips: list[tuple[str, str]] = []
    seen = set()
    for d in scanned:
        seen.add(d.uri)
        progress.stats["numberOfDocumentsScanned"] += 1
        if d.sidecar is not None:
            progress.stats["numberOfMetadataDocumentsScanned"] += 1
        prev = known.get(d.uri)
        if not _supported(d.name):
            skips.append((d.uri, "unsupported file type"))
            continue
        if d.fingerprint is None or d.size > MAX_FILE_BYTES:
            failures.append((d.uri, f"file is larger than the 50 MB limit ({d.size} bytes)"))
            continue
        if prev is None or prev["status"] not in ("INDEXED",) or prev["content_hash"] is None:
            work.append(_Work(d, "modified" if prev and prev["content_hash"] else "new"))
        elif prev["content_hash"] != d.fingerprint:
            work.append(_Work(d, "modified"))
        elif prev["metadata_hash"] != d.sidecar_hash:
            meta_only.append((d, prev))
    deleted = [u for u in known if u not in seen]
    return work, meta_only, deleted, failures, skips


class IngestionRun:
    """Runs one ingestion job to the end; `should_stop()` is polled between batches."""

    def __init__(
        self,
        catalog_db: Database,
        kb: KnowledgeBase,
        ds_row: dict[str, Any],
        job_id: str,
        source: Source,
        *,
        on_progress: Callable[[JobProgress], None] | None = None,
        claim: JobClaim | None = None,
        global_acl: Callable[[], GlobalAcl | None] | None = None,
    ) -> None:
        self.catalog_db = catalog_db
        self.claim = claim
        self.global_acl = global_acl  # loads the data source's global ACL file (ACL-enabled sources)
        self.kb = kb
        self.ds = ds_row
        self.job_id = job_id
        self.source = source
        self.on_progress = on_progress
        self.progress = JobProgress()
        self.writer = DocumentWriter(catalog_db, kb, ds_row["id"])
        self.chunking = (ds_row.get("ingestion") or {}).get("chunkingConfiguration")
        self._last_flush = 0.0
        self._pending_ignored: list[tuple[str, str]] = []
        self._pending_failed: list[tuple[str, str]] = []
        self._worker: BatchWorker | None = None  # this process's share of the queue, while it works it

    # ------------------------------------------------------------------ bookkeeping

    def _save(self, *, force: bool = False, **fields: Any) -> None:
        now = time.monotonic()
        if not force and now - self._last_flush < 0.5:
            return
        self._last_flush = now
        with self.catalog_db.connection() as conn:
            stats, failures = self._merged(conn)
            catalog.update_running_job(conn, self.job_id, statistics=stats, failure_reasons=failures, **fields)

    def _merged(self, conn: Any) -> tuple[dict[str, int], list[str]]:
        """The job's statistics: this process's own counts (scan, deletions, metadata) plus the
        queue's finished batches, summed by SQL (whichever worker did them)."""
        worker = self._worker
        if worker is None:
            done, reasons, chunks = work_queue.totals(conn, self.job_id, MAX_FAILURE_REASONS)
        else:  # while it works: add what it wrote in batches it has not settled yet
            with worker.lock:
                done, reasons, chunks = work_queue.totals(conn, self.job_id, MAX_FAILURE_REASONS)
                live, live_reasons, live_chunks = worker.live()
            done = {k: done.get(k, 0) + live.get(k, 0) for k in {*done, *live}}
            reasons, chunks = reasons + live_reasons, chunks + live_chunks
        stats = {k: self.progress.stats[k] + done.get(k, 0) for k in STAT_NAMES}
        self.progress.indexed = done.get("numberOfNewDocumentsIndexed", 0) + done.get(
            "numberOfModifiedDocumentsIndexed", 0)
        self.progress.chunks = chunks
        return stats, (self.progress.failures + reasons)[:MAX_FAILURE_REASONS]

    def _tick(self) -> None:
        if self.on_progress:
            self.on_progress(self.progress)
        self._save()

    def _check_stop(self) -> None:
        with self.catalog_db.connection() as conn:
            status = catalog.job_status(conn, self.job_id)
        if status == "STOPPING":
            raise Stopped()
        if status not in catalog.ACTIVE_JOB_STATUSES:
            raise ClaimLost(f"ingestion job {self.job_id} was ended by another process ({status})")
        self._check_claim()

    def _check_claim(self) -> None:
        if self.claim is not None:
            self.claim.check()

    # ------------------------------------------------------------------ the job

    def run(self) -> dict[str, Any]:
        """Returns the final job row."""
        self._save(force=True, status="IN_PROGRESS")
        try:
            try:
                self._run()
            finally:
                # An initial load's HNSW index is built from the rows before the job ends, whatever
                # ended it (a killed process leaves the record to the next job).
                self._build_deferred_indexes()
        except ClaimLost as exc:
            # Another process owns the data source now and has marked this job FAILED: leave its row be.
            log.warning("ingestion job %s stopped: %s", self.job_id, exc)
            return self._current()
        except Stopped:
            self._wait_for_workers()
            return self._finish("STOPPED")
        except PgkbError as exc:
            self.progress.failures.insert(0, exc.message)
            return self._finish("FAILED")
        except Exception as exc:  # keep the job record truthful whatever happened
            log.exception("ingestion job %s failed", self.job_id)
            self.progress.failures.insert(0, f"internal error: {type(exc).__name__}: {exc}".splitlines()[0])
            return self._finish("FAILED")
        return self._finish("COMPLETE")

    def _build_deferred_indexes(self) -> None:
        try:
            self.writer.finish_initial_load()
        except Exception as exc:  # the rows stand; the record stays for the next job
            log.warning("ingestion job %s: deferred indexes not built yet: %s", self.job_id, str(exc).splitlines()[0])

    def _current(self) -> dict[str, Any]:
        with self.catalog_db.connection() as conn:
            row = catalog.job_by_id(conn, self.job_id)
        assert row is not None
        return row

    def _wait_for_workers(self) -> None:
        """A stopping job: cancel the batches nobody holds and let the workers settle theirs (each
        stops after its current model call), so the statistics count what they wrote."""
        deadline = time.monotonic() + STOP_WAIT_S
        while time.monotonic() < deadline:
            with self.catalog_db.connection() as conn:
                work_queue.cancel_waiting(conn, self.job_id)
                if not work_queue.pending(conn, self.job_id):
                    return
            time.sleep(0.2)
        log.warning("ingestion job %s: workers still hold batches %.0f s after the stop", self.job_id, STOP_WAIT_S)

    def _finish(self, status: str) -> dict[str, Any]:
        with self.catalog_db.connection() as conn:
            stats, failures = self._merged(conn)
            row = catalog.update_running_job(
                conn,
                self.job_id,
                status=status,
                statistics=stats,
                failure_reasons=failures,
                ended_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            )
        self._clear_queue()
        if row is None:  # ended meanwhile by another process: its word stands
            return self._current()
        if self.on_progress:
            self.on_progress(self.progress)
        self._maintain(stats)
        return row

    def _clear_queue(self) -> None:
        """The job has ended: its queue goes (a worker still settling a batch is waited for a while;
        past that the next job of the data source clears it)."""
        try:
            with self.catalog_db.connection() as conn, conn.transaction():
                conn.execute("SET LOCAL lock_timeout = '10s'")
                work_queue.clear(conn, self.job_id)
        except Exception as exc:
            log.warning("ingestion job %s: work queue not cleared: %s", self.job_id, str(exc).splitlines()[0])

    def _maintain(self, stats: dict[str, int]) -> None:
        """After a job that changed the table (`stats`: its final statistics, taken before its queue
        went): fold the BM25 deltas its writes appended (queries read fewer rows), and refresh the
        planner's statistics if the writes outgrew them; best effort."""
        if not any(stats.get(k) for k in ("numberOfNewDocumentsIndexed", "numberOfModifiedDocumentsIndexed",
                                          "numberOfDocumentsDeleted")):
            return
        self.writer.fold_statistics()
        self.writer.refresh_planner_statistics()

    def _run(self) -> None:
        ds_id = self.ds["id"]
        scanned = list(self.source.scan())
        with self.catalog_db.connection() as conn:
            known = catalog.documents_of(conn, ds_id)
        work, meta_only, deleted, failures, skips = classify(scanned, known, self.progress)
        if not getattr(self.source, "deletes_missing", True):
            deleted = []
        acl_updates: list[tuple[str, int, Any]] = []
        if self.writer.acl_enabled:
            work, meta_only, deleted, acl_updates = self._apply_acls(scanned, known, work, meta_only, deleted,
                                                                     failures, skips)
        self.progress.to_index = len(work)
        with self.catalog_db.connection() as conn:
            catalog.mark_documents_failed(conn, self.kb.id, ds_id, failures)
            catalog.mark_documents_failed(conn, self.kb.id, ds_id, skips, status="IGNORED")
        for uri, reason in failures:
            self.progress.fail(uri, reason)
        self.progress.stats["numberOfDocumentsSkipped"] += len(skips)
        self._tick()

        # Deletions first: cheap, and they free the names of documents that moved.
        for i in range(0, len(deleted), 500):
            self._check_claim()
            self.writer.delete(deleted[i : i + 500], known)
            self.progress.stats["numberOfDocumentsDeleted"] += len(deleted[i : i + 500])
        if self._pending_ignored or self._pending_failed:  # after the deletions, which drop catalog entries
            with self.catalog_db.connection() as conn:
                catalog.mark_documents_failed(conn, self.kb.id, ds_id, self._pending_ignored, status="IGNORED")
                catalog.mark_documents_failed(conn, self.kb.id, ds_id, self._pending_failed)
            for uri, reason in self._pending_failed:
                self.progress.fail(uri, reason)
        self._check_claim()
        self._metadata_only(meta_only)
        self.writer.update_acls(acl_updates)
        self.progress.stats["numberOfMetadataDocumentsModified"] += len(
            [u for u, _, _ in acl_updates if u not in {d.uri for d, _ in meta_only}]
        )
        self._check_stop()
        if work:
            self.writer.begin_initial_load()  # an empty table: HNSW, GIN, BM25 built once the rows are in
        self._index(work)

    def _apply_acls(
        self,
        scanned: list[SourceDocument],
        known: dict[str, dict[str, Any]],
        work: list[_Work],
        meta_only: list[tuple[SourceDocument, dict[str, Any]]],
        deleted: list[str],
        failures: list[tuple[str, str]],
        skips: list[tuple[str, str]],
    ) -> tuple[list[_Work], list[tuple[SourceDocument, dict[str, Any]]], list[str], list[tuple[str, int, Any]]]:
        """An ACL-enabled source: give each document its ACL. A document without one is not ingested
        (skipped, counted, the reason on the document; its earlier rows are removed at once), a
        malformed one fails the document, and a document whose only change is its ACL gets its
        rows' ACL rewritten in place."""
        global_acl = self.global_acl() if self.global_acl is not None else None
        acls: dict[str, Any] = {}
        no_acl: list[str] = []
        bad: dict[str, str] = {}
        listed = {u for u, _ in failures} | {u for u, _ in skips}
        for d in scanned:
            if d.uri in listed:
                continue
            try:
                acl = effective_acl(d.sidecar, d.uri, global_acl)
            except PgkbError as exc:
                bad[d.uri] = f"access control list: {exc.message}"
                continue
            if acl is None:
                no_acl.append(d.uri)
            else:
                acls[d.uri] = acl
        dropped = set(no_acl) | set(bad)
        for w in work:
            w.acl = acls.get(w.doc.uri)
        work = [w for w in work if w.doc.uri not in dropped]
        meta_only = [(d, p) for d, p in meta_only if d.uri not in dropped]
        updating = {w.doc.uri for w in work}
        acl_updates = [
            (uri, max(known[uri]["chunk_high_water"], known[uri]["chunk_count"]), acl)
            for uri, acl in acls.items()
            if uri in known and uri not in updating and known[uri]["status"] == "INDEXED"
            and known[uri].get("acl_hash") != acl.hash
        ]
        # Documents that lost their ACL (or whose ACL no longer parses) leave the index now.
        gone = [u for u in dropped if u in known and known[u]["status"] not in ("IGNORED",)]
        deleted = [*deleted, *gone]
        # Recorded after the deletions (which drop catalog entries), so the reason stays on the document.
        self._pending_failed = list(bad.items())
        self._pending_ignored = [(u, NO_ACL_SKIPPED) for u in no_acl]
        self.progress.stats["numberOfDocumentsSkipped"] += len(no_acl)
        return work, meta_only, deleted, acl_updates

    def _metadata_only(self, items: list[tuple[SourceDocument, dict[str, Any]]]) -> None:
        in_place: list[tuple[str, dict[str, Any], str | None, int]] = []
        for d, prev in items:
            try:
                sidecar = read_sidecar(d.sidecar)
            except PgkbError as exc:
                self._record_failure(d.uri, f"metadata file: {exc.message}")
                continue
            if sidecar.embed_keys or not self.kb.mapping.custom_metadata:
                continue  # handled by full re-indexing below
            in_place.append((d.uri, sidecar.attributes, d.sidecar_hash, prev["chunk_count"]))
        self.writer.update_metadata(in_place)
        self.progress.stats["numberOfMetadataDocumentsModified"] += len(in_place)

    def _record_failure(self, uri: str, reason: str) -> None:
        self.progress.fail(uri, reason)
        with self.catalog_db.connection() as conn:
            catalog.mark_documents_failed(conn, self.kb.id, self.ds["id"], [(uri, reason)])

    # ------------------------------------------------------------------ the queue

    def _index(self, work: list[_Work]) -> None:
        """Queue the documents to index, work the queue, and wait for batches other workers hold."""
        if not work:
            return
        size = config.current().sync_batch_docs
        with self.catalog_db.connection() as conn:
            work_queue.enqueue(conn, self.job_id, [[describe(w) for w in work[i : i + size]]
                                                   for i in range(0, len(work), size)])
        local = {w.doc.uri: w.doc for w in work}  # this process reads through the scan's own readers
        worker = BatchWorker(self.catalog_db, self.kb, self.ds, self.job_id, self.source, writer=self.writer,
                             check_stop=self._check_stop, check_claim=self._check_claim, on_flush=self._tick,
                             local=local)
        self._worker = worker
        while True:
            worker.run()
            with self.catalog_db.connection() as conn:
                reason = work_queue.failed(conn, self.job_id)
                left = work_queue.pending(conn, self.job_id)
            if reason is not None:
                raise BatchFailed(reason)
            if not left:
                break
            # Batches held by other workers: wait for them (a dead worker's batch comes back to the queue).
            self._check_stop()
            self._tick()
            time.sleep(0.2)
        self._tick()


class BatchFailed(PgkbError):
    """A worker could not work a batch of the job; the job fails with its reason."""
