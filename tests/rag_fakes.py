"""A local stand-in for model endpoints (OpenAI chat completions, Bedrock Converse) that records
every request it receives, for the generation tests. Behaviour is chosen by the URL's first segment:
`/ok/...` answers with `FakeModel.reply(body)`, `/fail500/...` and `/fail400/...` answer with that
status, `/slow/...` waits `slow_s` before answering, `/garbage/...` answers with non-JSON."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeModel:
    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.reply: Callable[[dict[str, Any]], str] = lambda body: "No markers in this answer."
        self.slow_s = 5.0
        self.url = ""

    def clear(self) -> None:
        self.requests.clear()


def _handler(model: FakeModel) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                body = {"_raw": raw.decode("utf-8", "replace")}
            model.requests.append((self.path, body))
            mode = self.path.strip("/").split("/", 1)[0]
            if mode == "slow":
                time.sleep(model.slow_s)
            if mode == "fail500":
                return self._send(500, b'{"error": "the model crashed"}')
            if mode == "fail400":
                return self._send(400, b'{"error": "unknown model"}')
            if mode == "garbage":
                return self._send(200, b"<html>not json</html>")
            text = model.reply(body)
            if self.path.endswith("/converse"):
                doc: dict[str, Any] = {
                    "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
                    "stopReason": "end_turn",
                    "usage": {"inputTokens": 1, "outputTokens": 1, "totalTokens": 2},
                    "metrics": {"latencyMs": 1},
                }
            else:
                doc = {"id": "x", "object": "chat.completion", "model": body.get("model"),
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                    "finish_reason": "stop"}]}
            self._send(200, json.dumps(doc).encode())

        def _send(self, status: int, payload: bytes) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a timeout test)

    return Handler


@contextmanager
def fake_model() -> Iterator[FakeModel]:
    model = FakeModel()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(model))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    model.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield model
    finally:
        server.shutdown()
        server.server_close()


def generators_env(url: str, timeout: float = 2.0) -> str:
    """PGKB_OPENAI_GENERATORS for the fake: ids `fake.ok`, `fake.fail500`, `fake.slow`, ..."""
    return json.dumps(
        {
            f"fake.{mode}": {"base_url": f"{url}/{mode}/v1", "model": f"m-{mode}", "timeout": timeout}
            for mode in ("ok", "fail500", "fail400", "slow", "garbage")
        }
        | {"fake.down": {"base_url": "http://127.0.0.1:9/v1", "model": "m", "timeout": timeout}}
    )
