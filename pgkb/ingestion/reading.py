"""Reading documents ahead of the parser: S3 GETs are network round trips (local reads are cheap), so a
small pool keeps several in flight while the consumer parses the one before."""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from pgkb.ingestion.sources import SourceDocument

READ_WORKERS = 8
READ_AHEAD_DOCS = 32
READ_AHEAD_BYTES = 64 * 1024 * 1024


def read_ahead(
    docs: Iterable[SourceDocument], more: Callable[[], bool] | None = None
) -> Iterator[tuple[SourceDocument, bytes | Exception]]:
    """Each document with its bytes (or the error reading them), in order, read by a small pool ahead
    of the consumer, so S3 GETs overlap instead of running one after another. At most
    READ_AHEAD_DOCS documents and about READ_AHEAD_BYTES are in flight. `more`: whether to pull the
    next document now while some are already in flight (a claiming source says no rather than
    block, so the documents in hand are handed on instead of claiming a whole queue ahead)."""
    pending: collections.deque[tuple[SourceDocument, int, Future[bytes]]] = collections.deque()
    ahead = 0
    todo = iter(docs)
    with ThreadPoolExecutor(READ_WORKERS, thread_name_prefix="pgkb-read") as pool:
        while True:
            while len(pending) < READ_AHEAD_DOCS and (not pending or (ahead < READ_AHEAD_BYTES
                                                                       and (more is None or more()))):
                d = next(todo, None)
                if d is None:
                    break
                size = max(int(d.size or 0), 0)
                pending.append((d, size, pool.submit(d.read)))
                ahead += size
            if not pending:
                return
            d, size, fut = pending.popleft()
            ahead -= size
            try:
                data: bytes | Exception = fut.result()
            except Exception as exc:
                data = exc
            yield d, data
