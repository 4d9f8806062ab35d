"""The one HTTP client for model endpoints: one failure policy (502 for a dependency that cannot
answer now, 424 for one the configuration must fix), resourceName on both, no secret in a message."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pgkb.errors import BadGatewayError, DependencyFailedError
from pgkb.http_json import post_json
from pgkb.redact import redact_url


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        status, payload = {"/ok": (200, json.dumps({"echo": body, "auth": self.headers.get("Authorization")})),
                           "/500": (500, "overloaded"), "/401": (401, "bad key"),
                           "/html": (200, "<html>")}[self.path]
        data = payload.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_answers_and_failures(base: str) -> None:
    got = post_json(base + "/ok", {"x": 1}, resource="m", what="model endpoint", api_key="k1")
    assert got == {"echo": {"x": 1}, "auth": "Bearer k1"}
    for path, kind, needle in (("/500", BadGatewayError, "HTTP 500: overloaded"),
                               ("/401", DependencyFailedError, "HTTP 401"),
                               ("/html", DependencyFailedError, "did not answer JSON")):
        with pytest.raises(kind, match=needle) as info:
            post_json(base + path, {}, resource="m", what="model endpoint")
        assert info.value.resourceName == "m"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(BadGatewayError, match="cannot reach") as down:
        post_json(f"http://127.0.0.1:{port}/x?api_key=sk-2", {}, resource="m", what="reranker", timeout=2)
    assert "sk-2" not in str(down.value)


def test_redaction() -> None:
    assert redact_url("postgresql://u:hunter2@h/db") == "postgresql://u:***@h/db"
    assert redact_url("host=h password=hunter2 user=u") == "host=h password=*** user=u"
    assert redact_url("https://h/v1?api_key=sk-1&x=2") == "https://h/v1?api_key=***&x=2"
