"""DynamicBatcher: coalescing, bounded queue, failure isolation and draining.

The batch function here is a real (tiny) computation with a sleep standing in for a model's
forward pass, so timing-dependent behaviour (what coalesces, what is refused) is controlled.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from snowtrain.serve.batcher import DynamicBatcher, NotAccepting, QueueFull


class Doubler:
    """Doubles numbers; records each batch; negative numbers fail individually."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.batches: list[list[int]] = []
        self.threads: set[str] = set()

    def __call__(self, items: list[int]) -> list[int | BaseException]:
        self.batches.append(list(items))
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)
        return [ValueError(f"bad {i}") if i < 0 else 2 * i for i in items]


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
    async def main() -> float:
        b = DynamicBatcher(Doubler(), max_batch_size=32, max_wait_ms=30, max_queue=10)
        await b.start()
        t = time.perf_counter()
        assert await b.submit([1]) == [2]
        elapsed = time.perf_counter() - t
        await b.close()
        return elapsed

    assert 0.025 <= asyncio.run(main()) < 1.0


def _two_requests_50ms_apart(more_coming: bool, busy_before: bool = False) -> list[list[int]]:
    """Batches formed when a second request arrives 50 ms after the first (max wait 2 s);
    with ``busy_before``, after a batch of two (the server was under concurrent load)."""
    model = Doubler()

    async def main() -> None:
        b = DynamicBatcher(
            model, max_batch_size=8, max_wait_ms=2000, max_queue=10,
            more_coming=lambda items: more_coming,
        )  # fmt: skip
        await b.start()
        if busy_before:
            assert await b.submit([7, 8]) == [14, 16]

        async def later() -> list[int]:
            await asyncio.sleep(0.05)
            return await b.submit([2])

        assert await asyncio.gather(b.submit([1]), later()) == [[2], [4]]
        await b.close()

    asyncio.run(main())
    return model.batches


def test_a_batch_waits_for_requests_that_are_on_their_way() -> None:
    assert _two_requests_50ms_apart(more_coming=True) == [[1, 2]]


def test_a_lone_request_starts_at_once_when_nobody_else_is_coming() -> None:
    # The server says "nobody else": the first request does not sit out the 2 s max wait.
    assert _two_requests_50ms_apart(more_coming=False) == [[1], [2]]


def test_under_concurrent_load_a_batch_keeps_waiting_for_the_next_requests() -> None:
    # Answers just went out to several clients; their next requests are still on the
    # network, where the server cannot count them.
    assert _two_requests_50ms_apart(more_coming=False, busy_before=True) == [[7, 8], [1, 2]]


def test_full_queue_refuses_whole_requests_and_never_grows_past_the_bound() -> None:
    model = Doubler(delay=0.2)

    async def main() -> None:
        b = DynamicBatcher(model, max_batch_size=2, max_wait_ms=0, max_queue=4)
        await b.start()
        first = asyncio.ensure_future(b.submit([1, 2]))
        await asyncio.sleep(0.05)  # the worker is now busy with [1, 2]
        queued = b.submit_nowait([3, 4, 5])
        assert b.queued == 3
        with pytest.raises(QueueFull, match="3 of 4 waiting"):
            b.submit_nowait([6, 7])  # needs 2 slots, 1 free: refused whole
        assert b.queued == 3
        more = b.submit_nowait([8])
        assert b.queued == 4 == b.max_queue
        with pytest.raises(QueueFull):
            b.submit_nowait([9])
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
    calls = []

    def flaky(items: list[int]) -> list[int]:
        calls.append(items)
        if len(calls) == 1:
            raise RuntimeError("CUDA out of memory")
        return items

    async def main() -> None:
        b = DynamicBatcher(flaky, max_batch_size=4, max_wait_ms=20, max_queue=10)
        await b.start()
        res = await asyncio.gather(b.submit([1]), b.submit([2]), return_exceptions=True)
        assert all(isinstance(r, RuntimeError) for r in res)
        assert await b.submit([5]) == [5]  # the worker survived
        await b.close()

    asyncio.run(main())


def test_cancelled_requests_are_skipped_before_they_reach_the_model() -> None:
    model = Doubler(delay=0.1)

    async def main() -> None:
        b = DynamicBatcher(model, max_batch_size=1, max_wait_ms=0, max_queue=10)
        await b.start()
        busy = asyncio.ensure_future(b.submit([1]))
        await asyncio.sleep(0.02)
        gone = asyncio.ensure_future(b.submit([2]))
        await asyncio.sleep(0.01)
        gone.cancel()  # the client went away while queued
        assert await busy == [2]
        assert await b.submit([3]) == [6]
        await b.close()

    asyncio.run(main())
    assert [2] not in model.batches


def test_close_refuses_new_work_but_answers_everything_accepted() -> None:
    model = Doubler(delay=0.05)

    async def main() -> None:
        b = DynamicBatcher(model, max_batch_size=2, max_wait_ms=0, max_queue=10)
        with pytest.raises(NotAccepting):
            b.submit_nowait([1])  # not started
        await b.start()
        accepted = [asyncio.ensure_future(b.submit([i])) for i in range(6)]
        await asyncio.sleep(0.01)
        closing = asyncio.ensure_future(b.close(timeout=10))
        await asyncio.sleep(0)
        with pytest.raises(NotAccepting):
            b.submit_nowait([99])
        await closing
        assert [await f for f in accepted] == [[2 * i] for i in range(6)]
        assert b.in_flight == 0

    asyncio.run(main())


def test_close_with_a_timeout_fails_leftovers_instead_of_hanging() -> None:
    async def main() -> None:
        b = DynamicBatcher(Doubler(delay=0.3), max_batch_size=1, max_wait_ms=0, max_queue=10)
        await b.start()
        futs = [asyncio.ensure_future(b.submit([i])) for i in range(4)]
        await asyncio.sleep(0.01)
        t = time.perf_counter()
        await b.close(timeout=0.1)
        assert time.perf_counter() - t < 1.0
        results = await asyncio.gather(*futs, return_exceptions=True)
        assert any(isinstance(r, NotAccepting) for r in results)

    asyncio.run(main())


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
