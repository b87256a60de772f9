"""`--quantize int8`: dynamic int8 nn.Linear on CPU, refused on CUDA, off by default."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import torch

from snowtrain.api.serve_command import serve_command
from snowtrain.serve.__main__ import parse_args
from snowtrain.serve.settings import ServeSettings
from tests.fixtures.serving import running_server

TEXTS = [
    "the movie was great",
    "terrible service",
    "an ordinary afternoon",
    "wonderful " * 20,
    "i will never come back to this awful place",
]


def test_settings_default_to_no_quantization_and_validate_the_choice() -> None:
    assert ServeSettings(model_dir=Path(".")).quantize == "none"
    assert ServeSettings(model_dir=Path("."), quantize="int8", device="cpu").quantize == "int8"
    with pytest.raises(ValueError, match="quantize must be one of none, int8"):
        ServeSettings(model_dir=Path("."), quantize="fp8")
    with pytest.raises(ValueError, match="CPU only"):
        ServeSettings(model_dir=Path("."), quantize="int8", device="cuda:1")


def test_command_line_accepts_int8_and_refuses_it_on_cuda(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert parse_args(["--model-dir", "m"]).quantize == "none"
    assert parse_args(["--model-dir", "m", "--quantize", "int8"]).quantize == "int8"
    with pytest.raises(SystemExit) as exc:
        parse_args(["--model-dir", "m", "--quantize", "int4"])
    assert exc.value.code == 2
    assert "invalid choice: 'int4'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        parse_args(["--model-dir", "m", "--device", "cuda", "--quantize", "int8"])
    assert exc.value.code == 2
    assert "--quantize int8 runs on CPU only" in capsys.readouterr().err


def test_cuda_chosen_automatically_refuses_int8_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """`--device auto` on a GPU machine: the model fails to load with the reason."""
    from snowtrain.serve.runtime import QuantizeUnsupported, choose_runtime

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(QuantizeUnsupported, match="CPU only, and this server would run on cuda"):
        choose_runtime("auto", None, "int8")


def test_int8_classifier_gives_the_fp32_labels(
    tiny_classifier_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    from snowtrain.serve.model_dir import inspect_model_dir
    from snowtrain.serve.models import ClassifierModel
    from snowtrain.serve.runtime import choose_runtime

    info = inspect_model_dir(tiny_classifier_dir)
    results = {}
    for quantize in ("none", "int8"):
        with caplog.at_level("INFO", logger="snowtrain.serve"):
            model = ClassifierModel(info, choose_runtime("cpu", 1, quantize))
            model.load()
        linears = [m for m in model.model.modules() if isinstance(m, torch.nn.Linear)]
        quantized = [m for m in model.model.modules() if isinstance(m, DynamicLinear)]
        if quantize == "int8":
            assert quantized and not linears
        else:
            assert linears and not quantized
        results[quantize] = model.predict(TEXTS)
    assert "int8 dynamic quantization of nn.Linear" in caplog.text
    assert "int8 dynamic quantization: 14 nn.Linear layers" in caplog.text
    for fp32, int8 in zip(results["none"], results["int8"], strict=True):
        assert int8.label == fp32.label
        for label, p in fp32.scores.items():
            assert int8.scores[label] == pytest.approx(p, abs=0.01)


def test_int8_server_answers_like_the_fp32_one(tiny_classifier_dir: Path) -> None:
    labels = {}
    for quantize in ("none", "int8"):
        with running_server(tiny_classifier_dir, quantize=quantize, device="cpu") as url:
            resp = httpx.post(
                f"{url}/v1/models/tiny-classifier:predict", json={"instances": TEXTS}, timeout=30
            )
            assert resp.status_code == 200, resp.text
            labels[quantize] = [p["label"] for p in resp.json()["predictions"]]
    assert labels["int8"] == labels["none"]


def test_int8_language_model_generates(tiny_causal_lm_dir: Path) -> None:
    """GPT-2 keeps its Conv1D blocks in fp32 (they are not nn.Linear); the LM head is int8."""
    from snowtrain.serve.generation import CompletionItem
    from snowtrain.serve.model_dir import inspect_model_dir
    from snowtrain.serve.models import CompletionModel
    from snowtrain.serve.runtime import choose_runtime

    model = CompletionModel(inspect_model_dir(tiny_causal_lm_dir), choose_runtime("cpu", 1, "int8"))
    model.load()
    (done,) = model.predict([CompletionItem("the movie", max_tokens=4, temperature=0)])
    assert done.completion_tokens >= 1


def test_the_server_refuses_int8_on_cuda_before_loading_anything(tmp_path: Path) -> None:
    proc = subprocess.run(
        serve_command(str(tmp_path), python=sys.executable, device="cuda", quantize="int8"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "--quantize int8 runs on CPU only" in proc.stderr
