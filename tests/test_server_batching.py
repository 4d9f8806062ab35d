"""Micro-batching of concurrent query embeddings."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from pgkb.server.batching import MicroBatcher, batched


def test_concurrent_callers_share_model_calls() -> None:
    sizes: list[int] = []
    n = 32
    batcher: MicroBatcher

    def fn(texts: list[str]) -> np.ndarray:
        sizes.append(len(texts))
        if len(sizes) == 1:  # hold the first batch until everyone else has queued
            deadline = time.monotonic() + 10
            while batcher._queue.qsize() < n - sizes[0] and time.monotonic() < deadline:
                time.sleep(0.001)
        return np.array([[float(t)] for t in texts], dtype=np.float32)

    batcher = MicroBatcher(fn, max_items=64)
    with ThreadPoolExecutor(n) as pool:
        results = list(pool.map(lambda i: batcher([str(i)]), range(n)))
    assert [r[0, 0] for r in results] == [float(i) for i in range(n)]  # every caller got its own row
    assert len(sizes) == 2 and sum(sizes) == n  # 32 calls, 2 model calls


def test_batches_respect_max_items_and_multi_text_requests() -> None:
    sizes: list[int] = []
    gate = threading.Event()

    def fn(texts: list[str]) -> np.ndarray:
        sizes.append(len(texts))
        gate.wait(5)
        return np.array([[float(len(t))] for t in texts], dtype=np.float32)

    batcher = MicroBatcher(fn, max_items=4)
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(batcher, ["a" * (i + 1), "b" * (i + 1)]) for i in range(6)]
        time.sleep(0.2)
        gate.set()
        out = [f.result() for f in futures]
    for i, r in enumerate(out):
        assert r[:, 0].tolist() == [i + 1, i + 1]
    assert max(sizes) <= 4 and sum(sizes) == 12


def test_model_errors_reach_every_waiter() -> None:
    def fn(texts: list[str]) -> np.ndarray:
        raise ValueError("model broke")

    batcher = MicroBatcher(fn)
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(batcher, ["x"]) for _ in range(4)]
        for f in futures:
            with pytest.raises(ValueError, match="model broke"):
                f.result()
    with pytest.raises(ValueError):  # the worker survives and keeps answering
        batcher(["y"])


def test_real_model_rows_match_unbatched() -> None:
    from pgkb.embeddings import get_model

    model = get_model("sentence-transformers.all-minilm-l6-v2")
    proxy = batched(model)
    assert batched(model) is proxy and proxy.dimensions == model.dimensions
    queries = [f"what is the capital of country number {i}?" for i in range(24)]
    with ThreadPoolExecutor(12) as pool:
        got = list(pool.map(lambda q: proxy.embed_queries([q])[0], queries))
    want = model.embed_queries(queries)
    assert np.allclose(np.stack(got), want, atol=1e-4)


def _held_batcher(fn: Any, n: int) -> MicroBatcher:
    """A batcher whose first model call waits until `n` - 1 more requests have queued, so the
    rest meet in one shared batch."""
    seen: list[int] = []
    batcher: MicroBatcher

    def held(texts: list[str]) -> np.ndarray:
        seen.append(len(texts))
        if len(seen) == 1:
            deadline = time.monotonic() + 10
            while batcher._queue.qsize() < n - 1 and time.monotonic() < deadline:
                time.sleep(0.001)
        return fn(texts)

    batcher = MicroBatcher(held, max_items=64)
    return batcher


def test_one_bad_input_fails_only_its_own_request() -> None:
    def fn(texts: list[str]) -> np.ndarray:
        if any(t.startswith("bad") for t in texts):
            raise ValueError("this input breaks the model")
        return np.array([[float(len(t))] for t in texts], dtype=np.float32)

    n = 24
    batcher = _held_batcher(fn, n)
    texts = [("bad" if i % 5 == 1 else "good") + "x" * i for i in range(n)]
    with ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(batcher, [t]) for t in texts]
        for t, f in zip(texts, futures, strict=True):
            if t.startswith("bad"):
                with pytest.raises(ValueError, match="breaks the model"):
                    f.result()
            else:
                assert f.result()[0, 0] == len(t)
    assert batcher.isolations >= 1  # the shared batch did fail, and was split


def test_real_tokenizer_refusal_is_isolated() -> None:
    """A lone surrogate makes the real tokenizer raise; the queries batched with it still get
    the same vectors they get alone."""
    from pgkb.embeddings import get_model

    model = get_model("sentence-transformers.all-minilm-l6-v2")
    n = 12
    batcher = _held_batcher(model.embed_queries, n)
    texts = [f"bad \ud800 query {i}" if i % 4 == 2 else f"where do penguins live? {i}" for i in range(n)]
    with ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(batcher, [t]) for t in texts]
        got = {}
        for t, f in zip(texts, futures, strict=True):
            if "\ud800" in t:
                with pytest.raises(Exception):  # noqa: B017 - whatever the tokenizer raises
                    f.result()
            else:
                got[t] = f.result()[0]
    want = model.embed_queries(list(got))
    assert np.allclose(np.stack(list(got.values())), want, atol=1e-4)
    assert batcher.isolations >= 1


def test_a_lone_request_runs_in_its_own_thread() -> None:
    """The model idle and nobody queued: the caller runs the model itself (no hand-off to the worker)."""
    threads: list[str] = []

    def fn(texts: list[str]) -> np.ndarray:
        threads.append(threading.current_thread().name)
        return np.array([[float(len(t))] for t in texts], dtype=np.float32)

    batcher = MicroBatcher(fn)
    with ThreadPoolExecutor(1, thread_name_prefix="caller") as pool:
        for text in ("one", "three"):
            assert pool.submit(batcher, [text]).result()[0, 0] == len(text)
    assert threads == ["caller_0", "caller_0"] and batcher.inline == 2 and batcher.batches == 2


def test_requests_arriving_during_a_lone_call_batch_after_it() -> None:
    """While a lone caller runs the model, others queue; the worker runs them as one batch once the
    model is free, never alongside the running call."""
    sizes: list[tuple[str, int]] = []
    running = threading.Event()
    release = threading.Event()
    active = []

    def fn(texts: list[str]) -> np.ndarray:
        active.append(1)
        assert len(active) == 1, "two model calls at once"
        sizes.append((threading.current_thread().name, len(texts)))
        if len(sizes) == 1:
            running.set()
            release.wait(10)
        active.pop()
        return np.array([[float(len(t))] for t in texts], dtype=np.float32)

    batcher = MicroBatcher(fn, name="t")
    with ThreadPoolExecutor(8, thread_name_prefix="caller") as pool:
        first = pool.submit(batcher, ["lone"])
        assert running.wait(10)
        rest = [pool.submit(batcher, ["x" * (i + 1)]) for i in range(6)]
        deadline = time.monotonic() + 10
        while batcher._queue.qsize() < 6 and time.monotonic() < deadline:
            time.sleep(0.001)
        release.set()
        assert first.result()[0, 0] == 4
        assert [f.result()[0, 0] for f in rest] == [float(i + 1) for i in range(6)]
    assert sizes[0] == ("caller_0", 1)
    assert sizes[1:] == [("pgkb-batch-t", 6)]
    assert batcher.inline == 1 and batcher.batches == 2 and batcher.items == 7


def test_inline_and_batched_rows_are_the_same() -> None:
    """A query embedded alone by its caller and the same query in a shared batch get the same vector."""
    from pgkb.embeddings import get_model

    model = get_model("sentence-transformers.all-minilm-l6-v2-onnx-int8-unbatched")
    batcher = MicroBatcher(model.embed_queries, name="same")
    queries = [f"how far is planet number {i} from its star?" for i in range(12)]
    alone = np.stack([batcher([q])[0] for q in queries])
    assert batcher.inline == len(queries)
    shared = _held_batcher(model.embed_queries, len(queries))
    with ThreadPoolExecutor(len(queries)) as pool:
        together = np.stack(list(pool.map(lambda q: shared([q])[0], queries)))
    assert shared.batches < len(queries)  # some of them really did share a model call
    assert np.allclose(alone, together, atol=1e-5)
