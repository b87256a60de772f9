"""Where a stop request (SIGTERM before training) may interrupt the main thread, and where it
waits for a safe point.

Before training the trainer's SIGTERM handler raises ``Preempted`` in the main thread
(``main.SignalGuard``): there is nothing to save yet, and a query or a model load is stopped
rather than waited for. An exception raised by a signal handler lands between any two
bytecodes, though, and code that waits on other threads is not safe against that: landing
just after a lock's acquire and before the ``with`` that releases it
(``threading.Condition.__enter__`` returns after the C-level acquire) leaves the lock held,
and the cleanup that stops those threads then waits on it forever -- the pod hangs until the
kubelet kills it, and ends without its termination message.

So threaded stretches run ``deferred()``: the handler only records the request there, and the
code raises it where it holds no lock, with ``check()`` (tokenized ingest: before each batch
it appends). ``interruptible()`` marks a stretch inside one where raising at once is safe
again and worth it (the first fetch, where a query may run for minutes). A request recorded
and not yet raised when the outermost ``deferred()`` ends is raised there.

``between_items()`` applies the same to a stream the main thread reads from code with threads
of its own (the connector downloads a result's chunks on a pool): the first fetch (the
query) interruptible, each later fetch and the closing deferred, a request raised just after.

Signal handlers run on the main thread, so the state lives there and needs no lock; a region
entered on another thread changes nothing (no handler can interrupt that thread). Each region
restores the depth it found rather than counting down, so an exception that lands inside a
region's own bookkeeping cannot leave the count wrong.
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar, cast

T = TypeVar("T")


class _State:
    depth = 0
    """How many ``deferred()`` regions enclose the main thread now (0: raise at once)."""
    pending: BaseException | None = None


_state = _State()


def deliver(exc: BaseException) -> None:
    """From a signal handler: raise ``exc`` now, or record it if a deferred region is open."""
    if _state.depth == 0:
        raise exc
    if _state.pending is None:
        _state.pending = exc


def check() -> None:
    """Raise a recorded stop request, once; a safe point in a deferred region."""
    exc, _state.pending = _state.pending, None
    if exc is not None:
        raise exc


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def _at_depth(depth: int) -> Iterator[None]:
    """The main thread's depth is ``depth`` for the block, then what it was; elsewhere, as is."""
    if not _on_main_thread():
        yield
        return
    outer, _state.depth = _state.depth, depth
    try:
        yield
    finally:
        _state.depth = outer


@contextmanager
def deferred() -> Iterator[None]:
    """A stretch where stop requests are recorded, and raised by ``check()`` or at its end."""
    outermost = _on_main_thread() and _state.depth == 0
    try:
        with _at_depth(_state.depth + 1):
            yield
    except BaseException:
        if outermost:
            _state.pending = None  # the region is ending with an exception of its own
        raise
    if outermost:
        check()


@contextmanager
def interruptible() -> Iterator[None]:
    """Inside a deferred region, a stretch that holds no lock: stop requests raise at once."""
    if _on_main_thread():
        check()
    with _at_depth(0):
        yield


_END = object()


def between_items(items: Iterable[T]) -> Generator[T, None, None]:
    """``items`` with the first fetch interruptible and later ones deferred (module docstring)."""
    iterator = iter(items)
    try:
        with interruptible():  # where the query runs: a request raises at once
            item = next(iterator, _END)
        while item is not _END:
            yield cast(T, item)
            with deferred():
                item = next(iterator, _END)
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            with deferred():  # the source's cleanup joins its threads: not to be cut short
                close()
