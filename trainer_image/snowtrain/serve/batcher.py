"""Dynamic batching: coalesce concurrent requests into one forward pass, with a bounded queue.

A transformer forward pass over 32 inputs costs far less than 32 passes over one, so the
server parks each input in a queue and a single worker drains it in batches: it takes the
first waiting item, waits at most `max_wait_ms` for more (never longer than it takes to fill
`max_batch_size`), and runs the batch in a dedicated thread so the event loop keeps answering
health checks, metrics and new requests while the model computes.

The queue is bounded in *items*, not requests: a request carrying k instances needs k free
slots or is refused whole (`QueueFull` -> HTTP 429), so memory and latency stay bounded
under overload instead of growing with the backlog. `close()` refuses new work
(`NotAccepting` -> HTTP 503) and waits until everything already accepted has been answered,
which is what graceful shutdown on SIGTERM needs.

One bad item must not fail its batch-mates. The batch function returns an exception for an
item it knows failed; when it raises instead (the batch as a whole could not be tokenized or
run), the worker runs the batch's items again one at a time, so only the item that breaks
the function fails, with its own exception, and every other caller gets its answer.

Waiting for company only pays when company is coming. With `more_coming` (the server passes
"more HTTP requests are being handled than items are in this batch"), a batch starts at once
when nobody else is on the way and the previous batch was a single item too, so a lone
client does not pay `max_wait_ms` per request. Under concurrent load the previous batch held
several items and the wait stays: clients whose answers just went out are about to send
their next request, and the server cannot see requests still on the network.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

I = TypeVar("I")  # noqa: E741 - conventional name for the item type
R = TypeVar("R")

BatchFn = Callable[[list[I]], Sequence[R | BaseException]]
"""Runs one batch in the worker thread; returns one result or exception per item, in order."""


class QueueFull(Exception):
    """The queue has no room for the request: the client should retry later (HTTP 429)."""


class NotAccepting(Exception):
    """The batcher is not started yet or is shutting down (HTTP 503)."""


@dataclass
class _Pending(Generic[I, R]):
    item: I
    future: asyncio.Future[R]
    enqueued: float = field(default_factory=time.perf_counter)


class DynamicBatcher(Generic[I, R]):
    """Collects items from many coroutines and runs them through `run_batch` in batches."""

    def __init__(
        self,
        run_batch: BatchFn[I, R],
        *,
        max_batch_size: int = 32,
        max_wait_ms: float = 5.0,
        max_queue: int = 256,
        on_batch: Callable[[int, float], None] | None = None,
        more_coming: Callable[[int], bool] | None = None,
        name: str = "batcher",
    ) -> None:
        if max_batch_size < 1 or max_queue < 1 or max_wait_ms < 0:
            raise ValueError("max_batch_size and max_queue must be >= 1, max_wait_ms >= 0")
        self._run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self._on_batch = on_batch
        self._more_coming = more_coming
        self._last_batch = 0
        self._name = name
        self._queue: asyncio.Queue[_Pending[I, R]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._accepting = False
        self._closed = False
        self._running = 0  # items handed to the model and not yet answered

    # -- observability -------------------------------------------------------------------
    @property
    def queued(self) -> int:
        """Items waiting for a batch slot (the queue-depth metric)."""
        return self._queue.qsize() if self._queue is not None else 0

    @property
    def in_flight(self) -> int:
        """Items accepted and not yet answered: queued plus the batch being computed."""
        return self.queued + self._running

    @property
    def accepting(self) -> bool:
        return self._accepting

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        """Start the worker; must run inside the event loop that will call `submit`."""
        if self._worker is not None:
            return
        self._queue = asyncio.Queue()
        # One thread: the model is not thread-safe and batches run back to back anyway.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self._name)
        self._worker = asyncio.create_task(self._work(), name=self._name)
        self._accepting = True

    def stop_accepting(self) -> None:
        """Refuse new items from now on; items already accepted are still answered."""
        self._accepting = False

    async def close(self, timeout: float | None = None) -> None:
        """Stop accepting, answer everything already accepted, then stop the worker."""
        self.stop_accepting()
        self._closed = True
        if self._worker is None:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.in_flight and (deadline is None or time.monotonic() < deadline):
            await asyncio.sleep(0.01)
        self._worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._worker
        # Anything left (only after a timeout) is failed rather than left hanging.
        assert self._queue is not None
        while not self._queue.empty():
            pending = self._queue.get_nowait()
            if not pending.future.done():
                pending.future.set_exception(NotAccepting("server shut down"))
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._worker = None

    # -- producer side -------------------------------------------------------------------
    def submit_nowait(self, items: Sequence[I], admitted: bool = False) -> list[asyncio.Future[R]]:
        """Enqueue all `items` or none of them; return one future per item.

        Raises NotAccepting before start/after close and QueueFull when the queue lacks room
        for all of them. Cancelling a returned future drops its item if it has not run yet.
        ``admitted``: the request was accepted before :meth:`stop_accepting` (a drain) and
        only now reaches the queue; it is still taken until :meth:`close`.
        """
        open_to_it = self._accepting or (admitted and not self._closed)
        if not open_to_it or self._queue is None:
            raise NotAccepting("not accepting requests")
        if self.queued + len(items) > self.max_queue:
            raise QueueFull(f"queue full ({self.queued} of {self.max_queue} waiting); retry later")
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[R]] = []
        for item in items:
            fut: asyncio.Future[R] = loop.create_future()
            self._queue.put_nowait(_Pending(item, fut))
            futures.append(fut)
        return futures

    async def submit(self, items: Sequence[I]) -> list[R]:
        """Enqueue `items` and wait for their results (the first failure is raised).

        If the caller is cancelled (the client went away), items that have not run yet are
        dropped instead of wasting a batch slot.
        """
        futures = self.submit_nowait(items)
        try:
            return list(await asyncio.gather(*futures))
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise

    # -- consumer side -------------------------------------------------------------------
    async def _collect(self) -> list[_Pending[I, R]]:
        """Wait for one item, then gather more until the batch is full or max_wait passed."""
        assert self._queue is not None
        batch = [await self._queue.get()]
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch_size:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            alone = self._last_batch <= 1 and self._more_coming is not None
            if alone and not self._more_coming(len(batch)):
                break  # nobody else is on the way: waiting would only add latency
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    def _run_checked(self, items: list[I]) -> Sequence[R | BaseException]:
        results = self._run_batch(items)
        if len(results) != len(items):
            raise RuntimeError(f"run_batch returned {len(results)} results for {len(items)}")
        return results

    def _run_isolating(self, items: list[I]) -> list[R | BaseException]:
        """Run the batch; if it raises, run each item alone so only the bad one fails.

        Runs in the worker thread. A batch of one item simply fails with its exception.
        """
        try:
            return list(self._run_checked(items))
        except Exception as exc:
            if len(items) == 1:
                return [exc]
            log.warning(
                "a batch of %d failed (%s: %s); running its items one at a time",
                len(items),
                type(exc).__name__,
                exc,
            )
        results: list[R | BaseException] = []
        for item in items:
            try:
                results.extend(self._run_checked([item]))
            except Exception as exc:
                results.append(exc)
        return results

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [p for p in await self._collect() if not p.future.done()]
            if not batch:
                continue
            self._running = self._last_batch = len(batch)
            started = time.perf_counter()
            try:
                results = await loop.run_in_executor(
                    self._executor, self._run_isolating, [p.item for p in batch]
                )
            except asyncio.CancelledError:
                # close() timed out while the model was busy: fail the batch, don't hang it.
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(NotAccepting("server shut down"))
                self._running = 0
                raise
            except Exception as exc:  # the whole batch failed: every caller hears why
                results = [exc] * len(batch)
            self._running = 0
            if self._on_batch is not None:
                self._on_batch(len(batch), time.perf_counter() - started)
            for pending, result in zip(batch, results, strict=True):
                if pending.future.done():  # caller gave up while the batch ran
                    continue
                if isinstance(result, BaseException):
                    pending.future.set_exception(result)
                else:
                    pending.future.set_result(result)
