"""Bedrock and OpenAI-compatible providers against real local HTTP servers started by the tests."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

import numpy as np
import pytest

from pgkb.embeddings import get_model, get_spec, list_specs
from pgkb.embeddings.registry import clear_cache
from pgkb.errors import DependencyFailedError, ModelNotAvailableError, ValidationError


def fake_vector(text: str, dims: int) -> list[float]:
    """Deterministic, text-dependent, not normalised (the provider must normalise)."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    return (np.random.default_rng(seed).standard_normal(dims) * 3).round(6).tolist()


def expected(text: str, dims: int) -> np.ndarray:
    v = np.asarray(fake_vector(text, dims), dtype=np.float32)
    return v / np.linalg.norm(v)


class Recorder:
    def __init__(self) -> None:
        self.requests: list[tuple[str, dict, dict]] = []


def serve(handler_body) -> Iterator[tuple[str, Recorder]]:
    rec = Recorder()

    class H(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            rec.requests.append((unquote(self.path), dict(self.headers), body))
            status, out = handler_body(unquote(self.path), body)
            data = json.dumps(out).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *a) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", rec
    finally:
        srv.shutdown()
        srv.server_close()


def bedrock_body(path: str, body: dict) -> tuple[int, dict]:
    model_id = path.split("/")[2]
    if "fail" in json.dumps(body):
        return 400, {"message": "Malformed input request: bad text"}
    if model_id.startswith("cohere."):
        return 200, {"id": "x", "response_type": "embeddings_floats", "texts": body["texts"],
                     "embeddings": [fake_vector(body["input_type"] + t, 1024) for t in body["texts"]]}
    dims = body.get("dimensions", 1536 if model_id.endswith("v1") else 1024)
    return 200, {"embedding": fake_vector(body["inputText"], dims), "inputTextTokenCount": 3}


@pytest.fixture
def no_aws(monkeypatch, tmp_path):
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
              "PGKB_BEDROCK_ENDPOINT_URL"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    clear_cache()
    yield
    clear_cache()


@pytest.fixture
def bedrock_server(no_aws, monkeypatch):
    gen = serve(bedrock_body)
    url, rec = next(gen)
    monkeypatch.setenv("PGKB_BEDROCK_ENDPOINT_URL", url)
    yield rec
    next(gen, None)


def test_bedrock_without_aws_is_refused(no_aws) -> None:
    with pytest.raises(ModelNotAvailableError) as ei:
        get_model("amazon.titan-embed-text-v2:0")
    msg = str(ei.value)
    assert "requires AWS credentials" in msg and "sentence-transformers.all-minilm-l6-v2" in msg


def test_bedrock_titan_v2(bedrock_server) -> None:
    m = get_model("amazon.titan-embed-text-v2:0", dimensions=256)
    texts = ["alpha", "beta gamma", "delta"]
    vecs = m.embed_documents(texts)
    assert vecs.shape == (3, 256) and vecs.dtype == np.float32
    np.testing.assert_allclose(vecs, np.vstack([expected(t, 256) for t in texts]), atol=1e-5)
    paths = {p for p, _, _ in bedrock_server.requests}
    assert paths == {"/model/amazon.titan-embed-text-v2:0/invoke"}
    bodies = sorted((b for _, _, b in bedrock_server.requests), key=lambda b: b["inputText"])
    assert bodies[0] == {"inputText": "alpha", "dimensions": 256, "normalize": True}


def test_bedrock_titan_v1_and_cohere(bedrock_server) -> None:
    v1 = get_model("arn:aws:bedrock:us-east-1::foundation-model/amazon.titan-embed-text-v1")
    np.testing.assert_allclose(v1.embed_queries(["hello"])[0], expected("hello", 1536), atol=1e-5)
    assert bedrock_server.requests[-1][2] == {"inputText": "hello"}

    co = get_model("cohere.embed-english-v3")
    texts = [f"text {i}" for i in range(100)]  # more than Cohere's 96 per request
    docs = co.embed_documents(texts)
    assert docs.shape == (100, 1024)
    np.testing.assert_allclose(docs[99], expected("search_documenttext 99", 1024), atol=1e-5)
    cohere_bodies = [b for p, _, b in bedrock_server.requests if "cohere" in p]
    assert [len(b["texts"]) for b in cohere_bodies] == [96, 4]
    assert cohere_bodies[0]["input_type"] == "search_document"
    q = co.embed_queries(["what is it"])
    np.testing.assert_allclose(q[0], expected("search_querywhat is it", 1024), atol=1e-5)


def test_bedrock_errors_are_typed(bedrock_server) -> None:
    m = get_model("amazon.titan-embed-text-v1")
    with pytest.raises((ValidationError, DependencyFailedError)) as ei:
        m.embed_documents(["please fail"])
    assert "Malformed input request" in str(ei.value)


def openai_body(path: str, body: dict) -> tuple[int, dict]:
    if path != "/v1/embeddings":
        return 404, {"error": "no such path"}
    return 200, {"object": "list", "model": body["model"],
                 "data": [{"object": "embedding", "index": i, "embedding": fake_vector(t, 8)}
                          for i, t in reversed(list(enumerate(body["input"])))]}


@pytest.fixture
def openai_server(monkeypatch):
    gen = serve(openai_body)
    url, rec = next(gen)
    monkeypatch.setenv("MY_KEY", "sk-test")
    monkeypatch.setenv("PGKB_OPENAI_EMBEDDINGS", json.dumps([
        {"id": "openai.tiny", "base_url": url + "/v1", "model": "tiny-embed", "dimensions": 8,
         "api_key_env": "MY_KEY", "batch_size": 2},
        {"id": "openai.keyless", "base_url": url + "/v1", "model": "tiny-embed", "dimensions": 8,
         "api_key_env": "UNSET_KEY_VAR"},
    ]))
    monkeypatch.delenv("UNSET_KEY_VAR", raising=False)
    clear_cache()
    yield rec
    clear_cache()
    next(gen, None)


def test_openai_compatible(openai_server) -> None:
    assert "openai.tiny" in {s.id for s in list_specs()}
    spec = get_spec("openai.tiny")
    assert (spec.provider, spec.dimensions) == ("openai", 8)
    m = get_model("openai.tiny")
    texts = ["one", "two", "three"]
    vecs = m.embed_documents(texts)
    np.testing.assert_allclose(vecs, np.vstack([expected(t, 8) for t in texts]), atol=1e-5)
    assert [b["input"] for _, _, b in openai_server.requests] == [["one", "two"], ["three"]]
    path, headers, body = openai_server.requests[0]
    assert path == "/v1/embeddings" and body["model"] == "tiny-embed"
    assert headers["Authorization"] == "Bearer sk-test"
    with pytest.raises(ModelNotAvailableError, match="UNSET_KEY_VAR"):
        get_model("openai.keyless")


def test_openai_bad_config(monkeypatch) -> None:
    monkeypatch.setenv("PGKB_OPENAI_EMBEDDINGS", '[{"id": "x"}]')
    with pytest.raises(ValidationError, match="PGKB_OPENAI_EMBEDDINGS"):
        list_specs()


def test_builtin_models_are_found_again_without_gathering_every_spec(bedrock_server, monkeypatch) -> None:
    """Every Retrieve asks for its model: a built-in one, once loaded, is returned without get_spec
    (which gathers every provider's specs and reads the configuration each time); clear_cache forgets it."""
    from pgkb.embeddings import registry

    asked: list[str] = []
    real = registry.get_spec

    def counting(model_id: str):
        asked.append(model_id)
        return real(model_id)

    monkeypatch.setattr(registry, "get_spec", counting)
    arn = "arn:aws:bedrock:us-east-1::foundation-model/amazon.titan-embed-text-v2:0"
    model = get_model(arn, 256)
    assert get_model(arn, 256) is model and get_model("amazon.titan-embed-text-v2:0", 256) is model
    assert asked == [arn, "amazon.titan-embed-text-v2:0"]  # each spelling looked up once
    with pytest.raises(ValidationError, match="dimensions"):
        get_model(arn, 7)
    clear_cache()
    assert get_model(arn, 256) is not model and asked[-1] == arn


def test_configured_models_are_looked_up_each_time(openai_server, monkeypatch) -> None:
    """A model from PGKB_OPENAI_EMBEDDINGS follows the configuration: removed, it is refused."""
    model = get_model("openai.tiny")
    assert get_model("openai.tiny") is model
    monkeypatch.setenv("PGKB_OPENAI_EMBEDDINGS", "[]")
    with pytest.raises(ModelNotAvailableError, match="openai.tiny"):
        get_model("openai.tiny")
