"""Micro-batching of concurrent query embeddings."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

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
