"""The floor under a lone Retrieve's latency on this machine: what one process hop costs before any HTTP.

`bench_server.py` compares `pgkb serve` at 1 client with "embedding + SQL" run back to back in one
process. That reference runs hot: its model session, its thread and its database backend never go
idle for long. A server cannot: between a client's requests, and while the database runs the
statement, its cores wait, and on a virtual machine an idle core is halted (cpuidle `haltpoll`) and
pays to come back. This script measures, interleaved in rounds on the same knowledge base:

  * `reference`: embedding + the SQL top-k, back to back in this process (bench_server's reference);
  * `reference, 1 ms idle`: the same with a 1 ms sleep before each query (what idling costs);
  * `pgkb Retrieve in-process`: the service's Retrieve called in this process (no HTTP);
  * `bare socket server`: the same embedding + SQL in a separate process that reads a query number
    from a TCP socket and writes the rows back, with a sequential keep-alive client: no HTTP, no
    signature, no JSON, no pool. No server design can go under it here;
  * `pgkb serve`: Retrieve over HTTP/1.1, one client (pre-signed requests), on granian (one worker:
    a Rust I/O thread hands each request to the Python event loop) and on uvicorn (one process,
    the socket read by the event loop itself).

Run on a kept `bench_server.py` data dir:

    python bench/bench_server.py --docs 2000 --rounds 1 --clients 1 --no-http2 --keep --seconds 2
    python bench/server_floor.py --data-dir /tmp/pgkbb-XXXX [--rounds 3] [--requests 400]

It prints each figure's p50 and its ratio to the reference; the bare server's ratio is the smallest
that a one-hop server reaches against that reference on this machine (docs/server.md).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BENCH = Path(__file__).resolve().parent
DATA = BENCH.parent.parent / "shared" / "datasets" / "msmarco-5k"
REFERENCE = "reference (in-process, back to back)"
BLOCK = 25  # queries per figure before the next figure's turn


def _knowledge_base(data_dir: Path) -> tuple[Any, str, Any]:
    """(the first knowledge base of a kept data dir, its id, the service), with its database started."""
    from pgkb.config import Settings
    from pgkb.db.embedded import ensure_embedded
    from pgkb.service import KnowledgeBaseService

    ensure_embedded(data_dir)
    svc = KnowledgeBaseService(Settings(data_dir=data_dir, database_url=None))
    kb_id = svc.list_knowledge_bases()["knowledgeBaseSummaries"][0]["knowledgeBaseId"]
    return svc.resolve(kb_id), kb_id, svc


class Searcher:
    """Embedding + SQL top-k as bench_server's reference does it: the model's own call, one connection."""

    def __init__(self, kb: Any, k: int) -> None:
        import psycopg
        from pgvector.psycopg import register_vector

        self.model = kb.model()
        self.conn = psycopg.connect(kb.database.url)
        register_vector(self.conn)
        self.sql = (
            f"SELECT id, chunks, metadata, 1 - (embedding <=> %(v)s) FROM {kb.table} "
            "ORDER BY embedding <=> %(v)s LIMIT %(k)s"
        )
        self.k = k

    def __call__(self, query: str) -> list[tuple[Any, ...]]:
        v = self.model.embed_queries([query])[0]
        rows: list[tuple[Any, ...]] = self.conn.execute(self.sql, {"v": v, "k": self.k}).fetchall()
        return rows


def bare_server(data_dir: Path, port: int, queries: list[str], k: int) -> None:
    """The bare socket server's process: 4-byte query number in, 4-byte length + the rows' text out."""
    kb, _, _ = _knowledge_base(data_dir)
    search = Searcher(kb, k)
    srv = socket.create_server(("127.0.0.1", port))
    while True:
        conn, _ = srv.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with conn:
            while len(head := conn.recv(4, socket.MSG_WAITALL)) == 4:
                rows = search(queries[struct.unpack("!I", head)[0]])
                body = "\n".join(f"{r[0]}\t{r[3]:.6f}\t{r[1]}" for r in rows).encode()
                conn.sendall(struct.pack("!I", len(body)) + body)


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def bare_client(port: int, nq: int) -> Callable[[int], float]:
    """One sequential keep-alive client of the bare server: query i -> seconds until its answer."""
    sock = _connect(port)

    def ask(i: int) -> float:
        t0 = time.perf_counter()
        sock.sendall(struct.pack("!I", i % nq))
        (length,) = struct.unpack("!I", sock.recv(4, socket.MSG_WAITALL))
        sock.recv(length, socket.MSG_WAITALL)
        return time.perf_counter() - t0

    return ask


def http_client(port: int, requests: list[bytes]) -> Callable[[int], float]:
    """One sequential keep-alive HTTP/1.1 client replaying pre-signed Retrieve requests."""
    from bench_server import read_h1_answer

    sock = _connect(port)
    reader = sock.makefile("rb")

    def ask(i: int) -> float:
        t0 = time.perf_counter()
        sock.sendall(requests[i % len(requests)])
        read_h1_answer(reader)
        return time.perf_counter() - t0

    return ask


def service_retrieve(svc: Any, kb_id: str, queries: list[str]) -> Callable[[int], float]:
    """pgkb's own Retrieve, called in this process: the service's work without the HTTP layer."""
    def ask(i: int) -> float:
        t0 = time.perf_counter()
        svc.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": queries[i % len(queries)]})
        return time.perf_counter() - t0

    return ask


def in_process(search: Searcher, queries: list[str], idle_s: float) -> Callable[[int], float]:
    def ask(i: int) -> float:
        if idle_s:
            time.sleep(idle_s)
        t0 = time.perf_counter()
        search(queries[i % len(queries)])
        return time.perf_counter() - t0

    return ask


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", type=Path, required=True, help="a kept bench_server.py data dir (--keep)")
    ap.add_argument("--data", type=Path, default=DATA, help="the BEIR folder whose queries.jsonl to ask")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--requests", type=int, default=300, help="sequential queries per figure and round")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    a = ap.parse_args()
    queries = [json.loads(line)["text"] for line in (a.data / "queries.jsonl").open()]
    if a.bare:
        bare_server(a.data_dir, a.port, queries, a.k)
        return

    sys.path.insert(0, str(BENCH))
    from bench_server import free_port, h1_bytes, presign, start_server, wait_port
    from botocore.credentials import Credentials

    from pgkb.config import Settings
    from pgkb.server.keys import create_key

    kb, kb_id, svc = _knowledge_base(a.data_dir)
    search = Searcher(kb, a.k)
    key = create_key(Settings(data_dir=a.data_dir, database_url=None))
    creds = Credentials(key["accessKeyId"], key["secretAccessKey"])
    env = {**os.environ, "PGKB_DATA_DIR": str(a.data_dir)}
    bare_port, http_port, uvi_port = free_port(), free_port(), free_port()
    with open(os.devnull, "wb") as devnull:
        bare = subprocess.Popen(
            [sys.executable, __file__, "--bare", "--data-dir", str(a.data_dir), "--data", str(a.data),
             "--port", str(bare_port), "--k", str(a.k)],
            stdout=devnull, stderr=subprocess.STDOUT,
        )
    log = a.data_dir / "server-floor.log"
    servers = []
    try:
        wait_port(bare_port, bare)
        servers.append(start_server(a.data_dir, http_port, env, log, ["--workers", "1"]))
        servers.append(start_server(a.data_dir, uvi_port, env, log.with_suffix(".uvicorn.log"), ["--engine", "uvicorn"]))
        path = f"/knowledgebases/{kb_id}/retrieve"
        # The signature covers the host header, port included: one set of requests per server.
        signed = {p: [h1_bytes(path, presign("127.0.0.1", p, kb_id, q, creds, a.k)) for q in queries]
                  for p in (http_port, uvi_port)}
        runs = {
            REFERENCE: in_process(search, queries, 0.0),
            "reference, 1 ms idle before each": in_process(search, queries, 0.001),
            "bare socket server (1 hop, no HTTP)": bare_client(bare_port, len(queries)),
            "pgkb Retrieve in-process (no HTTP)": service_retrieve(svc, kb_id, queries),
            "pgkb serve, granian, HTTP/1.1": http_client(http_port, signed[http_port]),
            "pgkb serve, uvicorn, HTTP/1.1": http_client(uvi_port, signed[uvi_port]),
        }
        for ask in runs.values():  # warm every path: connections, sessions, prepared statements
            for i in range(20):
                ask(i)
        # Blocks of BLOCK queries per figure, in turn: the machine's state drifts within seconds here,
        # so every figure samples the same moments. A round's figure is the p50 of its blocks' queries.
        figures: dict[str, list[float]] = {}
        load_start = os.getloadavg()[0]
        for rnd in range(a.rounds):
            print(f"[{time.strftime('%H:%M:%S')}] round {rnd + 1}/{a.rounds}", file=sys.stderr, flush=True)
            lat: dict[str, list[float]] = {name: [] for name in runs}
            for start in range(0, a.requests, BLOCK):
                for name, ask in runs.items():
                    lat[name] += [ask(i) for i in range(start, min(start + BLOCK, a.requests))]
            for name, values in lat.items():
                figures.setdefault(name, []).append(1000 * statistics.median(values))
    finally:
        bare.send_signal(signal.SIGTERM)
        bare.wait(30)
        for server in servers:
            server.send_signal(signal.SIGTERM)
            server.wait(120)
    print(f"\nload average {load_start:.2f} at start, {os.getloadavg()[0]:.2f} at end; {a.rounds} rounds of "
          f"{a.requests} sequential queries, k={a.k}, {os.cpu_count()} cores")
    refs = figures[REFERENCE]
    print(f"{'figure':<38} {'p50 ms':>7} {'x ref':>6}   per round: p50 ms (x that round's reference)")
    for name, values in figures.items():
        ratio = statistics.median(v / r for v, r in zip(values, refs, strict=True))
        rounds = ", ".join(f"{v:.2f} ({v / r:.2f})" for v, r in zip(values, refs, strict=True))
        print(f"{name:<38} {statistics.median(values):>7.2f} {ratio:>6.2f}   {rounds}")
    print("x ref: the median over rounds of the figure's p50 over the same round's reference")


if __name__ == "__main__":
    main()
