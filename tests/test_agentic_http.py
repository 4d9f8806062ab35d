"""AgenticRetrieveStream over the wire: boto3's event-stream reader against pgkb's ASGI app, with the
offline planner and with an LLM planner (the local fake OpenAI-compatible endpoint of rag_fakes),
errors before the stream (HTTP) and during it (in-stream exception events)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, EventStreamError
from helpers.servers import running
from rag_fakes import FakeModel, fake_model, generators_env
from test_agentic import ANN, kbs, retriever, svc  # noqa: F401 (fixtures)

from pgkb.server.app import create_app
from pgkb.service import KnowledgeBaseService

Q = "What port does the Harbor service listen on and how many days of paid vacation do employees get?"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeModel]:
    with fake_model() as m:
        old = os.environ.get("PGKB_OPENAI_GENERATORS")
        os.environ["PGKB_OPENAI_GENERATORS"] = generators_env(m.url, timeout=2.0)
        try:
            yield m
        finally:
            if old is None:
                os.environ.pop("PGKB_OPENAI_GENERATORS", None)
            else:
                os.environ["PGKB_OPENAI_GENERATORS"] = old


@pytest.fixture(scope="module")
def runtime(svc: KnowledgeBaseService, fake: FakeModel) -> Iterator[Any]:  # noqa: F811
    with running(create_app(svc, None)) as url:
        yield boto3.client("bedrock-agent-runtime", endpoint_url=url, region_name="us-east-1",
                           aws_access_key_id="k", aws_secret_access_key="s",
                           config=Config(retries={"max_attempts": 1}))


def ask(runtime: Any, kb_ids: tuple[str, str], question: str = Q, **kw: Any) -> list[dict[str, Any]]:
    kw.setdefault("agenticRetrieveConfiguration", {"foundationModelType": "MANAGED", "rerankingModelType": "NONE"})
    resp = runtime.agentic_retrieve_stream(
        messages=[{"role": "user", "content": {"text": question}}],
        retrievers=[{"description": "operations runbooks", **retriever(kb_ids[0])},
                    {"description": "HR policies", **retriever(kb_ids[1])}],
        **kw,
    )
    assert resp["ResponseMetadata"]["HTTPHeaders"]["content-type"] == "application/vnd.amazon.eventstream"
    return list(resp["stream"])


def _model(arn: str) -> dict[str, Any]:
    return {"foundationModelType": "CUSTOM", "foundationModelConfiguration": {
        "type": "BEDROCK_FOUNDATION_MODEL", "bedrockFoundationModelConfiguration": {"modelConfiguration": {"modelArn": arn}}}}


def test_offline_planner_over_boto3(runtime: Any, kbs: tuple[str, str]) -> None:  # noqa: F811
    events = ask(runtime, kbs, userContext={"userId": ANN})
    kinds = [next(iter(e)) for e in events]
    assert kinds[0] == "traceEvent" and kinds[-1] == "result" and "responseEvent" in kinds
    first = events[0]["traceEvent"]
    assert isinstance(first["timestamp"], int) and first["attributes"]["step"] == "SpeculativeRetrieval"
    assert first["attributes"]["retrievalMetadata"][0]["retrievalType"] == "BedrockKnowledgeBase"
    steps = {e["traceEvent"]["attributes"]["step"] for e in events if "traceEvent" in e}
    assert {"Planning", "Retrieval", "FullDocumentExpansion"} <= steps
    res = events[-1]["result"]
    found = {(r["sourceRetriever"]["identifier"], r["metadata"]["x-amz-bedrock-kb-source-uri"]) for r in res["results"]}
    assert (kbs[0], "harbor") in found and (kbs[1], "vacation") in found
    answer = res["generatedResponse"]["answer"]
    assert "7431" in answer and "28 days" in answer
    assert "".join(e["responseEvent"]["text"] for e in events if "responseEvent" in e) == answer
    for c in res["generatedResponse"]["citations"]:
        for ref in c["references"]:
            assert answer[c["startIndex"]:c["endIndex"]] in res["results"][ref["resultIndex"]]["content"]["text"]


def test_errors_before_the_stream_are_http_errors(runtime: Any, kbs: tuple[str, str]) -> None:  # noqa: F811
    with pytest.raises(ClientError) as err:
        runtime.agentic_retrieve_stream(messages=[{"role": "user", "content": {"text": "q"}}],
                                        retrievers=[retriever("NOSUCHKB9")], agenticRetrieveConfiguration={})
    assert err.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    with pytest.raises(ClientError) as err:
        runtime.agentic_retrieve_stream(messages=[{"role": "user", "content": {"text": "q"}}],
                                        retrievers=[retriever(kbs[0])] * 6, agenticRetrieveConfiguration={})
    assert err.value.response["Error"]["Code"] == "ValidationException" and "limit is 5" in str(err.value)
    with pytest.raises(ClientError) as err:
        ask(runtime, kbs, agenticRetrieveConfiguration=_model("not.configured"))
    assert err.value.response["Error"]["Code"] == "ValidationException"


def test_llm_planner_plans_and_stops(runtime: Any, fake: FakeModel, kbs: tuple[str, str]) -> None:  # noqa: F811
    rounds: list[str] = []

    def reply(body: dict[str, Any]) -> str:
        system = body["messages"][0]["content"] if body["messages"][0]["role"] == "system" else ""
        if system.startswith("You plan searches"):
            rounds.append(body["messages"][-1]["content"])
            if len(rounds) == 1:
                return json.dumps({"done": False, "queries": [
                    {"query": "Harbor service port", "retrievers": [1]},
                    {"query": "paid vacation days per year", "retrievers": [2]}]})
            return 'Plan: {"done": true, "queries": []}'
        return "Harbor listens on port 7431 [1]. Employees get 28 days of paid vacation [2]."

    fake.reply = reply
    fake.clear()
    events = ask(runtime, kbs, agenticRetrieveConfiguration={**_model("fake.ok"), "maxAgentIteration": 4})
    assert len(rounds) == 2  # it planned once, then judged the results sufficient
    assert "operations runbooks" in rounds[0] and "HR policies" in rounds[0]  # descriptions reach the model
    assert "7431" in rounds[1]  # the second round sees what the first found
    retrieval = [e["traceEvent"]["attributes"] for e in events
                 if "traceEvent" in e and e["traceEvent"]["attributes"]["step"] == "Retrieval"
                 and e["traceEvent"]["attributes"]["status"] == "SUCCEEDED"]
    assert len(retrieval) == 1
    routed = {a["retrieve"]["inputQuery"]["text"]: [s["identifier"] for s in a["retrieve"]["sourceRetrievers"]]
              for a in retrieval[0]["actions"]}
    assert routed == {"Harbor service port": [kbs[0]], "paid vacation days per year": [kbs[1]]}
    res = events[-1]["result"]
    assert res["generatedResponse"]["answer"] == "Harbor listens on port 7431. Employees get 28 days of paid vacation."
    assert len(fake.requests) == 3  # two plans and one answer


def test_model_failure_is_an_in_stream_exception(runtime: Any, kbs: tuple[str, str]) -> None:  # noqa: F811
    resp = runtime.agentic_retrieve_stream(
        messages=[{"role": "user", "content": {"text": Q}}], retrievers=[retriever(kbs[0])],
        agenticRetrieveConfiguration=_model("fake.fail500"))
    seen: list[dict[str, Any]] = []
    with pytest.raises(EventStreamError) as err:
        for e in resp["stream"]:
            seen.append(e)
    assert err.value.response["Error"]["Code"] == "badGatewayException"
    assert seen and "traceEvent" in seen[0]  # the speculative retrieval was streamed before the failure
    last = seen[-1]["traceEvent"]["attributes"]
    assert (last["step"], last["status"]) == ("Planning", "FAILED") and "HTTP 500" in last["failures"][0]["message"]
