"""Read an iterator ahead on a background thread, a bounded number of items ahead.

Ingest alternates two kinds of work: the source fetching and decoding the next Arrow batch
(network reads, Arrow decoding, row hashing -- much of it outside the GIL) and the Rust tokenizer
encoding the current one (``encode_batch_fast`` releases the GIL). Pulling the source on a
thread of its own lets the two overlap instead of taking turns.

The lookahead is a semaphore, not a queue bound: a bounded queue lets the producer hold one
more item in hand while it waits for room, whereas here at most ``ahead`` items exist that
the consumer has not taken, so memory stays a constant number of batches however long the
source is. The source's exceptions reach the consumer unchanged, after the items that came
before them. Closing the generator (``contextlib.closing``, or an exception in the consumer's
``with`` block) stops the producer and joins it; the source iterator is closed on the
producer's thread, so its own cleanup (a cursor, a spill file) has finished when ``close``
returns and nothing else touches the source concurrently afterwards.

The first item is fetched on the caller's thread. For a query source that is where the query
runs, possibly for minutes, and only the main thread sees signals: SIGTERM there still stops
the trainer at once, even inside a ``stop_requests.deferred()`` region (the fetch holds none
of this module's locks). Later, a SIGTERM waits for the in-flight fetch (one batch) before
``close`` returns.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterable, Iterator
from typing import Any, TypeVar

from ..stop_requests import interruptible

T = TypeVar("T")

_ITEM, _END, _ERROR = "item", "end", "error"
THREAD_NAME = "snowtrain-prefetch"


def _close(iterator: Iterator[Any]) -> None:
    close = getattr(iterator, "close", None)
    if close is not None:
        close()


def prefetch(items: Iterable[T], ahead: int = 1) -> Generator[T, None, None]:
    """Yield ``items`` in order, fetched on a thread up to ``ahead`` items before they are used."""
    if ahead < 1:
        raise ValueError(f"ahead must be at least 1, not {ahead}")
    slots = threading.Semaphore(ahead)
    handoff: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
    stop = threading.Event()

    def produce(iterator: Iterator[T]) -> None:
        try:
            while True:
                slots.acquire()
                if stop.is_set():
                    return
                try:
                    item = next(iterator)
                except StopIteration:
                    handoff.put((_END, None))
                    return
                handoff.put((_ITEM, item))
        except BaseException as exc:  # the consumer re-raises it
            handoff.put((_ERROR, exc))
        finally:
            _close(iterator)

    iterator = iter(items)
    thread: threading.Thread | None = None
    try:
        try:
            with interruptible():  # on the caller's thread: see the module docstring
                first = next(iterator)
        except StopIteration:
            return
        thread = threading.Thread(target=produce, args=(iterator,), name=THREAD_NAME, daemon=True)
        thread.start()
        yield first
        del first  # held for the whole pass otherwise
        while True:
            kind, value = handoff.get()
            if kind == _END:
                return
            if kind == _ERROR:
                raise value
            slots.release()  # the consumer holds this item now: the producer may fetch the next
            yield value
    finally:
        if thread is None:
            _close(iterator)
        else:
            stop.set()
            slots.release()  # wake a producer waiting for a slot
            thread.join()
