"""Reading the source ahead on a thread: order, errors, bounded lookahead, clean early exit."""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Iterator

import pyarrow as pa
import pytest

from snowtrain.trainer import stop_requests
from snowtrain.trainer.data.ordered_map import THREAD_NAME as INGEST_THREAD
from snowtrain.trainer.data.prefetch import THREAD_NAME, prefetch
from snowtrain.trainer.data.tokenize import build_classification
from snowtrain.trainer.errors import DataError
from tests.fixtures.signals import MainThreadSignals

LABEL2ID = {"negative": 0, "positive": 1}


def prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD_NAME]


def wait_for(condition, timeout: float = 60.0) -> None:
    """Poll until `condition()`; the timeout only turns a hang into a failure."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_items_arrive_in_order() -> None:
    def jittery() -> Iterator[int]:
        for i in range(200):
            if i % 17 == 0:
                time.sleep(0.001)
            yield i

    assert list(prefetch(jittery(), ahead=2)) == list(range(200))
    assert prefetch_threads() == []


def test_source_error_arrives_unchanged_after_the_items_before_it() -> None:
    error = DataError("column TEXT has NULL values", column="TEXT", bad_rows=3)

    def failing() -> Iterator[int]:
        yield 0
        yield 1
        raise error

    got: list[int] = []
    with pytest.raises(DataError) as caught:
        for item in prefetch(failing()):
            got.append(item)
    assert got == [0, 1]
    assert caught.value is error
    assert (caught.value.column, caught.value.bad_rows) == ("TEXT", 3)
    assert prefetch_threads() == []


@pytest.mark.parametrize("ahead", [1, 2])
def test_the_producer_stays_at_most_ahead_items_in_front(ahead: int) -> None:
    pulled = 0

    def counting() -> Iterator[int]:
        nonlocal pulled
        for i in range(100):
            pulled += 1
            yield i

    with contextlib.closing(prefetch(counting(), ahead=ahead)) as stream:
        assert next(stream) == 0
        # While the consumer works on item 0, the next `ahead` items are fetched...
        wait_for(lambda: pulled == 1 + ahead)
        time.sleep(0.2)
        assert pulled == 1 + ahead  # ...and no more.
        assert next(stream) == 1
        wait_for(lambda: pulled == 2 + ahead)


def test_consumer_failure_stops_the_producer_and_closes_the_source() -> None:
    closed_on: list[str] = []

    def endless() -> Iterator[int]:
        try:
            yield from itertools.count()
        finally:
            closed_on.append(threading.current_thread().name)

    with (
        pytest.raises(RuntimeError, match="consumer failed"),
        contextlib.closing(prefetch(endless(), ahead=2)) as stream,
    ):
        for item in stream:
            if item == 3:
                raise RuntimeError("consumer failed")
    # Closed on the producer's thread, before close() returned: nobody uses the source after.
    assert closed_on == [THREAD_NAME]
    assert prefetch_threads() == []


def test_a_signal_during_the_first_fetch_stops_at_once() -> None:
    """The first fetch (where a query runs) is on the caller's thread, which gets signals:
    the trainer's SIGTERM handler must not wait for a long query to finish, even inside
    ingest's deferred region."""

    class Stop(Exception):
        pass

    def stop(signum: int, frame: object) -> None:
        stop_requests.deliver(Stop())  # as the trainer's handler does

    query_finished = []
    signals = MainThreadSignals(stop, after=0.05)

    def slow_query() -> Iterator[int]:
        signals.start()  # the signal arrives while the query runs
        time.sleep(60)  # a query that runs for a minute: the signal must cut it short
        query_finished.append(True)
        yield 0

    try:
        with pytest.raises(Stop), stop_requests.deferred():
            list(prefetch(slow_query()))
    finally:
        signals.close()
    assert query_finished == []  # interrupted, not waited for
    assert prefetch_threads() == []


def test_ahead_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        next(prefetch([1], ahead=0))


# -- in the builders ------------------------------------------------------------------------


def batch(labels: list[str]) -> pa.RecordBatch:
    return pa.record_batch({"text": [f"text {i}" for i in range(len(labels))], "label": labels})


def test_a_bad_batch_stops_ingest_without_leaking_the_reader(wordpiece_tokenizer, tmp_path):
    closed = threading.Event()

    class Endless:
        def iter_batches(self, split="train"):
            try:
                yield batch(["negative", "positive"])
                yield batch(["positive", "furious"])  # not in the label map: the consumer fails
                while True:
                    yield batch(["negative"])
            finally:
                closed.set()

    with pytest.raises(DataError, match="furious"):
        build_classification(Endless(), "train", wordpiece_tokenizer, LABEL2ID, 16, tmp_path)
    assert closed.is_set()
    assert prefetch_threads() == []
    assert list(tmp_path.iterdir()) == []  # no partial store


def test_a_source_error_reaches_the_trainer_unchanged(wordpiece_tokenizer, tmp_path):
    error = DataError("column LABEL has NULL values", column="LABEL", bad_rows=1)

    class Failing:
        def iter_batches(self, split="train"):
            yield batch(["negative"])
            raise error

    with pytest.raises(DataError) as caught:
        build_classification(Failing(), "train", wordpiece_tokenizer, LABEL2ID, 16, tmp_path)
    assert caught.value is error
    assert list(tmp_path.iterdir()) == []


def test_signals_throughout_threaded_ingest_stop_it_at_a_batch_and_cleanly(
    wordpiece_tokenizer, tmp_path
):
    """SIGTERM before training stops the trainer (Preempted in the main thread). During
    threaded ingest the main thread waits on other threads' locks, where an exception raised
    by a signal handler can leave a lock held and the cleanup waiting on it forever: there the
    request waits for the next batch. Here signals keep arriving, every 2 ms, through ingest
    and its cleanup: ingest stops with the request, its threads are gone, nothing is left."""
    closed = threading.Event()
    handled = 0

    class Stop(Exception):
        pass

    def handler(signum, frame):
        nonlocal handled
        handled += 1
        stop_requests.deliver(Stop())  # as the trainer's handler does

    signals = MainThreadSignals(handler, after=0.2, every=0.002)

    class Endless:
        def iter_batches(self, split="train"):
            # Started once ingest has begun (after the first fetch), repeating until the
            # source is closed, which ingest's cleanup does on the reading thread.
            signals.start()
            try:
                while True:
                    yield batch(["negative", "positive"] * 500)
            finally:
                # Signals keep landing while the main thread waits in cleanup for this thread.
                time.sleep(0.1)
                signals.stop()
                closed.set()

    try:
        with pytest.raises(Stop):
            build_classification(
                Endless(), "train", wordpiece_tokenizer, LABEL2ID, 16, tmp_path, threads=2
            )
    finally:
        signals.close()
    assert handled > 1  # the first one stopped ingest; others landed in its cleanup
    assert closed.is_set()
    assert prefetch_threads() == []
    assert not [t for t in threading.enumerate() if t.name.startswith(INGEST_THREAD)]
    assert list(tmp_path.iterdir()) == []
