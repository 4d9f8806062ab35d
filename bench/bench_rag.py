"""RetrieveAndGenerate overhead with the offline generator (pgkb.extractive) against Retrieve.

    python bench/bench_rag.py                      # 2,000 msmarco-5k passages, 50 queries, 3 rounds
    python bench/bench_rag.py --passages 5000 --queries 100

Both calls go through the service in-process with the same retrievalConfiguration (5 results), and
are interleaved query by query so machine load hits both alike. Figures:
- Retrieve p50
- RetrieveAndGenerate p50, cold: the sentence-vector cache cleared before every call (each answer
  embeds every sentence of its 5 chunks), and warm: cache kept (chunks seen before, as in production
  where popular chunks recur); a RetrieveAndGenerate call also creates and writes its session.
- the ratio of each to Retrieve p50 (target <= 1.5x).
The embedded server and the knowledge base persist in bench/out/rag/.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pgkb.config import Settings  # noqa: E402
from pgkb.embeddings import DEFAULT_MODEL_ID  # noqa: E402
from pgkb.errors import NotFoundError  # noqa: E402
from pgkb.service import KnowledgeBaseService  # noqa: E402

ROOT = Path(__file__).resolve().parent
OUT = ROOT / "out" / "rag"
MSMARCO = ROOT.parent.parent / "shared" / "datasets" / "msmarco-5k"


def knowledge_base(svc: KnowledgeBaseService, passages: int, model: str) -> str:
    name = f"bench-rag-{passages}-" + model.rsplit(".", 1)[-1].replace(":", "-")
    try:
        return str(svc.get_knowledge_base(knowledgeBaseId=name)["knowledgeBase"]["knowledgeBaseId"])
    except NotFoundError:
        pass
    docs = OUT / f"docs-{passages}"
    docs.mkdir(parents=True, exist_ok=True)
    with open(MSMARCO / "corpus.jsonl") as f:
        for _, line in zip(range(passages), f, strict=False):
            d = json.loads(line)
            (docs / f"{d['_id']}.txt").write_text(d["text"], encoding="utf-8")
    kb = svc.create_knowledge_base(
        name=name, knowledgeBaseConfiguration={"type": "VECTOR", "vectorKnowledgeBaseConfiguration": {"embeddingModelArn": model}}
    )["knowledgeBase"]["knowledgeBaseId"]
    ds = svc.create_data_source(
        knowledgeBaseId=kb, name="msmarco",
        dataSourceConfiguration={"type": "LOCAL", "localConfiguration": {"path": str(docs)}},
    )["dataSource"]["dataSourceId"]
    t = time.perf_counter()
    job = svc.run_ingestion_job(knowledgeBaseId=kb, dataSourceId=ds)
    print(f"ingested {passages} passages in {time.perf_counter() - t:.1f} s: {job['ingestionJob']['statistics']}")
    return str(kb)


def queries(n: int) -> list[str]:
    judged = {line.split("\t")[0] for line in (MSMARCO / "qrels" / "test.tsv").read_text().splitlines()[1:]}
    out = []
    with open(MSMARCO / "queries.jsonl") as f:
        for line in f:
            q = json.loads(line)
            if q["_id"] in judged:
                out.append(q["text"])
            if len(out) == n:
                break
    return out


def p50(xs: list[float]) -> float:
    return statistics.median(xs) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--passages", type=int, default=2000)
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--model", default=DEFAULT_MODEL_ID, help="embedding model of the knowledge base (default: pgkb's default)")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    settings = Settings(data_dir=OUT / "data")
    with KnowledgeBaseService(settings) as svc:
        kb = knowledge_base(svc, args.passages, args.model)
        qs = queries(args.queries)
        rc = {"vectorSearchConfiguration": {"numberOfResults": 5}}
        cfg = {"type": "KNOWLEDGE_BASE", "knowledgeBaseConfiguration": {
            "knowledgeBaseId": kb, "modelArn": "pgkb.extractive", "retrievalConfiguration": rc}}

        def retrieve(q: str) -> None:
            svc.retrieve(knowledgeBaseId=kb, retrievalQuery={"text": q}, retrievalConfiguration=rc)

        def rag(q: str) -> None:
            svc.retrieve_and_generate(input={"text": q}, retrieveAndGenerateConfiguration=cfg)

        for q in qs[:5]:  # warm-up: model, pools, plans
            retrieve(q)
            rag(q)
        times: dict[str, list[float]] = {"retrieve": [], "rag": []}
        fns = {"retrieve": retrieve, "rag": rag}
        for _ in range(args.rounds):
            for q in qs:
                for name, fn in fns.items():  # interleaved: the same load for both
                    t = time.perf_counter()
                    fn(q)
                    times[name].append(time.perf_counter() - t)
        base = p50(times["retrieve"])
        print(f"knowledge base {kb} ({args.model}): {args.passages} msmarco-5k passages, {len(qs)} queries x {args.rounds} rounds, k=5")
        print(f"Retrieve                          p50 {base:7.1f} ms")
        v = p50(times["rag"])
        print(f"RetrieveAndGenerate (extractive)  p50 {v:7.1f} ms   {v / base:4.2f}x Retrieve (target <= 1.50x)")
        print(f"load average (1, 5, 15 min): {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
