"""RetrieveAndGenerate and RetrieveAndGenerateStream over HTTP: boto3 against a real `pgkb serve`
process, with the offline generator and with an OpenAI-compatible endpoint run by the test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import EventStreamError
from helpers.servers import pgkb_serve
from rag_fakes import FakeModel, fake_model, generators_env
from test_boto3_e2e import REGION, Server, inline_kb
from test_generation import DOCS, check_citations

from pgkb.config import Settings
from pgkb.server.keys import create_key


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeModel]:
    with fake_model() as m:
        yield m


@pytest.fixture(scope="module")
def server(settings: Settings, fake: FakeModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("rag-serve") / "serve.log"
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION,
           "PGKB_OPENAI_GENERATORS": generators_env(fake.url, timeout=1.0)}
    key = create_key(settings)
    with pgkb_serve(settings, log, env) as (url, proc):
        yield Server(url, key, proc, log)


@pytest.fixture(scope="module")
def kb(server: Server, settings: Settings) -> str:
    return inline_kb(server, settings, f"rag-{uuid.uuid4().hex[:8]}", DOCS)[0]


def config(kb: str, model: str = "pgkb.extractive", **kbc: Any) -> dict[str, Any]:
    return {"type": "KNOWLEDGE_BASE",
            "knowledgeBaseConfiguration": {"knowledgeBaseId": kb, "modelArn": model, **kbc}}


def test_retrieve_and_generate_with_the_offline_generator(server: Server, kb: str) -> None:
    rt = server.client("bedrock-agent-runtime")
    first = rt.retrieve_and_generate(input={"text": "When was the Eiffel Tower completed?"},
                                     retrieveAndGenerateConfiguration=config(kb))
    assert "completed in 1889" in first["output"]["text"]
    assert first["ResponseMetadata"]["HTTPHeaders"]["x-pgkb-generator"] == "extractive"
    check_citations(first)
    follow = rt.retrieve_and_generate(input={"text": "How tall is it?"}, sessionId=first["sessionId"],
                                      retrieveAndGenerateConfiguration=config(kb))
    assert follow["sessionId"] == first["sessionId"] and "330 metres" in follow["output"]["text"]
    check_citations(follow)


def test_stream_parsed_by_botocore(server: Server, kb: str) -> None:
    rt = server.client("bedrock-agent-runtime")
    resp = rt.retrieve_and_generate_stream(input={"text": "Where do penguins live and how deep do they dive?"},
                                           retrieveAndGenerateConfiguration=config(kb))
    assert resp["ResponseMetadata"]["HTTPHeaders"]["x-pgkb-generator"] == "extractive"
    session = resp["sessionId"]
    text, cites = "", []
    for event in resp["stream"]:
        if "output" in event:
            text += event["output"]["text"]
        else:
            cites.append(event["citation"])
            assert event["citation"]["citation"]["generatedResponsePart"] == event["citation"]["generatedResponsePart"]
    assert "Southern Hemisphere" in text and len(cites) >= 1
    check_citations({"output": {"text": text}, "citations": cites})
    # the stream's session carries on in the non-streaming call
    again = rt.retrieve_and_generate(input={"text": "What do they eat?"}, sessionId=session,
                                     retrieveAndGenerateConfiguration=config(kb))
    assert again["sessionId"] == session


def test_errors_over_http(server: Server, kb: str) -> None:
    rt = server.client("bedrock-agent-runtime")
    ask = rt.retrieve_and_generate
    with pytest.raises(rt.exceptions.ValidationException, match="search_results"):
        ask(input={"text": "q?"}, retrieveAndGenerateConfiguration=config(
            kb, generationConfiguration={"promptTemplate": {"textPromptTemplate": "no placeholder"}}))
    with pytest.raises(rt.exceptions.ValidationException):
        ask(input={"text": "x" * 1001}, retrieveAndGenerateConfiguration=config(kb))
    with pytest.raises(rt.exceptions.ValidationException, match="EXTERNAL_SOURCES"):
        ask(input={"text": "q?"}, retrieveAndGenerateConfiguration={"type": "EXTERNAL_SOURCES"})
    with pytest.raises(rt.exceptions.ResourceNotFoundException):
        ask(input={"text": "q?"}, retrieveAndGenerateConfiguration=config("NOSUCHKB01"))
    with pytest.raises(rt.exceptions.ValidationException, match="not valid"):
        ask(input={"text": "q?"}, sessionId="unknown-session", retrieveAndGenerateConfiguration=config(kb))
    with pytest.raises(rt.exceptions.ValidationException):
        rt.retrieve_and_generate_stream(input={"text": "q?"}, retrieveAndGenerateConfiguration=config("bad-id!"))


def test_openai_compatible_generator_over_http(server: Server, kb: str, fake: FakeModel) -> None:
    fake.clear()
    fake.reply = lambda body: "Emperor penguins breed in the Antarctic winter [1]."
    rt = server.client("bedrock-agent-runtime")
    resp = rt.retrieve_and_generate(input={"text": "When do emperor penguins breed?"},
                                    retrieveAndGenerateConfiguration=config(kb, "fake.ok"))
    assert resp["output"]["text"] == "Emperor penguins breed in the Antarctic winter."
    assert resp["ResponseMetadata"]["HTTPHeaders"]["x-pgkb-generator"] == "openai-compatible"
    (c,) = resp["citations"]
    assert c["generatedResponsePart"]["textResponsePart"]["span"] == {"start": 0, "end": len(resp["output"]["text"])}
    assert c["retrievedReferences"][0]["location"]["customDocumentLocation"]["id"] == "penguins"
    (_, body), = fake.requests
    assert DOCS["penguins"] in body["messages"][0]["content"]
    assert body["messages"][-1] == {"role": "user", "content": "When do emperor penguins breed?"}
    # the stream sends the part, then its citation
    events = list(rt.retrieve_and_generate_stream(input={"text": "When do emperor penguins breed?"},
                                                  retrieveAndGenerateConfiguration=config(kb, "fake.ok"))["stream"])
    assert [next(iter(e)) for e in events] == ["output", "citation"]


def test_failing_endpoints_over_http(server: Server, kb: str) -> None:
    rt = server.client("bedrock-agent-runtime")
    with pytest.raises(rt.exceptions.BadGatewayException) as info:
        rt.retrieve_and_generate(input={"text": "q?"}, retrieveAndGenerateConfiguration=config(kb, "fake.fail500"))
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 502
    assert info.value.response["resourceName"] == "fake.fail500"
    with pytest.raises(rt.exceptions.DependencyFailedException) as dep:
        rt.retrieve_and_generate(input={"text": "q?"}, retrieveAndGenerateConfiguration=config(kb, "fake.fail400"))
    assert dep.value.response["ResponseMetadata"]["HTTPStatusCode"] == 424
    with pytest.raises(rt.exceptions.BadGatewayException, match="within 1 s"):
        rt.retrieve_and_generate(input={"text": "q?"}, retrieveAndGenerateConfiguration=config(kb, "fake.slow"))
    # in the stream, after the headers: a modelled exception event
    resp = rt.retrieve_and_generate_stream(input={"text": "q?"},
                                           retrieveAndGenerateConfiguration=config(kb, "fake.fail500"))
    assert resp["sessionId"]
    with pytest.raises(EventStreamError) as stream_err:
        list(resp["stream"])
    assert stream_err.value.response["Error"]["Code"] == "badGatewayException"
    assert "HTTP 500" in stream_err.value.response["Error"]["Message"]
