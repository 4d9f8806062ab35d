"""Does the ingestion pipeline keep up with the model on real documents? (issue 19, item 2)

Syncs any folder (HTML, PDF, text, ...) into a fresh knowledge base with pgkb's default chunking and
the given model, then embeds the very chunk texts the sync wrote with the same model, in calls of the
same size (PGKB_EMBED_BATCH), before and after the sync. The ratio model time / sync time is the
share of the model's own speed the whole pipeline (listing, parsing, chunking, embedding, writing,
index builds) reaches: 1.0 means parsing and writing hide entirely behind the model. Also printed:
parsing + chunking alone (no model, no database), so the cost of each stage is visible.

    apt-get download postgresql-doc-15 && dpkg -x postgresql-doc-15_*.deb ~/.cache/pgdoc
    python bench/bench_pipeline.py ~/.cache/pgdoc/usr/share/doc/postgresql-doc-15/html
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", type=Path, help="a folder of documents")
    ap.add_argument("--model", default=None, help="embedding model id (default: pgkb's default model)")
    args = ap.parse_args()
    if not args.folder.is_dir():
        raise SystemExit(f"bench_pipeline: {args.folder} is not a folder (see this script's docstring)")

    from pgkb import config
    from pgkb.db.embedded import stop_embedded
    from pgkb.embeddings import DEFAULT_MODEL_ID, get_model, model_arn
    from pgkb.ingestion.documents import prepare_document, read_sidecar
    from pgkb.service import KnowledgeBaseService

    model_id = args.model or DEFAULT_MODEL_ID
    model = get_model(model_id)
    batch = config.current().embed_batch
    files = sorted(p for p in args.folder.rglob("*") if p.is_file() and not p.name.endswith(".metadata.json"))
    print(f"{len(files)} files under {args.folder}; model {model_id}; {batch} chunks per model call; "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)

    # Parsing + chunking alone (the pipeline's CPU work besides the model and the database).
    t = time.perf_counter()
    n_chunks = 0
    for p in files:
        try:
            doc = prepare_document(ds_id="DS", uri=p.as_uri(), name=p.name, data=p.read_bytes(), sidecar=read_sidecar(None),
                                   chunking=None, model=model, fingerprint="", sidecar_hash=None, location=None)
        except Exception:
            continue
        n_chunks += doc.n_rows
    parse_s = time.perf_counter() - t

    work = Path(tempfile.mkdtemp(prefix="pgkb-pipeline-"))
    settings = config.Settings(data_dir=work / "data")
    try:
        with KnowledgeBaseService(settings) as svc:
            kb_id = svc.create_knowledge_base(
                name="pipeline", knowledgeBaseConfiguration={"type": "VECTOR", "vectorKnowledgeBaseConfiguration": {
                    "embeddingModelArn": model_arn(model_id, "us-east-1")}})["knowledgeBase"]["knowledgeBaseId"]
            ds_id = svc.create_data_source(knowledgeBaseId=kb_id, name="docs", dataSourceConfiguration={
                "type": "LOCAL", "localConfiguration": {"path": str(args.folder)}})["dataSource"]["dataSourceId"]
            t = time.perf_counter()
            job = svc.run_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJob"]
            sync_s = time.perf_counter() - t
            kb = svc.resolve(kb_id)
            with kb.database.connection() as conn:
                texts = [r[0] for r in conn.execute(
                    f"SELECT chunks FROM {kb.table.ident.as_string(conn)} ORDER BY metadata->>'x-amz-bedrock-kb-source-uri'"
                ).fetchall()]
            t = time.perf_counter()
            job2 = svc.run_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJob"]
            resync_s = time.perf_counter() - t

        def model_time() -> float:
            t = time.perf_counter()
            for i in range(0, len(texts), batch):
                model.embed_documents(texts[i:i + batch])
            return time.perf_counter() - t

        model_s = model_time()  # after the sync (its first run warmed the model); a second for the spread
        model_s2 = model_time()
        ref = (model_s + model_s2) / 2
        st = job["statistics"]
        print(f"sync: {sync_s:.1f} s, {len(texts)} chunks ({job['status']}, {st['numberOfNewDocumentsIndexed']} documents"
              f" indexed, {st['numberOfDocumentsFailed']} failed)")
        print(f"model alone on the same {len(texts)} chunk texts: {model_s:.1f} s, {model_s2:.1f} s")
        print(f"parsing + chunking alone: {parse_s:.1f} s ({n_chunks} chunks)")
        print(f"ratio model / sync: {ref / sync_s:.3f}  (goal >= 0.9)")
        print(f"re-sync unchanged: {resync_s:.2f} s = {100 * resync_s / sync_s:.1f} % of the sync"
              f" ({job2['statistics']['numberOfNewDocumentsIndexed']} new)")
        print(f"load average at the end {os.getloadavg()[0]:.2f}")
    finally:
        stop_embedded(settings.data_dir)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
