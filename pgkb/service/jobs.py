"""bedrock-agent's ingestion-job operations.

One job per data source at a time: the process running a job holds the data source's claim
(`pgkb.ingestion.claim`) for the whole job. PostgreSQL releases it when that process dies, however it
dies, so a job whose claim is free while its row says it is running was interrupted; it is marked
FAILED the next time anyone looks at it or starts another.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from pgkb.errors import ConflictError, DatabaseUnavailableError, PgkbError, ValidationError
from pgkb.ingestion.acl import GlobalAcl
from pgkb.ingestion.claim import ClaimLost, JobClaim, lock_is_free
from pgkb.ingestion.sources import LocalFolderSource, S3Source, Source, file_uri
from pgkb.ingestion.sync import IngestionRun, JobProgress
from pgkb.ingestion.worker import BatchWorker, Stopped, job_still_running
from pgkb.service import shapes
from pgkb.service.base import Collaborator, KnowledgeBases, ServiceCore
from pgkb.service.connectors import settings_of
from pgkb.store import catalog, work_queue

log = logging.getLogger(__name__)
_WORKER_CONNECT_WAIT_S = 1.0  # how long `pgkb worker` waits for a connection before it looks at its stop flag

INTERRUPTED = "Interrupted: the process running this ingestion job stopped before it finished; start the job again"


class JobControl(Collaborator):
    def __init__(self, core: ServiceCore, kbs: KnowledgeBases) -> None:
        super().__init__(core, kbs)
        self._threads: list[tuple[threading.Thread, str]] = []

    def _job_threads(self) -> list[tuple[threading.Thread, str]]:
        return self._threads

    def wait_for_jobs(self, timeout: float | None = None) -> None:
        """Wait for this process's background jobs to finish."""
        for t, _ in list(self._job_threads()):
            t.join(timeout)

    def stop_jobs(self, timeout: float = 60.0) -> None:
        """Ask this process's running jobs to stop (they end STOPPED after their current batch), then wait.

        Used on shutdown (SIGTERM of `pgkb serve`): a job stopped here, or killed past the timeout,
        loses nothing; the next sync finishes the work.
        """
        running = [job_id for t, job_id in self._job_threads() if t.is_alive()]
        if running:
            with self.db.connection() as conn:
                conn.execute(
                    "UPDATE pgkb.ingestion_jobs SET status = 'STOPPING', updated_at = now()"
                    " WHERE id = ANY(%s) AND status IN ('STARTING', 'IN_PROGRESS')",
                    (running,),
                )
        self.wait_for_jobs(timeout)

    # ------------------------------------------------------------------ locking and orphans

    def _reap_orphans(self, ds_id: str) -> None:
        """Mark jobs that say they run, but whose runner no longer holds the lock, as interrupted."""
        with self.db.connection() as conn:
            if not catalog.active_jobs(conn, ds_id):
                return
            with conn.transaction():
                if lock_is_free(conn, ds_id):
                    for job in catalog.active_jobs(conn, ds_id):
                        catalog.update_job(
                            conn, job["id"], status="FAILED",
                            failure_reasons=[INTERRUPTED, *job["failure_reasons"]], ended_at="now",
                        )

    # ------------------------------------------------------------------ sources

    def source_for(self, ds: dict[str, Any]) -> Source:
        settings = settings_of(ds)
        if settings.kind == "LOCAL":
            assert settings.path is not None
            return LocalFolderSource(settings.path)
        if settings.kind == "S3":
            assert settings.bucket is not None
            return S3Source(settings.bucket, settings.prefix)
        return _EmptySource()

    @staticmethod
    def global_acl_for(ds: dict[str, Any], source: Source) -> Callable[[], GlobalAcl | None] | None:
        """A loader of the data source's global ACL file (None when it has none)."""
        settings = settings_of(ds)
        if not settings.acl_enabled or not settings.global_acl:
            return None
        location = settings.global_acl

        def load() -> GlobalAcl | None:
            if settings.kind == "S3":
                data = source.get_uri(location)  # type: ignore[attr-defined]
                return GlobalAcl.parse(data)
            root = Path(settings.path or ".").expanduser().resolve()
            path = Path(location).expanduser()
            path = path if path.is_absolute() else root / path
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise ValidationError(f"cannot read the global ACL file {path}: {exc.strerror or exc}") from None
            return GlobalAcl.parse(data, lambda p: _local_prefix(root, p))

        return load

    # ------------------------------------------------------------------ operations

    def _begin(self, kb_id: str, ds_id: str, description: str | None, client_token: str | None) -> tuple[Any, ...]:
        if description is not None and (not isinstance(description, str) or not 1 <= len(description) <= 200):
            raise ValidationError("description must be 1 to 200 characters")
        with self.db.connection() as conn:
            existing = catalog.find_by_client_token(conn, "ingestion_jobs", client_token)
            if existing:
                return existing, None, None, None
            kb_row = catalog.get_knowledge_base(conn, kb_id)
            ds = catalog.get_data_source(conn, kb_row["id"], ds_id)
        kb = self.resolve(kb_row["id"])
        claim = JobClaim.take(lambda: self.db.url, ds["id"])
        try:
            self._reap_orphans_locked(claim, ds["id"])
            with self.db.connection() as conn:
                job = catalog.insert_job(
                    conn,
                    {"id": catalog.new_id(), "kb_id": kb.id, "ds_id": ds["id"], "description": description,
                     "status": "STARTING", "client_token": client_token},
                )
            claim.job_id = job["id"]
        except BaseException:
            claim.close()
            raise
        return job, kb, ds, claim

    @staticmethod
    def _reap_orphans_locked(claim: JobClaim, ds_id: str) -> None:
        """We hold the claim, so any job still marked active was left behind by a dead process."""
        rows = claim.connection.execute(
            "UPDATE pgkb.ingestion_jobs SET status = 'FAILED', updated_at = now(), ended_at = now(),"
            " failure_reasons = jsonb_build_array(%s::text) || failure_reasons"
            " WHERE ds_id = %s AND status IN ('STARTING', 'IN_PROGRESS', 'STOPPING') RETURNING id",
            (INTERRUPTED, ds_id),
        ).fetchall()
        if rows:
            log.warning("marked %d interrupted ingestion job(s) of data source %s as FAILED", len(rows), ds_id)
        work_queue.clear_ended(claim.connection, ds_id)

    def _run(self, job: dict[str, Any], kb: Any, ds: dict[str, Any], claim: JobClaim,
             on_progress: Callable[[JobProgress], None] | None) -> dict[str, Any]:
        try:
            source = self.source_for(ds)
            run = IngestionRun(self.db, kb, ds, job["id"], source, on_progress=on_progress, claim=claim,
                               global_acl=self.global_acl_for(ds, source))
            return run.run()
        finally:
            claim.close()

    def run_ingestion_job(
        self,
        *,
        knowledgeBaseId: str,
        dataSourceId: str,
        description: str | None = None,
        on_progress: Callable[[JobProgress], None] | None = None,
    ) -> dict[str, Any]:
        """Run a job in the calling thread (the CLI); returns {"ingestionJob": ...} when it ends."""
        job, kb, ds, claim = self._begin(knowledgeBaseId, dataSourceId, description, None)
        return {"ingestionJob": shapes.ingestion_job(self._run(job, kb, ds, claim, on_progress))}

    def start_ingestion_job(
        self,
        *,
        knowledgeBaseId: str,
        dataSourceId: str,
        clientToken: str | None = None,
        description: str | None = None,
    ) -> dict[str, Any]:
        """Start a job in the background and return at once (StartIngestionJob)."""
        job, kb, ds, claim = self._begin(knowledgeBaseId, dataSourceId, description, clientToken)
        if claim is not None:
            t = threading.Thread(target=self._run, args=(job, kb, ds, claim, None), daemon=True,
                                 name=f"ingestion-{job['id']}")
            self._job_threads().append((t, job["id"]))
            t.start()
        return {"ingestionJob": shapes.ingestion_job(job)}

    def work_ingestion_queue(self, *, stop: threading.Event | None = None, idle_s: float = 0.5,
                             until_idle: bool = False) -> int:
        """Join the running jobs of this database (`pgkb worker`): claim their queued batches, parse,
        embed and write them, until `stop` is set (or, with `until_idle`, no batch is left). A stop
        here hands the batches held back to the queue. Returns the batches this process finished."""
        stop = stop or threading.Event()

        def leaving() -> None:
            if stop.is_set():
                raise ClaimLost("this worker is shutting down")

        finished = 0
        unreachable = False
        while not stop.is_set():
            try:
                # A short wait for a connection: while the database is away this loop keeps
                # trying, and a stop (SIGTERM) is seen within a second, not after the pool's timeout.
                with self.db.connection(timeout=_WORKER_CONNECT_WAIT_S) as conn:
                    jobs = work_queue.jobs_with_work(conn)
            except DatabaseUnavailableError as exc:
                if not unreachable:
                    log.warning("%s; waiting for the database", exc.message)
                unreachable = True
                stop.wait(idle_s)
                continue
            if unreachable:
                log.info("the database answers again")
                unreachable = False
            if not jobs:
                if until_idle:
                    break
                stop.wait(idle_s)
                continue
            for job in jobs:
                if stop.is_set():
                    break
                worker = None
                try:
                    with self.db.connection(timeout=_WORKER_CONNECT_WAIT_S) as conn:
                        ds = catalog.get_data_source(conn, job["kb_id"], job["ds_id"])
                    source = self.source_for(ds)
                    job_id = job["id"]

                    def check_stop(job_id: str = job_id) -> None:
                        leaving()
                        job_still_running(self.db, job_id)

                    worker = BatchWorker(self.db, self.resolve(job["kb_id"]), ds, job_id, source,
                                         check_stop=check_stop, check_claim=leaving)
                    worker.run()
                except (Stopped, ClaimLost) as exc:
                    log.info("ingestion job %s: left (%s)", job["id"], str(exc) or type(exc).__name__)
                except PgkbError as exc:  # settled FAILED: the job's coordinator fails the job with it
                    log.warning("ingestion job %s: %s", job["id"], exc.message)
                except psycopg.OperationalError as exc:  # the database went away: the claims went with it
                    log.warning("ingestion job %s: %s", job["id"], str(exc).splitlines()[0])
                    stop.wait(idle_s)
                finally:
                    finished += worker.batches_done if worker is not None else 0
        return finished

    def get_ingestion_job(self, *, knowledgeBaseId: str, dataSourceId: str, ingestionJobId: str) -> dict[str, Any]:
        with self.db.connection() as conn:
            kb = catalog.get_knowledge_base(conn, knowledgeBaseId)
            ds = catalog.get_data_source(conn, kb["id"], dataSourceId)
        self._reap_orphans(ds["id"])
        with self.db.connection() as conn:
            job = catalog.get_job(conn, kb["id"], ds["id"], ingestionJobId)
        return {"ingestionJob": shapes.ingestion_job(job)}

    def list_ingestion_jobs(
        self,
        *,
        knowledgeBaseId: str,
        dataSourceId: str,
        filters: list[dict[str, Any]] | None = None,
        sortBy: dict[str, Any] | None = None,
        maxResults: int | None = None,
        nextToken: str | None = None,
    ) -> dict[str, Any]:
        offset, limit = shapes.decode_token(nextToken), shapes.page_limit(maxResults)
        statuses = None
        if filters:
            if len(filters) != 1 or filters[0].get("attribute") != "STATUS" or filters[0].get("operator") != "EQ":
                raise ValidationError("filters must hold one filter on attribute STATUS with operator EQ")
            statuses = list(filters[0].get("values") or [])
        sort_attr = (sortBy or {}).get("attribute", "STARTED_AT")
        descending = (sortBy or {}).get("order", "DESCENDING") == "DESCENDING"
        with self.db.connection() as conn:
            kb = catalog.get_knowledge_base(conn, knowledgeBaseId)
            ds = catalog.get_data_source(conn, kb["id"], dataSourceId)
        self._reap_orphans(ds["id"])
        with self.db.connection() as conn:
            rows = catalog.list_jobs(conn, ds["id"], offset, limit + 1, statuses=statuses, sort_by=sort_attr,
                                     descending=descending)
        rows, token = shapes.paged(rows, offset, limit)
        out: dict[str, Any] = {"ingestionJobSummaries": [shapes.ingestion_job_summary(r) for r in rows]}
        if token:
            out["nextToken"] = token
        return out

    def stop_ingestion_job(self, *, knowledgeBaseId: str, dataSourceId: str, ingestionJobId: str) -> dict[str, Any]:
        with self.db.connection() as conn:
            kb = catalog.get_knowledge_base(conn, knowledgeBaseId)
            ds = catalog.get_data_source(conn, kb["id"], dataSourceId)
            job = catalog.get_job(conn, kb["id"], ds["id"], ingestionJobId)
            if job["status"] not in ("STARTING", "IN_PROGRESS", "STOPPING"):
                raise ConflictError(f"ingestion job {job['id']} is {job['status']}; only a running job can be stopped")
            stopped = catalog.update_job(conn, job["id"], status="STOPPING")
        self._reap_orphans(ds["id"])
        assert stopped is not None
        return {"ingestionJob": shapes.ingestion_job(stopped)}


def _local_prefix(root: Path, prefix: str) -> str:
    """A global ACL keyPrefix for a folder source: a file:// URI, an absolute path, or a path relative
    to the folder → the file:// URI prefix the folder's documents have (a trailing / is kept)."""
    if prefix.startswith("file://"):
        return prefix
    path = Path(prefix).expanduser()
    path = path if path.is_absolute() else root / path
    uri = file_uri(path)
    return uri + "/" if prefix.endswith("/") and not uri.endswith("/") else uri


class _EmptySource:
    """CUSTOM data sources receive documents directly; a sync has nothing to scan and deletes nothing."""

    deletes_missing = False

    def scan(self) -> Any:
        return iter(())
