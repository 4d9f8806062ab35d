"""InvokeModel body codec (Titan and Cohere shapes) over the real local model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pgkb.embeddings import DEFAULT_MODEL_ID, get_model
from pgkb.embeddings.invoke import embed_texts_batch, invoke
from pgkb.errors import ModelNotAvailableError, ValidationError

M = DEFAULT_MODEL_ID


@pytest.fixture(scope="module")
def model():
    return get_model(M)


def call(body: object, model_id: str = M, **kw) -> dict:
    raw = body if isinstance(body, (bytes, str)) else json.dumps(body)
    out, ctype = invoke(model_id, raw, **kw)
    assert ctype == "application/json"
    return json.loads(out)


def test_titan_body_on_local_model(model) -> None:
    out = call({"inputText": "Hello pgvector"})
    assert set(out) == {"embedding", "inputTextTokenCount"}
    assert len(out["embedding"]) == 384
    np.testing.assert_allclose(out["embedding"], model.embed_documents(["Hello pgvector"])[0], atol=1e-6)
    assert out["inputTextTokenCount"] == model.tokenizer.count(["Hello pgvector"])[0]
    arn = "arn:aws:bedrock:us-east-1::foundation-model/" + M
    assert call({"inputText": "Hello pgvector"}, arn)["embedding"] == out["embedding"]


def test_titan_v2_options(model) -> None:
    out = call({"inputText": "abc def", "dimensions": 384, "normalize": True, "embeddingTypes": ["float", "binary"]})
    by = out["embeddingsByType"]
    assert by["float"] == out["embedding"]
    assert by["binary"] == [1 if v > 0 else 0 for v in out["embedding"]]


def test_titan_body_longer_than_the_window_embeds_its_first_tokens(model) -> None:
    """As sentence-transformers does: the vector is the first 254 word pieces' (256 with [CLS]/[SEP]);
    inputTextTokenCount counts the whole input."""
    long = "token " * 150 + "database " * 150
    out = call({"inputText": long})
    assert out["inputTextTokenCount"] == model.tokenizer.count([long])[0] > 254
    head = long[: model.tokenizer.offsets(long)[253][1]]
    np.testing.assert_allclose(out["embedding"], model.embed_documents([head])[0], atol=1e-5)
    assert not np.allclose(out["embedding"], model.embed_documents(["database " * 150])[0], atol=1e-3)


def test_cohere_truncate_none_asks_for_the_error(model) -> None:
    with pytest.raises(ValidationError, match="Too many input tokens: texts.0. has 3.. tokens"):
        call({"texts": ["token " * 300], "input_type": "search_document", "truncate": "NONE"})


def test_cohere_body_on_local_model(model) -> None:
    texts = ["first text", "second, longer text about databases"]
    out = call({"texts": texts, "input_type": "search_document"})
    assert out["response_type"] == "embeddings_floats" and out["texts"] == texts and out["id"]
    np.testing.assert_allclose(out["embeddings"], model.embed_documents(texts), atol=1e-6)
    q = call({"texts": ["q"], "input_type": "search_query"})
    np.testing.assert_allclose(q["embeddings"][0], model.embed_queries(["q"])[0], atol=1e-6)


def test_cohere_embedding_types(model) -> None:
    out = call({"texts": ["a b c", "d"], "input_type": "clustering",
                "embedding_types": ["float", "int8", "uint8", "binary", "ubinary"]})
    assert out["response_type"] == "embeddings_by_type"
    e = out["embeddings"]
    f = np.asarray(e["float"])
    assert f.shape == (2, 384)
    i8 = np.asarray(e["int8"])
    assert i8.shape == (2, 384) and i8.min() >= -127 and i8.max() <= 127
    assert np.array_equal(np.sign(i8[np.abs(f) > 0.02]), np.sign(f[np.abs(f) > 0.02]))
    assert np.array_equal(np.asarray(e["uint8"]), i8 + 128)
    ub = np.asarray(e["ubinary"])
    assert ub.shape == (2, 48) and ub.min() >= 0 and ub.max() <= 255
    assert np.array_equal(np.unpackbits(ub.astype(np.uint8), axis=1), (f > 0).astype(np.uint8))
    assert np.array_equal(np.asarray(e["binary"]), ub - 128)


def test_cohere_truncation(model) -> None:
    long = " ".join(f"w{i}" for i in range(300))
    with pytest.raises(ValidationError, match="truncate"):
        invoke(M, json.dumps({"texts": [long], "input_type": "search_document", "truncate": "NONE"}))
    end = call({"texts": [long], "input_type": "search_document"})["embeddings"][0]
    np.testing.assert_allclose(end, model.embed_documents([long])[0], atol=1e-5)  # the model truncates the end
    start = np.asarray(call({"texts": [long], "input_type": "search_document", "truncate": "START"})["embeddings"][0])
    limit = 256 - model.tokenizer.num_special_tokens
    offs = model.tokenizer.offsets(long)
    tail = long[offs[len(offs) - limit][0]:]
    np.testing.assert_allclose(start, model.embed_documents([tail])[0], atol=1e-5)
    assert float(start @ np.asarray(end)) < 0.999


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"{not json", "not valid JSON"),
        ([1, 2], "JSON object"),
        ({"prompt": "x"}, r"required key \[inputText\]"),
        ({"inputText": 5}, r"\[inputText\] expected type: String"),
        ({"inputText": ""}, "minLength"),
        ({"inputText": "x", "dimensions": 512}, r"\[dimensions\] 512"),
        ({"inputText": "x", "dimensions": "384"}, "Integer"),
        ({"inputText": "x", "normalize": "yes"}, "Boolean"),
        ({"inputText": "x", "embeddingTypes": ["int4"]}, "embeddingTypes"),
        ({"inputText": "x", "temperature": 1}, r"extraneous key \[temperature\]"),
        ({"texts": ["x"]}, r"required key \[input_type\]"),
        ({"input_type": "search_query"}, r"required key \[texts\]"),
        ({"texts": "x", "input_type": "search_query"}, "array of String"),
        ({"texts": [], "input_type": "search_query"}, "between 1 and 96"),
        ({"texts": ["x"] * 97, "input_type": "search_query"}, "between 1 and 96"),
        ({"texts": ["x" * 2049], "input_type": "search_query"}, "maxLength: 2048"),
        ({"texts": ["x"], "input_type": "chat"}, "input_type"),
        ({"texts": ["x"], "input_type": "search_query", "truncate": "MIDDLE"}, "truncate"),
        ({"texts": ["x"], "input_type": "search_query", "embedding_types": ["int4"]}, "embedding_types"),
    ],
)
def test_malformed_bodies(model, body, match) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body)
    with pytest.raises(ValidationError, match=match):
        invoke(M, raw)


def test_media_types_and_unknown_model(model) -> None:
    with pytest.raises(ValidationError, match="Content type"):
        invoke(M, b'{"inputText": "x"}', "text/plain")
    with pytest.raises(ValidationError, match="Accept type"):
        invoke(M, b'{"inputText": "x"}', "application/json", "image/png")
    assert call({"inputText": "x"}, content_type="application/json; charset=utf-8", accept="*/*")["embedding"]
    with pytest.raises(ModelNotAvailableError, match="Known models"):
        invoke("acme.embed-9000", b'{"inputText": "x"}')


def test_embed_texts_batch(model) -> None:
    texts = ["one", "two two", "three three three"]
    out = embed_texts_batch(M, texts)
    assert out.shape == (3, 384) and out.dtype == np.float32
    np.testing.assert_allclose(out, model.embed_documents(texts), atol=1e-6)
