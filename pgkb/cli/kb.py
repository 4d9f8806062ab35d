"""`pgkb kb`: create, list, show and delete knowledge bases."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from pgkb.cli.common import DatabaseUrl, DataDir, JsonOut, kb_id_of, out, print_json, service
from pgkb.embeddings.registry import DEFAULT_MODEL_ID

app = typer.Typer(no_args_is_help=True, help="Knowledge bases.")


@app.command("create")
def kb_create(
    name: str,
    model: Annotated[str, typer.Option(help="Embedding model id or ARN (`pgkb models` lists them).")] = DEFAULT_MODEL_ID,
    dimensions: Annotated[int | None, typer.Option(help="Vector dimensions, for models that offer several.")] = None,
    table: Annotated[str | None, typer.Option(help="schema.table for a VECTOR knowledge base; without it, a MANAGED one.")] = None,
    description: Annotated[str | None, typer.Option()] = None,
    vector_index: Annotated[str, typer.Option(
        "--vector-index", help="HNSW index of a table pgkb creates: float32 (Bedrock's), halfvec (about half the size),"
        " or binary (quantized, re-ranked exactly; smallest). docs/scaling.md.")] = "float32",
    hnsw_m: Annotated[int | None, typer.Option(
        "--hnsw-m", help="HNSW links per node of a table pgkb creates (default 16, halfvec 13; 32 for recall near 0.99).")] = None,
    ef_construction: Annotated[int | None, typer.Option(
        "--ef-construction", help="HNSW build candidate list of a table pgkb creates (default 128).")] = None,
    ef_search: Annotated[int | None, typer.Option(
        "--ef-search", help="Search depth of this knowledge base (default 64, halfvec 100; filtered searches twice it).")] = None,
    bm25_postings: Annotated[int | None, typer.Option(
        "--bm25-postings", help="BM25 postings a HYBRID search reads per query term (default 1,000; more is closer to"
        " exact BM25 on large tables, and slower).")] = None,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
    as_json: JsonOut = False,
) -> None:
    """Create a knowledge base. Without --table: a MANAGED one, whose storage pgkb creates and owns.
    With --table: a VECTOR one in that table (created, or validated if it exists)."""
    from pgkb import kb_tags
    from pgkb.embeddings import DEFAULT_MODEL_ID, get_spec, model_arn
    from pgkb.store import vector_index as vi

    index_kind: str = vi.check_kind(vector_index, "--vector-index")
    chosen = {vi.VECTOR_INDEX_TAG: index_kind if index_kind != "float32" else None, kb_tags.M_TAG: hnsw_m,
              kb_tags.EF_CONSTRUCTION_TAG: ef_construction, kb_tags.EF_SEARCH_TAG: ef_search,
              kb_tags.BM25_POSTINGS_TAG: bm25_postings}
    tags = {k: str(v) for k, v in chosen.items() if v is not None} or None  # checked by the service
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
                name=name, description=description, tags=tags,
                knowledgeBaseConfiguration={"type": "MANAGED", "managedKnowledgeBaseConfiguration": managed},
            )["knowledgeBase"]
            where = "pgkb-managed storage"
        else:
            vec: dict[str, Any] = {"embeddingModelArn": model_arn(spec.id, svc.region)}
            if dimensions:
                vec["embeddingModelConfiguration"] = {"bedrockEmbeddingModelConfiguration": {"dimensions": dimensions}}
            kb = svc.create_knowledge_base(
                name=name, description=description, storageConfiguration=svc.home_storage(table), tags=tags,
                knowledgeBaseConfiguration={"type": "VECTOR", "vectorKnowledgeBaseConfiguration": vec},
            )["knowledgeBase"]
            where = kb["storageConfiguration"]["rdsConfiguration"]["tableName"]
    if as_json:
        print_json(kb)
    else:
        kind = "MANAGED" if table is None else "VECTOR"
        out.print(f"created {kind} knowledge base [bold]{kb['name']}[/] ({kb['knowledgeBaseId']}) "
                  f"in {where} with {spec.id}")


@app.command("list")
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


@app.command("show")
def kb_show(kb: str, database_url: DatabaseUrl = None, data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """Show a knowledge base (with --json: exactly as Bedrock's GetKnowledgeBase returns it)."""
    with service(database_url, data_dir) as svc:
        got = svc.get_knowledge_base(knowledgeBaseId=kb)["knowledgeBase"]
    if as_json:
        return print_json(got)
    cfg = got["knowledgeBaseConfiguration"]
    model = (cfg.get("vectorKnowledgeBaseConfiguration") or cfg.get("managedKnowledgeBaseConfiguration") or {}).get(
        "embeddingModelArn")
    rds = (got.get("storageConfiguration") or {}).get("rdsConfiguration") or {}
    t = Table("field", "value", show_header=False)
    for label, value in (("id", got["knowledgeBaseId"]), ("name", got["name"]), ("type", cfg.get("type")),
                         ("status", got["status"]), ("description", got.get("description")), ("model", model),
                         ("table", rds.get("tableName")), ("database", rds.get("databaseName")),
                         ("created", str(got["createdAt"])[:19]), ("updated", str(got["updatedAt"])[:19]),
                         ("arn", got["knowledgeBaseArn"])):
        if value:
            t.add_row(label, str(value))
    out.print(t)


@app.command("delete")
def kb_delete(kb: str, database_url: DatabaseUrl = None, data_dir: DataDir = None) -> None:
    """Delete a knowledge base (and the vectors of its data sources whose deletion policy is DELETE)."""
    with service(database_url, data_dir) as svc:
        svc.delete_knowledge_base(knowledgeBaseId=kb_id_of(svc, kb))
    out.print(f"deleted knowledge base {kb}")

