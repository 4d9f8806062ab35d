"""`pgkb eval`'s work: one evaluation configuration through a real knowledge base, scored.

A configuration (`search`, `k`, `model`, `chunking` and its numbers) gets its own VECTOR knowledge base in the
home database, named after a hash of the dataset, model and chunking, so a re-run reuses it and ingests only
what changed. The judged queries then run through Retrieve (SEMANTIC, HYBRID) or, for `lexical`, through the
same search statement with no query embedding (Retrieve knows no BM25-only search: Bedrock's API).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pgkb.chunking.config import chunking_configuration
from pgkb.errors import NotFoundError, PgkbError
from pgkb.retrieval.evaluation import Dataset, Report, config_label, doc_id_of, evaluate

if TYPE_CHECKING:
    from pgkb.service import KnowledgeBaseService


def _eval_kb(svc: KnowledgeBaseService, name: str, description: str, model_id: str) -> str:
    from pgkb.embeddings import model_arn
    from pgkb.service.control import default_table_name

    try:
        return str(svc.get_knowledge_base(knowledgeBaseId=name)["knowledgeBase"]["knowledgeBaseId"])
    except NotFoundError:
        return str(svc.create_knowledge_base(
            name=name, description=description[:200], storageConfiguration=svc.home_storage(default_table_name(name)),
            knowledgeBaseConfiguration={"type": "VECTOR", "vectorKnowledgeBaseConfiguration": {
                "embeddingModelArn": model_arn(model_id, svc.region)}},
        )["knowledgeBase"]["knowledgeBaseId"])


def run_configuration(svc: KnowledgeBaseService, ds: Dataset, docs_dir: Path, cfg: dict[str, Any],
                      log: Callable[[str], None] = lambda _msg: None) -> Report:
    """Ingest the corpus folder into this configuration's knowledge base (reused when it exists), run the
    judged queries, score them."""
    from pgkb.embeddings import get_spec

    chunk_cfg = chunking_configuration(cfg["chunking"], max_tokens=cfg["max_tokens"], overlap=cfg["overlap"],
                                       parent_tokens=cfg["parent_tokens"], buffer_size=cfg["buffer_size"],
                                       breakpoint=cfg["breakpoint"])
    spec = get_spec(cfg["model"])
    key = json.dumps([ds.name, spec.id, chunk_cfg], sort_keys=True)
    name = "eval-" + hashlib.sha1(key.encode()).hexdigest()[:10]
    kb_id = _eval_kb(svc, name, f"pgkb eval of {ds.name}", spec.id)
    sources = svc.list_data_sources(knowledgeBaseId=kb_id, maxResults=1000)["dataSourceSummaries"]
    if sources:
        ds_id = sources[0]["dataSourceId"]
    else:
        ds_id = svc.create_data_source(
            knowledgeBaseId=kb_id, name="corpus",
            dataSourceConfiguration={"type": "LOCAL", "localConfiguration": {"path": str(docs_dir)}},
            vectorIngestionConfiguration={"chunkingConfiguration": chunk_cfg} if chunk_cfg else None,
        )["dataSource"]["dataSourceId"]
    log(f"[{cfg['search']}] ingesting {len(ds.corpus)} documents into {name} (incremental)")
    job = svc.run_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJob"]
    if job["status"] != "COMPLETE":
        raise PgkbError(f"ingestion into {name} ended {job['status']}: {job.get('failureReasons')}")
    k = int(cfg["k"])
    if cfg["search"] == "lexical":
        return evaluate(_lexical(svc, kb_id, k), ds, k, name=config_label(cfg))
    vsc = {"numberOfResults": k, "overrideSearchType": cfg["search"].upper()}

    def run(text: str) -> list[str]:
        res = svc.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": text[:20000]},
                           retrievalConfiguration={"vectorSearchConfiguration": vsc})["retrievalResults"]
        return [doc_id_of(r.get("metadata", {}).get("x-amz-bedrock-kb-source-uri", "")) for r in res]

    return evaluate(run, ds, k, name=config_label(cfg))


def _lexical(svc: KnowledgeBaseService, kb_id: str, k: int) -> Callable[[str], list[str]]:
    """BM25 alone: the same search() on the knowledge base's table, with no query embedding."""
    from pgkb.retrieval.search import search

    kb = svc.resolve(kb_id)

    def run(text: str) -> list[str]:
        with kb.database.connection() as conn:
            hits = search(conn, kb.table, kb.mapping, query_embedding=None, query_text=text[:20000],
                          k=k, search_type="LEXICAL", attribute_cols=kb.attribute_cols)
        return [doc_id_of(h.source_uri or "") for h in hits]

    return run
