"""Working a job's queue: claim batches, parse and chunk, embed, write, settle each batch.

The process that started a job works its queue like any other worker (`pgkb worker` processes on
the same database join in). Parsing and chunking run in a reader thread that claims batches as it
goes, the model in the calling thread, database writes in a writer thread, so the model (the
bottleneck) never waits for either, across batch boundaries as well. A batch is settled (its
statistics recorded, its claim committed) by the writer once its last document is written or has
failed; `check_stop` runs between model calls.

How a run ends, for the batches it holds: stopped (the job is STOPPING): settled with what was
written; the job ended elsewhere, or the database went away: rolled back, back to the queue; any
other error: settled FAILED with the reason, which fails the job.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from pgkb import config
from pgkb.db import Database
from pgkb.errors import PgkbError
from pgkb.ingestion.batches import ClaimedBatch, Claimer, WorkItem
from pgkb.ingestion.claim import ClaimLost
from pgkb.ingestion.documents import PreparedDocument, prepare_document, read_sidecar
from pgkb.ingestion.reading import read_ahead
from pgkb.ingestion.sources import SourceDocument
from pgkb.ingestion.writer import DocumentWriter
from pgkb.kb import KnowledgeBase
from pgkb.store import catalog

log = logging.getLogger(__name__)

MAX_FAILURE_REASONS = 50
# Batches one worker holds at once, unless its model is still short of a full call: enough to keep
# the three threads busy, few enough that the last batches of a job spread over the workers.
CLAIMS_AHEAD = 4
FAILED = "numberOfDocumentsFailed"


class Stopped(Exception):
    """The job was asked to stop."""


def job_still_running(catalog_db: Database, job_id: str) -> None:
    """A worker's stop check: Stopped when the job is STOPPING, ClaimLost when it has ended."""
    with catalog_db.connection() as conn:
        status = catalog.job_status(conn, job_id)
    if status == "STOPPING":
        raise Stopped()
    if status not in catalog.ACTIVE_JOB_STATUSES:
        raise ClaimLost(f"ingestion job {job_id} has ended ({status})")


class BatchWorker:
    """Works one job's queue until no batch is left to claim (others may still be in flight)."""

    def __init__(
        self,
        catalog_db: Database,
        kb: KnowledgeBase,
        ds_row: dict[str, Any],
        job_id: str,
        source: Any,
        *,
        writer: DocumentWriter | None = None,
        check_stop: Callable[[], None] | None = None,
        check_claim: Callable[[], None] | None = None,
        on_flush: Callable[[], None] | None = None,
        local: dict[str, SourceDocument] | None = None,
    ) -> None:
        self.catalog_db = catalog_db
        self.kb = kb
        self.ds = ds_row
        self.job_id = job_id
        self.source = source
        self.writer = writer or DocumentWriter(catalog_db, kb, ds_row["id"])
        self.chunking = (ds_row.get("ingestion") or {}).get("chunkingConfiguration")
        self.check_stop = check_stop or (lambda: job_still_running(catalog_db, job_id))
        self.check_claim = check_claim or (lambda: None)
        self.on_flush = on_flush or (lambda: None)
        self.local = local or {}  # documents this process scanned: read through the scan's readers
        self.batches_done = 0
        self.lock = threading.Lock()  # held while a batch is settled: `live()` + the queue's totals are exact
        self._held: list[ClaimedBatch] = []

    def live(self) -> tuple[dict[str, int], list[str], int]:
        """What this worker has written (and failed) in the batches it holds, not settled yet; call
        with `lock` held, together with reading the queue's totals."""
        stats: dict[str, int] = {}
        failures: list[str] = []
        chunks = 0
        for ref in self._held:
            for k, v in ref.stats.items():
                stats[k] = stats.get(k, 0) + v
            failures += ref.failures
            chunks += ref.chunks
        return stats, failures, chunks

    # ------------------------------------------------------------------ reading ahead

    def _claimed(self, claimer: Claimer, held: list[ClaimedBatch], lock: threading.Lock,
                 abort: threading.Event, hungry: Callable[[], bool]) -> Iterator[tuple[ClaimedBatch, WorkItem]]:
        while not abort.is_set():
            while not abort.is_set():
                with lock:
                    if len(held) < CLAIMS_AHEAD or hungry():
                        break
                abort.wait(0.005)
            if abort.is_set():
                return
            batch = claimer.next()
            if batch is None:
                return
            with lock:
                held.append(batch)
            for w in batch.items:
                yield batch, w

    def _prepared(self, claimed: Iterator[tuple[ClaimedBatch, WorkItem]], more: Callable[[], bool]
                  ) -> Iterator[tuple[ClaimedBatch, WorkItem, PreparedDocument | str]]:
        model = self.kb.model()
        # read_ahead yields in the order it pulls: each document's batch and item wait here in step.
        waiting: collections.deque[tuple[ClaimedBatch, WorkItem]] = collections.deque()

        def docs() -> Iterator[SourceDocument]:
            for ref, w in claimed:
                waiting.append((ref, w))
                yield w.doc

        for d, data in read_ahead(docs(), more):
            ref, w = waiting.popleft()
            try:
                sidecar = read_sidecar(d.sidecar)
            except PgkbError as exc:
                yield ref, w, f"metadata file: {exc.message}"
                continue
            try:
                if isinstance(data, Exception):
                    raise data
                prepared = prepare_document(
                    ds_id=self.ds["id"], uri=d.uri, name=d.name, data=data, sidecar=sidecar,
                    chunking=self.chunking, model=model, fingerprint=d.fingerprint,
                    sidecar_hash=d.sidecar_hash, location=d.location,
                )
                prepared.acl = w.acl
                yield ref, w, prepared
            except PgkbError as exc:
                yield ref, w, exc.message
            except Exception as exc:  # a parser library choking on a corrupt file
                yield ref, w, f"cannot parse: {type(exc).__name__}: {exc}".splitlines()[0][:300]

    # ------------------------------------------------------------------ settling

    def _record(self, batch: list[tuple[ClaimedBatch, WorkItem, PreparedDocument | str]]) -> list[ClaimedBatch]:
        """After a write: count each document on its batch; the batches now complete."""
        failed = [(w.doc.uri, d) for _, w, d in batch if isinstance(d, str)]
        if failed:
            with self.catalog_db.connection() as conn:
                catalog.mark_documents_failed(conn, self.kb.id, self.ds["id"], failed)
        complete = []
        for ref, w, d in batch:
            if isinstance(d, str):
                ref.count(FAILED)
                if len(ref.failures) < MAX_FAILURE_REASONS:
                    ref.failures.append(f"{w.doc.uri}: {d}")
            else:
                ref.count("numberOfNewDocumentsIndexed" if w.kind == "new" else "numberOfModifiedDocumentsIndexed")
                ref.chunks += d.n_rows
            ref.remaining -= 1
            if ref.remaining == 0:
                complete.append(ref)
        return complete

    # ------------------------------------------------------------------ the run

    def run(self) -> None:
        model = self.kb.model()
        claimer = Claimer(self.catalog_db.url, self.job_id, self.source, self.local)
        held = self._held = []
        lock = self.lock
        prepared_q: queue.Queue[Any] = queue.Queue(maxsize=64)
        write_q: queue.Queue[Any] = queue.Queue(maxsize=2)
        errors: list[BaseException] = []
        done = object()
        abort = threading.Event()
        embed_batch = config.current().embed_batch
        unflushed = [0]  # rows to embed handed to the model's thread and not yet sent to the model

        def hungry() -> bool:  # the model's next call is not full yet: claim more, whatever is held
            return unflushed[0] < embed_batch

        def may_claim() -> bool:  # read-ahead's question: the same rule _claimed waits on, asked without waiting
            with lock:
                return len(held) < CLAIMS_AHEAD or hungry()

        def put(item: Any) -> bool:
            while not abort.is_set():
                try:
                    prepared_q.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def reader() -> None:
            try:
                for item in self._prepared(self._claimed(claimer, held, lock, abort, hungry), may_claim):
                    if not isinstance(item[2], str):
                        with lock:
                            unflushed[0] += item[2].n_to_embed
                    if not put(item):
                        return
            except BaseException as exc:
                errors.append(exc)
            finally:
                put(done)

        def writer() -> None:
            while True:
                item = write_q.get()
                if item is done:
                    return
                if errors:
                    continue  # drain after a failure elsewhere
                batch, vectors = item
                try:
                    self.check_claim()
                    self.writer.write([d for _, _, d in batch if not isinstance(d, str)], vectors)
                    with lock:
                        complete = self._record(batch)
                        for ref in complete:
                            ref.settle("DONE", MAX_FAILURE_REASONS)
                            held.remove(ref)
                    for ref in complete:
                        claimer.give_back(ref)
                        self.batches_done += 1
                except BaseException as exc:
                    errors.append(exc)

        threads = [threading.Thread(target=reader, daemon=True, name="pgkb-batch-read"),
                   threading.Thread(target=writer, daemon=True, name="pgkb-batch-write")]
        for t in threads:
            t.start()
        batch: list[tuple[ClaimedBatch, WorkItem, PreparedDocument | str]] = []
        pending = 0
        # Rows per model call (embed_batch): large enough to amortise, small enough to keep progress
        # fluid and commits frequent.
        outcome: BaseException | None = None
        try:
            while True:
                item = prepared_q.get()
                if item is done:
                    break
                if errors:
                    raise errors[0]
                batch.append(item)
                d = item[2]
                if isinstance(d, str):
                    continue
                pending += d.n_to_embed
                if pending >= embed_batch:
                    with lock:
                        unflushed[0] -= pending
                    self._flush(model, batch, write_q)
                    batch, pending = [], 0
                    self.check_stop()
                    self.on_flush()
            if batch:
                self._flush(model, batch, write_q)
        except BaseException as exc:
            outcome = exc
        finally:
            abort.set()  # the reader may be blocked on a full queue after a stop or an error
            write_q.put(done)
            for t in threads:
                t.join()
        if outcome is None and errors:
            outcome = errors[0]
        with lock:
            self._wind_up(held, claimer, outcome)
            held.clear()
        if outcome is not None:
            raise outcome

    def _wind_up(self, held: list[ClaimedBatch], claimer: Claimer, outcome: BaseException | None) -> None:
        """The batches still held when the run ends (see the module docstring)."""
        for ref in held:
            try:
                if isinstance(outcome, Stopped) or outcome is None:
                    ref.settle("DONE", MAX_FAILURE_REASONS)  # None: only after a stop raced the last batch
                elif isinstance(outcome, (ClaimLost, KeyboardInterrupt, SystemExit)) or _connection_lost(outcome):
                    ref.abandon()
                else:
                    reason = outcome.message if isinstance(outcome, PgkbError) else (
                        f"internal error: {type(outcome).__name__}: {outcome}".splitlines()[0])
                    ref.settle("FAILED", MAX_FAILURE_REASONS, reason)
            except Exception as exc:
                log.warning("ingestion job %s: batch %d not settled: %s", self.job_id, ref.seq,
                            str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                ref.abandon()
            finally:
                ref.conn.close()
        claimer.close()

    @staticmethod
    def _flush(model: Any, batch: list[tuple[ClaimedBatch, WorkItem, PreparedDocument | str]],
               write_q: queue.Queue[Any]) -> None:
        texts = [t for _, _, d in batch if not isinstance(d, str) for t in d.embed_texts if t is not None]
        vectors = model.embed_documents(texts) if texts else np.zeros((0, 1), dtype=np.float32)
        write_q.put((batch, vectors))


def _connection_lost(exc: BaseException) -> bool:
    import psycopg

    return isinstance(exc, psycopg.OperationalError)
