"""Causal-LM fine-tuning on prompt/completion rows (Cortex's shape), full and LoRA."""

from __future__ import annotations

import json

import pytest

from tests.integration.trainer_run import (
    QA_PAIRS,
    completion_loss,
    qa_table,
    run_trainer,
    tiny_gpt2_dir,
    trainer_config,
    trainer_env,
)

pytestmark = [pytest.mark.slow, pytest.mark.snowflake]


def config_for(db, tmp, base, **training):
    config = trainer_config(
        db,
        tmp,
        task="causal-lm",
        table="QA",
        columns={"prompt": "PROMPT", "completion": "COMPLETION"},
        baseModel=str(base),
        training={"batchSize": 8, "maxSeqLength": 32, "warmupRatio": 0.05, **training},
    )
    config["data"]["validation"] = {"fraction": 0.0}  # every fact is a training fact
    return config


def test_fine_tune_learns_the_completions(snowflake_db, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    snowflake_db.seed_table("QA", qa_table(copies=12))
    base = tiny_gpt2_dir(tmp_path / "base")
    config = config_for(snowflake_db, tmp_path, base, maxSteps=60, learningRate=3e-3)
    run = run_trainer(config, trainer_env(snowflake_db, tmp_path), tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]

    out = tmp_path / "model"
    before, after = completion_loss(base), completion_loss(out)
    print(f"completion loss {before:.3f} -> {after:.3f}")
    assert after < before / 4

    model = AutoModelForCausalLM.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    prompt, completion = QA_PAIRS[3]
    ids = tokenizer(prompt, return_tensors="pt")
    generated = model.generate(**ids, max_new_tokens=6, do_sample=False)
    text = tokenizer.decode(generated[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert text == completion
    assert json.loads((out / "snowtrain.json").read_text())["task"] == "causal-lm"
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == (
        tokenizer.eos_token_id
    )


def lora_fine_tune(db, tmp_path, *, merge: bool):
    """Train LoRA adapters on the QA rows; return (exported model dir, base model dir)."""
    db.seed_table("QA", qa_table(copies=6))
    base = tiny_gpt2_dir(tmp_path / "base")
    config = config_for(
        db,
        tmp_path,
        base,
        maxSteps=30,
        learningRate=1e-2,
        lora={"r": 8, "alpha": 16, "dropout": 0.0, "merge": merge},
    )
    run = run_trainer(config, trainer_env(db, tmp_path), tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    return tmp_path / "model", base


def test_lora_fine_tune_exports_merged_weights_and_the_adapter(snowflake_db, tmp_path):
    from safetensors.torch import load_file

    out, base = lora_fine_tune(snowflake_db, tmp_path, merge=True)
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    merged = load_file(out / "model.safetensors")
    assert not any("lora" in key for key in merged)  # plain weights: no peft needed to serve
    assert completion_loss(out) < completion_loss(base) - 0.5


def test_lora_fine_tune_without_merge_serves_the_base_plus_the_adapter(snowflake_db, tmp_path):
    """`lora.merge: false`: base weights at the top, the adapter beside them, and the model
    server applies it, so what it serves is the trained model (not the base)."""
    import torch
    from safetensors.torch import load_file

    from snowtrain.serve.model_dir import inspect_model_dir
    from snowtrain.serve.models import build_model
    from snowtrain.serve.runtime import Runtime

    out, base = lora_fine_tune(snowflake_db, tmp_path, merge=False)
    exported, original = load_file(out / "model.safetensors"), load_file(base / "model.safetensors")
    assert exported.keys() == original.keys()  # no lora keys: the plain base
    assert all(torch.equal(exported[k], original[k]) for k in original)
    assert json.loads((out / "snowtrain.json").read_text())["lora"] == {
        "adapter": "adapter",
        "merged": False,
    }

    info = inspect_model_dir(out)
    assert info.adapter == out / "adapter"
    served = build_model(info, Runtime(torch.device("cpu"), torch.float32, None))
    served.load()
    assert completion_loss(out, served.model) < completion_loss(base) - 0.5
