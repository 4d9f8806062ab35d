"""The protocol layer through real HTTP and real botocore clients, over a recording stand-in service.

The stand-in only records the keyword arguments it receives and returns canned boto3-shaped dicts, so
these tests pin routing, parsing, validation, serialisation and error mapping independently of the
library layer (which has its own tests, and the end-to-end tests in test_boto3_e2e.py).
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, EventStreamError
from helpers.servers import running

from pgkb.errors import NotFoundError, ServiceQuotaError, ValidationError
from pgkb.server.app import create_app

T0 = dt.datetime(2026, 11, 25, 17, 0, 0, 123000, tzinfo=dt.UTC)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.raise_next: Exception | None = None

    def _take(self, name: str, kwargs: dict[str, Any]) -> None:
        self.calls.append((name, kwargs))
        if self.raise_next is not None:
            err, self.raise_next = self.raise_next, None
            raise err

    def retrieve(self, **kw: Any) -> dict[str, Any]:
        self._take("retrieve", kw)
        return {
            "retrievalResults": [
                {
                    "content": {"type": "TEXT", "text": "hello"},
                    "location": {"type": "S3", "s3Location": {"uri": "s3://b/k.txt"}},
                    "score": 0.75,
                    "metadata": {"year": 2020.0, "x-amz-bedrock-kb-source-uri": "s3://b/k.txt"},
                    "documentId": None,
                }
            ]
        }

    def get_knowledge_base(self, **kw: Any) -> dict[str, Any]:
        self._take("get_knowledge_base", kw)
        return {
            "knowledgeBase": {
                "knowledgeBaseId": kw["knowledgeBaseId"],
                "knowledgeBaseArn": f"arn:aws:bedrock:us-east-1:000000000000:knowledge-base/{kw['knowledgeBaseId']}",
                "name": "kb",
                "roleArn": "arn:aws:iam::000000000000:role/r",
                "knowledgeBaseConfiguration": {"type": "VECTOR"},
                "status": "ACTIVE",
                "createdAt": T0,
                "updatedAt": T0,
            }
        }

    def create_knowledge_base(self, **kw: Any) -> dict[str, Any]:
        self._take("create_knowledge_base", kw)
        return self.get_knowledge_base(knowledgeBaseId="ABCDEFGHIJ")

    def list_knowledge_bases(self, **kw: Any) -> dict[str, Any]:
        self._take("list_knowledge_bases", kw)
        return {"knowledgeBaseSummaries": [], "nextToken": None}

    def ingest_knowledge_base_documents(self, **kw: Any) -> dict[str, Any]:
        self._take("ingest_knowledge_base_documents", kw)
        return {"documentDetails": []}

    def retrieve_and_generate_stream(self, **kw: Any) -> dict[str, Any]:
        self._take("retrieve_and_generate_stream", kw)

        def events() -> Iterator[dict[str, Any]]:
            yield {"output": {"text": "Hello "}}
            yield {"output": {"text": "world"}}
            if kw["input"]["text"] == "fail":
                raise NotFoundError("knowledge base gone")
            yield {
                "citation": {
                    "generatedResponsePart": {
                        "textResponsePart": {"text": "Hello world", "span": {"start": 0, "end": 11}}
                    }
                }
            }

        return {"sessionId": "sess-123", "stream": events()}

    def start_ingestion_job(self, **kw: Any) -> dict[str, Any]:
        self._take("start_ingestion_job", kw)
        raise RuntimeError("secret=hunter2 exploded connecting to postgresql://kb:pa55w0rd@db/x")


def fake_invoke(
    model_id: str, body: bytes, content_type: str | None, accept: str | None
) -> tuple[bytes, str]:
    if model_id == "nope":
        raise ValidationError("The provided model identifier is invalid.")
    return json.dumps(
        {"modelId": model_id, "echo": json.loads(body), "contentType": content_type}
    ).encode(), "application/json"


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, Recorder]]:
    rec = Recorder()
    app = create_app(rec, None, invoke=fake_invoke, max_body_bytes=1_000_000)
    with running(app) as url:
        yield url, rec


def client(url: str, name: str) -> Any:
    return boto3.client(
        name,
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="y",
        config=Config(retries={"max_attempts": 1}),
    )


def raw(
    url: str, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request(method, path, body=body, headers=headers or {"Content-Type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, data


def test_retrieve_roundtrip_through_boto3(server: tuple[str, Recorder]) -> None:
    url, rec = server
    out = client(url, "bedrock-agent-runtime").retrieve(
        knowledgeBaseId="ABCDEFGHIJ",
        retrievalQuery={"text": "what"},
        retrievalConfiguration={
            "vectorSearchConfiguration": {
                "numberOfResults": 3,
                "filter": {"equals": {"key": "year", "value": 2020}},
            }
        },
    )
    assert out["retrievalResults"][0]["content"] == {"type": "TEXT", "text": "hello"}
    assert out["retrievalResults"][0]["metadata"]["year"] == 2020.0
    assert "documentId" not in out["retrievalResults"][0]  # None members are omitted
    assert out["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert out["ResponseMetadata"]["RequestId"]
    name, kw = rec.calls[-1]
    assert name == "retrieve"
    assert kw == {
        "knowledgeBaseId": "ABCDEFGHIJ",
        "retrievalQuery": {"text": "what"},
        "retrievalConfiguration": {
            "vectorSearchConfiguration": {
                "numberOfResults": 3,
                "filter": {"equals": {"key": "year", "value": 2020}},
            }
        },
    }


def test_timestamps_and_status_codes(server: tuple[str, Recorder]) -> None:
    url, _ = server
    agent = client(url, "bedrock-agent")
    kb = agent.get_knowledge_base(knowledgeBaseId="ABCDEFGHIJ")["knowledgeBase"]
    assert kb["createdAt"] == T0  # ISO-8601 on the wire, parsed back by botocore
    created = agent.create_knowledge_base(
        name="kb",
        roleArn="arn:aws:iam::000000000000:role/r",
        knowledgeBaseConfiguration={
            "type": "VECTOR",
            "vectorKnowledgeBaseConfiguration": {
                "embeddingModelArn": "arn:aws:bedrock:us-east-1::foundation-model/sentence-transformers.all-minilm-l6-v2"
            },
        },
    )
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 202  # modelled responseCode
    status, headers, body = raw(url, "GET", "/knowledgebases/ABCDEFGHIJ")
    assert status == 200 and json.loads(body)["knowledgeBase"]["createdAt"] == "2026-11-25T17:00:00.123000Z"


def test_idempotency_token_reaches_the_service(server: tuple[str, Recorder]) -> None:
    url, rec = server
    client(url, "bedrock-agent").create_knowledge_base(
        name="kb", roleArn="arn:aws:iam::000000000000:role/r", knowledgeBaseConfiguration={"type": "VECTOR"}
    )
    name, kw = [c for c in rec.calls if c[0] == "create_knowledge_base"][-1]
    assert len(kw["clientToken"]) >= 33  # botocore auto-fills it


def test_number_of_results_over_max_names_the_field(server: tuple[str, Recorder]) -> None:
    url, _ = server
    with pytest.raises(ClientError) as e:
        client(url, "bedrock-agent-runtime").retrieve(
            knowledgeBaseId="ABCDEFGHIJ",
            retrievalQuery={"text": "q"},
            retrievalConfiguration={"vectorSearchConfiguration": {"numberOfResults": 101}},
        )
    err = e.value.response
    assert err["Error"]["Code"] == "ValidationException"
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert "retrievalConfiguration.vectorSearchConfiguration.numberOfResults" in err["Error"]["Message"]
    assert "less than or equal to 100" in err["Error"]["Message"]


@pytest.mark.parametrize(
    "body, field",
    [
        (
            {
                "retrievalQuery": {"text": "q"},
                "retrievalConfiguration": {
                    "vectorSearchConfiguration": {
                        "filter": {"andAll": [{"equals": {"key": "a", "value": 1}}]}
                    }
                },
            },
            "retrievalConfiguration.vectorSearchConfiguration.filter.andAll",
        ),
        (
            {
                "retrievalQuery": {"text": "q"},
                "retrievalConfiguration": {
                    "vectorSearchConfiguration": {
                        "filter": {"equals": {"key": "a", "value": 1}, "notEquals": {"key": "a", "value": 2}}
                    }
                },
            },
            "retrievalConfiguration.vectorSearchConfiguration.filter",
        ),
        (
            {
                "retrievalQuery": {"text": "q"},
                "retrievalConfiguration": {"vectorSearchConfiguration": {"numberOfResults": "five"}},
            },
            "retrievalConfiguration.vectorSearchConfiguration.numberOfResults",
        ),
        (
            {
                "retrievalQuery": {"text": "q"},
                "retrievalConfiguration": {"vectorSearchConfiguration": {"numberOfResults": True}},
            },
            "retrievalConfiguration.vectorSearchConfiguration.numberOfResults",
        ),
        (
            {
                "retrievalQuery": {"text": "q"},
                "retrievalConfiguration": {"vectorSearchConfiguration": {"overrideSearchType": "FUZZY"}},
            },
            "retrievalConfiguration.vectorSearchConfiguration.overrideSearchType",
        ),
        ({"retrievalQuery": {"text": "x" * 20001}}, "retrievalQuery.text"),
        ({"retrievalQuery": "text"}, "retrievalQuery"),
        ({}, "retrievalQuery"),
        ({"retrievalQuery": {"text": "q"}, "nextToken": "has space"}, "nextToken"),
        (
            {
                "retrievalQuery": {"text": "q"},
                "retrievalConfiguration": {
                    "vectorSearchConfiguration": {
                        "filter": {"orAll": [{"in": {"key": "k", "value": [1]}}, "bad"]}
                    }
                },
            },
            "retrievalConfiguration.vectorSearchConfiguration.filter.orAll[1]",
        ),
    ],
)
def test_server_side_validation(server: tuple[str, Recorder], body: dict[str, Any], field: str) -> None:
    url, rec = server
    before = len(rec.calls)
    status, headers, data = raw(url, "POST", "/knowledgebases/ABCDEFGHIJ/retrieve", json.dumps(body).encode())
    assert status == 400, data
    assert headers["x-amzn-errortype"] == "ValidationException"
    doc = json.loads(data)
    assert field in doc["message"], doc["message"]
    assert len(rec.calls) == before  # the service never saw it


def test_uri_label_pattern_is_checked(server: tuple[str, Recorder]) -> None:
    url, _ = server
    status, headers, data = raw(
        url, "POST", "/knowledgebases/not-an-id!/retrieve", b'{"retrievalQuery": {"text": "q"}}'
    )
    assert status == 400 and "knowledgeBaseId" in json.loads(data)["message"]


def test_sensitive_values_are_not_echoed(server: tuple[str, Recorder]) -> None:
    url, _ = server
    status, _, data = raw(
        url,
        "POST",
        "/knowledgebases/ABCDEFGHIJ/retrieve",
        json.dumps({"retrievalQuery": {"text": "s3cr3t" * 4000}}).encode(),
    )
    assert status == 400 and b"s3cr3t" not in data


@pytest.mark.parametrize(
    "method, path, body, status, code",
    [
        ("POST", "/knowledgebases/ABCDEFGHIJ/retrieve", b"{not json", 400, "ValidationException"),
        ("POST", "/knowledgebases/ABCDEFGHIJ/retrieve", b"[1, 2]", 400, "ValidationException"),
        ("POST", "/knowledgebases/ABCDEFGHIJ/retrieve", b"\xff\xfe\x00", 400, "ValidationException"),
        ("POST", "/knowledgebases/ABCDEFGHIJ/retrieve", b"[" * 100000, 400, "ValidationException"),
        ("GET", "/nothing/here", None, 404, "UnknownOperationException"),
        (
            "PUT",
            "/knowledgebases",
            b"{}",
            404,
            "UnknownOperationException",
        ),  # the modelled path has a trailing slash
        ("PATCH", "/knowledgebases/ABCDEFGHIJ", b"{}", 404, "UnknownOperationException"),
        ("PUT", "/agents/", b'{"agentName": "a"}', 400, "ValidationException"),  # modelled, not served
    ],
)
def test_malformed_requests_get_modelled_4xx(
    server: tuple[str, Recorder], method: str, path: str, body: bytes | None, status: int, code: str
) -> None:
    url, _ = server
    got, headers, data = raw(url, method, path, body)
    assert got == status, data
    assert headers["x-amzn-errortype"] == code
    assert headers["x-amzn-requestid"]
    assert "Traceback" not in data.decode("utf-8", "replace")
    assert json.loads(data)["message"]


def test_huge_body_is_refused(server: tuple[str, Recorder]) -> None:
    url, _ = server
    got, headers, data = raw(
        url, "PUT", "/knowledgebases/ABCDEFGHIJ/datasources/ABCDEFGHIJ/documents", b" " * 2_000_000
    )
    assert got == 400 and headers["x-amzn-errortype"] == "ValidationException"
    assert b"limit" in data


def test_service_errors_map_to_per_service_status(server: tuple[str, Recorder]) -> None:
    url, rec = server
    rec.raise_next = ServiceQuotaError("too many")
    with pytest.raises(ClientError) as e:
        client(url, "bedrock-agent").get_knowledge_base(knowledgeBaseId="ABCDEFGHIJ")
    # GetKnowledgeBase doesn't list ServiceQuotaExceeded, but bedrock-agent models it as 402
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 402
    rec.raise_next = ServiceQuotaError("too many")
    with pytest.raises(client(url, "bedrock-agent-runtime").exceptions.ServiceQuotaExceededException) as e2:
        client(url, "bedrock-agent-runtime").retrieve(
            knowledgeBaseId="ABCDEFGHIJ", retrievalQuery={"text": "q"}
        )
    assert e2.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    rec.raise_next = NotFoundError("no knowledge base ABCDEFGHIJ")
    rt = client(url, "bedrock-agent-runtime")
    with pytest.raises(rt.exceptions.ResourceNotFoundException) as e3:
        rt.retrieve(knowledgeBaseId="ABCDEFGHIJ", retrievalQuery={"text": "q"})
    assert e3.value.response["Error"]["Message"] == "no knowledge base ABCDEFGHIJ"


def test_unexpected_exception_is_a_generic_500(
    server: tuple[str, Recorder], caplog: pytest.LogCaptureFixture
) -> None:
    url, _ = server
    agent = client(url, "bedrock-agent")
    with pytest.raises(agent.exceptions.InternalServerException) as e:
        agent.start_ingestion_job(knowledgeBaseId="ABCDEFGHIJ", dataSourceId="ABCDEFGHIJ")
    msg = e.value.response["Error"]["Message"]
    assert "hunter2" not in msg and "Traceback" not in msg
    request_id = e.value.response["ResponseMetadata"]["RequestId"]
    assert request_id in msg
    logged = [r.getMessage() for r in caplog.records if request_id in r.getMessage()]
    assert logged and "exploded" in logged[0] and "pa55w0rd" not in logged[0]


def test_invoke_model_raw_payload_and_model_id_with_colon(server: tuple[str, Recorder]) -> None:
    url, _ = server
    rt = client(url, "bedrock-runtime")
    out = rt.invoke_model(
        modelId="amazon.titan-embed-text-v2:0",
        body=json.dumps({"inputText": "hi"}),
        contentType="application/json",
    )
    assert out["contentType"] == "application/json"
    doc = json.loads(out["body"].read())
    assert doc == {
        "modelId": "amazon.titan-embed-text-v2:0",
        "echo": {"inputText": "hi"},
        "contentType": "application/json",
    }
    arn = "arn:aws:bedrock:us-east-1::foundation-model/sentence-transformers.all-minilm-l6-v2"
    out = rt.invoke_model(modelId=arn, body=b'{"texts": ["a"], "input_type": "search_query"}')
    assert json.loads(out["body"].read())["modelId"] == arn
    with pytest.raises(rt.exceptions.ValidationException):
        rt.invoke_model(modelId="nope", body=b"{}")


def test_blob_members_are_base64_decoded(server: tuple[str, Recorder]) -> None:
    url, rec = server
    client(url, "bedrock-agent").ingest_knowledge_base_documents(
        knowledgeBaseId="ABCDEFGHIJ",
        dataSourceId="ABCDEFGHIJ",
        documents=[
            {
                "content": {
                    "dataSourceType": "CUSTOM",
                    "custom": {
                        "customDocumentIdentifier": {"id": "doc1"},
                        "sourceType": "IN_LINE",
                        "inlineContent": {
                            "type": "BYTE",
                            "byteContent": {"mimeType": "text/plain", "data": b"\x00raw bytes"},
                        },
                    },
                }
            }
        ],
    )
    _, kw = rec.calls[-1]
    assert kw["documents"][0]["content"]["custom"]["inlineContent"]["byteContent"]["data"] == b"\x00raw bytes"
    status, _, data = raw(
        url,
        "PUT",
        "/knowledgebases/ABCDEFGHIJ/datasources/ABCDEFGHIJ/documents",
        json.dumps(
            {
                "documents": [
                    {
                        "content": {
                            "dataSourceType": "CUSTOM",
                            "custom": {
                                "customDocumentIdentifier": {"id": "d"},
                                "sourceType": "IN_LINE",
                                "inlineContent": {
                                    "type": "BYTE",
                                    "byteContent": {"mimeType": "text/plain", "data": "***"},
                                },
                            },
                        }
                    }
                ]
            }
        ).encode(),
    )
    assert status == 400 and b"documents[0].content.custom.inlineContent.byteContent.data" in data


def test_stream_events_decode_with_botocore(server: tuple[str, Recorder]) -> None:
    url, _ = server
    rt = client(url, "bedrock-agent-runtime")
    conf = {
        "type": "KNOWLEDGE_BASE",
        "knowledgeBaseConfiguration": {"knowledgeBaseId": "ABCDEFGHIJ", "modelArn": "m"},
    }
    out = rt.retrieve_and_generate_stream(input={"text": "hi"}, retrieveAndGenerateConfiguration=conf)
    assert out["sessionId"] == "sess-123"
    events = list(out["stream"])
    assert events[0] == {"output": {"text": "Hello "}}
    assert events[1] == {"output": {"text": "world"}}
    assert events[2]["citation"]["generatedResponsePart"]["textResponsePart"]["span"] == {
        "start": 0,
        "end": 11,
    }
    out = rt.retrieve_and_generate_stream(input={"text": "fail"}, retrieveAndGenerateConfiguration=conf)
    got = []
    with pytest.raises(EventStreamError) as e:
        for ev in out["stream"]:
            got.append(ev)
    assert len(got) == 2
    # botocore names in-stream errors by the stream member that carries them
    assert e.value.response["Error"] == {
        "Code": "resourceNotFoundException",
        "Message": "knowledge base gone",
    }


def test_operation_not_yet_in_service_is_modelled(server: tuple[str, Recorder]) -> None:
    url, _ = server
    agent = client(url, "bedrock-agent")
    with pytest.raises(agent.exceptions.ValidationException, match="not available"):
        agent.delete_knowledge_base(knowledgeBaseId="ABCDEFGHIJ")


def test_members_the_service_does_not_take_are_refused_by_name() -> None:
    class Narrow:
        def get_knowledge_base(self, *, knowledgeBaseId: str) -> dict[str, Any]:
            return Recorder().get_knowledge_base(knowledgeBaseId=knowledgeBaseId)

        def retrieve(self, *, knowledgeBaseId: str, retrievalQuery: dict[str, Any]) -> dict[str, Any]:
            return {"retrievalResults": []}

    with running(create_app(Narrow(), None)) as url:
        rt = client(url, "bedrock-agent-runtime")
        assert (
            rt.retrieve(knowledgeBaseId="ABCDEFGHIJ", retrievalQuery={"text": "q"})["retrievalResults"] == []
        )
        with pytest.raises(rt.exceptions.ValidationException, match="guardrailConfiguration"):
            rt.retrieve(
                knowledgeBaseId="ABCDEFGHIJ",
                retrievalQuery={"text": "q"},
                guardrailConfiguration={"guardrailId": "abc", "guardrailVersion": "DRAFT"},
            )


@pytest.mark.parametrize("depth", [20, 400])
def test_deeply_nested_filters_never_500(server: tuple[str, Recorder], depth: int) -> None:
    url, _ = server
    f: dict[str, Any] = {"equals": {"key": "a", "value": 1}}
    for _ in range(depth):
        f = {"andAll": [f, {"equals": {"key": "b", "value": 2}}]}
    body = {
        "retrievalQuery": {"text": "q"},
        "retrievalConfiguration": {"vectorSearchConfiguration": {"filter": f}},
    }
    import sys

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(10000)  # only so that this test can encode the body
    try:
        data = json.dumps(body).encode()
    finally:
        sys.setrecursionlimit(limit)
    status, headers, out = raw(url, "POST", "/knowledgebases/ABCDEFGHIJ/retrieve", data)
    if depth == 20:
        assert status == 200
    else:
        assert status == 400 and headers["x-amzn-errortype"] == "ValidationException"
        assert b"nested" in out


def test_router_labels_greedy_and_trailing_slash() -> None:
    from pgkb.server.model import Router, _compile_template

    r = Router()
    m = r.match(
        "POST",
        "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A%3Afoundation-model%2Famazon.titan-embed-text-v2%3A0/invoke",
    )
    assert m is not None and m.operation.name == "InvokeModel"
    assert m.labels["modelId"] == "arn:aws:bedrock:us-east-1::foundation-model/amazon.titan-embed-text-v2:0"
    assert r.match("PUT", "/knowledgebases/").operation.name == "CreateKnowledgeBase"  # type: ignore[union-attr]
    assert r.match("PUT", "/knowledgebases") is None
    assert r.match("GET", "/knowledgebases/ABCDEFGHIJ/") is None  # GetKnowledgeBase has no trailing slash
    put = r.match("PUT", "/knowledgebases/K/datasources/D/documents")
    post = r.match("POST", "/knowledgebases/K/datasources/D/documents")
    assert (
        put
        and post
        and (put.operation.name, post.operation.name)
        == ("IngestKnowledgeBaseDocuments", "ListKnowledgeBaseDocuments")
    )
    rx, labels = _compile_template("/objects/{Bucket}/{Key+}")
    found = rx.match("/objects/b/a/deep/key.txt")
    assert labels == ("Bucket", "Key") and found is not None
    assert found.group("L_Key") == "a/deep/key.txt" and found.group("L_Bucket") == "b"


def test_the_body_is_read_up_to_its_declared_length() -> None:
    """At Content-Length bytes the body is complete: the app answers without waiting for the server's
    empty last message (granian sends one, and receiving it cost a hand-off per request). A body
    without a declared length is read until the server says there is no more."""
    import asyncio

    app = create_app(Recorder(), None)
    payload = json.dumps({"retrievalQuery": {"text": "q"}}).encode()

    def exchange(headers: list[tuple[bytes, bytes]], messages: list[dict[str, Any]]) -> tuple[int, int]:
        sent: list[dict[str, Any]] = []
        pending = list(messages)

        async def receive() -> dict[str, Any]:
            if not pending:
                raise AssertionError("read past the end of the body")
            return pending.pop(0)

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/knowledgebases/ABCDEFGHIJ/retrieve",
                 "raw_path": b"/knowledgebases/ABCDEFGHIJ/retrieve", "query_string": b"",
                 "headers": [(b"content-type", b"application/json"), *headers]}
        asyncio.run(app(scope, receive, send))
        return sent[0]["status"], len(pending)

    half = len(payload) // 2
    in_two = [{"type": "http.request", "body": payload[:half], "more_body": True},
              {"type": "http.request", "body": payload[half:], "more_body": True}]
    length = [(b"content-length", str(len(payload)).encode())]
    # granian's shape: the whole body flagged more_body, then an empty last message, never awaited.
    last = {"type": "http.request", "body": b"", "more_body": False}
    assert exchange(length, [*in_two, last]) == (200, 1)
    assert exchange([], [*in_two, last]) == (200, 0)  # no length declared: read to the end
    app.close()
