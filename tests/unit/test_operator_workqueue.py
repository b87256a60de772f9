"""The operator's work queue: urgent keys first, one reconcile per key at a time, bursts
coalesced, failures retried; and the job cache that spares a read per reconcile."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from snowtrain.operator import workqueue
from snowtrain.operator.context import Context
from snowtrain.operator.workqueue import WorkQueue


class Recorder:
    """A handler that records calls; blocks on `gate` while set up to."""

    def __init__(self, fail_times: int = 0) -> None:
        self.calls: list[tuple[str, bool]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()
        self.fail_times = fail_times
        self.lock = threading.Lock()
        self.running: set[str] = set()
        self.overlap = False

    def __call__(self, key: str, flag: bool) -> None:
        with self.lock:
            self.overlap |= key in self.running
            self.running.add(key)
        self.started.set()
        assert self.gate.wait(60), "the test never opened the gate"
        with self.lock:
            self.running.discard(key)
            self.calls.append((key, flag))
            if self.fail_times > 0:
                self.fail_times -= 1
                raise ApiException(status=500, reason="etcd leader changed")


def wait_for(predicate: Any, timeout: float = 60.0) -> None:
    """Poll until `predicate()`; the timeout only turns a hang into a failure."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


class FrozenClock:
    """Stands in for the queue's `time` module: delays fall due only when the test says so,
    not when a busy machine happens to let enough real time pass."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FrozenClock:
    frozen = FrozenClock()
    monkeypatch.setattr(workqueue, "time", frozen)
    return frozen


def test_urgent_keys_run_first_and_a_burst_costs_one_run() -> None:
    rec = Recorder()
    q: WorkQueue[str] = WorkQueue(rec, workers=1)
    # Queue before starting: the order the single worker takes them is the queue's order.
    for key in ("echo-1", "echo-2", "echo-1", "echo-1"):
        q.add(key, priority=2)
    q.add("new-job", priority=0, flag=True)
    q.add("echo-2", priority=1)  # became more urgent: moves ahead of echo-1
    assert len(q) == 3
    assert (q.waiting(0), q.waiting(1), q.waiting(2)) == (1, 2, 3)  # what "a burst" reads
    q.start()
    wait_for(lambda: len(rec.calls) == 3)
    q.stop()
    assert rec.calls == [("new-job", True), ("echo-2", False), ("echo-1", False)]


def test_a_key_added_while_running_runs_again_after_never_concurrently() -> None:
    rec = Recorder()
    rec.gate.clear()
    q: WorkQueue[str] = WorkQueue(rec, workers=4)
    q.start()
    q.add("job", priority=2)
    assert rec.started.wait(5)
    for _ in range(5):  # events while the reconcile runs: it may have read the old state
        q.add("job", priority=2, flag=True)
    rec.gate.set()
    wait_for(lambda: len(rec.calls) == 2)
    time.sleep(0.05)
    q.stop()
    assert rec.calls == [("job", False), ("job", True)]
    assert not rec.overlap


def test_failures_are_retried_with_backoff_until_they_succeed() -> None:
    rec = Recorder(fail_times=2)
    q: WorkQueue[str] = WorkQueue(rec, workers=1, base_delay=0.05, max_delay=1)
    q.start()
    started = time.monotonic()
    q.add("job", priority=0, flag=True)
    wait_for(lambda: len(rec.calls) == 3)
    elapsed = time.monotonic() - started
    time.sleep(0.2)
    q.stop()
    # Two retries after 0.05 s and 0.1 s; the flag (read the logs) survives the retries.
    assert rec.calls == [("job", True)] * 3
    assert elapsed >= 0.15


def test_add_after_delays_the_key(clock: FrozenClock) -> None:
    rec = Recorder()
    q: WorkQueue[str] = WorkQueue(rec, workers=1)
    q.start()
    q.add_after("later", 0.2, priority=3)
    q.add("now", priority=3)
    wait_for(lambda: len(rec.calls) == 1)
    assert rec.calls == [("now", False)]
    assert len(q) == 0  # "later" is not queued until it is due
    clock.advance(0.15)
    # An absence cannot be waited for: give the worker a moment to (wrongly) run it. Under
    # load the check is weaker, never flaky: it can only miss a bug, not invent one.
    time.sleep(0.05)
    assert rec.calls == [("now", False)]  # still not due
    clock.advance(0.1)
    wait_for(lambda: len(rec.calls) == 2)
    q.stop()
    assert rec.calls[1] == ("later", False)


def test_delayed_echoes_of_one_change_fold_into_one_run(clock: FrozenClock) -> None:
    rec = Recorder()
    q: WorkQueue[str] = WorkQueue(rec, workers=2)
    q.start()
    for _ in range(5):  # a Job's status, its pod's, ... within the delay
        q.add_after("job", 0.1, priority=2)
        clock.advance(0.01)
    q.add_after("job", 0.1, priority=1, flag=True)
    assert rec.calls == []
    # Past the first echo's due time (0.1 after it), before the last one's: the one entry
    # they all folded into keeps the first due time.
    clock.advance(0.06)
    wait_for(lambda: len(rec.calls) == 1)
    clock.advance(10)  # anything else that had been waiting would be due now
    time.sleep(0.3)
    q.stop()
    assert rec.calls == [("job", True)]


def _job(rv: str, phase: str) -> dict[str, Any]:
    return {
        "kind": "FineTuneJob",
        "metadata": {"namespace": "ml", "name": "a", "resourceVersion": rv},
        "status": {"phase": phase},
    }


def test_the_job_cache_keeps_the_newest_version() -> None:
    ctx = Context(kube=None, settings=None, caps=None)  # type: ignore[arg-type]
    ctx.remember(_job("10", "Pending"))
    ctx.remember(_job("12", "Running"))  # our own status write's answer
    ctx.remember(_job("11", "Pending"))  # the watch event of an earlier change, late
    assert ctx.known() == [(("FineTuneJob", "ml", "a"), _job("12", "Running"))]
    ctx.forget(("FineTuneJob", "ml", "a"))
    assert ctx.known() == []


def test_progress_is_read_from_the_pod_where_rank_0_writes_it() -> None:
    """A multi-node attempt: only one pod's log has the trainer's events (rank 0's, on any
    pod). The operator finds it, and reads it first next time (one log read per refresh)."""
    from types import SimpleNamespace

    from snowtrain.operator.reconcile import read_progress
    from snowtrain.operator.settings import OperatorSettings

    progress = json.dumps(
        {"event": "progress", "step": 7, "totalSteps": 10, "percent": 70, "epoch": 0.7,
         "loss": 0.5, "learningRate": 1e-4, "tokensPerSecond": 10.0, "samplesPerSecond": 1.0,
         "etaSeconds": 3, "time": "2026-01-01T00:00:09Z"}
    )  # fmt: skip
    logs = {"w-a1-aaaaa": "rank 1 has nothing to say\n", "w-a1-bbbbb": progress + "\n"}
    reads: list[str] = []

    def read_log(name: str, namespace: str, **_: object) -> str:
        reads.append(name)
        return logs[name]

    def pod(name: str, created: str) -> dict:
        running = {"name": "trainer", "state": {"running": {"startedAt": created}}}
        return {
            "metadata": {"name": name, "namespace": "ml", "creationTimestamp": created},
            "status": {"containerStatuses": [running]},
        }

    kube = SimpleNamespace(core=SimpleNamespace(read_namespaced_pod_log=read_log))
    ctx = Context(kube=kube, settings=OperatorSettings(), caps=None)  # type: ignore[arg-type]
    key = ("FineTuneJob", "ml", "w")
    # the newest pod is rank 1's: it is read first, then the other
    pods = [pod("w-a1-bbbbb", "2026-01-01T00:00:00Z"), pod("w-a1-aaaaa", "2026-01-01T00:00:05Z")]
    report = read_progress(ctx, key, pods, force=True)
    assert report is not None and report.progress is not None and report.progress.step == 7
    assert reads == ["w-a1-aaaaa", "w-a1-bbbbb"]
    reads.clear()
    assert read_progress(ctx, key, pods, force=True).progress.step == 7  # type: ignore[union-attr]
    assert reads == ["w-a1-bbbbb"]  # straight to rank 0's pod
