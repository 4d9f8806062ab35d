"""`pgkb`: a thin command line over pgkb.service.KnowledgeBaseService.

Every command that touches the database accepts `--database-url` and `--data-dir` after its own
name. Errors are one line on stderr with a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from pgkb.config import Settings, current, quiet_model_libraries
from pgkb.embeddings.registry import DEFAULT_MODEL_ID
from pgkb.errors import PgkbError

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Amazon Bedrock Knowledge Bases on PostgreSQL.")
kb_app = typer.Typer(no_args_is_help=True, help="Knowledge bases.")
ds_app = typer.Typer(no_args_is_help=True, help="Data sources.")
db_app = typer.Typer(no_args_is_help=True, help="The database pgkb runs on.")
app.add_typer(kb_app, name="kb")
app.add_typer(ds_app, name="ds")
app.add_typer(db_app, name="db")

out = Console(emoji=False)  # ARNs contain ":secret:", which rich would turn into an emoji
err = Console(stderr=True, soft_wrap=True, emoji=False)

DatabaseUrl = Annotated[
    str | None,
    typer.Option("--database-url", envvar="PGKB_DATABASE_URL", help="PostgreSQL URL (default: the embedded server)."),
]
DataDir = Annotated[
    Path | None, typer.Option("--data-dir", envvar="PGKB_DATA_DIR", help="Where pgkb keeps its data.")
]
JsonOut = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def settings_for(database_url: str | None, data_dir: Path | None) -> Settings:
    return current().with_overrides(data_dir=data_dir, database_url=database_url)


@contextmanager
def service(database_url: str | None, data_dir: Path | None) -> Iterator[Any]:
    from pgkb.service import KnowledgeBaseService

    svc = KnowledgeBaseService(settings_for(database_url, data_dir))
    try:
        yield svc
    finally:
        svc.close()


def print_json(value: Any) -> None:
    out.print_json(json.dumps(value, default=str))


def _kb_id(svc: Any, kb: str) -> str:
    return str(svc.get_knowledge_base(knowledgeBaseId=kb)["knowledgeBase"]["knowledgeBaseId"])


def _ds_id(svc: Any, kb_id: str, ds: str) -> str:
    return str(svc.get_data_source(knowledgeBaseId=kb_id, dataSourceId=ds)["dataSource"]["dataSourceId"])


# ---------------------------------------------------------------------------------------- knowledge bases


def _chunking(strategy: str, max_tokens: int | None, overlap: int | None,
              parent_tokens: int | None, buffer_size: int | None, threshold: int | None) -> dict[str, Any] | None:
    s = strategy.upper().replace("-", "_")
    if s in ("DEFAULT", ""):
        return None
    if s in ("FIXED", "FIXED_SIZE"):
        return {"chunkingStrategy": "FIXED_SIZE", "fixedSizeChunkingConfiguration": {
            "maxTokens": max_tokens or 300, "overlapPercentage": overlap or 20}}
    if s == "NONE":
        return {"chunkingStrategy": "NONE"}
    if s == "HIERARCHICAL":
        return {"chunkingStrategy": "HIERARCHICAL", "hierarchicalChunkingConfiguration": {
            "levelConfigurations": [{"maxTokens": parent_tokens or 1500}, {"maxTokens": max_tokens or 300}],
            "overlapTokens": overlap or 60}}
    if s == "SEMANTIC":
        return {"chunkingStrategy": "SEMANTIC", "semanticChunkingConfiguration": {
            "maxTokens": max_tokens or 300, "bufferSize": 0 if buffer_size is None else buffer_size,
            "breakpointPercentileThreshold": threshold or 95}}
    raise PgkbError(f"unknown chunking strategy {strategy!r}: use fixed, none, hierarchical or semantic")


@kb_app.command("create")
def kb_create(
    name: str,
    model: Annotated[str, typer.Option(help="Embedding model id or ARN (`pgkb models` lists them).")] = DEFAULT_MODEL_ID,
    dimensions: Annotated[int | None, typer.Option(help="Vector dimensions, for models that offer several.")] = None,
    table: Annotated[str | None, typer.Option(help="schema.table for a VECTOR knowledge base; without it, a MANAGED one.")] = None,
    description: Annotated[str | None, typer.Option()] = None,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
    as_json: JsonOut = False,
) -> None:
    """Create a knowledge base. Without --table: a MANAGED one, whose storage pgkb creates and owns.
    With --table: a VECTOR one in that table (created, or validated if it exists)."""
    from pgkb.embeddings import DEFAULT_MODEL_ID, get_spec, model_arn
    from pgkb.store.vector_table import FieldMapping

    with service(database_url, data_dir) as svc:
        spec = get_spec(model)
        if table is None:
            managed: dict[str, Any] = {"embeddingModelType": "MANAGED"}
            if spec.id != get_spec(DEFAULT_MODEL_ID).id or dimensions:
                managed = {"embeddingModelType": "CUSTOM", "embeddingModelArn": model_arn(spec.id, svc.region)}
                if dimensions:
                    managed["embeddingModelConfiguration"] = {
                        "bedrockEmbeddingModelConfiguration": {"dimensions": dimensions}
                    }
            kb = svc.create_knowledge_base(
                name=name, description=description,
                knowledgeBaseConfiguration={"type": "MANAGED", "managedKnowledgeBaseConfiguration": managed},
            )["knowledgeBase"]
            where = "pgkb-managed storage"
        else:
            vec: dict[str, Any] = {"embeddingModelArn": model_arn(spec.id, svc.region)}
            if dimensions:
                vec["embeddingModelConfiguration"] = {"bedrockEmbeddingModelConfiguration": {"dimensions": dimensions}}
            storage = {"type": "RDS", "rdsConfiguration": {**{k: v for k, v in svc.db_info().items() if k != "url"},
                       "tableName": table, "fieldMapping": FieldMapping().to_bedrock()}}
            kb = svc.create_knowledge_base(
                name=name, description=description, storageConfiguration=storage,
                knowledgeBaseConfiguration={"type": "VECTOR", "vectorKnowledgeBaseConfiguration": vec},
            )["knowledgeBase"]
            where = kb["storageConfiguration"]["rdsConfiguration"]["tableName"]
    if as_json:
        print_json(kb)
    else:
        kind = "MANAGED" if table is None else "VECTOR"
        out.print(f"created {kind} knowledge base [bold]{kb['name']}[/] ({kb['knowledgeBaseId']}) "
                  f"in {where} with {spec.id}")


@kb_app.command("list")
def kb_list(database_url: DatabaseUrl = None, data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """List knowledge bases."""
    with service(database_url, data_dir) as svc:
        rows = svc.list_knowledge_bases(maxResults=1000)["knowledgeBaseSummaries"]
    if as_json:
        return print_json(rows)
    t = Table("id", "name", "status", "updated")
    for r in rows:
        t.add_row(r["knowledgeBaseId"], r["name"], r["status"], str(r["updatedAt"])[:19])
    out.print(t)


@kb_app.command("show")
def kb_show(kb: str, database_url: DatabaseUrl = None, data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """Show a knowledge base (with --json: exactly as Bedrock's GetKnowledgeBase returns it)."""
    with service(database_url, data_dir) as svc:
        got = svc.get_knowledge_base(knowledgeBaseId=kb)["knowledgeBase"]
    if as_json:
        return print_json(got)
    vec = got["knowledgeBaseConfiguration"].get("vectorKnowledgeBaseConfiguration") or {}
    rds = (got.get("storageConfiguration") or {}).get("rdsConfiguration") or {}
    t = Table("field", "value", show_header=False)
    for label, value in (("id", got["knowledgeBaseId"]), ("name", got["name"]), ("status", got["status"]),
                         ("description", got.get("description")), ("model", vec.get("embeddingModelArn")),
                         ("table", rds.get("tableName")), ("database", rds.get("databaseName")),
                         ("created", str(got["createdAt"])[:19]), ("updated", str(got["updatedAt"])[:19]),
                         ("arn", got["knowledgeBaseArn"])):
        if value:
            t.add_row(label, str(value))
    out.print(t)


@kb_app.command("delete")
def kb_delete(kb: str, database_url: DatabaseUrl = None, data_dir: DataDir = None) -> None:
    """Delete a knowledge base (and the vectors of its data sources whose deletion policy is DELETE)."""
    with service(database_url, data_dir) as svc:
        svc.delete_knowledge_base(knowledgeBaseId=_kb_id(svc, kb))
    out.print(f"deleted knowledge base {kb}")


# ---------------------------------------------------------------------------------------- data sources


@ds_app.command("create")
def ds_create(
    kb: str,
    name: str,
    path: Annotated[Path | None, typer.Option(help="A local folder (read recursively).")] = None,
    s3: Annotated[str | None, typer.Option(help="s3://bucket/prefix")] = None,
    custom: Annotated[bool, typer.Option(help="Documents arrive by direct ingestion.")] = False,
    chunking: Annotated[str, typer.Option(help="default | fixed | none | hierarchical | semantic")] = "default",
    max_tokens: Annotated[int | None, typer.Option(help="Chunk (or child chunk) size in tokens.")] = None,
    overlap: Annotated[int | None, typer.Option(help="Overlap: percent (fixed) or tokens (hierarchical).")] = None,
    parent_tokens: Annotated[int | None, typer.Option(help="Parent chunk size (hierarchical).")] = None,
    buffer_size: Annotated[int | None, typer.Option(help="Semantic: neighbouring sentences per group.")] = None,
    breakpoint: Annotated[int | None, typer.Option(help="Semantic: breakpoint percentile threshold.")] = None,
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
    chunk_cfg = _chunking(chunking, max_tokens, overlap, parent_tokens, buffer_size, breakpoint)
    if chunk_cfg:
        ingestion["chunkingConfiguration"] = chunk_cfg
    with service(database_url, data_dir) as svc:
        ds = svc.create_data_source(
            knowledgeBaseId=_kb_id(svc, kb), name=name, dataSourceConfiguration=cfg,
            vectorIngestionConfiguration=ingestion or None, dataDeletionPolicy="RETAIN" if retain else "DELETE",
        )["dataSource"]
    out.print(f"created data source [bold]{ds['name']}[/] ({ds['dataSourceId']}) in {kb}")


@ds_app.command("list")
def ds_list(kb: str, database_url: DatabaseUrl = None, data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """List a knowledge base's data sources."""
    with service(database_url, data_dir) as svc:
        kb_id = _kb_id(svc, kb)
        rows = [svc.get_data_source(knowledgeBaseId=kb_id, dataSourceId=r["dataSourceId"])["dataSource"]
                for r in svc.list_data_sources(knowledgeBaseId=kb_id, maxResults=1000)["dataSourceSummaries"]]
    if as_json:
        return print_json(rows)
    t = Table("id", "name", "type", "status")
    for r in rows:
        t.add_row(r["dataSourceId"], r["name"], r["dataSourceConfiguration"]["type"], r["status"])
    out.print(t)


@ds_app.command("delete")
def ds_delete(kb: str, ds: str, database_url: DatabaseUrl = None, data_dir: DataDir = None) -> None:
    """Delete a data source (its vectors too, unless its deletion policy is RETAIN)."""
    with service(database_url, data_dir) as svc:
        kb_id = _kb_id(svc, kb)
        svc.delete_data_source(knowledgeBaseId=kb_id, dataSourceId=_ds_id(svc, kb_id, ds))
    out.print(f"deleted data source {ds}")


# ---------------------------------------------------------------------------------------- ingestion


@app.command()
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
        kb_id = _kb_id(svc, kb)
        ds_id = _ds_id(svc, kb_id, ds)
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


@app.command()
def jobs(kb: str, ds: str, database_url: DatabaseUrl = None, data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """Ingestion job history with Bedrock's statistics."""
    with service(database_url, data_dir) as svc:
        kb_id = _kb_id(svc, kb)
        ds_id = _ds_id(svc, kb_id, ds)
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


@app.command()
def documents(kb: str, ds: str, database_url: DatabaseUrl = None, data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """A data source's documents with their status and, for failures, the reason."""
    with service(database_url, data_dir) as svc:
        kb_id = _kb_id(svc, kb)
        rows = svc.list_knowledge_base_documents(knowledgeBaseId=kb_id, dataSourceId=_ds_id(svc, kb_id, ds),
                                                 maxResults=1000)["documentDetails"]
    if as_json:
        return print_json(rows)
    t = Table("document", "status", "reason")
    for r in rows:
        ident = r["identifier"]
        t.add_row(ident.get("s3", {}).get("uri") or ident.get("custom", {}).get("id"), r["status"], r.get("statusReason", ""))
    out.print(t)


# ---------------------------------------------------------------------------------------- retrieval


def _search_config(svc: Any, kb_id: str, vsc: dict[str, Any]) -> dict[str, Any]:
    """retrievalConfiguration for a knowledge base: MANAGED ones take managedSearchConfiguration
    (pgkb picks the strategy: its HYBRID search), VECTOR ones vectorSearchConfiguration."""
    if svc.resolve(kb_id).managed:
        return {"managedSearchConfiguration": {k: v for k, v in vsc.items() if k in ("numberOfResults", "filter")}}
    return {"vectorSearchConfiguration": vsc}


UserOpt = Annotated[str | None, typer.Option("--user", help="userContext.userId: whose document ACLs apply.")]


@app.command()
def retrieve(
    kb: str,
    query: str,
    k: Annotated[int, typer.Option("-k", "--k", help="Number of results (1-100).")] = 5,
    filter: Annotated[str | None, typer.Option(help="A Bedrock RetrievalFilter as JSON.")] = None,
    hybrid: Annotated[bool, typer.Option(help="Hybrid (lexical + semantic) search.")] = False,
    user: UserOpt = None,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
    as_json: JsonOut = False,
) -> None:
    """Ranked chunks for a query, with score, source and metadata."""
    vsc: dict[str, Any] = {"numberOfResults": k}
    if filter:
        try:
            vsc["filter"] = json.loads(filter)
        except json.JSONDecodeError as exc:
            raise PgkbError(f"--filter is not valid JSON: {exc.msg}") from None
    if hybrid:
        vsc["overrideSearchType"] = "HYBRID"
    with service(database_url, data_dir) as svc:
        kb_id = _kb_id(svc, kb)
        res = svc.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": query},
                           retrievalConfiguration=_search_config(svc, kb_id, vsc),
                           **({"userContext": {"userId": user}} if user is not None else {}))["retrievalResults"]
    if as_json:
        return print_json(res)
    if not res:
        out.print("no results")
    for i, r in enumerate(res, 1):
        md = r.get("metadata", {})
        src = md.get("x-amz-bedrock-kb-source-uri", "")
        out.print(f"[bold]{i}.[/] score {r['score']:.4f}  [cyan]{src}[/]", highlight=False)
        extra = {k2: v for k2, v in md.items() if not k2.startswith(("x-amz-bedrock-kb-", "x-pgkb-"))}
        if extra:
            out.print(f"   metadata: {json.dumps(extra)}", highlight=False)
        text = " ".join(r["content"]["text"].split())
        out.print(f"   {text[:400]}{'…' if len(text) > 400 else ''}", highlight=False)


@app.command()
def ask(
    kb: str,
    question: str,
    session: Annotated[str | None, typer.Option("--session", help="Continue this conversation (a sessionId).")] = None,
    model: Annotated[str, typer.Option("--model", help="Generator modelArn: pgkb.extractive (offline), a "
                                       "PGKB_OPENAI_GENERATORS key, or a Bedrock model.")] = "pgkb.extractive",
    k: Annotated[int, typer.Option("-k", "--k", help="Chunks to retrieve (1-100).")] = 5,
    hybrid: Annotated[bool, typer.Option(help="Hybrid (lexical + semantic) search.")] = False,
    user: UserOpt = None,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
    as_json: JsonOut = False,
) -> None:
    """Answer a question from a knowledge base (RetrieveAndGenerate) with numbered citations."""
    vsc: dict[str, Any] = {"numberOfResults": k}
    if hybrid:
        vsc["overrideSearchType"] = "HYBRID"
    with service(database_url, data_dir) as svc:
        kb_id = _kb_id(svc, kb)
        kbc = {"knowledgeBaseId": kb_id, "modelArn": model,
               "retrievalConfiguration": _search_config(svc, kb_id, vsc)}
        res = svc.retrieve_and_generate(
            input={"text": question}, retrieveAndGenerateConfiguration={"type": "KNOWLEDGE_BASE", "knowledgeBaseConfiguration": kbc},
            **({"sessionId": session} if session else {}),
            **({"userContext": {"userId": user}} if user is not None else {}),
        )
    if as_json:
        return print_json(res)
    text = res["output"]["text"]
    numbers: dict[tuple[str, str], int] = {}
    sources: list[dict[str, Any]] = []
    marks: list[tuple[int, str]] = []
    for c in res.get("citations", []):
        nums = []
        for ref in c["retrievedReferences"]:
            key = ((ref.get("metadata") or {}).get("x-amz-bedrock-kb-chunk-id") or "", ref["content"]["text"])
            if key not in numbers:
                numbers[key] = len(sources) + 1
                sources.append(ref)
            nums.append(numbers[key])
        end = c["generatedResponsePart"]["textResponsePart"]["span"]["end"]
        marks.append((end, "".join(f"[{n}]" for n in sorted(set(nums)))))
    shown, pos = "", 0
    for end, mark in sorted(marks):
        shown += text[pos:end] + mark
        pos = end
    out.print(shown + text[pos:], highlight=False, markup=False)
    if sources:
        out.print("\nSources:")
    for n, ref in enumerate(sources, 1):
        md = ref.get("metadata") or {}
        src = md.get("x-amz-bedrock-kb-source-uri", "")
        excerpt = " ".join(ref["content"]["text"].split())
        out.print(f"  [{n}] {src}", highlight=False, markup=False)
        out.print(f"      {excerpt[:200]}{'…' if len(excerpt) > 200 else ''}", highlight=False, markup=False)
    generator = res.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("x-pgkb-generator", "")
    note = " (sentences quoted from the sources, no language model)" if generator == "extractive" else ""
    err.print(f"generator: {generator}{note}", highlight=False, markup=False)
    err.print(f"session: {res['sessionId']} (continue with --session {res['sessionId']})", highlight=False, markup=False)


# ---------------------------------------------------------------------------------------- database, models


@db_app.command("info")
def db_info(database_url: DatabaseUrl = None, data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """The resourceArn, credentialsSecretArn and databaseName to put in rdsConfiguration."""
    with service(database_url, data_dir) as svc:
        info = svc.db_info()
    if as_json:
        return print_json(info)
    for k2, v in info.items():
        out.print(f"{k2}: {v}", highlight=False)


@db_app.command("stop")
def db_stop(data_dir: DataDir = None) -> None:
    """Stop the embedded PostgreSQL server."""
    from pgkb.db.embedded import stop_embedded

    s = settings_for(None, data_dir)
    out.print("stopped" if stop_embedded(s.data_dir) else "not running")


@app.command()
def models(as_json: JsonOut = False) -> None:
    """Embedding models in the registry."""
    from pgkb.embeddings import list_specs

    specs = list_specs()
    if as_json:
        return print_json([{"id": s.id, "provider": s.provider, "dimensions": s.dimension_choices,
                            "maxInputTokens": s.max_input_tokens} for s in specs])
    t = Table("id", "provider", "dimensions", "max tokens", "description")
    for s in specs:
        t.add_row(s.id, s.provider, "/".join(map(str, s.dimension_choices)), str(s.max_input_tokens), s.description)
    out.print(t)


# ---------------------------------------------------------------------------------------- HTTP server, keys
# (added by the server engineer; implementation in pgkb/server)

keys_app = typer.Typer(no_args_is_help=True, help="Access keys for the HTTP server's SigV4 authentication.")
app.add_typer(keys_app, name="keys")


@app.command()
def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8400,
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="Accept unsigned requests (loopback hosts only).")
    ] = False,
    log_level: Annotated[str, typer.Option("--log-level")] = "info",
    sql_port: Annotated[
        int | None,
        typer.Option("--sql-port", help="Also serve the aws_bedrock SQL functions' endpoint on this port (see `pgkb sql`)."),
    ] = None,
    sql_host: Annotated[
        str, typer.Option("--sql-host", help="Address of that endpoint (keep it private).")
    ] = "127.0.0.1",
    sql_tls: Annotated[
        bool, typer.Option("--sql-tls", help="That endpoint requires TLS (see `pgkb sql serve --tls`).")
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option("--workers", help="Server processes sharing the port, each with its own model and pool (default 1; one per core for throughput)."),
    ] = None,
    tls_cert: Annotated[
        str | None, typer.Option("--tls-cert", help="Serve HTTPS (HTTP/2 by ALPN) with this PEM certificate (with --tls-key).")
    ] = None,
    tls_key: Annotated[str | None, typer.Option("--tls-key", help="The certificate's PEM private key.")] = None,
    tls: Annotated[
        bool, typer.Option("--tls", help="Serve HTTPS with the data dir's self-signed certificate (made on first use).")
    ] = False,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Serve bedrock-agent, bedrock-agent-runtime and bedrock-runtime over HTTP/1.1 and HTTP/2 (boto3 endpoint_url)."""
    from pgkb.server.run import serve as run_server
    from pgkb.server.run import tls_pair

    settings = settings_for(database_url, data_dir)
    run_server(settings, host, port, no_auth, log_level=log_level,
               sql_port=sql_port, sql_host=sql_host, sql_tls=sql_tls, workers=workers,
               tls=tls_pair(settings, host, tls_cert, tls_key, tls))


@keys_app.command("create")
def keys_create(
    description: Annotated[str | None, typer.Option("--description", help="A note to tell keys apart.")] = None,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
    as_json: JsonOut = False,
) -> None:
    """Create an access key; the secret is printed this once and never again."""
    from pgkb.server.keys import create_key

    key = create_key(settings_for(database_url, data_dir), description)
    if as_json:
        return print_json({"accessKeyId": key["accessKeyId"], "secretAccessKey": key["secretAccessKey"]})
    out.print(f"accessKeyId:     {key['accessKeyId']}", highlight=False)
    out.print(f"secretAccessKey: {key['secretAccessKey']}", highlight=False)
    out.print("Store the secret now: pgkb cannot show it again.", highlight=False)


@keys_app.command("list")
def keys_list(
    include_revoked: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
    as_json: JsonOut = False,
) -> None:
    """Access keys (never their secrets)."""
    from pgkb.server.keys import list_keys

    keys = list_keys(settings_for(database_url, data_dir), include_revoked=include_revoked)
    if as_json:
        return print_json(keys)
    t = Table("access key id", "status", "created", "description")
    for k in keys:
        t.add_row(k["accessKeyId"], k["status"], str(k["createdAt"])[:19], k["description"] or "")
    out.print(t)


@keys_app.command("revoke")
def keys_revoke(access_key_id: str, database_url: DatabaseUrl = None, data_dir: DataDir = None) -> None:
    """Revoke an access key (a running server stops accepting it within 10 seconds)."""
    from pgkb.server.keys import revoke_key

    revoke_key(settings_for(database_url, data_dir), access_key_id)
    out.print(f"revoked {access_key_id}", highlight=False)

# ---------------------------------------------------------------------------------------- evaluation


EVAL_SEARCH = ("semantic", "lexical", "hybrid")


def _eval_config(base: dict[str, Any], override: str | None) -> dict[str, Any]:
    """`--compare "search=hybrid,chunking=fixed,max_tokens=200"` → base with those keys replaced; a bare
    search type (`lexical`) stands for `search=lexical`."""
    cfg = dict(base)
    for part in filter(None, (p.strip() for p in (override or "").split(","))):
        key, sep, value = part.partition("=")
        if not sep and key.lower() in EVAL_SEARCH:
            key, sep, value = "search", "=", key
        key = key.strip().replace("-", "_")
        if not sep or key not in cfg:
            raise PgkbError(f"--compare: {part!r} is not key=value with key one of {', '.join(sorted(cfg))}")
        cfg[key] = int(value) if key in ("max_tokens", "overlap", "parent_tokens", "buffer_size", "breakpoint", "k") and value else value.strip()
    if str(cfg["search"]).lower() not in EVAL_SEARCH:
        raise PgkbError(f"--compare: search={cfg['search']!r} must be one of {', '.join(EVAL_SEARCH)}")
    cfg["search"] = str(cfg["search"]).lower()
    return cfg


def _eval_run(svc: Any, ds: Any, docs_dir: Path, cfg: dict[str, Any]) -> Any:
    """Ingest the corpus into a knowledge base for this model + chunking (reused when it exists), run the
    judged queries through Retrieve, score them."""
    import hashlib
    from urllib.parse import unquote, urlparse

    from pgkb.embeddings import get_spec, model_arn
    from pgkb.errors import NotFoundError
    from pgkb.retrieval.evaluation import evaluate
    from pgkb.service.control import default_table_name
    from pgkb.store.vector_table import FieldMapping

    chunk_cfg = _chunking(cfg["chunking"], cfg["max_tokens"], cfg["overlap"], cfg["parent_tokens"],
                          cfg["buffer_size"], cfg["breakpoint"])
    spec = get_spec(cfg["model"])
    key = json.dumps([ds.name, spec.id, chunk_cfg], sort_keys=True)
    name = "eval-" + hashlib.sha1(key.encode()).hexdigest()[:10]
    try:
        kb_id = _kb_id(svc, name)
    except NotFoundError:
        storage = {"type": "RDS", "rdsConfiguration": {**{k: v for k, v in svc.db_info().items() if k != "url"},
                   "tableName": default_table_name(name), "fieldMapping": FieldMapping().to_bedrock()}}
        kb_id = svc.create_knowledge_base(
            name=name, description=f"pgkb eval of {ds.name}"[:200], storageConfiguration=storage,
            knowledgeBaseConfiguration={"type": "VECTOR", "vectorKnowledgeBaseConfiguration": {
                "embeddingModelArn": model_arn(spec.id, svc.region)}},
        )["knowledgeBase"]["knowledgeBaseId"]
    sources = svc.list_data_sources(knowledgeBaseId=kb_id, maxResults=1000)["dataSourceSummaries"]
    if sources:
        ds_id = sources[0]["dataSourceId"]
    else:
        ds_id = svc.create_data_source(
            knowledgeBaseId=kb_id, name="corpus",
            dataSourceConfiguration={"type": "LOCAL", "localConfiguration": {"path": str(docs_dir)}},
            vectorIngestionConfiguration={"chunkingConfiguration": chunk_cfg} if chunk_cfg else None,
        )["dataSource"]["dataSourceId"]
    err.print(f"[{cfg['search']}] ingesting {len(ds.corpus)} documents into {name} (incremental)", highlight=False, markup=False)
    job = svc.run_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJob"]
    if job["status"] != "COMPLETE":
        raise PgkbError(f"ingestion into {name} ended {job['status']}: {job.get('failureReasons')}")

    def doc_id(uri: str) -> str:
        return unquote(unquote(urlparse(uri).path.rsplit("/", 1)[-1]).removesuffix(".txt"))

    vsc = {"numberOfResults": int(cfg["k"]), "overrideSearchType": cfg["search"].upper()}

    def run(text: str) -> list[str]:
        res = svc.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": text[:20000]},
                           retrievalConfiguration={"vectorSearchConfiguration": vsc})["retrievalResults"]
        return [doc_id(r.get("metadata", {}).get("x-amz-bedrock-kb-source-uri", "")) for r in res]

    if cfg["search"] == "lexical":
        # Retrieve knows SEMANTIC and HYBRID only (Bedrock's API): BM25 alone runs the same search()
        # on the knowledge base's table, with no query embedding.
        from pgkb.retrieval.search import search

        kb = svc.resolve(kb_id)

        def run_lexical(text: str) -> list[str]:
            with kb.database.connection() as conn:
                hits = search(conn, kb.table, kb.mapping, query_embedding=None, query_text=text[:20000],
                              k=int(cfg["k"]), search_type="LEXICAL", attribute_cols=kb.attribute_cols)
            return [doc_id(h.source_uri or "") for h in hits]

        return evaluate(run_lexical, ds, int(cfg["k"]), name=_eval_label(cfg))

    return evaluate(run, ds, int(cfg["k"]), name=_eval_label(cfg))


def _eval_label(cfg: dict[str, Any]) -> str:
    return f"{cfg['search']}/{cfg['chunking']}" + (f"/{cfg['max_tokens']}" if cfg["max_tokens"] else "")


@app.command("eval")
def eval_cmd(
    dataset: Annotated[Path, typer.Argument(help="A BEIR dataset folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv")],
    search: Annotated[str, typer.Option(help="semantic | hybrid | lexical (BM25 alone, a pgkb extension)")] = "semantic",
    k: Annotated[int, typer.Option("-k", "--k", help="Results per query (1-100; recall@100 needs 100).")] = 100,
    model: Annotated[str, typer.Option(help="Embedding model id.")] = DEFAULT_MODEL_ID,
    chunking: Annotated[str, typer.Option(help="default | fixed | none | hierarchical | semantic")] = "default",
    max_tokens: Annotated[int | None, typer.Option(help="Chunk (or child chunk) size in tokens.")] = None,
    overlap: Annotated[int | None, typer.Option(help="Overlap: percent (fixed) or tokens (hierarchical).")] = None,
    parent_tokens: Annotated[int | None, typer.Option(help="Parent chunk size (hierarchical).")] = None,
    buffer_size: Annotated[int | None, typer.Option(help="Semantic: neighbouring sentences per group.")] = None,
    breakpoint: Annotated[int | None, typer.Option(help="Semantic: breakpoint percentile threshold.")] = None,
    compare: Annotated[list[str] | None, typer.Option(
        help='Another configuration, as overrides of the first: "search=hybrid" or "chunking=fixed,max_tokens=200"'
             ' (a bare "lexical" means search=lexical). Repeat it, or separate configurations with ";",'
             ' e.g. --compare "lexical;hybrid" shows SEMANTIC, LEXICAL and HYBRID side by side.')] = None,
    split: Annotated[str, typer.Option(help="qrels split")] = "test",
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
    as_json: JsonOut = False,
) -> None:
    """Score retrieval on a BEIR dataset: nDCG@10, recall@10, recall@100, MRR@10 and latency percentiles."""
    import hashlib
    from urllib.parse import quote

    from pgkb.retrieval.evaluation import format_reports, load_beir

    if search.lower() not in EVAL_SEARCH:
        raise PgkbError(f"--search must be one of {', '.join(EVAL_SEARCH)}")
    base = {"search": search.lower(), "k": k, "model": model, "chunking": chunking, "max_tokens": max_tokens,
            "overlap": overlap, "parent_tokens": parent_tokens, "buffer_size": buffer_size, "breakpoint": breakpoint}
    overrides = [c for value in compare or [] for c in value.split(";") if c.strip()]
    configs = [base] + [_eval_config(base, c) for c in overrides]  # checked before any work
    ds = load_beir(dataset, split)
    settings = settings_for(database_url, data_dir)
    # The corpus as a folder of text files, one per document (its id, percent-encoded, is the file name).
    # Named after the dataset's folder, with a hash of its full path to keep two datasets apart (the
    # folder's name shows in every source URI).
    where = Path(dataset).resolve()
    tag = hashlib.sha1(str(where).encode()).hexdigest()[:10]
    docs_dir = Path(settings.data_dir) / "eval" / f"{quote(where.name, safe='')[:60]}-{tag}" / "docs"
    docs_dir.mkdir(parents=True, exist_ok=True)
    for doc_id, text in ds.documents():
        f = docs_dir / (quote(doc_id, safe="") + ".txt")
        if not f.exists() or f.read_text(encoding="utf-8") != text:
            f.write_text(text, encoding="utf-8")
    with service(database_url, data_dir) as svc:
        reports = [_eval_run(svc, ds, docs_dir, c) for c in configs]
    if as_json:
        return print_json([r.to_dict() for r in reports])
    out.print(f"{ds.name}: {len(ds.queries)} judged queries, {len(ds.corpus)} documents", highlight=False)
    out.print(format_reports(reports), highlight=False)


# ---------------------------------------------------------------------------------------- databases pgkb does not start
# (added by the bring-your-own-PostgreSQL engineer; implementation in pgkb/admin and pgkb/secrets)

secrets_app = typer.Typer(no_args_is_help=True, help="Database credentials kept by pgkb (RDS-credentials JSON).")
app.add_typer(secrets_app, name="secrets")

AdminUrl = Annotated[str, typer.Option("--database-url", envvar="PGKB_ADMIN_DATABASE_URL",
                                       help="Connection URL of an admin (e.g. the RDS master user).")]
ModelOpt = Annotated[str | None, typer.Option("--model", help="Embedding model id: its dimensions size the vector column.")]
DimsOpt = Annotated[int | None, typer.Option("--dimensions", help="Vector dimensions (instead of, or with, --model).")]
ColumnNames = Annotated[str | None, typer.Option(
    "--column-names", help="id,embedding,chunks,metadata[,custom_metadata]: the field mapping's column names.")]
VectorField = Annotated[str | None, typer.Option("--vector-field")]
TextField = Annotated[str | None, typer.Option("--text-field")]
MetadataField = Annotated[str | None, typer.Option("--metadata-field")]
PrimaryKeyField = Annotated[str | None, typer.Option("--primary-key-field")]
CustomMetadataField = Annotated[str | None, typer.Option(
    "--custom-metadata-field", help="Custom metadata column; '' or 'none' for per-attribute columns.")]


def _mapping(column_names: str | None, primary_key: str | None, vector: str | None, text: str | None,
             metadata: str | None, custom: str | None) -> Any:
    from pgkb.store.vector_table import FieldMapping

    fm = FieldMapping().to_bedrock()
    if column_names:
        names = [c.strip() for c in column_names.split(",")]
        if len(names) not in (4, 5):
            raise PgkbError("--column-names takes 4 or 5 names: id,embedding,chunks,metadata[,custom_metadata]")
        keys = ["primaryKeyField", "vectorField", "textField", "metadataField", "customMetadataField"]
        fm = dict(zip(keys, names, strict=False))
    for key, value in (("primaryKeyField", primary_key), ("vectorField", vector), ("textField", text),
                       ("metadataField", metadata), ("customMetadataField", custom)):
        if value is not None:
            fm[key] = value
    if fm.get("customMetadataField", "").lower() in ("", "none"):
        fm.pop("customMetadataField", None)
    return FieldMapping.from_bedrock(fm)


def _dimensions(model: str | None, dimensions: int | None, default: int | None) -> int | None:
    if model:
        from pgkb.embeddings import get_spec
        from pgkb.embeddings.registry import model_id_from_arn

        spec = get_spec(model_id_from_arn(model) if model.startswith("arn:") else model)
        if dimensions and dimensions not in spec.dimension_choices:
            raise PgkbError(f"{spec.id} offers {'/'.join(map(str, spec.dimension_choices))} dimensions, not {dimensions}")
        return dimensions or spec.dimensions
    return dimensions or default


def _resolver(settings: Settings) -> Any:
    from pgkb.secrets import SecretResolver

    return SecretResolver(settings.data_dir, settings.region, settings.account_id)


@db_app.command("setup")
def db_setup(
    database_url: AdminUrl,
    schema: Annotated[str, typer.Option("--schema")] = "bedrock_integration",
    role: Annotated[str, typer.Option("--role", help="Login role for retrieval and ingestion.")] = "bedrock_user",
    table: Annotated[str, typer.Option("--table")] = "bedrock_kb",
    model: ModelOpt = None,
    dimensions: DimsOpt = None,
    column_names: ColumnNames = None,
    primary_key_field: PrimaryKeyField = None,
    vector_field: VectorField = None,
    text_field: TextField = None,
    metadata_field: MetadataField = None,
    custom_metadata_field: CustomMetadataField = None,
    secret_name: Annotated[str | None, typer.Option("--secret-name", help="Name of the secret for the role (default pgkb-<role>).")] = None,
    secrets_manager: Annotated[bool, typer.Option("--secrets-manager", help="Store the secret in AWS Secrets Manager, not pgkb's store.")] = False,
    rotate_password: Annotated[bool, typer.Option("--rotate-password", help="Give the role a new password even if the stored one works.")] = False,
    catalog: Annotated[bool, typer.Option("--catalog/--no-catalog", help="Also create pgkb's catalog (schema pgkb) and grant it.")] = True,
    ef_construction: Annotated[int | None, typer.Option("--ef-construction", help="HNSW ef_construction (default: from the table's size).")] = None,
    print_sql: Annotated[bool, typer.Option("--print-sql", help="Print the SQL instead of running it.")] = False,
    data_dir: DataDir = None,
    as_json: JsonOut = False,
) -> None:
    """Create the extension, schema, least-privilege role, Bedrock-layout table and indexes, catalog; store a secret."""
    from psycopg.conninfo import conninfo_to_dict

    from pgkb.admin.setup import SetupPlan, run_setup
    from pgkb.admin.setup import print_sql as setup_sql

    plan = SetupPlan(schema=schema, role=role, table=table,
                     dimensions=_dimensions(model, dimensions, 384) or 384,
                     mapping=_mapping(column_names, primary_key_field, vector_field, text_field, metadata_field,
                                      custom_metadata_field),
                     catalog=catalog, ef_construction=ef_construction)
    try:
        dbname = str(conninfo_to_dict(database_url).get("dbname") or "postgres")
    except Exception:
        raise PgkbError("--database-url is not a valid PostgreSQL connection URL") from None
    if print_sql:
        sys.stdout.write(setup_sql(plan, dbname))
        return
    settings = settings_for(None, data_dir)
    resolver = _resolver(settings)
    name = secret_name or f"pgkb-{role}"
    existing: str | None = None  # a stored password that still works is kept (idempotent re-runs)
    try:
        if secrets_manager:
            from pgkb.secrets import DbCredentials
            from pgkb.secrets.resolve import _secrets_manager_value

            existing = DbCredentials.from_json(_secrets_manager_value(name, settings.region), name).password
        else:
            existing = resolver.resolve(name, refresh=True).password
    except PgkbError:
        existing = None
    from pgkb.db.database import wait_for_database

    wait_for_database(database_url, settings.connect_timeout_s)
    result = run_setup(database_url, plan, existing_password=existing, rotate=rotate_password)
    if secrets_manager:
        from pgkb.secrets.resolve import put_secrets_manager

        ref = put_secrets_manager(name, result.credentials, settings.region)
    else:
        ref = resolver.put_local(name, result.credentials)
    summary = {
        "table": str(plan.ref), "role": role, "dimensions": plan.dimensions,
        "fieldMapping": plan.mapping.to_bedrock(), "credentialsSecretArn": ref,
        "createdRole": result.created_role, "passwordChanged": result.password_changed,
        "createdTable": result.created_table, "warnings": [p.to_dict() for p in result.warnings],
    }
    if as_json:
        return print_json(summary)
    out.print(f"{'created' if result.created_table else 'checked'} {plan.ref} (vector({plan.dimensions})) "
              f"for role {role}{' (new)' if result.created_role else ''}", highlight=False, markup=False)
    out.print(f"credentials secret: {ref}" + (" (password set)" if result.password_changed else " (password kept)"),
              highlight=False, markup=False)
    for p in result.warnings:
        out.print(f"warning: {p.message} Fix: {p.fix}", highlight=False, markup=False)
    out.print(f"next: pgkb db register <name> --secret {ref}", highlight=False, markup=False)


@db_app.command("register")
def db_register(
    name: Annotated[str, typer.Argument(help="Cluster name for the ARN: [a-zA-Z0-9-]{1,63}.")],
    secret: Annotated[str, typer.Option("--secret", help="Secret ARN or name holding the RDS-credentials JSON.")],
    database_name: Annotated[str | None, typer.Option("--database-name", help="Default: the secret's dbname.")] = None,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
    as_json: JsonOut = False,
) -> None:
    """Register a PostgreSQL database (host/port/dbname from the secret) as an RDS cluster ARN."""
    from pgkb.admin.registry import register_database
    from pgkb.db import open_database

    settings = settings_for(database_url, data_dir)
    home = open_database(settings)
    try:
        reg = register_database(home, settings, name, secret, database_name=database_name)
    finally:
        home.close()
    if as_json:
        return print_json(reg)
    out.print(f"registered {reg['name']}: resourceArn {reg['resourceArn']}, credentialsSecretArn "
              f"{reg['credentialsSecretArn']}, databaseName {reg['databaseName']}", highlight=False, markup=False)


@db_app.command("list")
def db_list(database_url: DatabaseUrl = None, data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """The home database and the registered ones, with their rdsConfiguration values."""
    from pgkb.admin.registry import list_databases

    with service(database_url, data_dir) as svc:
        home = {k: v for k, v in svc.db_info().items() if k != "url"}
        rows = [{"name": "pgkb (home)", **home}] + list_databases(svc.db)
    if as_json:
        return print_json(rows)
    t = Table("name", "resourceArn", "credentialsSecretArn", "databaseName")
    for r in rows:
        t.add_row(r["name"], r["resourceArn"], r["credentialsSecretArn"], r["databaseName"])
    out.print(t)


@db_app.command("unregister")
def db_unregister(name: str, database_url: DatabaseUrl = None, data_dir: DataDir = None) -> None:
    """Forget a registered database (its tables and the secret are left alone)."""
    from pgkb.admin.registry import unregister_database

    with service(database_url, data_dir) as svc:
        unregister_database(svc.db, name)
    out.print(f"unregistered {name}", highlight=False, markup=False)


@app.command()
def doctor(
    table: Annotated[str | None, typer.Option("--table", help="schema.table of the knowledge base's vectors.")] = None,
    kb: Annotated[str | None, typer.Option("--kb", help="Check a knowledge base as configured (name or id) instead.")] = None,
    database_url: Annotated[str | None, typer.Option("--database-url", envvar="PGKB_DATABASE_URL",
                                                     help="URL of the database holding the table.")] = None,
    secret: Annotated[str | None, typer.Option("--secret", help="Connect with this secret instead of a URL.")] = None,
    model: ModelOpt = None,
    dimensions: DimsOpt = None,
    column_names: ColumnNames = None,
    primary_key_field: PrimaryKeyField = None,
    vector_field: VectorField = None,
    text_field: TextField = None,
    metadata_field: MetadataField = None,
    custom_metadata_field: CustomMetadataField = None,
    role: Annotated[str | None, typer.Option("--role", help="Check this role's grants (and over-privilege).")] = None,
    data_dir: DataDir = None,
    as_json: JsonOut = False,
) -> None:
    """Check a database and table for a knowledge base; each problem with its fix. Exit 1 on errors."""
    import psycopg

    from pgkb.admin.doctor import diagnose
    from pgkb.db.database import wait_for_database
    from pgkb.store.vector_table import TableRef

    settings = settings_for(database_url, data_dir)
    if kb:
        from pgkb.admin.doctor import diagnose_kb

        with service(database_url, data_dir) as svc:
            resolved = svc.resolve(_kb_id(svc, kb))
            problems = diagnose_kb(resolved, role)
            ref = resolved.table
        return _doctor_report(problems, ref, as_json)
    if not table:
        raise PgkbError("give --table SCHEMA.TABLE (with --database-url or --secret), or --kb NAME")
    ref = TableRef.parse(table)
    mapping = _mapping(column_names, primary_key_field, vector_field, text_field, metadata_field, custom_metadata_field)
    dims = _dimensions(model, dimensions, None)
    if secret:
        resolver = _resolver(settings)
        url = wait_for_database(resolver.resolve(secret).conninfo(), settings.connect_timeout_s,
                                refresh=lambda: resolver.resolve(secret, refresh=True).conninfo())
    else:
        from pgkb.db.database import resolve_url

        url = wait_for_database(resolve_url(settings), settings.connect_timeout_s)
    with psycopg.connect(url) as conn:
        problems = diagnose(conn, ref, mapping, dimensions=dims, role=role)
    _doctor_report(problems, ref, as_json)


def _doctor_report(problems: list[Any], ref: Any, as_json: bool) -> None:
    from rich.markup import escape

    from pgkb.admin.doctor import report

    rep = report(problems)
    if as_json:
        print_json(rep)
    else:
        for p in problems:
            mark = "[red]error[/]" if p.severity == "error" else "[yellow]warning[/]"
            out.print(f"{mark} {escape('[' + p.check + ']')} {escape(p.message)}", highlight=False)
            out.print(f"  fix: {p.fix}", highlight=False, markup=False)
        out.print(f"{ref}: {rep['errors']} error(s), {rep['warnings']} warning(s)"
                  + (" — ready" if rep["ok"] else ""), highlight=False, markup=False)
    if not rep["ok"]:
        raise typer.Exit(1)


@secrets_app.command("put")
def secrets_put(
    name: str,
    username: Annotated[str, typer.Option("--username")],
    host: Annotated[str | None, typer.Option("--host")] = None,
    port: Annotated[int | None, typer.Option("--port")] = None,
    dbname: Annotated[str | None, typer.Option("--dbname")] = None,
    sslmode: Annotated[str | None, typer.Option("--sslmode")] = None,
    sslrootcert: Annotated[str | None, typer.Option("--sslrootcert")] = None,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Store database credentials in pgkb's local store (0600 file); prints the secret's ARN."""
    from pgkb.secrets import DbCredentials

    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt("password", hide_input=True, default="", show_default=False)
    extra = {k: v for k, v in (("sslmode", sslmode), ("sslrootcert", sslrootcert)) if v}
    creds = DbCredentials(username=username, password=password, host=host, port=port, dbname=dbname, extra=extra)
    arn = _resolver(settings_for(None, data_dir)).put_local(name, creds)
    out.print(arn, highlight=False, markup=False)


@secrets_app.command("list")
def secrets_list(data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """Secrets in pgkb's local store (names and ARNs, never values)."""
    s = settings_for(None, data_dir)
    resolver = _resolver(s)
    rows = [{"name": n, "arn": resolver.canonical(n)} for n in resolver.store.names()]
    if as_json:
        return print_json(rows)
    for r in rows:
        out.print(f"{r['name']}  {r['arn']}", highlight=False, markup=False)


@secrets_app.command("show")
def secrets_show(ref: str, data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """Where a secret points (user, host, port, dbname, TLS), resolved as pgkb would; never the password."""
    creds = _resolver(settings_for(None, data_dir)).resolve(ref, refresh=True)
    info = {k: v for k, v in creds.to_dict().items() if k != "password"}
    info["hasPassword"] = bool(creds.password)
    if as_json:
        return print_json(info)
    for k2, v in info.items():
        out.print(f"{k2}: {v}", highlight=False, markup=False)


@secrets_app.command("delete")
def secrets_delete(name: str, data_dir: DataDir = None) -> None:
    """Delete a secret from pgkb's local store."""
    from pgkb.errors import NotFoundError

    if not _resolver(settings_for(None, data_dir)).store.delete(name):
        raise NotFoundError(f"no local secret named {name!r}")
    out.print(f"deleted {name}", highlight=False, markup=False)


def main() -> None:
    quiet_model_libraries()
    try:
        rc = app(standalone_mode=False)
        sys.exit(rc if isinstance(rc, int) else 0)
    except PgkbError as exc:
        err.print(f"error: {exc.message}", highlight=False, markup=False)
        sys.exit(2 if exc.status == 400 else 1)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except SystemExit:
        raise
    except Exception as exc:  # click usage errors and anything unexpected: one line, no traceback
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            sys.exit(1)
        if current().debug:
            raise
        from pgkb.db import redact_url

        err.print(f"error: {redact_url(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)}",
                  highlight=False, markup=False)
        sys.exit(1)



# ---------------------------------------------------------------------------------------- SQL functions
# (added by the sqlfuncs engineer; implementation in pgkb/sqlfuncs/cli.py)
from pgkb.sqlfuncs.cli import sql_app  # noqa: E402

app.add_typer(sql_app, name="sql")

if __name__ == "__main__":
    main()
