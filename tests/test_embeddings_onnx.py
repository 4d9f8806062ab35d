"""ONNX Runtime backend: exported from the packaged weights, cached, matches the torch reference."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import corpus
import numpy as np
import pytest

from pgkb.embeddings import REFERENCE_MODEL_ID, get_model, get_spec
from pgkb.embeddings.base import minilm_dir
from pgkb.embeddings.onnx import FILES, GRAPH_PREFIX, OnnxModel, graph_dir, source_checksum
from pgkb.embeddings.registry import clear_cache

pytest.importorskip("onnxruntime")

FP32 = "sentence-transformers.all-minilm-l6-v2-onnx"
INT8 = "sentence-transformers.all-minilm-l6-v2-onnx-int8"
UNBATCHED = "sentence-transformers.all-minilm-l6-v2-onnx-int8-unbatched"
IDS = {"fp32": FP32, "int8": INT8, "int8-unbatched": UNBATCHED}


def sample_texts(n: int = 40) -> list[str]:
    texts = corpus.paragraphs(600)[::15][:n]  # spread over the corpus
    return texts + ["x", "short query about water", "word " * 400]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("onnx-data")


@pytest.fixture(scope="module")
def models(data_dir):
    return {v: OnnxModel(get_spec(mid), 384, data_dir=data_dir) for v, mid in IDS.items()}


@pytest.fixture(scope="module")
def reference():
    return get_model(REFERENCE_MODEL_ID)


@pytest.fixture(scope="module")
def sample(reference) -> tuple[list[str], np.ndarray]:
    texts = sample_texts()
    return texts, reference.embed_documents(texts)


def test_export_cached_by_checksum(models, data_dir) -> None:
    d = graph_dir(data_dir)
    assert d.name == GRAPH_PREFIX + source_checksum(minilm_dir())
    assert {p.name for p in d.iterdir()} >= {*FILES.values(), "tokenizer.json"}
    # int8 weights are about a quarter of fp32.
    assert (d / FILES["int8"]).stat().st_size < 0.4 * (d / FILES["fp32"]).stat().st_size


def test_fp32_matches_reference(models, sample) -> None:
    texts, ref = sample
    vecs = models["fp32"].embed_documents(texts)
    assert vecs.shape == ref.shape and vecs.dtype == np.float32
    cos = (vecs * ref).sum(axis=1)
    assert cos.min() >= 0.999, cos.min()
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    # Single texts (query path, no padding) agree with the batched path.
    np.testing.assert_allclose(models["fp32"].embed_queries([texts[3]])[0], vecs[3], atol=1e-5)
    assert models["fp32"].embed_documents([]).shape == (0, 384)


def test_int8_close_to_reference(models, sample) -> None:
    texts, ref = sample
    cos = (models["int8"].embed_documents(texts) * ref).sum(axis=1)
    assert cos.mean() >= 0.99 and cos.min() >= 0.97, (cos.mean(), cos.min())


def test_unbatched_int8_close_to_reference(models, sample) -> None:
    texts, ref = sample
    cos = (models["int8-unbatched"].embed_documents(texts) * ref).sum(axis=1)
    assert cos.mean() >= 0.99 and cos.min() >= 0.97, (cos.mean(), cos.min())
    # Same graph file as int8, only run differently.
    assert models["int8-unbatched"].path == models["int8"].path


def test_a_texts_vector_does_not_depend_on_its_batch(models, sample) -> None:
    """int8's activation scales are per session run: the unbatched id runs one text per run."""
    texts, _ = sample
    unbatched, int8 = models["int8-unbatched"], models["int8"]
    together = unbatched.embed_documents(texts)
    np.testing.assert_array_equal(unbatched.embed_documents(texts[::-1])[::-1], together)
    np.testing.assert_array_equal(unbatched.embed_documents(texts[3:9]), together[3:9])
    # Documents and queries alike, and the same as the batched id gives a text run on its own.
    np.testing.assert_array_equal(unbatched.embed_queries([texts[5]])[0], together[5])
    np.testing.assert_array_equal(int8.embed_documents([texts[5]])[0], together[5])
    # What the option fixes: the batched int8 id gives a text different vectors in different batches.
    assert np.abs(int8.embed_documents(texts[:10]) - int8.embed_documents(texts)[:10]).max() > 1e-3


def test_unbatched_concurrent_callers(models, sample) -> None:
    """Callers share the per-core sessions of the parallel path (and the query session) safely."""
    from concurrent.futures import ThreadPoolExecutor

    texts, _ = sample
    model = models["int8-unbatched"]
    expected = model.embed_documents(texts)
    with ThreadPoolExecutor(3) as pool:
        docs = list(pool.map(lambda i: model.embed_documents(texts[i:]), range(6)))
        one = list(pool.map(lambda t: model.embed_queries([t])[0], texts[:6]))
    for i, got in enumerate(docs):
        np.testing.assert_array_equal(got, expected[i:])
    np.testing.assert_array_equal(np.stack(one), expected[:6])


def test_one_text_runs_on_a_single_threaded_session_in_the_callers_thread(models, sample) -> None:
    """A query alone is not split over the shared session's threads: it runs on an idle
    single-threaded session in the calling thread (at most model_threads() of them, reused), with
    the vector the shared session gives it."""
    import threading

    from pgkb.embeddings.base import model_threads

    texts, _ = sample
    model = models["int8-unbatched"]
    shared = np.stack([model._run([e])[0] for e in model.tokenizer.model_input.encode_batch(texts[:4])])
    callers: set[str] = set()
    real = model._run_one

    def recording(session, encoding):
        callers.add(threading.current_thread().name)
        assert session.get_session_options().intra_op_num_threads == 1
        return real(session, encoding)

    model._run_one = recording  # type: ignore[method-assign]
    try:
        got = np.stack([model.embed_queries([t])[0] for t in texts[:4]])
    finally:
        del model._run_one
    np.testing.assert_array_equal(got, shared)
    assert callers == {threading.current_thread().name}
    assert 1 <= model._solo_made <= model_threads() and len(model._solo) == model._solo_made


def test_tokenizer_shared_with_reference(models, reference) -> None:
    text = "Tokenizers split unbelievably long words, don't they?"
    assert models["fp32"].tokenizer.offsets(text) == reference.tokenizer.offsets(text)


def test_registry_uses_data_dir(models, data_dir, monkeypatch) -> None:
    monkeypatch.setenv("PGKB_DATA_DIR", str(data_dir))
    clear_cache()
    try:
        m = get_model(FP32)
        assert m.path == graph_dir(data_dir) / FILES["fp32"]
        assert get_model(FP32) is m
    finally:
        clear_cache()


RUN_WITHOUT_TORCH = """
import json, sys
for name in ("torch", "transformers", "sentence_transformers"):
    sys.modules[name] = None  # any import of these now fails
from pgkb.embeddings import get_model
v = get_model(sys.argv[1]).embed_documents(["runs without torch"])
assert "torch" not in sys.modules or sys.modules["torch"] is None
print(json.dumps(v[0].tolist()))
"""


@pytest.mark.parametrize("variant", list(IDS))
def test_runs_without_torch(models, data_dir, variant) -> None:
    env = dict(os.environ, PGKB_DATA_DIR=str(data_dir))
    mid = IDS[variant]
    out = subprocess.run([sys.executable, "-c", RUN_WITHOUT_TORCH, mid], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    vec = np.asarray(json.loads(out.stdout.strip().splitlines()[-1]), dtype=np.float32)
    np.testing.assert_allclose(vec, models[variant].embed_documents(["runs without torch"])[0], atol=1e-5)


def test_without_torch_and_without_graph_is_a_clear_error(tmp_path) -> None:
    env = dict(os.environ, PGKB_DATA_DIR=str(tmp_path / "empty"))
    code = RUN_WITHOUT_TORCH.replace("print(json.dumps(v[0].tolist()))", "")
    code = code.replace("v = get_model", "from pgkb.errors import ModelNotAvailableError\ntry:\n    get_model")
    code = code.replace('.embed_documents(["runs without torch"])',
                        '\nexcept ModelNotAvailableError as e:\n    print("ERR", e)')
    out = subprocess.run([sys.executable, "-c", code, FP32], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ERR" in out.stdout and "torch" in out.stdout


def test_deleted_cache_is_reexported(models, data_dir) -> None:
    """Runs last in this file: it removes the module's cache and expects it to come back."""
    before = models["fp32"].embed_documents(["the cache was here"])
    shutil.rmtree(data_dir / "models")
    again = OnnxModel(get_spec(FP32), 384, data_dir=data_dir)
    assert again.path.exists() and again.path == models["fp32"].path
    np.testing.assert_allclose(again.embed_documents(["the cache was here"]), before, atol=1e-6)


def test_fusion_recipes_keep_the_model(models, sample, tmp_path) -> None:
    """The BERT-fusion recipes (candidates measured by bench/bench_onnx_variants.py) rewrite the graph
    into fused operators: fp32 stays numerically the model, fused int8 stays close to the reference."""
    from pgkb.embeddings.onnx import Quantization, Recipe, derive

    texts, ref = sample
    fp32 = models["fp32"].path
    fused, fused_int8 = tmp_path / "fused.onnx", tmp_path / "fused-int8.onnx"
    derive(fp32, fused, Recipe(fuse=True))
    derive(fp32, fused_int8, Recipe(fuse=True, quantization=Quantization()))
    shutil.copyfile(fp32.parent / "tokenizer.json", tmp_path / "tokenizer.json")  # a graph's tokenizer sits beside it
    import onnx

    ops = {n.op_type for n in onnx.load(str(fused)).graph.node}
    assert ops & {"Attention", "SkipLayerNormalization", "EmbedLayerNormalization"}, ops
    spec = get_spec(FP32)
    vecs = OnnxModel(spec, 384, path=fused).embed_documents(texts)
    np.testing.assert_allclose(vecs, models["fp32"].embed_documents(texts), atol=2e-4)
    cos = (OnnxModel(spec, 384, path=fused_int8).embed_documents(texts) * ref).sum(axis=1)
    assert cos.mean() >= 0.99 and cos.min() >= 0.96, (cos.mean(), cos.min())
    assert not list(tmp_path.glob("*.tmp"))  # intermediate graphs are cleaned up
