"""AgenticRetrieveStream read by the AWS SDK for JavaScript v3's event-stream reader (tests/js/agentic.mjs,
run with the npm packages tests/test_js_clients.py installs): events in order, CRCs checked by the
SDK's decoder, an in-stream exception thrown as the SDK throws it, an error before the stream as HTTP."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from helpers.servers import running
from test_agentic import kbs, retriever, svc  # noqa: F401 (fixtures)
from test_agentic_http import Q, _model, fake  # noqa: F401 (fixtures)
from test_js_clients import JS, js_packages

from pgkb.server.app import create_app
from pgkb.service import KnowledgeBaseService


@pytest.fixture(scope="module")
def url(svc: KnowledgeBaseService, fake: Any) -> Iterator[str]:  # noqa: F811
    with running(create_app(svc, None)) as base:
        yield base


def node(url: str, body: dict[str, Any]) -> dict[str, Any]:
    folder = js_packages()
    shutil.copy(JS / "agentic.mjs", folder / "agentic.mjs")
    env = {**os.environ, "PGKB_URL": url, "PGKB_BODY": json.dumps(body)}
    proc = subprocess.run(["node", "agentic.mjs"], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def body(kb_ids: list[str], **kw: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": {"text": Q}}], "retrievers": [retriever(k) for k in kb_ids],
            "agenticRetrieveConfiguration": {}, **kw}


def test_js_reader_reads_the_stream(url: str, kbs: tuple[str, str]) -> None:  # noqa: F811
    out = node(url, body(list(kbs)))
    assert out["status"] == 200 and out["contentType"] == "application/vnd.amazon.eventstream"
    assert out["error"] is None
    members = [next(iter(e)) for e in out["events"]]
    assert members[0] == "traceEvent" and members[-1] == "result" and "responseEvent" in members
    res = out["events"][-1]["result"]
    assert "7431" in res["generatedResponse"]["answer"]
    found = {(r["sourceRetriever"]["identifier"], r["metadata"]["x-amz-bedrock-kb-source-uri"]) for r in res["results"]}
    assert (kbs[0], "harbor") in found and (kbs[1], "vacation") in found


def test_js_reader_throws_the_in_stream_exception(url: str, kbs: tuple[str, str]) -> None:  # noqa: F811
    out = node(url, body([kbs[0]], agenticRetrieveConfiguration=_model("fake.fail500")))
    assert out["status"] == 200 and out["events"] and "traceEvent" in out["events"][0]
    assert out["error"]["name"] == "badGatewayException"


def test_js_error_before_the_stream_is_http(url: str) -> None:
    out = node(url, body(["NOSUCHKB7"]))
    assert out["status"] == 404 and out["error"]["name"].startswith("ResourceNotFoundException")
