"""Micro-batching of concurrent query embeddings: many Retrieve calls, one model call.

A request that finds the model idle and nobody waiting runs the model itself, in its own thread: a
lone client pays no thread hand-off. A request that finds the model busy hands its texts to a
per-model worker thread and waits. The worker takes everything queued (up to `max_items`) as soon as
the model is free, runs one `embed_queries` call and hands the rows back. While the model runs, new
requests queue up and form the next batch, so batching follows the load with no timer on the
single-client path. When the previous batch held more than one request (the server is busy) the
worker lingers up to `max_wait_s` for stragglers before it runs.

A failure belongs to the request that caused it: when a shared batch raises, each of its requests
is re-run alone, so only the request with the bad input gets the error.

Depends on nothing in pgkb, so the service layer can use it directly (`batched(model)`).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

EmbedFn = Callable[[list[str]], np.ndarray]


class _Request:
    __slots__ = ("texts", "done", "result", "error")

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.done = threading.Event()
        self.result: np.ndarray | None = None
        self.error: BaseException | None = None


class MicroBatcher:
    """Callable like `embed_queries(texts) -> ndarray`, thread-safe, batching concurrent callers."""

    def __init__(
        self, fn: EmbedFn, *, max_items: int = 64, max_wait_s: float = 0.002, name: str = "embed"
    ) -> None:
        self.fn = fn
        self.max_items = max_items
        self.max_wait_s = max_wait_s
        self._queue: queue.SimpleQueue[_Request] = queue.SimpleQueue()
        self._held: _Request | None = None  # taken from the queue but did not fit in the last batch
        # `_busy`: a model call (inline or the worker's) is running; `_waiting`: requests handed to the
        # worker and not yet answered. Both under `_cond`, which the worker waits on for the model.
        self._cond = threading.Condition()
        self._busy = False
        self._waiting = 0
        self.batches = 0  # counters for the bench and the tests
        self.items = 0
        self.inline = 0  # model calls made in the caller's thread (the model was idle)
        self.isolations = 0  # failed batches re-run one request at a time
        self._thread = threading.Thread(target=self._run, name=f"pgkb-batch-{name}", daemon=True)
        self._thread.start()

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        req = _Request(list(texts))
        if len(req.texts) >= self.max_items:
            return self.fn(req.texts)  # already a batch: no point queueing
        with self._cond:
            alone = not self._busy and self._waiting == 0
            if alone:
                self._busy = True
            else:
                self._waiting += 1
                self._queue.put(req)
        if alone:
            # Nothing to batch with: run here rather than wake the worker and wait for it. Requests
            # arriving meanwhile queue for the worker, which starts as soon as this call ends.
            try:
                return self.fn(req.texts)
            finally:
                with self._cond:
                    self._busy = False
                    self.inline += 1
                    self.batches += 1
                    self.items += len(req.texts)
                    self._cond.notify_all()
        req.done.wait()
        if req.error is not None:
            raise req.error
        assert req.result is not None
        return req.result

    def _take(self, batch: list[_Request], count: int, timeout: float | None) -> int:
        """Append queued requests to `batch` until `max_items` texts; returns the new text count."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while count < self.max_items:
            try:
                if deadline is None:
                    req = self._queue.get_nowait()
                else:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    req = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if count + len(req.texts) > self.max_items and batch:
                self._held = req
                break
            batch.append(req)
            count += len(req.texts)
        return count

    def _run(self) -> None:
        last_batch_size = 1
        while True:
            first = self._held or self._queue.get()
            self._held = None
            with self._cond:  # an inline call may hold the model: its end starts this batch
                while self._busy:
                    self._cond.wait()
                self._busy = True
            batch = [first]
            count = self._take(batch, len(first.texts), None)
            if self._held is None and count < self.max_items and last_batch_size > 1 and self.max_wait_s > 0:
                count = self._take(batch, count, self.max_wait_s)
            last_batch_size = len(batch)
            texts = [t for r in batch for t in r.texts]
            try:
                vectors = self.fn(texts)
                start = 0
                for r in batch:
                    r.result = vectors[start : start + len(r.texts)]
                    start += len(r.texts)
            except Exception as exc:
                if len(batch) == 1:
                    batch[0].error = exc
                else:
                    self._one_by_one(batch)
            except BaseException as exc:  # every waiter must wake up, with the model's error
                for r in batch:
                    r.error = exc
            with self._cond:
                self.batches += 1
                self.items += len(texts)
                self._waiting -= len(batch)
                self._busy = False
                self._cond.notify_all()
            for r in batch:
                r.done.set()

    def _one_by_one(self, batch: list[_Request]) -> None:
        """A batch failed: one request's input may be at fault (text a tokenizer refuses), and one
        client's bad input must not fail the others. Run each request alone, so each gets its own
        vectors or its own error. Only the failure path pays the extra model calls."""
        self.isolations += 1
        for r in batch:
            try:
                r.result = self.fn(r.texts)
            except Exception as exc:
                r.error = exc
            self.batches += 1


class BatchedModel:
    """A model proxy whose `embed_queries` goes through a shared MicroBatcher; all else delegates."""

    def __init__(self, model: Any, batcher: MicroBatcher) -> None:
        self._model = model
        self.batcher = batcher

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self.batcher(texts)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


_batched: dict[int, tuple[Any, BatchedModel]] = {}
_lock = threading.Lock()


def batched(model: Any, **options: Any) -> BatchedModel:
    """The one BatchedModel for `model` in this process (models are cached per process too)."""
    if isinstance(model, BatchedModel):
        return model
    with _lock:
        hit = _batched.get(id(model))
        if hit is None or hit[0] is not model:
            proxy = BatchedModel(
                model, MicroBatcher(model.embed_queries, name=type(model).__name__, **options)
            )
            hit = _batched[id(model)] = (model, proxy)
        return hit[1]


def stats() -> list[dict[str, Any]]:
    """Per-model counters: model calls made and queries embedded through the batchers."""
    with _lock:
        return [
            {
                "model": getattr(getattr(m, "spec", None), "id", type(m).__name__),
                "calls": b.batcher.batches,
                "queries": b.batcher.items,
                "inline": b.batcher.inline,
            }
            for m, b in _batched.values()
        ]
