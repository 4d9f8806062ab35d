"""Several processes on one sync (issue 19): docs/s with 1, 2 and 4 worker processes against an embedding
endpoint whose latency dominates, and the job's statistics and table compared with the 1-process run.

The model is an OpenAI-compatible /v1/embeddings server started here that answers after `--latency`
milliseconds per call (a remote GPU server's round trip plus its compute; vectors are a hash of each text,
so every run gets the same vector for the same chunk). "N processes" is the process that starts the job
(which works its queue too) plus N-1 `pgkb worker` processes. The reference is the 1-process run of the
same corpus, in the same run, on the same embedded PostgreSQL.

Run:  . .venv/bin/activate && python bench/bench_workers.py [--docs 2000] [--latency 100] [--processes 1,2,4]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import bench_data

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the tests' latency-adding embeddings server, used as is

from embed_server import embeddings_server, model_arn, model_config  # noqa: E402


def start_workers(n: int, log_dir: Path) -> list[tuple[subprocess.Popen[bytes], Path]]:
    procs = []
    for i in range(n):
        log = log_dir / f"worker{i}-{uuid.uuid4().hex[:6]}.log"
        with log.open("wb") as out:
            procs.append((subprocess.Popen([str(Path(sys.executable).parent / "pgkb"), "worker"],
                                           stdout=out, stderr=subprocess.STDOUT), log))
    for proc, log in procs:
        while "waiting for ingestion batches" not in log.read_text():
            if proc.poll() is not None:
                raise SystemExit(f"pgkb worker exited: {log.read_text()}")
            time.sleep(0.05)
    return procs


def stop_workers(procs: list[tuple[subprocess.Popen[bytes], Path]]) -> list[int]:
    done = []
    for proc, log in procs:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        text = log.read_text()
        done.append(int(text.rsplit("finished ", 1)[1].split()[0]) if "finished " in text else -1)
    return done


def table_digest(svc: Any, kb_id: str) -> tuple[int, str]:
    """(rows, md5 of every row's source uri, text and vector): equal tables, whichever ids they have."""
    from pgkb.store.vector_table import SOURCE_URI

    kb = svc.resolve(kb_id)
    with kb.database.connection() as conn:
        t = kb.table.ident.as_string(conn)
        row = conn.execute(
            f"SELECT count(*), md5(string_agg(r, '|' ORDER BY r)) FROM"
            f" (SELECT concat_ws(' ', metadata->>%s, chunks, embedding::text) AS r FROM {t}) x", (SOURCE_URI,),
        ).fetchone()
    assert row is not None
    return int(row[0]), str(row[1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--latency", type=float, default=100.0, help="milliseconds per embedding call")
    ap.add_argument("--processes", default="1,2,4")
    ap.add_argument("--embed-batch", type=int, default=32, help="chunks per embedding call (PGKB_EMBED_BATCH)")
    ap.add_argument("--batch-docs", type=int, default=16, help="documents per queue batch (PGKB_SYNC_BATCH_DOCS)")
    ap.add_argument("--dimensions", type=int, default=384)
    a = ap.parse_args()
    counts = [int(x) for x in a.processes.split(",")]
    corpus = bench_data.find("msmarco-5k") / "corpus.jsonl"
    with corpus.open() as f:
        texts = [json.loads(line)["text"] for line, _ in zip(f, range(a.docs), strict=False)]

    from pgkb.db.embedded import ensure_embedded, stop_embedded

    root = Path(tempfile.mkdtemp(prefix="pgkb-bw-"))
    os.chmod(root, 0o755)
    servers = contextlib.ExitStack()
    model_url, _ = servers.enter_context(embeddings_server(a.latency / 1000, a.dimensions))
    try:
        folder = root / "docs"
        folder.mkdir()
        for i, text in enumerate(texts):
            (folder / f"d{i:05d}.txt").write_text(text)
        url = ensure_embedded(root)
        os.environ.update({
            "PGKB_DATABASE_URL": url, "PGKB_DATA_DIR": str(root), "PGKB_EMBED_BATCH": str(a.embed_batch),
            "PGKB_SYNC_BATCH_DOCS": str(a.batch_docs),
            "PGKB_OPENAI_EMBEDDINGS": model_config(model_url, a.dimensions),
        })
        from pgkb.service import KnowledgeBaseService

        print(f"{len(texts)} msmarco-5k documents, {a.latency:.0f} ms per embedding call of <= {a.embed_batch} chunks, "
              f"{a.batch_docs} documents per queue batch; load average before: {os.getloadavg()[0]:.2f}")
        reference: tuple[dict[str, int], tuple[int, str]] | None = None
        first_rate = None
        with KnowledgeBaseService() as svc:
            for n in counts:
                kb = svc.create_knowledge_base(
                    name=f"bw{n}-{uuid.uuid4().hex[:6]}",
                    knowledgeBaseConfiguration={"type": "VECTOR", "vectorKnowledgeBaseConfiguration": {
                        "embeddingModelArn": model_arn()}},
                )["knowledgeBase"]
                ds = svc.create_data_source(
                    knowledgeBaseId=kb["knowledgeBaseId"], name="docs",
                    dataSourceConfiguration={"type": "LOCAL", "localConfiguration": {"path": str(folder)}},
                )["dataSource"]
                workers = start_workers(n - 1, root)
                t0 = time.perf_counter()
                try:
                    job = svc.run_ingestion_job(knowledgeBaseId=kb["knowledgeBaseId"],
                                                dataSourceId=ds["dataSourceId"])["ingestionJob"]
                    elapsed = time.perf_counter() - t0
                finally:
                    finished = stop_workers(workers)
                assert job["status"] == "COMPLETE", job
                stats = job["statistics"]
                digest = table_digest(svc, kb["knowledgeBaseId"])
                rate = stats["numberOfNewDocumentsIndexed"] / elapsed
                if reference is None:
                    reference, first_rate = (stats, digest), rate
                same = "equal" if (stats, digest) == reference else "DIFFERENT"
                assert first_rate is not None
                print(f"{n} process(es): {elapsed:6.2f} s  {rate:7.1f} docs/s  x{rate / first_rate:4.2f} of 1 process  "
                      f"rows {digest[0]}  statistics+table vs 1 process: {same}  "
                      f"batches by pgkb worker processes: {finished}  load average: {os.getloadavg()[0]:.2f}")
    finally:
        servers.close()
        stop_embedded(root)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
