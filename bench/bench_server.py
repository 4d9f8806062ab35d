"""Retrieve against `pgkb serve`: p50 at 1 client and throughput at 32 clients, over HTTP/1.1 and HTTP/2,
for granian with 1 and N worker processes (and, when asked, uvicorn and another checkout's server),
all in the same run, on the same knowledge base.

Everything is measured in the same run, on the same machine:
  * ingestion through StartIngestionJob (S3 data source over moto) vs the raw model embedding the
    same texts;
  * the reference for one query: embedding + the SQL top-k in this process, sequentially;
  * the model's own batch throughput on the same short queries (batches of 64);
  * Retrieve over HTTP/1.1 and HTTP/2 (prior knowledge, one stream at a time per connection) at each
    client count, for each server configuration. The load generator pre-signs every request (SigV4,
    valid 15 minutes) and replays it on keep-alive connections with asyncio streams (HTTP/2 framing by
    the `h2` package), so it costs little CPU; its CPU share (vs the server's processes) is printed.
  * References and load windows are interleaved in rounds, since the cores are shared.

Run:  . .venv/bin/activate && python bench/bench_server.py [--seconds 8] [--docs 2000] [--model ID]
      [--workers 2] [--data PATH] [--before ../main] [--uvicorn] [--rounds 2] [--clients 1,32] [--no-http2]
(`--before PATH` serves the same knowledge base from another pgkb checkout too, for a before/after in
one run; each 1-client window's p50 is also paired with a reference taken just before it.)
`--database-url URL --table SCHEMA.NAME` serves a table that is already filled (e.g. bench_scale.py's
1M table: `--database-url <its bench_scale URL> --table bench.pgkb_1000000`) instead of ingesting
`--docs` passages: the servers run on that database, a VECTOR knowledge base is made over the table
(left there, under a new name each run), and the queries are the dataset's.
(default model: pgkb's default, the ONNX int8 MiniLM; `--model sentence-transformers.all-minilm-l6-v2`
measures the torch reference). The dataset defaults to <repo>/../shared/datasets/msmarco-5k.
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
MODEL = "sentence-transformers.all-minilm-l6-v2-onnx-int8-unbatched"
REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_cpu_s(pid: int) -> float:
    """CPU seconds of a server process and its worker processes."""
    import psutil

    root = psutil.Process(pid)
    total = 0.0
    for p in [root, *root.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def self_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def progress(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


# -- the load generator -----------------------------------------------------------------------


def presign(host: str, port: int, kb_id: str, query: str, creds: Credentials, k: int) -> tuple[list[tuple[str, str]], bytes]:
    """(headers, body) of a signed Retrieve; the same signature serves HTTP/1.1 (Host) and HTTP/2 (:authority)."""
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
    return [(k2.lower(), v) for k2, v in req.headers.items()] + [("content-length", str(len(body)))], body


def h1_bytes(path: str, signed: tuple[list[tuple[str, str]], bytes]) -> bytes:
    headers, body = signed
    lines = [f"POST {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def h2_request(path: str, signed: tuple[list[tuple[str, str]], bytes]) -> tuple[list[tuple[str, str]], bytes]:
    headers, body = signed
    host = dict(headers)["host"]
    pseudo = [(":method", "POST"), (":scheme", "http"), (":authority", host), (":path", path)]
    return pseudo + [(k, v) for k, v in headers if k != "host"], body


def read_h1_answer(reader: Any) -> None:
    """Read one HTTP/1.1 answer from a blocking socket file (sequential clients); a non-200 ends the run."""
    length, status = 0, reader.readline()
    while (line := reader.readline()) != b"\r\n":
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    reader.read(length)
    if not status.startswith(b"HTTP/1.1 200"):
        raise SystemExit(f"Retrieve answered {status!r}")


async def _client_h1(
    host: str, port: int, requests: list[Any], start: int, deadline: float, lat: list[float]
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


async def _client_h2(
    host: str, port: int, requests: list[Any], start: int, deadline: float, lat: list[float]
) -> int:
    """HTTP/2 with prior knowledge (as the JavaScript SDK's NodeHttp2Handler), one stream at a time."""
    import h2.config
    import h2.connection
    import h2.events

    reader, writer = await asyncio.open_connection(host, port)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    writer.write(conn.data_to_send())
    i, errors = start, 0
    try:
        while time.perf_counter() < deadline:
            headers, body = requests[i % len(requests)]
            t0 = time.perf_counter()
            sid = conn.get_next_available_stream_id()
            conn.send_headers(sid, headers)
            conn.send_data(sid, body, end_stream=True)
            writer.write(conn.data_to_send())
            status, done = "", False
            while not done:
                data = await reader.read(65536)
                if not data:
                    raise ConnectionError("server closed the HTTP/2 connection")
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                        status = dict(ev.headers).get(":status", "")
                    elif isinstance(ev, h2.events.DataReceived):
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                        done = True
                writer.write(conn.data_to_send())
            lat.append(time.perf_counter() - t0)
            if status != "200":
                errors += 1
            i += 1
    finally:
        writer.close()
    return errors


def load(
    host: str, port: int, requests: list[Any], clients: int, seconds: float, server_pid: int, http2: bool
) -> dict[str, Any]:
    """One window of `clients` concurrent keep-alive clients; raw figures, merged by `summarize`."""
    one = _client_h2 if http2 else _client_h1

    async def run(duration: float) -> tuple[list[float], int]:
        lat: list[float] = []
        deadline = time.perf_counter() + duration
        errs = await asyncio.gather(*[one(host, port, requests, c * 7, deadline, lat) for c in range(clients)])
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
    """Merged figures of one configuration's windows; `p50_ratio`: the median over its windows of the
    window's p50 over the reference taken just before it (1-client windows), else NaN."""
    lat = [x for w in windows for x in w["lat"]]
    paired = [1000 * statistics.median(w["lat"]) / w["ref_ms"] for w in windows if w.get("ref_ms") and w["lat"]]
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
        "p50_ratio": statistics.median(paired) if paired else float("nan"),
    }


# -- setup -------------------------------------------------------------------------------------


def start_server(
    data_dir: Path, port: int, env: dict[str, str], log: Path, extra: list[str], code: Path | None = None
) -> subprocess.Popen:
    """`python -m pgkb.server.run` from this checkout, or from the checkout `code` (a before/after run)."""
    cmd = [
        sys.executable, "-m", "pgkb.server.run", "--host", "127.0.0.1", "--port", str(port),
        "--data-dir", str(data_dir), "--log-level", "info", *extra,
    ]
    if code is not None:
        env = {**env, "PYTHONPATH": str(code)}
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=code)
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
        "--seconds", type=float, default=8.0, help="load seconds per window (client count, protocol, server), over all rounds"
    )
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2, help="interleaved reference/load rounds")
    ap.add_argument("--clients", default="1,32", help="client counts, comma-separated")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="worker processes of the multi-process server")
    ap.add_argument("--data", type=Path, default=DATA, help="a BEIR-layout dataset folder (corpus.jsonl, queries.jsonl)")
    ap.add_argument("--keep", action="store_true", help="keep the data dir")
    ap.add_argument("--model", default=MODEL, help="embedding model of the knowledge base and of the references")
    ap.add_argument(
        "--before", type=Path, help="also serve from this pgkb checkout (e.g. ../main), 1 granian worker: before/after in one run"
    )
    ap.add_argument("--uvicorn", action="store_true", help="also measure the uvicorn server (HTTP/1.1, one process)")
    ap.add_argument("--no-http2", action="store_true", help="HTTP/1.1 windows only (a shorter run)")
    ap.add_argument("--database-url", help="serve from this database (with --table) instead of a new embedded one")
    ap.add_argument("--table", help="SCHEMA.NAME of a filled Bedrock-layout table on --database-url: no ingestion")
    a = ap.parse_args()
    if bool(a.database_url) != bool(a.table):
        raise SystemExit("--database-url and --table go together")
    if not (a.data / "corpus.jsonl").exists():
        raise SystemExit(f"no dataset at {a.data}: pass --data PATH (a BEIR folder with corpus.jsonl and queries.jsonl)")

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
    if a.database_url:
        env["PGKB_DATABASE_URL"] = a.database_url
    servers: dict[str, tuple[int, subprocess.Popen, Path]] = {}
    try:
        settings = Settings(data_dir=root, database_url=a.database_url)
        db_url = a.database_url or ensure_embedded(root)
        key = create_key(settings)
        creds = Credentials(key["accessKeyId"], key["secretAccessKey"])
        # The servers compared, all over this data dir: the previous one (uvicorn, HTTP/1.1, one
        # process) and granian with 1 and `--workers` processes.
        h2 = not a.no_http2
        configs: list[tuple[str, list[str], bool, Path | None]] = []
        if a.before is not None:
            configs.append(("before: 1 worker", ["--workers", "1"], h2, a.before.resolve()))
        if a.uvicorn:
            configs.append(("uvicorn", ["--engine", "uvicorn"], False, None))
        configs += [
            ("granian 1 worker", ["--workers", "1"], h2, None),
            (f"granian {a.workers} workers", ["--workers", str(a.workers)], h2, None),
        ]
        servers: dict[str, tuple[int, subprocess.Popen, Path]] = {}
        for name, extra, _, code in configs:
            p, log = free_port(), root / f"serve-{len(servers)}.log"
            progress(f"starting {name}")
            servers[name] = (p, start_server(root, p, env, log, extra, code), log)
        port, server, server_log = servers["granian 1 worker"]
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
        corpus = [json.loads(line) for line in (a.data / "corpus.jsonl").open()][: a.docs]
        queries = [json.loads(line)["text"] for line in (a.data / "queries.jsonl").open()]

        s3 = boto3.client(
            "s3",
            endpoint_url=s3_url,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        if not a.table:
            s3.create_bucket(Bucket="msmarco")
            progress(f"uploading {len(corpus)} objects to S3 (moto)")
            for d in corpus:
                s3.put_object(Bucket="msmarco", Key=f"docs/{d['_id']}.txt", Body=d["text"].encode())

        import psycopg

        with psycopg.connect(db_url) as conn:
            dbname = conn.execute("SELECT current_database()").fetchone()[0]
        table = a.table or "bedrock_integration.bench_msmarco"
        kb = agent.create_knowledge_base(
            name=f"bench-{time.strftime('%Y%m%d-%H%M%S')}" if a.table else "bench-msmarco",
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
        ingest_s = float("nan")
        if not a.table:  # the table is filled already
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
        if a.table:  # a large graph: the reference searches as deep as pgkb does (its default is 40)
            from pgkb.retrieval.search import EF_SEARCH

            ref_conn.execute(f"SET hnsw.ef_search = {EF_SEARCH}")
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
            return qps, one_query_p50(50)

        def one_query_p50(n: int) -> float:
            """p50 ms of embedding + SQL, one query at a time, in this process (after 10 warm-ups)."""
            ref: list[float] = []
            for i in range(n + 10):
                q = queries[i % len(queries)]
                t1 = time.perf_counter()
                v = model.embed_queries([q])[0]
                ref_conn.execute(ref_sql, {"v": v, "k": a.k}).fetchall()
                ref.append(time.perf_counter() - t1)
            return 1000 * statistics.median(ref[10:])

        sanity = runtime.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": queries[0]})
        assert sanity["retrievalResults"], "Retrieve returned nothing"
        path = f"/knowledgebases/{kb_id}/retrieve"
        client_counts = [int(c) for c in a.clients.split(",")]
        windows: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
        plan = []
        for name, _, h2ok, _ in configs:
            p, proc, _ = servers[name]
            signed = [presign("127.0.0.1", p, kb_id, q, creds, a.k) for q in queries]
            h1 = [h1_bytes(path, r) for r in signed]
            h2r = [h2_request(path, r) for r in signed]
            for proto in (["HTTP/1.1", "HTTP/2"] if h2ok else ["HTTP/1.1"]):
                for c in client_counts:
                    plan.append((name, proto, c, p, proc.pid, h2r if proto == "HTTP/2" else h1))

        # Each worker process loads its model at its first Retrieve (seconds for torch): 32 connections
        # spread over every worker of each server first, so no measured window pays a model load.
        for name, _, _, _ in configs:
            p, proc, _ = servers[name]
            progress(f"warming every worker of {name}")
            warm = [h1_bytes(path, presign("127.0.0.1", p, kb_id, q, creds, a.k)) for q in queries]
            load("127.0.0.1", p, warm, 32, 2.0, proc.pid, False)

        # The cores are shared with other work, so references and load windows are interleaved in
        # rounds: each ratio compares figures taken minutes, not tens of minutes, apart.
        refs: list[tuple[float, float]] = []
        for rnd in range(a.rounds):
            progress(f"round {rnd + 1}/{a.rounds}: references")
            refs.append(references())
            for name, proto, c, p, pid, reqs in plan:
                progress(f"round {rnd + 1}/{a.rounds}: {name}, {proto}, {c} clients")
                # The machine's load swings within a round: each 1-client window gets its own reference,
                # taken just before it, and its ratio is to that reference.
                own_ref = one_query_p50(30) if c == 1 else None
                w = load("127.0.0.1", p, reqs, c, a.seconds / a.rounds, pid, proto == "HTTP/2")
                w["ref_ms"] = own_ref
                windows.setdefault((name, proto, c), []).append(w)
        progress("references (after)")
        refs.append(references())
        model_batch_qps = statistics.mean(r[0] for r in refs)
        ref_p50 = statistics.mean(r[1] for r in refs)
        for _, proc, _ in servers.values():
            proc.send_signal(signal.SIGTERM)
        for _, proc, _ in servers.values():
            proc.wait(120)
        batching = [
            f"{name}: " + line.split("pgkb.server: ")[-1]
            for name, (_, _, log) in servers.items()
            for line in log.read_text().splitlines()
            if "micro-batching" in line
        ]

        print(f"\nload average at start {load_start}, at end {os.getloadavg()[0]:.2f} (the cores are shared)")
        if a.table:
            with psycopg.connect(db_url) as conn:
                rows = conn.execute("SELECT count(*) FROM " + table).fetchone()[0]
            print(f"model {a.model}; table {table} as it is ({rows:,} rows); {a.data.name}: {len(queries)} queries,"
                  f" k={a.k}, {os.cpu_count()} cores")
        else:
            print(f"model {a.model}; {a.data.name}: {len(corpus)} passages, {len(queries)} queries, k={a.k}, {os.cpu_count()} cores")
            print(
                f"ingestion via StartIngestionJob: {ingest_s:.1f} s ({len(corpus) / ingest_s:.0f} docs/s); "
                f"raw model embed_documents: {raw_embed_s:.1f} s -> ratio {raw_embed_s / ingest_s:.2f}"
            )
        print(
            f"reference embedding + SQL, 1 query at a time: p50 {ref_p50:.2f} ms "
            f"(per round {', '.join(f'{r[1]:.2f}' for r in refs)})"
        )
        print(
            f"model batch throughput (64 short queries per call): {model_batch_qps:.0f} queries/s "
            f"(per round {', '.join(f'{r[0]:.0f}' for r in refs)})"
        )
        print(
            f"{'server':<20} {'protocol':<8} {'clients':>7} {'requests':>8} {'errors':>6} {'p50 ms':>8} {'p99 ms':>8} "
            f"{'req/s':>8} {'loadgen CPU':>11} {'server cores':>12} {'p50/ref':>7} {'paired':>6} {'rps/model':>9}"
        )
        for (name, proto, _), ws in windows.items():
            r = summarize(ws)
            print(
                f"{name:<20} {proto:<8} {r['clients']:>7} {r['requests']:>8} {r['errors']:>6} {r['p50_ms']:>8.2f} "
                f"{r['p99_ms']:>8.2f} {r['throughput_rps']:>8.1f} {100 * r['loadgen_cpu_share']:>10.1f}% "
                f"{r['server_cpu_cores']:>12.2f} {r['p50_ms'] / ref_p50:>7.2f} {r['p50_ratio']:>6.2f} "
                f"{r['throughput_rps'] / model_batch_qps:>9.2f}"
            )
        for line in batching:
            print("server:", line)
        print("p50/ref: to the mean reference of the run; paired: median over the windows of the window's p50 over")
        print("the reference taken just before it (1 client); rps/model: to the mean model batch throughput")
        print("targets: p50 at 1 client <= 1.3x embedding + SQL; throughput at 32 clients >= 0.5x the model's")
    finally:
        for _, proc, _ in servers.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
        moto.terminate()
        moto.wait(30)
        if not a.database_url:
            stop_embedded(root)
        if a.keep:
            print(f"kept the data dir {root} (bench/server_segments.py --data-dir {root})")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
