"""Retrieve against `pgkb serve` over msmarco-5k: latency and throughput at 1, 8 and 32 clients.

Everything is measured in the same run, on the same machine:
  * ingestion through StartIngestionJob (S3 data source over moto) vs the raw model embedding the
    same texts (issue 3 asks for >= 0.85);
  * the reference for one query: embedding + the SQL top-k in this process, sequentially;
  * the model's own batch throughput on the same short queries (batches of 64);
  * Retrieve over HTTP at 1, 8, 32 concurrent clients. The load generator pre-signs every request
    (SigV4, valid 15 minutes) and replays the bytes on keep-alive connections with asyncio
    streams, so it costs little CPU; its CPU share (vs the server's) is printed.

Run:  . .venv/bin/activate && python bench/bench_server.py [--seconds 10] [--docs 5000] [--model ID]
(default model: the torch reference; `--model sentence-transformers.all-minilm-l6-v2-onnx-int8-unbatched`
measures pgkb's default)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import boto3  # noqa: E402
from botocore.auth import SigV4Auth  # noqa: E402
from botocore.awsrequest import AWSRequest  # noqa: E402
from botocore.config import Config  # noqa: E402
from botocore.credentials import Credentials  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "datasets" / "msmarco-5k"
MODEL = "sentence-transformers.all-minilm-l6-v2"
REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def self_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def progress(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


# -- the load generator -----------------------------------------------------------------------


def presign(host: str, port: int, kb_id: str, query: str, creds: Credentials, k: int) -> bytes:
    path = f"/knowledgebases/{kb_id}/retrieve"
    body = json.dumps(
        {
            "retrievalQuery": {"text": query},
            "retrievalConfiguration": {"vectorSearchConfiguration": {"numberOfResults": k}},
        }
    ).encode()
    req = AWSRequest(
        method="POST",
        url=f"http://{host}:{port}{path}",
        data=body,
        headers={"Content-Type": "application/json", "Host": f"{host}:{port}"},
    )
    SigV4Auth(creds, "bedrock", REGION).add_auth(req)
    lines = [f"POST {path} HTTP/1.1"] + [f"{k2}: {v}" for k2, v in req.headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _client(
    host: str, port: int, requests: list[bytes], start: int, deadline: float, lat: list[float]
) -> int:
    reader, writer = await asyncio.open_connection(host, port)
    i, errors = start, 0
    try:
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            writer.write(requests[i % len(requests)])
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            lat.append(time.perf_counter() - t0)
            if not head.startswith(b"HTTP/1.1 200"):
                errors += 1
            i += 1
    finally:
        writer.close()
    return errors


def load(
    host: str, port: int, requests: list[bytes], clients: int, seconds: float, server_pid: int
) -> dict[str, Any]:
    """One window of `clients` concurrent keep-alive clients; raw figures, merged by `summarize`."""

    async def run(duration: float) -> tuple[list[float], int]:
        lat: list[float] = []
        deadline = time.perf_counter() + duration
        errs = await asyncio.gather(
            *[_client(host, port, requests, c * 7, deadline, lat) for c in range(clients)]
        )
        return lat, sum(errs)

    asyncio.run(run(1.0))  # warm-up: connections, caches, batcher
    cpu_gen0, cpu_srv0, t0 = self_cpu_s(), proc_cpu_s(server_pid), time.perf_counter()
    lat, errors = asyncio.run(run(seconds))
    wall = time.perf_counter() - t0
    return {
        "clients": clients,
        "lat": lat,
        "errors": errors,
        "wall": wall,
        "gen": self_cpu_s() - cpu_gen0,
        "srv": proc_cpu_s(server_pid) - cpu_srv0,
    }


def summarize(windows: list[dict[str, Any]]) -> dict[str, float]:
    lat = [x for w in windows for x in w["lat"]]
    wall = sum(w["wall"] for w in windows)
    gen, srv = sum(w["gen"] for w in windows), sum(w["srv"] for w in windows)
    return {
        "clients": windows[0]["clients"],
        "requests": len(lat),
        "errors": sum(w["errors"] for w in windows),
        "p50_ms": 1000 * statistics.median(lat),
        "p99_ms": 1000 * pct(lat, 99),
        "throughput_rps": len(lat) / wall,
        "loadgen_cpu_share": gen / max(gen + srv, 1e-9),
        "server_cpu_cores": srv / wall,
    }


# -- setup -------------------------------------------------------------------------------------


def start_server(data_dir: Path, port: int, env: dict[str, str], log: Path) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "pgkb.server.run",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        "--log-level",
        "info",
    ]
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)
    wait_port(port, proc)
    return proc


def wait_port(port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args[2]} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    proc.terminate()
    raise SystemExit(f"{proc.args[2]} did not start")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--seconds", type=float, default=15.0, help="load seconds per client count, over all rounds"
    )
    ap.add_argument("--docs", type=int, default=5000)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved reference/load rounds")
    ap.add_argument("--keep", action="store_true", help="keep the data dir")
    ap.add_argument("--model", default=MODEL, help="embedding model of the knowledge base and of the references")
    a = ap.parse_args()

    from pgkb.config import Settings
    from pgkb.db.embedded import ensure_embedded, stop_embedded
    from pgkb.server.keys import create_key

    load_start = f"{os.getloadavg()[0]:.2f}"
    root = Path(tempfile.mkdtemp(prefix="pgkbb-"))
    os.chmod(root, 0o755)
    s3_port = free_port()
    # moto in its own process, so serving S3 does not compete with the load generator's GIL
    moto = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(s3_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    s3_url = f"http://127.0.0.1:{s3_port}"
    wait_port(s3_port, moto)
    env = {
        **os.environ,
        "PGKB_S3_ENDPOINT_URL": s3_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "PGKB_DATA_DIR": str(root),
    }
    server = None
    try:
        settings = Settings(data_dir=root, database_url=None)
        db_url = ensure_embedded(root)
        key = create_key(settings)
        creds = Credentials(key["accessKeyId"], key["secretAccessKey"])
        port = free_port()
        server_log = root / "serve.log"
        progress("starting pgkb serve")
        server = start_server(root, port, env, server_log)
        url = f"http://127.0.0.1:{port}"
        cfg = Config(retries={"max_attempts": 1}, read_timeout=600)

        def client(name: str) -> Any:
            return boto3.client(
                name,
                endpoint_url=url,
                region_name=REGION,
                aws_access_key_id=creds.access_key,
                aws_secret_access_key=creds.secret_key,
                config=cfg,
            )

        agent, runtime = client("bedrock-agent"), client("bedrock-agent-runtime")
        corpus = [json.loads(line) for line in (DATA / "corpus.jsonl").open()][: a.docs]
        queries = [json.loads(line)["text"] for line in (DATA / "queries.jsonl").open()]

        s3 = boto3.client(
            "s3",
            endpoint_url=s3_url,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        s3.create_bucket(Bucket="msmarco")
        progress(f"uploading {len(corpus)} objects to S3 (moto)")
        for d in corpus:
            s3.put_object(Bucket="msmarco", Key=f"docs/{d['_id']}.txt", Body=d["text"].encode())

        import psycopg

        with psycopg.connect(db_url) as conn:
            dbname = conn.execute("SELECT current_database()").fetchone()[0]
        table = "bedrock_integration.bench_msmarco"
        kb = agent.create_knowledge_base(
            name="bench-msmarco",
            roleArn="arn:aws:iam::000000000000:role/pgkb",
            knowledgeBaseConfiguration={
                "type": "VECTOR",
                "vectorKnowledgeBaseConfiguration": {
                    "embeddingModelArn": f"arn:aws:bedrock:{REGION}::foundation-model/{a.model}"
                },
            },
            storageConfiguration={
                "type": "RDS",
                "rdsConfiguration": {
                    "resourceArn": f"arn:aws:rds:{REGION}:000000000000:cluster:pgkb",
                    "credentialsSecretArn": f"arn:aws:secretsmanager:{REGION}:000000000000:secret:pgkb-home",
                    "databaseName": dbname,
                    "tableName": table,
                    "fieldMapping": {
                        "primaryKeyField": "id",
                        "vectorField": "embedding",
                        "textField": "chunks",
                        "metadataField": "metadata",
                        "customMetadataField": "custom_metadata",
                    },
                },
            },
        )["knowledgeBase"]
        kb_id = kb["knowledgeBaseId"]
        ds = agent.create_data_source(
            knowledgeBaseId=kb_id,
            name="msmarco",
            dataSourceConfiguration={
                "type": "S3",
                "s3Configuration": {"bucketArn": "arn:aws:s3:::msmarco", "inclusionPrefixes": ["docs/"]},
            },
        )["dataSource"]
        t0 = time.perf_counter()
        progress("StartIngestionJob")
        job = agent.start_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds["dataSourceId"])[
            "ingestionJob"
        ]
        while job["status"] not in ("COMPLETE", "FAILED", "STOPPED"):
            time.sleep(0.5)
            job = agent.get_ingestion_job(
                knowledgeBaseId=kb_id, dataSourceId=ds["dataSourceId"], ingestionJobId=job["ingestionJobId"]
            )["ingestionJob"]
        ingest_s = time.perf_counter() - t0
        if job["status"] != "COMPLETE":
            raise SystemExit(f"ingestion {job['status']}: {job.get('failureReasons')}")

        # References, measured here while the server is idle.
        from pgkb.embeddings import get_model

        model = get_model(a.model)
        texts = [d["text"] for d in corpus]
        t0 = time.perf_counter()
        progress("raw model embed_documents (reference)")
        model.embed_documents(texts)
        raw_embed_s = time.perf_counter() - t0

        from pgvector.psycopg import register_vector

        ref_conn = psycopg.connect(db_url)
        register_vector(ref_conn)
        ref_sql = (
            f"SELECT id, chunks, metadata, 1 - (embedding <=> %(v)s) FROM {table} "
            "ORDER BY embedding <=> %(v)s LIMIT %(k)s"
        )

        def references() -> tuple[float, float]:
            """(model batch throughput in queries/s, p50 ms of embedding + SQL one query at a time)."""
            batch = [queries[i % len(queries)] for i in range(64)]
            model.embed_queries(batch)
            t0, n = time.perf_counter(), 0
            while time.perf_counter() - t0 < 2:
                model.embed_queries(batch)
                n += len(batch)
            qps = n / (time.perf_counter() - t0)
            ref: list[float] = []
            for i in range(70):
                q = queries[i % len(queries)]
                t1 = time.perf_counter()
                v = model.embed_queries([q])[0]
                ref_conn.execute(ref_sql, {"v": v, "k": a.k}).fetchall()
                ref.append(time.perf_counter() - t1)
            return qps, 1000 * statistics.median(ref[20:])

        sanity = runtime.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": queries[0]})
        assert sanity["retrievalResults"], "Retrieve returned nothing"
        requests = [presign("127.0.0.1", port, kb_id, q, creds, a.k) for q in queries]

        # The cores are shared with other work, so references and load windows are interleaved in
        # rounds: each ratio compares figures taken minutes, not tens of minutes, apart.
        refs: list[tuple[float, float]] = []
        windows: dict[int, list[dict[str, Any]]] = {1: [], 8: [], 32: []}
        for rnd in range(a.rounds):
            progress(f"round {rnd + 1}/{a.rounds}: references")
            refs.append(references())
            for c in windows:
                progress(f"round {rnd + 1}/{a.rounds}: {c} clients")
                windows[c].append(load("127.0.0.1", port, requests, c, a.seconds / a.rounds, server.pid))
        progress("references (after)")
        refs.append(references())
        rows = [summarize(w) for w in windows.values()]
        model_batch_qps = statistics.mean(r[0] for r in refs)
        ref_p50 = statistics.mean(r[1] for r in refs)
        server.send_signal(signal.SIGTERM)
        server.wait(120)
        batching = [line for line in server_log.read_text().splitlines() if "micro-batching" in line]

        print(f"\nload average at start {load_start}, at end {os.getloadavg()[0]:.2f} (the cores are shared)")
        print(f"msmarco-5k: {len(corpus)} passages, {len(queries)} queries, k={a.k}, {os.cpu_count()} cores")
        print(
            f"ingestion via StartIngestionJob: {ingest_s:.1f} s ({len(corpus) / ingest_s:.0f} docs/s); "
            f"raw model embed_documents: {raw_embed_s:.1f} s -> ratio {raw_embed_s / ingest_s:.2f} (target >= 0.85)"
        )
        print(
            f"reference embedding + SQL, 1 query at a time: p50 {ref_p50:.2f} ms "
            f"(per round {', '.join(f'{r[1]:.1f}' for r in refs)})"
        )
        print(
            f"model batch throughput (64 short queries per call): {model_batch_qps:.0f} queries/s "
            f"(per round {', '.join(f'{r[0]:.0f}' for r in refs)})"
        )
        print(
            f"{'clients':>7} {'requests':>8} {'errors':>6} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} {'loadgen CPU':>11} {'server cores':>12}"
        )
        for r in rows:
            print(
                f"{r['clients']:>7} {r['requests']:>8} {r['errors']:>6} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
                f"{r['throughput_rps']:>8.1f} {100 * r['loadgen_cpu_share']:>10.1f}% {r['server_cpu_cores']:>12.2f}"
            )
        for line in batching:
            print("server:", line.split("pgkb.server: ")[-1])
        print(f"p50 at 1 client / (embedding + SQL) = {rows[0]['p50_ms'] / ref_p50:.2f} (target <= 1.5)")
        print(
            f"throughput at 32 clients / model batch throughput = {rows[2]['throughput_rps'] / model_batch_qps:.2f} (target >= 0.5)"
        )
    finally:
        if server is not None and server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
        moto.terminate()
        moto.wait(30)
        stop_embedded(root)
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
