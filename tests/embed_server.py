"""An OpenAI-compatible /v1/embeddings server for tests: deterministic vectors (a hash of each text, so a
text gets the same vector whatever batch it comes in) after `latency_s`, the way a remote GPU server's
round trip dominates an embedding call. Requests are served concurrently, as a real endpoint would."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

MODEL_ID = "test.latency-embeddings"


def vector(text: str, dimensions: int) -> list[float]:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    v = np.random.default_rng(seed).standard_normal(dimensions)
    return (v / np.linalg.norm(v)).astype(np.float32).tolist()


class Counter:
    def __init__(self) -> None:
        self.calls = 0
        self.texts = 0
        self.lock = threading.Lock()


@contextmanager
def embeddings_server(latency_s: float, dimensions: int = 32) -> Iterator[tuple[str, Counter]]:
    """Yields (base URL ending in /v1, call counter)."""
    counter = Counter()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
            time.sleep(latency_s)
            with counter.lock:
                counter.calls += 1
                counter.texts += len(texts)
            data = {"object": "list", "model": body.get("model"),
                    "data": [{"object": "embedding", "index": i, "embedding": vector(t, dimensions)}
                             for i, t in enumerate(texts)]}
            raw = json.dumps(data).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", counter
    finally:
        server.shutdown()
        server.server_close()


def model_config(base_url: str, dimensions: int = 32) -> str:
    """PGKB_OPENAI_EMBEDDINGS registering the server as MODEL_ID."""
    return json.dumps([{"id": MODEL_ID, "base_url": base_url, "model": "hash", "dimensions": dimensions,
                        "batch_size": 512}])


def model_arn() -> str:
    return f"arn:aws:bedrock:us-east-1::foundation-model/{MODEL_ID}"
