"""`pgkb ds`: create, list and delete data sources."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from pgkb.cli.common import (
    BreakpointOpt,
    BufferSizeOpt,
    ChunkingOpt,
    DatabaseUrl,
    DataDir,
    JsonOut,
    MaxTokensOpt,
    OverlapOpt,
    ParentTokensOpt,
    chunking_options,
    ds_id_of,
    kb_id_of,
    out,
    print_json,
    service,
)
from pgkb.errors import PgkbError

app = typer.Typer(no_args_is_help=True, help="Data sources.")


@app.command("create")
def ds_create(
    kb: str,
    name: str,
    path: Annotated[Path | None, typer.Option(help="A local folder (read recursively).")] = None,
    s3: Annotated[str | None, typer.Option(help="s3://bucket/prefix")] = None,
    custom: Annotated[bool, typer.Option(help="Documents arrive by direct ingestion.")] = False,
    chunking: ChunkingOpt = "default",
    max_tokens: MaxTokensOpt = None,
    overlap: OverlapOpt = None,
    parent_tokens: ParentTokensOpt = None,
    buffer_size: BufferSizeOpt = None,
    breakpoint: BreakpointOpt = None,
    retain: Annotated[bool, typer.Option(help="Keep vectors when the data source is deleted.")] = False,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Create a data source: a local folder, an S3 prefix, or a CUSTOM source for direct ingestion."""
    if sum(bool(x) for x in (path, s3, custom)) != 1:
        raise PgkbError("give exactly one of --path, --s3 or --custom")
    if path:
        cfg: dict[str, Any] = {"type": "LOCAL", "localConfiguration": {"path": str(Path(path).expanduser().resolve())}}
    elif s3:
        from pgkb.ingestion.sources import split_s3_uri

        bucket, _, prefix = s3.removeprefix("s3://").partition("/")
        if not bucket:
            split_s3_uri(s3)
        cfg = {"type": "S3", "s3Configuration": {"bucketArn": f"arn:aws:s3:::{bucket}",
                                                 **({"inclusionPrefixes": [prefix]} if prefix else {})}}
    else:
        cfg = {"type": "CUSTOM"}
    ingestion = {}
    chunk_cfg = chunking_options(chunking, max_tokens, overlap, parent_tokens, buffer_size, breakpoint)
    if chunk_cfg:
        ingestion["chunkingConfiguration"] = chunk_cfg
    with service(database_url, data_dir) as svc:
        ds = svc.create_data_source(
            knowledgeBaseId=kb_id_of(svc, kb), name=name, dataSourceConfiguration=cfg,
            vectorIngestionConfiguration=ingestion or None, dataDeletionPolicy="RETAIN" if retain else "DELETE",
        )["dataSource"]
    out.print(f"created data source [bold]{ds['name']}[/] ({ds['dataSourceId']}) in {kb}")


@app.command("list")
def ds_list(kb: str, database_url: DatabaseUrl = None, data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """List a knowledge base's data sources."""
    with service(database_url, data_dir) as svc:
        kb_id = kb_id_of(svc, kb)
        rows = [svc.get_data_source(knowledgeBaseId=kb_id, dataSourceId=r["dataSourceId"])["dataSource"]
                for r in svc.list_data_sources(knowledgeBaseId=kb_id, maxResults=1000)["dataSourceSummaries"]]
    if as_json:
        return print_json(rows)
    t = Table("id", "name", "type", "status")
    for r in rows:
        t.add_row(r["dataSourceId"], r["name"], r["dataSourceConfiguration"]["type"], r["status"])
    out.print(t)


@app.command("delete")
def ds_delete(kb: str, ds: str, database_url: DatabaseUrl = None, data_dir: DataDir = None) -> None:
    """Delete a data source (its vectors too, unless its deletion policy is RETAIN)."""
    with service(database_url, data_dir) as svc:
        kb_id = kb_id_of(svc, kb)
        svc.delete_data_source(knowledgeBaseId=kb_id, dataSourceId=ds_id_of(svc, kb_id, ds))
    out.print(f"deleted data source {ds}")

