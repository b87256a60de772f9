"""`python -m snowtrain.serve` as a real process: command line, SIGTERM draining, exit."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.fixtures.serving import ServerProcess


def _in_progress(base: str) -> float:
    for line in httpx.get(f"{base}/metrics", timeout=5).text.splitlines():
        if line.startswith("snowtrain_requests_in_progress "):
            return float(line.split()[1])
    raise AssertionError("no snowtrain_requests_in_progress")


@pytest.mark.slow
def test_sigterm_drains_in_flight_requests_then_exits(
    tiny_causal_lm_dir: Path, tmp_path: Path
) -> None:
    # The drain waits for the accepted work however slow the machine (the default is 30 s).
    server = ServerProcess(
        tiny_causal_lm_dir, tmp_path / "server.log", "--max-batch-size", "4",
        "--graceful-timeout", "300",
    )  # fmt: skip
    try:
        server.wait_ready()
        base = server.base_url
        results: dict[str, object] = {}

        def non_streaming(key: str) -> None:
            results[key] = httpx.post(
                f"{base}/v1/completions",
                json={"prompt": f"request {key}", "max_tokens": 250, "temperature": 0},
                timeout=120,
            )

        def streaming() -> None:
            pieces, finish, done = [], None, False
            body = {"prompt": "once upon", "max_tokens": 300, "temperature": 0, "stream": True}
            with httpx.stream("POST", f"{base}/v1/completions", json=body, timeout=120) as r:
                for line in r.iter_lines():
                    if line == "data: [DONE]":
                        done = True
                    elif line.startswith("data: "):
                        choice = json.loads(line[6:])["choices"][0]
                        pieces.append(choice["text"])
                        finish = choice["finish_reason"] or finish
            results["stream"] = (r.status_code, pieces, finish, done)

        threads = [threading.Thread(target=non_streaming, args=(k,)) for k in "abc"]
        threads.append(threading.Thread(target=streaming))
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while _in_progress(base) < 5:  # 4 requests + this /metrics request
            assert time.monotonic() < deadline, "requests never got in flight"
            time.sleep(0.02)

        server.terminate()
        # Wait until the signal was handled (readiness turns 503 at once, or the listener
        # is already closed) instead of guessing how long that takes.
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=30).status_code == 503:
                    break
            except httpx.TransportError:
                break
            assert time.monotonic() < deadline, "SIGTERM never started the drain"
            time.sleep(0.02)
        # Draining: no new work is taken (the listener is closed or answers 503). The
        # timeout is long so that a request that was wrongly accepted shows as a 200.
        try:
            late = httpx.post(f"{base}/v1/completions", json={"prompt": "late"}, timeout=120)
            assert late.status_code == 503
        except httpx.TransportError as exc:
            assert not isinstance(exc, httpx.TimeoutException), exc  # accepted, not refused

        for t in threads:
            t.join(timeout=120)
        for key in "abc":
            resp = results[key]
            assert isinstance(resp, httpx.Response)
            assert resp.status_code == 200, resp.text
            choice = resp.json()["choices"][0]
            assert choice["finish_reason"] in {"length", "stop"}
            if choice["finish_reason"] == "length":
                assert resp.json()["usage"]["completion_tokens"] == 250
        status, pieces, finish, done = results["stream"]  # type: ignore[misc]
        assert status == 200 and done and finish in {"length", "stop"}
        assert len(pieces) > 10

        # uvicorn re-raises the caught SIGTERM after a clean shutdown, so the process ends
        # the Unix way: killed by the signal it was sent, after shutdown completed.
        assert server.wait(timeout=60) == -signal.SIGTERM
        log = server.log()
        assert "Application shutdown complete" in log
        assert "Traceback" not in log
    finally:
        server.stop()


@pytest.mark.slow
def test_classifier_serves_from_the_command_line(tiny_classifier_dir: Path, tmp_path: Path) -> None:
    server = ServerProcess(tiny_classifier_dir, tmp_path / "server.log", "--name", "reviews")
    try:
        server.wait_ready()
        resp = httpx.post(
            f"{server.base_url}/v1/models/reviews:predict", json={"instances": ["great"]}
        )
        assert resp.status_code == 200
        assert resp.json()["predictions"][0]["label"] in {"negative", "neutral", "positive"}
        server.terminate()
        assert server.wait(timeout=60) == -signal.SIGTERM
    finally:
        server.stop()


def test_a_directory_that_is_not_a_model_exits_2_with_the_reason(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "snowtrain.serve", "--model-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "no config.json" in proc.stderr


def test_a_model_that_fails_to_load_ends_the_server_with_the_reason_last(
    tiny_classifier_dir: Path, tmp_path: Path
) -> None:
    """Not a live process that is never ready: the pod restarts visibly at once, and its
    termination message (the log's tail) says why; a canary on it is rolled back at once."""
    broken = tmp_path / "broken"
    shutil.copytree(tiny_classifier_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    server = ServerProcess(broken, tmp_path / "server.log")
    try:
        assert server.wait(timeout=180) == 1
        last = [line for line in server.log().splitlines() if line.strip()][-1]
        assert last.startswith("error: model failed to load: "), server.log()[-2000:]
    finally:
        server.stop()
