"""Apply a function to a stream on a few threads: results in input order, a few in flight.

``concurrent.futures.Executor.map`` submits the whole input up front (it would read an entire
table into memory before the first result); this keeps at most ``threads`` items submitted
and not yet taken, so memory stays a constant number of batches. A failure surfaces at its
item's turn, the items not yet started are cancelled and the running ones finish (one batch
each) before the exception leaves the generator.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

THREAD_NAME = "snowtrain-ingest"


def ordered_map(fn: Callable[[T], R], items: Iterable[T], threads: int) -> Generator[R, None, None]:
    """``map(fn, items)`` with up to ``threads`` calls running at once; in order, lazily."""
    if threads <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(threads, thread_name_prefix=THREAD_NAME) as pool:
        pending: deque[Future[R]] = deque()
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                del item  # the future holds it while it runs, not this frame afterwards
                if len(pending) >= threads:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()
