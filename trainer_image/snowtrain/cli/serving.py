"""Serve the exported model locally with the same server the cluster's Deployment runs.

``python -m snowtrain.serve`` (README: "The model server") runs as a child process; this module waits for its
``/readyz``, prints a ready-to-paste ``curl`` for the model's protocol (KServe v1 ``:predict``
for a classifier, OpenAI ``/v1/completions`` for a causal LM) and, in demo mode, sends that
request itself.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from snowtrain.api.serve_command import serve_command
from snowtrain.trainer.allocator import with_preloaded_allocator

from .errors import UserError

#: What the demo asks each kind of model.
DEMO_TEXT = "The battery life is fantastic and setup took two minutes. Highly recommended!"
DEMO_PROMPT = (
    "Summarize the support ticket in one line.\nTicket: Hi, this is Sam (order #40213). "
    "I was charged twice for the monthly plan. Please help, I need a refund.\nSummary:"
)
DEMO_CORPUS_PROMPT = "Forecast for Alderford:"


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """No server listens on the port (connections in TIME_WAIT do not count, as for uvicorn)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def model_task(model_dir: Path) -> str:
    """classification, causal-lm or pretrain, decided as the server does (README: "The trainer contract")."""
    try:
        task = json.loads((model_dir / "snowtrain.json").read_text()).get("task")
    except (OSError, json.JSONDecodeError):
        task = None
    if task in ("classification", "causal-lm", "pretrain"):
        return task
    archs = json.loads((model_dir / "config.json").read_text()).get("architectures") or []
    if any(a.endswith("ForSequenceClassification") for a in archs):
        return "classification"
    return "causal-lm"


@dataclass(frozen=True)
class DemoRequest:
    """One request against the served model: method, path and JSON body."""

    path: str
    body: dict[str, Any]

    def curl(self, base_url: str) -> str:
        return (
            f"curl -s {base_url}{self.path} -H 'Content-Type: application/json' "
            f"-d {shlex.quote(json.dumps(self.body))}"
        )


def demo_request(task: str, name: str) -> DemoRequest:
    """A request that suits the model: a review to classify, a ticket to summarise (the
    example prompt/completion table), or the start of a paragraph like the example corpus."""
    if task == "classification":
        return DemoRequest(f"/v1/models/{name}:predict", {"instances": [DEMO_TEXT]})
    prompt = DEMO_PROMPT if task == "causal-lm" else DEMO_CORPUS_PROMPT
    return DemoRequest(
        "/v1/completions", {"model": name, "prompt": prompt, "max_tokens": 32, "temperature": 0}
    )


class ModelServer:
    """The server child process; ``stop`` sends SIGTERM (it drains) and waits."""

    def __init__(self, model_dir: Path, name: str, port: int, log_path: Path) -> None:
        self.model_dir, self.name, self.port, self.log_path = model_dir, name, port, log_path
        self.base_url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 180.0) -> None:
        cmd = serve_command(
            str(self.model_dir),
            python=sys.executable,
            name=self.name,
            host="127.0.0.1",
            port=self.port,
        )
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=log,
                start_new_session=True,
                env=with_preloaded_allocator(os.environ),
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise UserError(
                    f"the model server exited with code {self.process.returncode}; "
                    f"see {self.log_path}",
                    exit_code=1,
                )
            try:
                with urllib.request.urlopen(f"{self.base_url}/readyz", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        self.stop()
        raise UserError(
            f"the model server was not ready after {timeout:.0f} s; see {self.log_path}", 1
        )

    def request(self, req: DemoRequest, timeout: float = 120.0) -> dict[str, Any]:
        data = json.dumps(req.body).encode()
        http = urllib.request.Request(
            self.base_url + req.path, data=data, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(http, timeout=timeout) as resp:
            return json.loads(resp.read())

    def wait(self) -> int:
        assert self.process is not None
        return self.process.wait()

    def stop(self, timeout: float = 30.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
