"""Where a Retrieve waits inside `pgkb serve` when many clients call at once.

`bench_server.py` gives the throughput at 32 clients; this gives the time inside the server behind it.
One granian worker serves a kept knowledge base with its app and the Retrieve path wrapped to stamp
`time.perf_counter()`: the whole app call, the stretch before the service call (signature, body,
parsing), the service call, and inside it the query embedding (its wait in the micro-batcher
included), the search statement, each model call by its number of texts, each text's run in the ONNX
session (wall time and the thread's CPU time) and the batcher's linger. `--clients` keep-alive clients
replay pre-signed requests for `--seconds` (bench_server's load generator); the p50 and p90 of every
piece and the share of the window the model was running are printed.

    python bench/bench_server.py --docs 2000 --rounds 1 --clients 1 --no-http2 --keep --seconds 2
    python bench/server_waits.py --data-dir /tmp/pgkbb-XXXX [--clients 32] [--seconds 6]

The wrappers cost a few microseconds per stamp; they are on every request, so the load is a little
lighter than bench_server's (docs/server.md).
"""

from __future__ import annotations

import argparse
import contextvars
import importlib
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BENCH = Path(__file__).resolve().parent
DATA = BENCH.parent.parent / "shared" / "datasets" / "msmarco-5k"

_requests: list[list[float]] = []  # per request: app entered, service call start and end, answer sent
_pieces: list[tuple[str, float]] = []  # (label, milliseconds)
_spans: list[tuple[str, float, float]] = []  # model calls: (label, start, end)
_current: contextvars.ContextVar[list[float]] = contextvars.ContextVar("current")


def _timed(owner: Any, name: str, label: str, *, static: bool = False) -> None:
    real = getattr(owner, name)

    def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            _pieces.append((label, 1000 * (time.perf_counter() - t0)))

    setattr(owner, name, staticmethod(timed) if static else timed)


def _model_calls(owner: Any) -> None:
    real = owner.embed_documents

    def call(self: Any, texts: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return real(self, texts)
        finally:
            n = len(texts)
            _spans.append((f"model call, {'1 text' if n == 1 else '2-8 texts' if n <= 8 else '9+ texts'}",
                           t0, time.perf_counter()))

    owner.embed_documents = owner.embed_queries = call


def _session_runs(owner: Any) -> None:
    real = owner._run_one

    def run_one(session: Any, encoding: Any) -> Any:
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            return real(session, encoding)
        finally:
            _pieces.append(("one text in its session, wall", 1000 * (time.perf_counter() - t0)))
            _pieces.append(("one text in its session, thread CPU", 1000 * (time.thread_time() - c0)))

    owner._run_one = staticmethod(run_one)


def build(settings: Any, out: str) -> Callable:
    """granian's target loader in the worker: pgkb's app, stamped."""
    from pgkb.embeddings.onnx import OnnxModel
    from pgkb.server import run
    from pgkb.server.batching import MicroBatcher
    from pgkb.service.retrieve import RetrieveOps

    search_module = importlib.import_module("pgkb.retrieval.search")
    _timed(RetrieveOps, "embed_query", "query embedding (its batcher wait included)")
    _timed(search_module, "_execute", "search statement")
    _timed(MicroBatcher, "_take", "batcher gathering a batch")
    _model_calls(OnnxModel)
    _session_runs(OnnxModel)
    app = run.build_app(settings)
    close = app.close

    def close_and_write() -> None:
        Path(out).write_text(json.dumps({"requests": _requests, "pieces": _pieces, "spans": _spans}))
        close()

    app.close = close_and_write
    call = app._call

    async def timed_call(op: Any, kwargs: dict[str, Any]) -> Any:
        t0 = time.perf_counter()
        try:
            return await call(op, kwargs)
        finally:
            _current.get().extend([t0, time.perf_counter()])

    app._call = timed_call

    async def stamped_app(scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        rec = [time.perf_counter()]
        _current.set(rec)  # each request is its own task, with its own context
        await app(scope, receive, send)
        rec.append(time.perf_counter())
        _requests.append(rec)

    return stamped_app


def _line(label: str, values: list[float]) -> str:
    values = sorted(values)
    p90 = values[min(len(values) - 1, int(0.9 * len(values)))]
    return f"{label:<46} {len(values):>6} {statistics.median(values):>8.2f} {p90:>8.2f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", required=True, help="a kept bench_server.py data dir (--keep)")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--data", type=Path, default=DATA, help="the BEIR folder whose queries.jsonl to send")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args()
    sys.path.insert(0, str(BENCH))
    if a.serve:
        from server_segments import serve_stamped

        serve_stamped("server_waits", a.data_dir, a.port, a.out)
        return

    from bench_server import load, summarize
    from server_segments import stamped_server

    with stamped_server(__file__, a.data_dir, a.data) as (port, requests, out, pid):
        window = summarize([load("127.0.0.1", port, requests, a.clients, a.seconds, pid, False)])
    got = json.loads(Path(out).read_text())
    Path(out).unlink()
    reqs = [r for r in got["requests"] if len(r) == 4]  # Retrieve calls (warm-up window included)
    print(f"load average {os.getloadavg()[0]:.2f}; {a.clients} clients for {a.seconds:.0f} s: "
          f"{window['throughput_rps']:.0f} req/s, client p50 {window['p50_ms']:.1f} ms, "
          f"server {window['server_cpu_cores']:.2f} cores")
    print(f"{'piece (ms)':<46} {'n':>6} {'p50':>8} {'p90':>8}")
    print(_line("app call, whole", [1000 * (r[3] - r[0]) for r in reqs]))
    print(_line("  before the service call", [1000 * (r[1] - r[0]) for r in reqs]))
    print(_line("  the service call (the loop's view)", [1000 * (r[2] - r[1]) for r in reqs]))
    print(_line("  after it, until the answer is sent", [1000 * (r[3] - r[2]) for r in reqs]))
    by: dict[str, list[float]] = {}
    for label, ms in got["pieces"]:
        by.setdefault(label, []).append(ms)
    for label, start, end in got["spans"]:
        by.setdefault(label, []).append(1000 * (end - start))
    for label in sorted(by):
        print(_line(label, by[label]))
    spans = got["spans"]
    if spans:
        window_s = max(e for _, _, e in spans) - min(s for _, s, _ in spans)
        busy = sum(e - s for _, s, e in spans) / window_s
        print(f"model calls running: {busy:.0%} of the time between the first and the last")


if __name__ == "__main__":
    main()
