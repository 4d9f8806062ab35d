"""Model registry and the reference local backend (real all-MiniLM-L6-v2 weights, offline)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from pgkb.embeddings import REFERENCE_MODEL_ID, get_model, get_spec, list_specs, model_arn, model_id_from_arn
from pgkb.errors import ModelNotAvailableError, ValidationError

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "PostgreSQL is an object-relational database.",
    "x",
    "Embeddings map text to vectors; similar texts land close together. " * 3,
]


@pytest.fixture(scope="module")
def model():
    return get_model(REFERENCE_MODEL_ID)


def test_specs_registered() -> None:
    ids = {s.id for s in list_specs()}
    assert {
        REFERENCE_MODEL_ID,
        "amazon.titan-embed-text-v1",
        "amazon.titan-embed-text-v2:0",
        "cohere.embed-english-v3",
        "cohere.embed-multilingual-v3",
    } <= ids
    v2 = get_spec("amazon.titan-embed-text-v2:0")
    assert (v2.provider, v2.dimensions, v2.allowed_dimensions, v2.max_input_tokens) == (
        "bedrock", 1024, (256, 512, 1024), 8192)
    assert get_spec("amazon.titan-embed-text-v1").dimensions == 1536
    assert get_spec("cohere.embed-english-v3").max_input_tokens == 512
    local = get_spec(REFERENCE_MODEL_ID)
    assert (local.provider, local.dimensions, local.max_input_tokens) == ("local", 384, 256)


def test_arns() -> None:
    arn = "arn:aws:bedrock:eu-west-1::foundation-model/amazon.titan-embed-text-v2:0"
    assert model_id_from_arn(arn) == "amazon.titan-embed-text-v2:0"
    assert get_spec(arn).id == "amazon.titan-embed-text-v2:0"
    assert model_id_from_arn("cohere.embed-english-v3") == "cohere.embed-english-v3"
    assert model_arn("amazon.titan-embed-text-v1", "us-west-2") == (
        "arn:aws:bedrock:us-west-2::foundation-model/amazon.titan-embed-text-v1")
    assert model_arn(arn, "us-east-1").endswith("foundation-model/amazon.titan-embed-text-v2:0")
    with pytest.raises(ValidationError, match="Invalid model ARN"):
        model_id_from_arn("arn:aws:s3:::bucket")


def test_unknown_model_names_known_ids() -> None:
    with pytest.raises(ModelNotAvailableError) as ei:
        get_spec("acme.embed-9000")
    assert "acme.embed-9000" in str(ei.value) and REFERENCE_MODEL_ID in str(ei.value)
    assert isinstance(ei.value, ValidationError)
    with pytest.raises(ModelNotAvailableError):
        get_model("arn:aws:bedrock:us-east-1::foundation-model/acme.embed-9000")


def test_bad_dimensions() -> None:
    with pytest.raises(ValidationError, match="256, 512, 1024"):
        get_model("amazon.titan-embed-text-v2:0", dimensions=300)
    with pytest.raises(ValidationError, match="384"):
        get_model(REFERENCE_MODEL_ID, dimensions=512)


def test_model_cached_per_process(model) -> None:
    assert get_model(REFERENCE_MODEL_ID) is model
    assert get_model(REFERENCE_MODEL_ID, dimensions=384) is model
    assert get_model("arn:aws:bedrock:us-east-1::foundation-model/" + REFERENCE_MODEL_ID) is model


def test_local_vectors(model) -> None:
    vecs = model.embed_documents(TEXTS)
    assert vecs.shape == (4, 384) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    # Length sorting inside the call must not reorder the results.
    singles = np.vstack([model.embed_documents([t]) for t in TEXTS])
    np.testing.assert_allclose(vecs, singles, atol=1e-5)
    # Matches the reference sentence-transformers pipeline.
    ref = model._st.encode(TEXTS, normalize_embeddings=True)
    np.testing.assert_allclose(vecs, ref, atol=1e-5)
    np.testing.assert_allclose(model.embed_queries(TEXTS[:2]), vecs[:2], atol=1e-5)
    # Meaning, not just shape: related sentences are closer than unrelated ones.
    a, b, c = model.embed_queries(["a cat sat on the mat", "a kitten rests on a rug", "quarterly tax filing"])
    assert a @ b > a @ c + 0.2
    assert model.embed_documents([]).shape == (0, 384)


def test_local_truncates_like_reference(model) -> None:
    long = " ".join(f"word{i}" for i in range(400))
    tok = model.tokenizer
    assert tok.count([long])[0] > 256
    # The model sees 256 pieces including [CLS] and [SEP]: cut the text after 254 content tokens.
    end = tok.offsets(long)[256 - tok.num_special_tokens - 1][1]
    np.testing.assert_allclose(model.embed_documents([long]), model.embed_documents([long[:end]]), atol=1e-5)


def test_tokenizer_offsets_and_counts(model) -> None:
    tok = model.tokenizer
    text = "Héllo, wörld! Tokenizers split unbelievably long words."
    offs = tok.offsets(text)
    assert len(offs) == tok.count([text])[0] > 8
    assert all(0 <= s < e <= len(text) for s, e in offs)
    assert [s for s, _ in offs] == sorted(s for s, _ in offs)
    assert text[offs[0][0] : offs[0][1]] == "Héllo"
    assert tok.count(["", "one two"]) == [0, 2]
    assert tok.offsets("") == []


def test_concurrent_calls_are_safe(model) -> None:
    expected = model.embed_documents(TEXTS)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: model.embed_documents(TEXTS), range(8)))
    for r in results:
        np.testing.assert_allclose(r, expected, atol=1e-5)
