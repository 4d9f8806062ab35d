"""An ingestion job: scan a source, classify each document, index what changed, remove what went away.

Parsing and chunking run in a reader thread, the model in the calling thread, database writes in a
writer thread, so the model (the bottleneck) never waits for either.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pgkb import config
from pgkb.db import Database
from pgkb.errors import PgkbError
from pgkb.ingestion.acl import NO_ACL_SKIPPED, GlobalAcl, effective_acl
from pgkb.ingestion.claim import ClaimLost, JobClaim
from pgkb.ingestion.documents import PreparedDocument, prepare_document, read_sidecar
from pgkb.ingestion.sources import Source, SourceDocument
from pgkb.ingestion.writer import DocumentWriter
from pgkb.kb import KnowledgeBase
from pgkb.parsing import MAX_FILE_BYTES
from pgkb.store import catalog

log = logging.getLogger(__name__)

MAX_FAILURE_REASONS = 50
# Reading documents ahead of the parser (S3 GETs are network round trips; local reads are cheap).
READ_WORKERS = 8
READ_AHEAD_DOCS = 32
READ_AHEAD_BYTES = 64 * 1024 * 1024

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


class Stopped(Exception):
    """The job was asked to stop."""


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


@dataclass
class _Work:
    doc: SourceDocument
    kind: str  # "new" | "modified"
    acl: Any = None  # its DocAcl, on an ACL-enabled source


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


def read_ahead(docs: Iterable[SourceDocument]) -> Iterator[tuple[SourceDocument, bytes | Exception]]:
    """Each document with its bytes (or the error reading them), in order, read by a small pool ahead
    of the consumer, so S3 GETs overlap instead of running one after another. At most
    READ_AHEAD_DOCS documents and about READ_AHEAD_BYTES are in flight."""
    pending: collections.deque[tuple[SourceDocument, int, Future[bytes]]] = collections.deque()
    ahead = 0
    todo = iter(docs)
    with ThreadPoolExecutor(READ_WORKERS, thread_name_prefix="pgkb-read") as pool:
        while True:
            while len(pending) < READ_AHEAD_DOCS and (not pending or ahead < READ_AHEAD_BYTES):
                d = next(todo, None)
                if d is None:
                    break
                size = max(int(d.size or 0), 0)
                pending.append((d, size, pool.submit(d.read)))
                ahead += size
            if not pending:
                return
            d, size, fut = pending.popleft()
            ahead -= size
            try:
                data: bytes | Exception = fut.result()
            except Exception as exc:
                data = exc
            yield d, data


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

    # ------------------------------------------------------------------ bookkeeping

    def _save(self, *, force: bool = False, **fields: Any) -> None:
        now = time.monotonic()
        if not force and now - self._last_flush < 0.5:
            return
        self._last_flush = now
        with self.catalog_db.connection() as conn:
            catalog.update_running_job(
                conn, self.job_id, statistics=self.progress.stats, failure_reasons=self.progress.failures, **fields
            )

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

    def _finish(self, status: str) -> dict[str, Any]:
        with self.catalog_db.connection() as conn:
            row = catalog.update_running_job(
                conn,
                self.job_id,
                status=status,
                statistics=self.progress.stats,
                failure_reasons=self.progress.failures[:MAX_FAILURE_REASONS],
                ended_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            )
        if row is None:  # ended meanwhile by another process: its word stands
            return self._current()
        if self.on_progress:
            self.on_progress(self.progress)
        self._compact_statistics()
        return row

    def _compact_statistics(self) -> None:
        """Fold the BM25 deltas this job's writes appended (queries read fewer rows); best effort."""
        st = self.progress.stats
        if not any(st.get(k) for k in ("numberOfNewDocumentsIndexed", "numberOfModifiedDocumentsIndexed",
                                       "numberOfDocumentsDeleted")):
            return
        self.writer.fold_statistics()

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

    def _prepared(self, work: list[_Work]) -> Iterator[tuple[_Work, PreparedDocument | str]]:
        model = self.kb.model()
        for w, (d, data) in zip(work, read_ahead(w.doc for w in work), strict=True):
            try:
                sidecar = read_sidecar(d.sidecar)
            except PgkbError as exc:
                yield w, f"metadata file: {exc.message}"
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
                yield w, prepared
            except PgkbError as exc:
                yield w, exc.message
            except Exception as exc:  # a parser library choking on a corrupt file
                yield w, f"cannot parse: {type(exc).__name__}: {exc}".splitlines()[0][:300]

    def _index(self, work: list[_Work]) -> None:
        if not work:
            return
        model = self.kb.model()
        prepared_q: queue.Queue[Any] = queue.Queue(maxsize=64)
        write_q: queue.Queue[Any] = queue.Queue(maxsize=2)
        errors: list[BaseException] = []
        done = object()

        abort = threading.Event()

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
                for item in self._prepared(work):
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
                    self._check_claim()
                    self.writer.write([d for _, d in batch], vectors)
                    for w, d in batch:
                        key = "numberOfNewDocumentsIndexed" if w.kind == "new" else "numberOfModifiedDocumentsIndexed"
                        self.progress.stats[key] += 1
                        self.progress.indexed += 1
                        self.progress.chunks += d.n_rows
                except BaseException as exc:
                    errors.append(exc)

        threads = [threading.Thread(target=reader, daemon=True), threading.Thread(target=writer, daemon=True)]
        for t in threads:
            t.start()
        batch: list[tuple[_Work, PreparedDocument]] = []
        pending = 0
        # Rows per model call: large enough to amortise, small enough to keep progress fluid and commits frequent.
        embed_batch = config.current().embed_batch
        try:
            while True:
                item = prepared_q.get()
                if item is done:
                    break
                if errors:
                    raise errors[0]
                w, d = item
                if isinstance(d, str):
                    self._record_failure(w.doc.uri, d)
                    self._tick()
                    continue
                batch.append((w, d))
                pending += d.n_to_embed
                if pending >= embed_batch:
                    self._flush(model, batch, write_q)
                    batch, pending = [], 0
                    self._check_stop()
                    self._tick()
            if batch:
                self._flush(model, batch, write_q)
        finally:
            abort.set()  # the reader may be blocked on a full queue after a stop or an error
            write_q.put(done)
            for t in threads:
                t.join()
        if errors:
            raise errors[0]
        self._tick()

    @staticmethod
    def _flush(model: Any, batch: list[tuple[_Work, PreparedDocument]], write_q: queue.Queue[Any]) -> None:
        texts = [t for _, d in batch for t in d.embed_texts if t is not None]
        vectors = model.embed_documents(texts) if texts else np.zeros((0, 1), dtype=np.float32)
        write_q.put((batch, vectors))
