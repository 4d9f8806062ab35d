"""AgenticRetrieveStream against single-pass Retrieve on multi-hop questions over two knowledge bases.

    python bench/bench_agentic.py                          # offline planner, 1/2/3/5 results per KB
    python bench/bench_agentic.py --per-kb 2 --rounds 5
    PGKB_OPENAI_GENERATORS='{"my.llm": {...}}' python bench/bench_agentic.py --model my.llm   # + an LLM planner

Data (bench/data/multihop/, in the repository): two MANAGED knowledge bases over pgkb's own docs
(bench/data/pgkb-docs/corpus.jsonl, 95 passages): "ops" holds the byo-postgres, console, server and
sql-functions passages, "core" the readme, architecture, embeddings, generation and retrieval ones.
Each of the 24 hand-written questions needs one passage from each (questions.jsonl, judged by hand;
a need lists the passages that answer that part, any one of them satisfies it).

Recall: the share of needs (two per question) met by the documents returned, at the same number of
results per knowledge base for both paths: single-pass Retrieve of the question on each knowledge
base (numberOfResults = n), and AgenticRetrieveStream with both knowledge bases as retrievers
(maxNumberOfResults = n), so both return at most 2n results in all.

Latency (p50, p95, interleaved question by question so both see the same load): a whole
AgenticRetrieveStream (offline planner, answer generated) against one Retrieve on one knowledge base,
and against the two-Retrieve single pass. SQL statements per question are counted by wrapping
psycopg's Cursor.execute / executemany in this process (the service runs in-process).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import psycopg  # noqa: E402

from pgkb.config import Settings  # noqa: E402
from pgkb.retrieval.evaluation import percentile  # noqa: E402
from pgkb.service import KnowledgeBaseService  # noqa: E402

HERE = Path(__file__).resolve().parent
OUT = HERE / "out" / "agentic"
CORPUS = HERE / "data" / "pgkb-docs" / "corpus.jsonl"
QUESTIONS = HERE / "data" / "multihop" / "questions.jsonl"
OPS = ("byo-postgres/", "console/", "server/", "sql-functions/")


class StatementCounter:
    """Counts SQL statements this process sends (psycopg's Cursor.execute and executemany)."""

    def __init__(self) -> None:
        self.n = 0
        self._orig = (psycopg.Cursor.execute, psycopg.Cursor.executemany)
        counter = self

        def execute(cur: Any, *a: Any, **kw: Any) -> Any:
            counter.n += 1
            return counter._orig[0](cur, *a, **kw)

        def executemany(cur: Any, *a: Any, **kw: Any) -> Any:
            counter.n += 1
            return counter._orig[1](cur, *a, **kw)

        psycopg.Cursor.execute = execute  # type: ignore[method-assign]
        psycopg.Cursor.executemany = executemany  # type: ignore[method-assign]


def build(svc: KnowledgeBaseService) -> dict[str, str]:
    """Two MANAGED knowledge bases, "ops" and "core"; returns name -> knowledge base id."""
    docs: dict[str, list[dict[str, Any]]] = {"ops": [], "core": []}
    for line in CORPUS.read_text().splitlines():
        d = json.loads(line)
        side = "ops" if d["_id"].startswith(OPS) else "core"
        text = f"{d.get('title', '')}\n\n{d['text']}".strip()
        docs[side].append({"content": {"dataSourceType": "CUSTOM", "custom": {
            "customDocumentIdentifier": {"id": d["_id"]}, "sourceType": "IN_LINE",
            "inlineContent": {"type": "TEXT", "textContent": {"data": text}}}}})
    out = {}
    for side, items in docs.items():
        kb = svc.create_knowledge_base(
            name=f"mh-{side}-{uuid.uuid4().hex[:6]}",
            knowledgeBaseConfiguration={"type": "MANAGED", "managedKnowledgeBaseConfiguration": {}},
        )["knowledgeBase"]["knowledgeBaseId"]
        ds = svc.create_data_source(knowledgeBaseId=kb, name="docs", dataSourceConfiguration={
            "type": "MANAGED_KNOWLEDGE_BASE_CONNECTOR", "managedKnowledgeBaseConnectorConfiguration": {
                "connectorParameters": {"type": "CUSTOM", "version": "1", "aclEnabled": False}}})["dataSource"]["dataSourceId"]
        for start in range(0, len(items), 10):  # the API takes 10 documents per call
            res = svc.ingest_knowledge_base_documents(knowledgeBaseId=kb, dataSourceId=ds, documents=items[start:start + 10])
            bad = [d for d in res["documentDetails"] if d["status"] != "INDEXED"]
            if bad:
                sys.exit(f"ingestion failed: {bad[0]}")
        out[side] = kb
    return out


def single_pass(svc: KnowledgeBaseService, kbs: dict[str, str], q: str, n: int) -> set[str]:
    found = set()
    for kb in kbs.values():
        res = svc.retrieve(knowledgeBaseId=kb, retrievalQuery={"text": q}, retrievalConfiguration={
            "managedSearchConfiguration": {"numberOfResults": n, "rerankingModelType": "NONE"}})
        found |= {r["location"]["customDocumentLocation"]["id"] for r in res["retrievalResults"]}
    return found


def agentic(svc: KnowledgeBaseService, kbs: dict[str, str], q: str, n: int, model: str | None = None,
            generate: bool = True) -> tuple[set[str], int]:
    cfg: dict[str, Any] = {"rerankingModelType": "NONE"}
    if model:
        cfg |= {"foundationModelType": "CUSTOM", "foundationModelConfiguration": {
            "type": "BEDROCK_FOUNDATION_MODEL", "bedrockFoundationModelConfiguration": {"modelConfiguration": {"modelArn": model}}}}
    stream = svc.agentic_retrieve_stream(
        messages=[{"role": "user", "content": {"text": q}}],
        retrievers=[{"configuration": {"knowledgeBase": {"knowledgeBaseId": kb, "retrievalOverrides": {"maxNumberOfResults": n}}}}
                    for kb in kbs.values()],
        agenticRetrieveConfiguration=cfg, generateResponse=generate,
    )["stream"]
    events = list(stream)
    results = events[-1]["result"]["results"]
    return {r["metadata"]["x-amz-bedrock-kb-source-uri"] for r in results}, len(results)


def met(needs: list[list[str]], found: set[str]) -> int:
    return sum(1 for alternatives in needs if found & set(alternatives))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-kb", type=int, nargs="*", default=[1, 2, 3, 5], help="results per knowledge base")
    ap.add_argument("--rounds", type=int, default=3, help="timing rounds over the questions (0: recall only)")
    ap.add_argument("--model", help="also measure an LLM planner with this modelArn (PGKB_OPENAI_GENERATORS, Bedrock)")
    args = ap.parse_args()
    questions = [json.loads(line) for line in QUESTIONS.read_text().splitlines()]
    OUT.mkdir(parents=True, exist_ok=True)
    counter = StatementCounter()
    with KnowledgeBaseService(Settings(data_dir=OUT / "data")) as svc:
        t0 = time.perf_counter()
        kbs = build(svc)
        print(f"two MANAGED knowledge bases (ops, core) over {CORPUS.relative_to(HERE.parent)}: built in "
              f"{time.perf_counter() - t0:.1f} s; {len(questions)} questions, 2 needed passages each")
        try:
            print("\nrecall of the needed passages (share of the 2 x questions needs met)")
            print(f"{'per KB':>6}  {'single-pass Retrieve':>22}  {'agentic (offline)':>18}  {'both met: single / agentic':>26}"
                  + (f"  {'agentic (' + args.model + ')':>20}" if args.model else ""))
            total = 2 * len(questions)
            for n in args.per_kb:
                base = agent = base_both = agent_both = llm = 0
                sizes = []
                for q in questions:
                    b = met(q["needs"], single_pass(svc, kbs, q["question"], n))
                    found, size = agentic(svc, kbs, q["question"], n, generate=False)
                    a = met(q["needs"], found)
                    sizes.append(size)
                    base, agent = base + b, agent + a
                    base_both, agent_both = base_both + (b == 2), agent_both + (a == 2)
                    if args.model:
                        llm += met(q["needs"], agentic(svc, kbs, q["question"], n, args.model, generate=False)[0])
                line = (f"{n:>6}  {base / total:>22.3f}  {agent / total:>18.3f}  {base_both:>12} / {agent_both:<11}"
                        f"  (agentic results per question: max {max(sizes)} <= {2 * n})")
                if args.model:
                    line += f"  {llm / total:>8.3f}"
                print(line)
            if not args.model:
                print("LLM planner: not measured (pass --model <modelArn> with PGKB_OPENAI_GENERATORS or AWS configured)")

            if args.rounds >= 1:
                timing(svc, kbs, questions, args.rounds, counter)
        finally:
            for kb in kbs.values():
                svc.delete_knowledge_base(knowledgeBaseId=kb)
    print(f"load average (1, 5, 15 min): {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def timing(svc: KnowledgeBaseService, kbs: dict[str, str], questions: list[dict[str, Any]], rounds: int,
           counter: StatementCounter) -> None:
    """Latency and SQL statements per question: one Retrieve, the single pass, AgenticRetrieveStream."""
    n = 3
    for q in questions[:3]:  # warm-up: model, pools, plans
        single_pass(svc, kbs, q["question"], n)
        agentic(svc, kbs, q["question"], n)
    kb_one = kbs["core"]
    times: dict[str, list[float]] = {"retrieve": [], "single": [], "agentic": []}
    stmts: dict[str, list[int]] = {"retrieve": [], "single": [], "agentic": []}
    fns = {
        "retrieve": lambda q: svc.retrieve(knowledgeBaseId=kb_one, retrievalQuery={"text": q}, retrievalConfiguration={
            "managedSearchConfiguration": {"numberOfResults": n, "rerankingModelType": "NONE"}}),
        "single": lambda q: single_pass(svc, kbs, q, n),
        "agentic": lambda q: agentic(svc, kbs, q, n),
    }
    for _ in range(rounds):
        for q in questions:
            for name, fn in fns.items():
                before = counter.n
                t = time.perf_counter()
                fn(q["question"])
                times[name].append((time.perf_counter() - t) * 1000)
                stmts[name].append(counter.n - before)
    ref = statistics.median(times["retrieve"])
    print(f"\nlatency per question, {len(questions)} questions x {rounds} rounds, {n} results per KB, interleaved")
    labels = {"retrieve": "one Retrieve (one KB)", "single": "single pass (Retrieve x 2 KBs)",
              "agentic": "AgenticRetrieveStream (offline, with answer)"}
    for name, label in labels.items():
        p50, p95 = statistics.median(times[name]), percentile(times[name], 95)
        print(f"  {label:<46} p50 {p50:7.1f} ms  p95 {p95:7.1f} ms  {p50 / ref:5.2f}x Retrieve   "
              f"SQL statements per question: mean {statistics.mean(stmts[name]):.1f}, max {max(stmts[name])}")


if __name__ == "__main__":
    main()
