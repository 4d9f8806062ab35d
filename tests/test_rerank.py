"""Rerankers against tiny real HTTP servers: TEI shape, Cohere shape, Bedrock's Rerank API through boto3."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from pgkb.errors import BadGatewayError, DependencyFailedError, ValidationError
from pgkb.retrieval.rerank import parse_config, rerank_hits, reranker_for
from pgkb.retrieval.search import SearchHit

ARN = "arn:aws:bedrock:us-west-2::foundation-model/cohere.rerank-v3-5:0"
HITS = [
    SearchHit("1", "cats sleep all day", 0.9, {"genre": "pets", "year": 2020, "x-amz-bedrock-kb-chunk-id": "1"}),
    SearchHit("2", "the stock market fell", 0.8, {"genre": "finance", "x-amz-bedrock-kb-chunk-id": "2"}),
    SearchHit("3", "dogs and cats play", 0.7, {"genre": "pets", "x-amz-bedrock-kb-chunk-id": "3"}),
]


def cfg(n: int | None = None, meta: dict | None = None, arn: str = ARN) -> dict:
    brc: dict[str, Any] = {"modelConfiguration": {"modelArn": arn}}
    if n is not None:
        brc["numberOfRerankedResults"] = n
    if meta is not None:
        brc["metadataConfiguration"] = meta
    return {"type": "BEDROCK_RERANKING_MODEL", "bedrockRerankingConfiguration": brc}


def overlap(query: str, doc: str) -> int:
    return len(set(query.lower().split()) & set(doc.lower().split()))


class Server:
    """A local reranker: `mode` picks the wire shape; every request body is recorded."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.requests: list[tuple[str, dict]] = []
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                outer.requests.append((self.path, body))
                status, payload = outer.answer(self.path, body)
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def answer(self, path: str, body: dict) -> tuple[int, Any]:
        if self.mode == "tei":
            scores = [overlap(body["query"], t) / 10 for t in body["texts"]]
            return 200, sorted(({"index": i, "score": s} for i, s in enumerate(scores)), key=lambda r: -r["score"])
        if self.mode == "cohere":  # raw logits, Cohere's envelope
            res = [{"index": i, "relevance_score": 3.0 * overlap(body["query"], d) - 2} for i, d in enumerate(body["documents"])]
            res.sort(key=lambda r: -r["relevance_score"])
            return 200, {"id": "x", "results": res[: body["top_n"]]}
        if self.mode == "bedrock":
            q = body["queries"][0]["textQuery"]["text"]
            docs = [s["inlineDocumentSource"]["textDocument"]["text"] for s in body["sources"]]
            res = sorted(({"index": i, "relevanceScore": overlap(q, d) / 4} for i, d in enumerate(docs)),
                         key=lambda r: -r["relevanceScore"])
            n = body["rerankingConfiguration"]["bedrockRerankingConfiguration"].get("numberOfResults", len(res))
            return 200, {"results": res[:n]}
        if self.mode == "error":
            return 503, {"error": "model loading"}
        if self.mode == "garbage":
            return 200, b"<html>not json</html>"
        if self.mode == "bad-index":
            return 200, [{"index": 7, "score": 0.5}]
        raise AssertionError(self.mode)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(request) -> Iterator[Server]:
    s = Server(request.param)
    yield s
    s.close()


@pytest.mark.parametrize("server", ["tei"], indirect=True)
def test_tei_reranker_reorders_and_keeps_top_n(server: Server) -> None:
    env = {"PGKB_RERANKERS": json.dumps({ARN: server.url + "/rerank"})}
    out = rerank_hits("cats play", HITS, cfg(2), env=env)
    assert [h.id for h in out] == ["3", "1"]
    assert out[0].score == pytest.approx(0.2) and out[1].score == pytest.approx(0.1)
    assert out[0].metadata == HITS[2].metadata  # the hit is otherwise unchanged
    path, body = server.requests[-1]
    assert path == "/rerank" and body["texts"] == [h.text for h in HITS] and body["query"] == "cats play"
    # Without numberOfRerankedResults every hit comes back, reordered.
    assert [h.id for h in rerank_hits("cats play", HITS, cfg(), env=env)] == ["3", "1", "2"]
    # The service's form: resolve once (before embedding the query), apply to the hits.
    rr = reranker_for(cfg(1), env=env)
    assert [h.id for h in rr.rerank("stock market", HITS)] == ["2"] and rr.rerank("q", []) == []


@pytest.mark.parametrize("server", ["cohere"], indirect=True)
def test_cohere_shape_by_model_id_with_metadata(server: Server) -> None:
    env = {"PGKB_RERANKERS": json.dumps({"cohere.rerank-v3-5:0": {"url": server.url + "/v1/rerank", "format": "cohere",
                                                                   "model": "rerank-v3.5"}})}
    meta = {"selectionMode": "SELECTIVE", "selectiveModeConfiguration": {"fieldsToInclude": [{"fieldName": "genre"}]}}
    out = rerank_hits("finance stock", HITS, cfg(1, meta), env=env)
    assert [h.id for h in out] == ["2"]
    assert 0.5 < out[0].score < 1  # logit 4 squashed
    _, body = server.requests[-1]
    assert body["model"] == "rerank-v3.5" and body["top_n"] == 1
    assert body["documents"][1] == "the stock market fell\n\ngenre: finance"
    rerank_hits("x", HITS, cfg(None, {"selectionMode": "ALL"}), env=env)
    assert server.requests[-1][1]["documents"][0] == "cats sleep all day\n\ngenre: pets\nyear: 2020"
    excl = {"selectionMode": "SELECTIVE", "selectiveModeConfiguration": {"fieldsToExclude": [{"fieldName": "genre"}]}}
    rerank_hits("x", HITS, cfg(None, excl), env=env)
    assert server.requests[-1][1]["documents"][:2] == ["cats sleep all day\n\nyear: 2020", "the stock market fell"]


@pytest.mark.parametrize("server", ["bedrock"], indirect=True)
def test_bedrock_rerank_through_boto3(server: Server, monkeypatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")
    monkeypatch.setenv("PGKB_BEDROCK_RERANK_ENDPOINT_URL", server.url)
    monkeypatch.delenv("PGKB_RERANKERS", raising=False)
    c = cfg(2)
    c["bedrockRerankingConfiguration"]["modelConfiguration"]["additionalModelRequestFields"] = {"max_tokens_per_doc": 512}
    out = rerank_hits("dogs cats play", HITS, c)
    assert [h.id for h in out] == ["3", "1"] and out[0].score == pytest.approx(0.75)
    path, body = server.requests[-1]
    assert path == "/rerank"
    mc = body["rerankingConfiguration"]["bedrockRerankingConfiguration"]["modelConfiguration"]
    assert mc == {"modelArn": ARN, "additionalModelRequestFields": {"max_tokens_per_doc": 512}}
    assert body["sources"][0]["type"] == "INLINE"


def test_unusable_configuration_is_a_validation_error(monkeypatch, tmp_path) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "AWS_WEB_IDENTITY_TOKEN_FILE", "PGKB_BEDROCK_RERANK_ENDPOINT_URL", "PGKB_RERANKERS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(ValidationError, match="not usable.*PGKB_RERANKERS"):
        rerank_hits("q", HITS, cfg())
    with pytest.raises(ValidationError, match="not usable"):
        rerank_hits("q", [], cfg())  # even with nothing to rerank


@pytest.mark.parametrize(
    "config, env, needle",
    [
        ({"type": "OTHER"}, {}, "type"),
        ({"type": "BEDROCK_RERANKING_MODEL"}, {}, "bedrockRerankingConfiguration is required"),
        (cfg(arn="cohere.rerank-v3-5:0"), {}, "not a foundation-model ARN"),
        (cfg(0), {}, "numberOfRerankedResults"),
        (cfg(101), {}, "numberOfRerankedResults"),
        (cfg(None, {"selectionMode": "SOME"}), {}, "selectionMode"),
        (cfg(None, {"selectionMode": "SELECTIVE", "selectiveModeConfiguration": {
            "fieldsToInclude": [{"fieldName": "a"}], "fieldsToExclude": [{"fieldName": "b"}]}}), {}, "exactly one"),
        (cfg(None, {"selectionMode": "SELECTIVE", "selectiveModeConfiguration": {"fieldsToInclude": []}}), {}, "1 to 100"),
        (cfg(), {"PGKB_RERANKERS": "{nope"}, "not valid JSON"),
        (cfg(), {"PGKB_RERANKERS": json.dumps({ARN: "ftp://x"})}, "needs an http"),
        (cfg(), {"PGKB_RERANKERS": json.dumps({ARN: {"url": "http://x", "format": "grpc"}})}, "tei or cohere"),
        (cfg(), {"PGKB_RERANKERS": json.dumps({ARN: {"url": "http://x", "api_key_env": "NOPE_KEY"}})}, "API key"),
    ],
)
def test_bad_configurations(config, env, needle) -> None:
    with pytest.raises(ValidationError, match=needle):
        parse_config(config)
        rerank_hits("q", HITS, config, env=env)


@pytest.mark.parametrize(("server", "error"), [("error", BadGatewayError), ("garbage", DependencyFailedError),
                                               ("bad-index", DependencyFailedError)], indirect=["server"])
def test_failing_endpoint_is_a_typed_failure(server: Server, error: type[Exception]) -> None:
    """503: the reranker cannot answer now (502, retry); garbage: configuration to fix (424)."""
    env = {"PGKB_RERANKERS": json.dumps({ARN: server.url + "/rerank"})}
    with pytest.raises(error, match="reranker cohere.rerank-v3-5:0 at http://127.0.0.1"):
        rerank_hits("q", HITS, cfg(), env=env)


def test_unreachable_endpoint_is_a_bad_gateway() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nobody listens there
    env = {"PGKB_RERANKERS": json.dumps({ARN: {"url": f"http://user:pw@127.0.0.1:{port}/rerank", "timeout": 2}})}
    with pytest.raises(BadGatewayError, match="cannot reach") as err:
        rerank_hits("q", HITS, cfg(), env=env)
    assert "pw" not in str(err.value) and err.value.resourceName == "cohere.rerank-v3-5:0"


@pytest.mark.parametrize("server", ["tei"], indirect=True)
def test_rerank_operation_over_http(server: Server, settings, monkeypatch) -> None:
    """bedrock-agent-runtime Rerank through boto3 against pgkb's server: text and JSON sources, the
    configured reranker's order and scores, numberOfResults, and Bedrock's errors for bad input."""
    import boto3
    from helpers.servers import running

    from pgkb.server.app import create_app
    from pgkb.service import KnowledgeBaseService

    monkeypatch.setenv("PGKB_RERANKERS", json.dumps({ARN: server.url + "/rerank"}))
    sources = [{"type": "INLINE", "inlineDocumentSource": {"type": "TEXT", "textDocument": {"text": h.text}}}
               for h in HITS]
    sources.append({"type": "INLINE", "inlineDocumentSource": {"type": "JSON", "jsonDocument": {"pets": "cats play"}}})
    conf = {"type": "BEDROCK_RERANKING_MODEL",
            "bedrockRerankingConfiguration": {"modelConfiguration": {"modelArn": ARN}, "numberOfResults": 3}}
    with KnowledgeBaseService(settings) as svc, running(create_app(svc, None)) as url:
        rt = boto3.client("bedrock-agent-runtime", endpoint_url=url, region_name="us-east-1",
                          aws_access_key_id="x", aws_secret_access_key="y")
        out = rt.rerank(queries=[{"type": "TEXT", "textQuery": {"text": "cats play"}}], sources=sources,
                        rerankingConfiguration=conf)["results"]
        assert [r["index"] for r in out] == [2, 0, 1]  # by word overlap with the query (ties: input order)
        assert out[0]["relevanceScore"] == pytest.approx(0.2)
        assert out[0]["document"]["textDocument"]["text"] == "dogs and cats play"
        assert server.requests[-1][1]["texts"][3] == '{"pets": "cats play"}'
        # LangChain's BedrockRerank, unchanged, with pgkb's client.
        from langchain_aws.document_compressors.rerank import BedrockRerank
        from langchain_core.documents import Document

        lc = BedrockRerank(client=rt, model_arn=ARN, top_n=2)
        kept = lc.compress_documents([Document(page_content=h.text) for h in HITS], "dogs play")
        assert [d.page_content for d in kept] == ["dogs and cats play", "cats sleep all day"]
        assert kept[0].metadata["relevance_score"] == pytest.approx(0.2)
        with pytest.raises(rt.exceptions.ValidationException, match="numberOfResults"):
            rt.rerank(queries=[{"type": "TEXT", "textQuery": {"text": "q"}}], sources=sources,
                      rerankingConfiguration={**conf, "bedrockRerankingConfiguration": {
                          "modelConfiguration": {"modelArn": ARN}, "numberOfResults": 5000}})
        monkeypatch.delenv("PGKB_RERANKERS")
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "PGKB_BEDROCK_RERANK_ENDPOINT_URL"):
            monkeypatch.delenv(k, raising=False)
        with pytest.raises(rt.exceptions.ValidationException, match="not usable"):
            rt.rerank(queries=[{"type": "TEXT", "textQuery": {"text": "q"}}], sources=sources,
                      rerankingConfiguration=conf)
