"""`pgkb sync`, `pgkb jobs`, `pgkb documents`: ingestion jobs and what they indexed."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from pgkb.cli.common import DatabaseUrl, DataDir, JsonOut, ds_id_of, err, kb_id_of, out, print_json, service
from pgkb.config import current


def sync(
    kb: str,
    ds: str,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
    as_json: JsonOut = False,
) -> None:
    """Run an ingestion job: index new and changed documents, remove deleted ones."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with service(database_url, data_dir) as svc:
        kb_id = kb_id_of(svc, kb)
        ds_id = ds_id_of(svc, kb_id, ds)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[chunks]} chunks"),
                      TimeElapsedColumn(), console=err, disable=as_json or not err.is_terminal and current().progress is None) as bar:
            task = bar.add_task(f"sync {kb}/{ds}", total=None, chunks=0)

            def on_progress(p: Any) -> None:
                bar.update(task, total=p.to_index or None, completed=p.indexed, chunks=p.chunks)

            job = svc.run_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id, on_progress=on_progress)["ingestionJob"]
    if as_json:
        return print_json(job)
    _print_job(job)
    if job["status"] != "COMPLETE":
        raise typer.Exit(1)


def _print_job(job: dict[str, Any]) -> None:
    st = job["statistics"]
    out.print(
        f"job {job['ingestionJobId']} [bold]{job['status']}[/]: scanned {st['numberOfDocumentsScanned']}, "
        f"new {st['numberOfNewDocumentsIndexed']}, modified {st['numberOfModifiedDocumentsIndexed']}, "
        f"metadata-only {st['numberOfMetadataDocumentsModified']}, deleted {st['numberOfDocumentsDeleted']}, "
        f"failed {st['numberOfDocumentsFailed']}, skipped {st['numberOfDocumentsSkipped']}"
    )
    for reason in job.get("failureReasons", []):
        out.print(f"  [red]-[/] {reason}", highlight=False)


def jobs(kb: str, ds: str, database_url: DatabaseUrl = None, data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """Ingestion job history with Bedrock's statistics."""
    with service(database_url, data_dir) as svc:
        kb_id = kb_id_of(svc, kb)
        ds_id = ds_id_of(svc, kb_id, ds)
        rows = svc.list_ingestion_jobs(knowledgeBaseId=kb_id, dataSourceId=ds_id, maxResults=100)["ingestionJobSummaries"]
        rows = [svc.get_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id, ingestionJobId=r["ingestionJobId"])["ingestionJob"]
                for r in rows]
    if as_json:
        return print_json(rows)
    t = Table("job", "status", "started", "scanned", "new", "modified", "deleted", "failed", "skipped")
    for r in rows:
        s = r["statistics"]
        t.add_row(r["ingestionJobId"], r["status"], str(r["startedAt"])[:19], str(s["numberOfDocumentsScanned"]),
                  str(s["numberOfNewDocumentsIndexed"]), str(s["numberOfModifiedDocumentsIndexed"]),
                  str(s["numberOfDocumentsDeleted"]), str(s["numberOfDocumentsFailed"]), str(s["numberOfDocumentsSkipped"]))
    out.print(t)


def documents(kb: str, ds: str, database_url: DatabaseUrl = None, data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """A data source's documents with their status and, for failures, the reason."""
    with service(database_url, data_dir) as svc:
        kb_id = kb_id_of(svc, kb)
        rows = svc.list_knowledge_base_documents(knowledgeBaseId=kb_id, dataSourceId=ds_id_of(svc, kb_id, ds),
                                                 maxResults=1000)["documentDetails"]
    if as_json:
        return print_json(rows)
    t = Table("document", "status", "reason")
    for r in rows:
        ident = r["identifier"]
        t.add_row(ident.get("s3", {}).get("uri") or ident.get("custom", {}).get("id"), r["status"], r.get("statusReason", ""))
    out.print(t)

