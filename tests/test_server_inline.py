"""A lone Retrieve runs on the server's event loop (no thread hand-off); it answers exactly what the
thread-pool path answers, and slow Retrieve calls or concurrent requests go back to the pool."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest
from botocore.config import Config
from corpus import paragraphs
from helpers.servers import running

from pgkb.config import Settings
from pgkb.server.app import BedrockApp
from pgkb.server.keys import create_key
from pgkb.server.run import build_app


class Served:
    def __init__(self, url: str, key: dict[str, Any], app: BedrockApp) -> None:
        self.url, self.key, self.app = url, key, app

    def client(self, name: str, **_: Any) -> Any:
        return boto3.client(
            name,
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=self.key["accessKeyId"],
            aws_secret_access_key=self.key["secretAccessKey"],
            config=Config(retries={"max_attempts": 1}, read_timeout=120),
        )


@pytest.fixture(scope="module")
def served(settings: Settings) -> Iterator[tuple[Served, str]]:
    """The real app (real service, SigV4 on) in this process, and a knowledge base of 10 paragraphs."""
    from test_boto3_e2e import inline_kb

    app = build_app(settings)
    with running(app) as url:
        srv = Served(url, create_key(settings), app)
        docs = {f"p{i}": text for i, text in enumerate(paragraphs(10))}
        kb_id, _ = inline_kb(srv, settings, f"inline-{uuid.uuid4().hex[:8]}", docs)  # type: ignore[arg-type]
        yield srv, kb_id


def _retrieve(srv: Served, kb_id: str, text: str) -> list[tuple[str, float, str]]:
    out = srv.client("bedrock-agent-runtime").retrieve(
        knowledgeBaseId=kb_id,
        retrievalQuery={"text": text},
        retrievalConfiguration={"vectorSearchConfiguration": {"numberOfResults": 4}},
    )["retrievalResults"]
    return [(r["metadata"]["x-amz-bedrock-kb-source-uri"], r["score"], r["content"]["text"]) for r in out]


QUERIES = [
    "how does a generator function suspend and resume",
    "what happens when an exception is raised inside a try statement",
    "how are keyword arguments matched to parameters",
    "what does the import statement do",
]


def test_lone_retrieve_runs_on_the_loop_and_matches_the_pool(served: tuple[Served, str]) -> None:
    srv, kb_id = served
    policy = srv.app.inline
    max_s = policy.max_s
    policy.max_s = 3600.0  # "quick" whatever the machine's load, so the choice below is deterministic
    try:
        _retrieve(srv, kb_id, "warm up the model and the knowledge-base cache")
        before = policy.inline_calls
        on_loop = [_retrieve(srv, kb_id, q) for q in QUERIES]
        assert policy.inline_calls - before == len(QUERIES)  # one client at a time: every call inline
        policy.max_s = 0.0  # every call "slow": the thread pool
        in_pool = [_retrieve(srv, kb_id, q) for q in QUERIES]
        assert policy.inline_calls - before == len(QUERIES)  # none of those ran inline
    finally:
        policy.max_s = max_s
    assert all(on_loop) and on_loop == in_pool


def test_a_request_in_flight_sends_the_next_to_the_pool(served: tuple[Served, str]) -> None:
    """While one Retrieve is in flight, another never runs on the loop (it would hold the first's
    answer back): it runs in the thread pool, and answers while the first is still running."""
    srv, kb_id = served
    policy = srv.app.inline
    want = [_retrieve(srv, kb_id, q) for q in QUERIES[:2]]
    first_running, release = threading.Event(), threading.Event()
    threads: list[str] = []
    original = srv.app._dispatch

    def spy(op: Any, kwargs: dict[str, Any]) -> Any:
        threads.append(threading.current_thread().name)
        if len(threads) == 1:  # hold the first request in its pool thread
            first_running.set()
            release.wait(60)
        return original(op, kwargs)

    max_s = policy.max_s
    srv.app._dispatch = spy  # type: ignore[method-assign]
    try:
        with ThreadPoolExecutor(2) as pool:
            policy.max_s = 0.0  # the first goes to the pool (where the spy holds it)
            first = pool.submit(_retrieve, srv, kb_id, QUERIES[0])
            assert first_running.wait(60)
            policy.max_s = 3600.0  # the loop would now be allowed, but a request is in flight
            before = policy.inline_calls
            second = _retrieve(srv, kb_id, QUERIES[1])
            assert not first.done()  # answered while the first was still held
            release.set()
            assert [first.result(60), second] == want
    finally:
        release.set()
        policy.max_s = max_s
        del srv.app._dispatch
    assert policy.inline_calls == before
    assert len(threads) == 2 and all(name.startswith("pgkb-req") for name in threads)
