"""Trainer parts with one job each: checkpoints, redaction, progress, metrics, models, export."""

from __future__ import annotations

import io
import json
import random

import numpy as np
import pytest
import torch

from snowtrain.api.events import TrainerSummary, parse_summary
from snowtrain.api.spec import ArchitectureSpec, LoraSpec, TokenizerSpec
from snowtrain.trainer.checkpoint import CheckpointManager, capture_rng, restore_rng
from snowtrain.trainer.errors import InvalidConfig
from snowtrain.trainer.metrics import accuracy, confusion_matrix, macro_f1, perplexity
from snowtrain.trainer.progress import TERMINATION_LIMIT, Reporter, encode_summary
from snowtrain.trainer.redact import MASK, RedactingStream, Redactor

SECRET = "Sn0wfl@ke-Pa55-7f3a9c"


# --------------------------------------------------------------------------- checkpoints
def test_checkpoints_keep_the_newest_and_ignore_torn_writes(tmp_path):
    clock = [0.0]
    ckpt = CheckpointManager(
        tmp_path, keep=2, every_steps=10, every_minutes=1.0, clock=lambda: clock[0]
    )
    for step in (10, 20, 30):
        ckpt.save(step, {"w": torch.full((2,), float(step))})
    assert [p.name for p in ckpt.checkpoints()] == ["step-00000020", "step-00000030"]
    # A writer killed mid-save leaves a temp dir (and maybe a dir without meta.json): skipped.
    (tmp_path / ".tmp-step-00000040-999").mkdir()
    (tmp_path / "step-00000050").mkdir()
    assert ckpt.latest().name == "step-00000030"
    assert ckpt.load(ckpt.latest())["w"].tolist() == [30.0, 30.0]
    # Cadence: every 10 steps, or once a minute passed since the last save.
    assert ckpt.due(40) and not ckpt.due(41)
    clock[0] += 61
    assert ckpt.due(41)
    ckpt.save(41, {})
    assert not (tmp_path / ".tmp-step-00000040-999").exists()


def test_rng_state_round_trips_through_a_checkpoint(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    ckpt = CheckpointManager(tmp_path)
    ckpt.save(1, {"rng": capture_rng()})
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    restore_rng(ckpt.load(ckpt.latest())["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


# --------------------------------------------------------------------------- redaction
def test_redacting_stream_scrubs_secrets_split_across_writes():
    target = io.StringIO()
    pem = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----"
    stream = RedactingStream(target, Redactor([SECRET, pem, None, "ab"]))
    stream.write("login with " + SECRET[:6])
    stream.write(SECRET[6:] + " failed\n")
    stream.write("key line MIIEvQIBADANBgkqhkiG9w0BAQEFAASC leaked\nab stays")
    stream.flush()
    text = target.getvalue()
    assert SECRET not in text and "MIIEvQIB" not in text
    assert text.count(MASK) == 2
    assert text.endswith("ab stays")  # too short to be a secret worth masking


# --------------------------------------------------------------------------- progress
def test_progress_interval_and_json_lines(capsys):
    clock = [100.0]
    reporter = Reporter(5.0, redactor=Redactor([SECRET]), clock=lambda: clock[0])
    assert reporter.progress(step=1, loss=float("nan"))
    clock[0] += 1
    assert not reporter.progress(step=2)
    assert reporter.progress(step=3, force=True)
    reporter.event("done", outcome="Failed", exitCode=65, message=f"boom {SECRET}")
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["event"] for x in lines] == ["progress", "progress", "done"]
    assert [x["step"] for x in lines[:2]] == [1, 3]
    assert lines[0]["loss"] is None  # NaN is not JSON
    assert lines[2]["message"] == f"boom {MASK}"


def test_termination_message_fits_4096_bytes_and_is_scrubbed():
    summary = TrainerSummary.of_exit(
        65, reason="DataError", message=SECRET + "x" * 10000, metrics={"trainLoss": 0.5}
    )
    text = encode_summary(summary, Redactor([SECRET]))
    assert len(text.encode()) <= TERMINATION_LIMIT
    decoded = parse_summary(text)
    assert decoded is not None and decoded.outcome == "Failed" and decoded.exit_code == 65
    assert decoded.reason == "DataError" and (decoded.message or "").startswith(MASK)
    assert decoded.metrics.train_loss == 0.5  # the message gave way, the metrics stayed


# --------------------------------------------------------------------------- metrics
def test_macro_f1_and_accuracy_match_hand_computation():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    preds = torch.tensor([0, 1, 1, 1, 2, 0])
    cm = confusion_matrix(labels, preds, 4)  # class 3 never occurs: left out of the mean
    assert accuracy(cm) == pytest.approx(4 / 6)
    f1 = [2 * 1 / (2 + 2), 2 * 2 / (2 + 3), 2 * 1 / (2 + 1)]
    assert macro_f1(cm) == pytest.approx(sum(f1) / 3)
    assert perplexity(0.0) == 1.0 and perplexity(1e9) < float("inf")


# --------------------------------------------------------------------------- models
def test_architecture_presets_and_overrides():
    from snowtrain.trainer.models import architecture_dims

    assert architecture_dims(ArchitectureSpec(size="tiny")) == {
        "layers": 2,
        "hidden": 64,
        "heads": 2,
        "kv_heads": 2,
        "inner": 192,
    }
    base = architecture_dims(ArchitectureSpec(family="gpt2", size="base", num_layers=4))
    assert (base["layers"], base["hidden"], base["inner"]) == (4, 768, 3072)
    with pytest.raises(InvalidConfig, match="divisible"):
        architecture_dims(ArchitectureSpec(size="tiny", num_heads=3))


def test_gpt2_base_preset_is_about_124m_parameters():
    """The preset named after GPT-2 small must be that size (the GPU MFU benchmark uses it)."""
    from transformers import GPT2Config

    from snowtrain.trainer.models import architecture_dims

    d = architecture_dims(ArchitectureSpec(family="gpt2", size="base"))
    config = GPT2Config(
        vocab_size=50257, n_embd=d["hidden"], n_layer=d["layers"], n_head=d["heads"]
    )
    with torch.device("meta"):
        from transformers import GPT2LMHeadModel

        n = sum(p.numel() for p in GPT2LMHeadModel(config).parameters())
    assert 120e6 < n < 130e6


def test_pretraining_flops_per_token_counts_parameters_and_attention():
    from snowtrain.trainer.models import new_causal_lm, pretraining_flops_per_token

    arch = ArchitectureSpec(family="gpt2", size="tiny")  # 2 layers, d=64
    model = new_causal_lm(arch, 300, 128)
    n = sum(p.numel() for p in model.parameters())  # the tied embedding counted once
    assert pretraining_flops_per_token(model, arch, 128) == 6 * n + 12 * 2 * 64 * 128


@pytest.fixture(scope="module")
def tiny_lm_and_tokenizer():
    from snowtrain.trainer.models import build_causal_lm, train_tokenizer

    corpus = [f"row {i}: the quick brown fox jumps over the lazy dog {i % 7}" for i in range(200)]
    tokenizer = train_tokenizer(iter(corpus), TokenizerSpec(vocab_size=300, min_frequency=2), 64)
    torch.manual_seed(0)
    model = build_causal_lm(ArchitectureSpec(family="llama", size="tiny"), tokenizer, 64)
    return model, tokenizer


def test_trained_tokenizer_round_trips_text_and_model_matches_it(tiny_lm_and_tokenizer):
    model, tokenizer = tiny_lm_and_tokenizer
    text = "the quick brown fox, ünïcödé 123"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text  # byte-level: no unknowns
    assert model.config.vocab_size == len(tokenizer) <= 300
    assert (
        model.config.eos_token_id == tokenizer.eos_token_id == model.generation_config.pad_token_id
    )
    assert model.config._attn_implementation == "sdpa"


@pytest.mark.parametrize(
    "text",
    [
        # valid YAML, but the password is in the config file (refused: unknown field)
        f"task: classification\ndata:\n  snowflake:\n    password: {SECRET}\n",
        f'{{"data": {{"snowflake": {{"user": "u", "password": "{SECRET}"}}}}}}',
        # malformed YAML: PyYAML's own message quotes the offending line
        f"data:\n  snowflake: {{password: {SECRET}\n  user: [u\n",
        f"password: {SECRET}\n\tuser: u\n",
    ],
    ids=["yaml-field", "json-field", "yaml-unclosed", "yaml-tab"],
)
def test_a_bad_config_file_is_refused_without_quoting_it(tmp_path, capsys, monkeypatch, text):
    """A secret pasted into the config by mistake stays out of stdout, stderr and the
    termination message (from there it would reach the resource's status), while the error
    still says what is wrong and where."""
    from snowtrain.trainer.main import main

    config = tmp_path / "config.yaml"
    config.write_text(text)
    termination = tmp_path / "termination-log"
    monkeypatch.setenv("TERMINATION_MESSAGE_PATH", str(termination))
    assert main(["--config", str(config)]) == InvalidConfig.exit_code
    out, err = capsys.readouterr()
    summary = json.loads(termination.read_text())
    assert summary["reason"] == "InvalidSpec" and summary["message"] in err
    for where in (out, err, termination.read_text()):
        assert SECRET not in where
    if text.startswith("password"):
        assert "line 2, column 1" in summary["message"]
    elif "user: [u" not in text:
        assert "data.snowflake.password: unknown field" in summary["message"]


HUB_LOAD = """
import sys
from snowtrain.trainer.models import load_causal_lm, load_tokenizer
tokenizer = load_tokenizer(sys.argv[1])
model = load_causal_lm(sys.argv[1], tokenizer)
print(type(model).__name__, model.num_parameters(), len(tokenizer))
"""


def test_a_hub_id_loads_through_the_hugging_face_cache(tmp_path, tiny_lm_and_tokenizer):
    """``baseModel.uri: org/name`` goes to the hub client as an id, not a path: here the
    hub is offline and the model sits in the hub cache (HF_HOME), as on a cluster that mirrors
    models onto a cache volume; an id that is in no cache is a config error naming the cause."""
    import os
    import subprocess
    import sys

    model, tokenizer = tiny_lm_and_tokenizer
    repo = tmp_path / "hf" / "hub" / "models--acme--tiny-lm"
    revision = "0123456789abcdef0123456789abcdef01234567"
    model.save_pretrained(repo / "snapshots" / revision)
    tokenizer.save_pretrained(repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}

    def load(model_id: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", HUB_LOAD, model_id],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,  # no local folder of that name
            timeout=300,
        )

    found = load("acme/tiny-lm")
    assert found.returncode == 0, found.stderr[-2000:]
    assert found.stdout.split() == [
        type(model).__name__,
        str(model.num_parameters()),
        str(len(tokenizer)),
    ]
    missing = load("acme/not-cached")
    assert missing.returncode != 0
    assert "InvalidConfig" in missing.stderr and "HF_HUB_OFFLINE is set" in missing.stderr


def test_missing_local_model_is_a_config_error(tmp_path):
    from snowtrain.trainer.models import load_tokenizer

    with pytest.raises(InvalidConfig, match="does not exist"):
        load_tokenizer(str(tmp_path / "nope"))


# --------------------------------------------------------------------------- export
def test_lora_export_writes_merged_weights_and_the_adapter(tmp_path, tiny_lm_and_tokenizer):
    import copy

    from transformers import AutoModelForCausalLM

    from snowtrain.trainer.export import export_model
    from snowtrain.trainer.lora import apply_lora

    base, tokenizer = tiny_lm_and_tokenizer
    peft_model = apply_lora(copy.deepcopy(base), LoraSpec(r=4, alpha=8), "causal-lm")
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:  # B starts at zero; make the adapter change the outputs
            torch.nn.init.normal_(p, std=0.5)
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        expected = peft_model.eval()(input_ids=ids).logits
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "stale.txt").write_text("from an older attempt")
    for killed in (".out.tmp-99999", ".out.old-99999"):  # an export killed mid-way
        (tmp_path / killed / "adapter").mkdir(parents=True)
    out = export_model(
        tmp_path / "out",
        peft_model,
        tokenizer,
        lineage_record={"task": "causal-lm"},
        metrics={"trainLoss": 1.0},
        lora_merge=True,
    )
    names = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json"} <= names
    assert {"snowtrain.json", "metrics.json", "adapter"} <= names and "stale.txt" not in names
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert not list(tmp_path.glob(".out*"))  # temp and old dirs are gone, earlier ones too
    merged = AutoModelForCausalLM.from_pretrained(out)
    with torch.no_grad():
        assert torch.allclose(merged(input_ids=ids).logits, expected, atol=1e-4)


def test_mfu_of_gpt2_small_on_an_h100():
    """GPT-2 small (124M, 12 x 768, 1024 tokens) at 520k tokens/s on an H100 SXM is ~45% MFU.

    Attention adds 12 * 12 * 768 * 1024 = 113M FLOPs per token to 6N = 744M; without it
    the same run would read 39%.
    """
    from snowtrain.trainer.metrics import mfu, peak_flops, train_flops_per_token

    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops("NVIDIA H200") == 989e12
    assert peak_flops("NVIDIA H100 PCIe") == 756e12
    assert peak_flops("Some Future GPU") is None
    per_token = train_flops_per_token(124_000_000, layers=12, hidden=768, seq_len=1024)
    assert per_token == pytest.approx(857.2e6, rel=1e-3)
    assert mfu(per_token, 520_000, 989e12) == pytest.approx(0.451, abs=1e-3)
    assert mfu(train_flops_per_token(124_000_000), 520_000, 989e12) == pytest.approx(
        0.391, abs=1e-3
    )
