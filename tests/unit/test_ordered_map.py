"""Ingest's ordered thread map: input order, a bounded number in flight, failures in turn."""

from __future__ import annotations

import threading
import time

import pytest

from snowtrain.trainer.data.ordered_map import THREAD_NAME, ordered_map


def test_results_come_in_input_order_whatever_finishes_first() -> None:
    def slow_for_even(i: int) -> int:
        time.sleep(0.02 if i % 2 == 0 else 0)
        return i * i

    assert list(ordered_map(slow_for_even, range(20), threads=3)) == [i * i for i in range(20)]


def test_calls_run_at_once_on_ingest_threads() -> None:
    barrier = threading.Barrier(3, timeout=60)  # passes only if 3 calls run together

    def meet(i: int) -> str:
        barrier.wait()
        return threading.current_thread().name

    names = list(ordered_map(meet, range(6), threads=3))
    assert all(n.startswith(THREAD_NAME) for n in names)


def test_the_input_is_read_at_most_threads_items_ahead() -> None:
    """Memory stays a few batches: the map never pulls the whole source in."""
    pulled = 0

    def source():
        nonlocal pulled
        for i in range(100):
            pulled += 1
            yield i

    ahead = []
    for taken, _ in enumerate(ordered_map(lambda i: i, source(), threads=4), start=1):
        ahead.append(pulled - taken)
    assert max(ahead) <= 4 and pulled == 100


def test_a_failure_surfaces_at_its_turn_and_stops_the_rest() -> None:
    started: list[int] = []

    def convert(i: int) -> int:
        started.append(i)
        if i == 5:
            raise ValueError("bad batch 5")
        time.sleep(0.005)
        return i

    got = []
    with pytest.raises(ValueError, match="bad batch 5"):
        for value in ordered_map(convert, range(1000), threads=2):
            got.append(value)
    assert got == [0, 1, 2, 3, 4]
    assert max(started) <= 5 + 2  # nothing much past the failure was started
    assert not [t for t in threading.enumerate() if t.name.startswith(THREAD_NAME)]


def test_one_thread_runs_inline() -> None:
    names = list(ordered_map(lambda _: threading.current_thread().name, range(3), threads=1))
    assert names == [threading.current_thread().name] * 3
