"""Where a lone Retrieve's time goes inside `pgkb serve`: the wall-clock segments of each request.

One granian worker serves the knowledge base with its app and the functions of the Retrieve path
wrapped to stamp `time.perf_counter()` (CLOCK_MONOTONIC, the same clock in every process): entry,
SigV4, each `receive()`, parsing, the query embedding, the search (and its statement), serialising,
each `send()`. A sequential keep-alive HTTP/1.1 client stamps each request with the same clock, so each
request's segments line up with the latency the client saw. Prints the p50 of every segment.

The knowledge base comes from a kept `bench_server.py` run:

    python bench/bench_server.py --docs 500 --rounds 1 --clients 1 --no-http2 --keep   # prints its data dir
    python bench/server_segments.py --data-dir /tmp/pgkbb-XXXX [--requests 500]

(docs/server.md, "Where a lone Retrieve's time went"). The wrappers cost a few microseconds per stamp.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial, wraps
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BENCH = Path(__file__).resolve().parent
DATA = BENCH.parent.parent / "shared" / "datasets" / "msmarco-5k"

_records: list[list[tuple[str, float]]] = []
_current: list[list[tuple[str, float]] | None] = [None]


def _mark(name: str) -> None:
    rec = _current[0]
    if rec is not None:
        rec.append((name, time.perf_counter()))


def _wrap(owner: Any, name: str, label: str) -> None:
    real = getattr(owner, name)

    @wraps(real)
    def stamped(*args: Any, **kwargs: Any) -> Any:
        _mark(label + " start")
        try:
            return real(*args, **kwargs)
        finally:
            _mark(label + " end")

    setattr(owner, name, stamped)


def build(settings: Any, out: str) -> Callable:
    """granian's target loader in the worker: pgkb's app, stamped."""
    from pgkb.server import app as app_module
    from pgkb.server import run
    from pgkb.server.auth import SigV4Verifier
    from pgkb.service.retrieve import RetrieveOps

    search_module = importlib.import_module("pgkb.retrieval.search")
    _wrap(SigV4Verifier, "begin", "sigv4")
    _wrap(app_module, "parse_input", "parse")
    _wrap(RetrieveOps, "embed_query", "embedding")
    _wrap(search_module, "search", "search")
    _wrap(search_module, "_execute", "statement")
    _wrap(app_module, "serialize_output", "serialise")
    app = run.build_app(settings)
    close = app.close

    def close_and_write() -> None:
        Path(out).write_text(json.dumps(_records))
        close()

    app.close = close_and_write

    async def stamped_app(scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        rec: list[tuple[str, float]] = [("app entered", time.perf_counter())]
        _current[0] = rec

        async def stamped_receive() -> dict[str, Any]:
            message = await receive()
            _mark("receive")
            return message

        async def stamped_send(message: dict[str, Any]) -> None:
            await send(message)
            _mark("sent " + message["type"].rsplit(".", 1)[-1])

        try:
            await app(scope, stamped_receive, stamped_send)
        finally:
            _current[0] = None
            _records.append(rec)

    return stamped_app


def serve_stamped(module: str, data_dir: str, port: int, out: str) -> None:
    """A server process: granian, one worker, serving what `<module>.build(settings, out)` returns
    (a bench script in this folder that wraps pgkb's app)."""
    sys.path.insert(0, str(BENCH))
    from granian.constants import HTTPModes, Interfaces
    from granian.server import Server

    from pgkb import config

    me = importlib.import_module(module)  # importable by name in granian's worker
    settings = config.current().with_overrides(data_dir=data_dir)
    server = Server(
        f"{module}:build", address="127.0.0.1", port=port, interface=Interfaces.ASGI, workers=1,
        http=HTTPModes.auto, websockets=False, log_access=False, workers_kill_timeout=60,
    )
    server.serve(target_loader=partial(me.build, settings, out), wrap_loader=False)


@contextmanager
def stamped_server(script: str, data_dir: str, data: Path, kb: str | None = None) -> Iterator[tuple[int, list[bytes], Path, int]]:
    """Serve a kept bench_server data dir with `script --serve` (a bench script whose `build` wraps pgkb's
    app); yields (its port, pre-signed HTTP/1.1 Retrieve requests for the dataset's queries, the file
    the server writes its stamps to when it stops, which is when the block ends, its pid)."""
    from bench_server import free_port, h1_bytes, presign, wait_port
    from botocore.credentials import Credentials

    from pgkb.config import Settings
    from pgkb.db.embedded import ensure_embedded
    from pgkb.server.keys import create_key
    from pgkb.service import KnowledgeBaseService

    ensure_embedded(Path(data_dir))  # a kept data dir's server was stopped with its run
    settings = Settings(data_dir=Path(data_dir), database_url=None)
    with KnowledgeBaseService(settings) as svc:
        kb_id = kb or svc.list_knowledge_bases()["knowledgeBaseSummaries"][0]["knowledgeBaseId"]
    key = create_key(settings)
    creds = Credentials(key["accessKeyId"], key["secretAccessKey"])
    queries = [json.loads(line)["text"] for line in (data / "queries.jsonl").open()]
    port = free_port()
    fd, out = tempfile.mkstemp(prefix="pgkb-stamps-", suffix=".json")
    os.close(fd)
    env = {**os.environ, "PGKB_DATA_DIR": data_dir}
    with open(os.devnull, "wb") as devnull:
        server = subprocess.Popen(
            [sys.executable, script, "--serve", "--data-dir", data_dir, "--port", str(port), "--out", out],
            env=env, stdout=devnull, stderr=subprocess.STDOUT,
        )
    try:
        wait_port(port, server)
        path = f"/knowledgebases/{kb_id}/retrieve"
        yield port, [h1_bytes(path, presign("127.0.0.1", port, kb_id, q, creds, 5)) for q in queries], Path(out), server.pid
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(120)


def segments(client: list[tuple[float, float]], records: list[list[tuple[str, float]]]) -> dict[str, list[float]]:
    """Each client request paired with the server record that began inside it; ms between stamps."""
    out: dict[str, list[float]] = {}
    records = sorted(records, key=lambda r: r[0][1])
    j = 0
    for t0, t1 in client:
        while j < len(records) and records[j][0][1] < t0:
            j += 1
        if j >= len(records) or records[j][0][1] > t1:
            continue
        stamps = [("client sent", t0), *records[j], ("client read the answer", t1)]
        for (a, ta), (b, tb) in zip(stamps, stamps[1:], strict=False):
            out.setdefault(f"{a} -> {b}", []).append(1000 * (tb - ta))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", required=True, help="a kept bench_server.py data dir (--keep)")
    ap.add_argument("--kb", help="knowledge base id (default: the first one)")
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--data", type=Path, default=DATA, help="the BEIR folder whose queries.jsonl to send")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve:
        serve_stamped("server_segments", a.data_dir, a.port, a.out)
        return

    sys.path.insert(0, str(BENCH))
    from bench_server import read_h1_answer

    with stamped_server(__file__, a.data_dir, a.data, a.kb) as (port, requests, out, _):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = sock.makefile("rb")
        client: list[tuple[float, float]] = []
        for i in range(a.requests + 20):  # the first 20 warm the caches
            t0 = time.perf_counter()
            sock.sendall(requests[i % len(requests)])
            read_h1_answer(reader)
            if i >= 20:
                client.append((t0, time.perf_counter()))
        sock.close()
    records = json.loads(Path(out).read_text())
    Path(out).unlink()
    latency = [1000 * (t1 - t0) for t0, t1 in client]
    print(f"load average {os.getloadavg()[0]:.2f}; {len(client)} sequential requests; "
          f"client p50 {statistics.median(latency):.3f} ms")
    print(f"{'segment':<44} {'n':>5} {'p50 ms':>8} {'mean ms':>8}")
    for name, values in segments(client, records).items():
        if len(values) >= len(client) // 2:  # the path most requests took
            print(f"{name:<44} {len(values):>5} {statistics.median(values):>8.3f} {statistics.mean(values):>8.3f}")


if __name__ == "__main__":
    main()
