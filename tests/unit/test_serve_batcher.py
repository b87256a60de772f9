"""DynamicBatcher: coalescing, bounded queue, failure isolation and draining.

The batch function here is a real (tiny) computation. Where a test needs the model busy, it
holds the batch at a gate that the test opens, and it waits for events (the model entered a
batch, the worker took an item) rather than sleeping, so what coalesces and what is refused
never depends on how fast the machine is.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest

from snowtrain.serve.batcher import DynamicBatcher, NotAccepting, QueueFull


class Doubler:
    """Doubles numbers; records each batch; negative numbers fail individually.

    With `gated`, every batch waits in the worker thread until `release()`: the model stays
    busy exactly as long as the test wants, whatever the machine's speed.
    """

    def __init__(self, gated: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.threads: set[str] = set()
        self.entered = threading.Event()
        self._gate = threading.Event()
        if not gated:
            self._gate.set()

    def __call__(self, items: list[int]) -> list[int | BaseException]:
        self.batches.append(list(items))
        self.threads.add(threading.current_thread().name)
        self.entered.set()
        assert self._gate.wait(60), "the test never released the model"
        return [ValueError(f"bad {i}") if i < 0 else 2 * i for i in items]

    async def busy(self) -> None:
        """Wait until the model has started a batch."""
        assert await asyncio.to_thread(self.entered.wait, 30), "the model never started"

    def release(self) -> None:
        self._gate.set()


async def until(condition: Callable[[], bool]) -> None:
    """Let the event loop run until `condition` holds (a state change, not a time)."""
    for _ in range(10_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


def test_concurrent_requests_coalesce_into_batches_and_results_stay_in_order() -> None:
    model = Doubler()

    async def main() -> list[list[int]]:
        b = DynamicBatcher(model, max_batch_size=8, max_wait_ms=50, max_queue=100)
        await b.start()
        out = await asyncio.gather(*(b.submit([i]) for i in range(20)))
        await b.close()
        return out

    out = asyncio.run(main())
    assert out == [[2 * i] for i in range(20)]
    assert [len(x) for x in model.batches] == [8, 8, 4]
    assert all(n.startswith("batcher") for n in model.threads)  # ran off the event loop


def test_a_lone_request_waits_at_most_max_wait() -> None:
    """It waits for company for max_wait (0.3 s) and then runs alone instead of waiting for a
    full batch. The upper bound is 100x max_wait: it catches a batcher that waits for the
    batch to fill (which would never answer), not a slow machine."""

    async def main() -> float:
        b = DynamicBatcher(Doubler(), max_batch_size=32, max_wait_ms=300, max_queue=10)
        await b.start()
        t = time.perf_counter()
        assert await asyncio.wait_for(b.submit([1]), 30) == [2]
        elapsed = time.perf_counter() - t
        await b.close()
        return elapsed

    assert asyncio.run(main()) >= 0.29


def _a_second_request_after_the_first_was_taken(
    more_coming: bool, busy_before: bool = False
) -> list[list[int]]:
    """Batches formed when a second request arrives once the worker has taken the first
    (max wait 60 s, so a batch that waits always sees it; two items fill a batch);
    with ``busy_before``, after a batch of two (the server was under concurrent load)."""
    model = Doubler()

    async def main() -> None:
        b = DynamicBatcher(
            model, max_batch_size=2, max_wait_ms=60_000, max_queue=10,
            more_coming=lambda items: more_coming,
        )  # fmt: skip
        await b.start()
        if busy_before:
            assert await b.submit([7, 8]) == [14, 16]
        first = b.submit_nowait([1])
        await until(lambda: b.queued == 0)  # the worker took it
        second = b.submit_nowait([2])
        assert await asyncio.wait_for(asyncio.gather(*first, *second), 30) == [2, 4]
        await b.close()

    asyncio.run(main())
    return model.batches


def test_a_batch_waits_for_requests_that_are_on_their_way() -> None:
    assert _a_second_request_after_the_first_was_taken(more_coming=True) == [[1, 2]]


def test_a_lone_request_starts_at_once_when_nobody_else_is_coming() -> None:
    # The server says "nobody else": the first request does not sit out the max wait, so
    # the second, arriving after it was taken, gets a batch of its own.
    assert _a_second_request_after_the_first_was_taken(more_coming=False) == [[1], [2]]


def test_under_concurrent_load_a_batch_keeps_waiting_for_the_next_requests() -> None:
    # Answers just went out to several clients; their next requests are still on the
    # network, where the server cannot count them.
    batches = _a_second_request_after_the_first_was_taken(more_coming=False, busy_before=True)
    assert batches == [[7, 8], [1, 2]]


def test_full_queue_refuses_whole_requests_and_never_grows_past_the_bound() -> None:
    model = Doubler(gated=True)

    async def main() -> None:
        b = DynamicBatcher(model, max_batch_size=2, max_wait_ms=0, max_queue=4)
        await b.start()
        first = asyncio.ensure_future(b.submit([1, 2]))
        await model.busy()  # the worker is now busy with [1, 2] until released
        queued = b.submit_nowait([3, 4, 5])
        assert b.queued == 3
        with pytest.raises(QueueFull, match="3 of 4 waiting"):
            b.submit_nowait([6, 7])  # needs 2 slots, 1 free: refused whole
        assert b.queued == 3
        more = b.submit_nowait([8])
        assert b.queued == 4 == b.max_queue
        with pytest.raises(QueueFull):
            b.submit_nowait([9])
        model.release()
        assert await first == [2, 4]
        assert [await f for f in queued + more] == [6, 8, 10, 16]
        await b.close()

    asyncio.run(main())
    assert [6, 7] not in model.batches and all(9 not in x for x in model.batches)


def test_one_failing_item_fails_only_its_request() -> None:
    async def main() -> None:
        b = DynamicBatcher(Doubler(), max_batch_size=8, max_wait_ms=20, max_queue=10)
        await b.start()
        good, bad = await asyncio.gather(b.submit([3]), b.submit([-1]), return_exceptions=True)
        assert good == [6]
        assert isinstance(bad, ValueError) and "bad -1" in str(bad)
        await b.close()

    asyncio.run(main())


def test_a_crashing_batch_function_fails_every_item_of_that_batch_only() -> None:
    """While the function crashes on everything (alone too: see the isolation tests in
    test_serve_robustness.py), every item of the batch fails; the worker survives."""
    crashing = threading.Event()
    crashing.set()

    def flaky(items: list[int]) -> list[int]:
        if crashing.is_set():
            raise RuntimeError("CUDA out of memory")
        return items

    async def main() -> None:
        b = DynamicBatcher(flaky, max_batch_size=4, max_wait_ms=20, max_queue=10)
        await b.start()
        res = await asyncio.gather(b.submit([1]), b.submit([2]), return_exceptions=True)
        assert all(isinstance(r, RuntimeError) for r in res)
        crashing.clear()
        assert await b.submit([5]) == [5]  # the worker survived
        await b.close()

    asyncio.run(main())


def test_cancelled_requests_are_skipped_before_they_reach_the_model() -> None:
    model = Doubler(gated=True)

    async def main() -> None:
        b = DynamicBatcher(model, max_batch_size=1, max_wait_ms=0, max_queue=10)
        await b.start()
        busy = asyncio.ensure_future(b.submit([1]))
        await model.busy()
        gone = asyncio.ensure_future(b.submit([2]))
        await until(lambda: b.queued == 1)
        gone.cancel()  # the client went away while queued
        with pytest.raises(asyncio.CancelledError):
            await gone
        model.release()
        assert await busy == [2]
        assert await b.submit([3]) == [6]
        await b.close()

    asyncio.run(main())
    assert [2] not in model.batches


def test_close_refuses_new_work_but_answers_everything_accepted() -> None:
    model = Doubler(gated=True)

    async def main() -> None:
        b = DynamicBatcher(model, max_batch_size=2, max_wait_ms=0, max_queue=10)
        with pytest.raises(NotAccepting):
            b.submit_nowait([1])  # not started
        await b.start()
        accepted = [asyncio.ensure_future(b.submit([i])) for i in range(6)]
        await model.busy()  # one batch is in the model, the rest queued
        assert b.in_flight == 6
        closing = asyncio.ensure_future(b.close())  # no timeout: waits for all of them
        await asyncio.sleep(0)
        with pytest.raises(NotAccepting):
            b.submit_nowait([99])
        assert not closing.done()  # it waits for the accepted work
        model.release()
        await asyncio.wait_for(closing, 30)
        assert [await f for f in accepted] == [[2 * i] for i in range(6)]
        assert b.in_flight == 0

    asyncio.run(main())


def test_close_with_a_timeout_fails_leftovers_instead_of_hanging() -> None:
    """The model never finishes while close(timeout) runs: close still returns, and the
    running batch and the queued items all fail with NotAccepting instead of hanging."""
    model = Doubler(gated=True)

    async def main() -> None:
        b = DynamicBatcher(model, max_batch_size=1, max_wait_ms=0, max_queue=10)
        await b.start()
        futs = [asyncio.ensure_future(b.submit([i])) for i in range(4)]
        await model.busy()
        await asyncio.wait_for(b.close(timeout=0.1), 30)  # returns although the model is stuck
        results = await asyncio.gather(*futs, return_exceptions=True)
        assert all(isinstance(r, NotAccepting) for r in results), results

    try:
        asyncio.run(main())
    finally:
        model.release()  # let the abandoned worker thread end
    assert model.batches == [[0]]


def test_batch_observer_sees_every_batch() -> None:
    seen: list[tuple[int, float]] = []

    async def main() -> None:
        b = DynamicBatcher(
            Doubler(),
            max_batch_size=4,
            max_wait_ms=20,
            max_queue=10,
            on_batch=lambda n, s: seen.append((n, s)),
        )
        await b.start()
        await asyncio.gather(*(b.submit([i]) for i in range(6)))
        await b.close()

    asyncio.run(main())
    assert sorted(n for n, _ in seen) == [2, 4]
    assert all(s >= 0 for _, s in seen)


def test_a_drain_refuses_new_requests_but_not_ones_admitted_before_it() -> None:
    """A request that passed admission before SIGTERM (and then awaited something, such as
    counting its tokens off the event loop) is accepted work: the drain still takes it. Once
    the batcher is closed nothing is taken."""

    async def main() -> None:
        b = DynamicBatcher(Doubler(), max_batch_size=8, max_wait_ms=0, max_queue=10)
        await b.start()
        b.stop_accepting()  # SIGTERM
        with pytest.raises(NotAccepting):
            b.submit_nowait([1])
        (fut,) = b.submit_nowait([2], admitted=True)
        assert await fut == 4
        await b.close()
        with pytest.raises(NotAccepting):
            b.submit_nowait([3], admitted=True)

    asyncio.run(main())
