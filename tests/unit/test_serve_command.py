"""The model server's command line is built in one place and parsed by the server itself:
the operator's Deployment, local mode and the tests cannot drift from the flags it accepts."""

from __future__ import annotations

from pathlib import Path

from snowtrain.api import parse_job
from snowtrain.api.serve_command import serve_command
from snowtrain.operator import children as ch
from snowtrain.serve.__main__ import parse_args
from tests.unit.test_operator_children import SETTINGS, ftj


def test_the_operators_serving_command_is_one_the_server_accepts() -> None:
    job = parse_job(
        ftj(
            serving={
                "port": 9000,
                "maxBatchSize": 16,
                "maxWaitMs": 7,
                "maxQueue": 99,
                "quantize": "int8",
                "auth": {"secretRef": {"name": "token"}},
            }
        )
    )
    dep = ch.build_serving_deployment(job, SETTINGS)
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    python, dash_m, module, *args = container["command"]
    assert (python, dash_m, module) == ("python", "-m", "snowtrain.serve")
    settings = parse_args(args)
    assert settings.model_dir == Path("/mnt/models/sentiment/v1")
    assert (settings.name, settings.host, settings.port) == ("sentiment", "0.0.0.0", 9000)
    assert (settings.max_batch_size, settings.max_wait_ms, settings.max_queue) == (16, 7.0, 99)
    assert settings.quantize == "int8"
    assert settings.token_file == Path(ch.SERVE_AUTH_FILE)


def test_options_become_flags_in_order_and_none_leaves_a_flag_out() -> None:
    argv = serve_command("/m", port=8080, quantize=None, max_wait_ms=2.5, extra=["--x"])
    assert argv == ["python", "-m", "snowtrain.serve", "--model-dir", "/m", "--port", "8080",
                    "--max-wait-ms", "2.5", "--x"]  # fmt: skip
    assert parse_args(argv[3:-1]).max_wait_ms == 2.5
