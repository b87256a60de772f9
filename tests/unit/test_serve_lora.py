"""LoRA exports served: the server answers with the trained model, merged or not.

A peft model with non-zero adapters (and, for a classifier, a changed head) goes through the
trainer's real export (`lora.merge` true and false) and the server's real loading code; what
the server computes must be the trained model's output, not the base model's.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import httpx
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from snowtrain.api.spec import LoraSpec
from snowtrain.serve.generation import CompletionItem
from snowtrain.serve.model_dir import ModelDirError, inspect_model_dir
from snowtrain.serve.models import build_model
from snowtrain.serve.runtime import Runtime
from snowtrain.trainer.export import export_model
from snowtrain.trainer.lora import apply_lora
from tests.fixtures.models import LABELS
from tests.fixtures.serving import running_server

CPU = Runtime(torch.device("cpu"), torch.float32, None)
PROMPTS = ["once upon a time", "the movie was", "numbers 0 1 2"]
TEXTS = ["the movie was great", "terrible service", "an ordinary afternoon"]


def trained_lora(base: torch.nn.Module, task: str) -> torch.nn.Module:
    """`base` with LoRA adapters whose trainable weights (B starts at zero) are all moved."""
    torch.manual_seed(1)
    model = apply_lora(copy.deepcopy(base), LoraSpec(r=4, alpha=8, dropout=0.0), task)
    with torch.no_grad():
        for _, p in model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.3)
    return model.eval()


def export(tmp_path: Path, model, tokenizer, task: str, *, merge: bool, labels=None) -> Path:
    return export_model(
        tmp_path / f"merge-{merge}",
        model,
        tokenizer,
        lineage_record={"kind": "FineTuneJob", "name": "lora", "task": task},
        metrics={"steps": 1},
        labels=labels,
        lora_merge=merge,
    )


@torch.inference_mode()
def greedy(model, tokenizer, prompt: str, n: int = 8) -> str:
    enc = tokenizer(prompt, return_tensors="pt")
    out = model.generate(
        **enc, max_new_tokens=n, do_sample=False, pad_token_id=tokenizer.eos_token_id
    )
    return tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)


@torch.inference_mode()
def logits(model, tokenizer, text: str) -> torch.Tensor:
    return model(**tokenizer(text, return_tensors="pt")).logits


@pytest.fixture(scope="module")
def lm(tiny_causal_lm_dir: Path):
    """(base, trained peft model, tokenizer) for the tiny GPT-2."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_causal_lm_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_causal_lm_dir).eval()
    return base, trained_lora(base, "causal-lm"), tokenizer


@pytest.mark.parametrize("merge", [False, True])
def test_completions_come_from_the_trained_adapter(tmp_path: Path, lm, merge: bool) -> None:
    base, trained, tokenizer = lm
    expected_logits = [logits(trained, tokenizer, p) for p in PROMPTS]
    expected_text = [greedy(trained, tokenizer, p) for p in PROMPTS]
    assert expected_text != [greedy(base, tokenizer, p) for p in PROMPTS]

    out = export(tmp_path, copy.deepcopy(trained), tokenizer, "causal-lm", merge=merge)
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    lineage = json.loads((out / "snowtrain.json").read_text())
    assert lineage["lora"] == {"adapter": "adapter", "merged": merge}

    info = inspect_model_dir(out)
    assert info.adapter == (None if merge else out / "adapter")  # merged: never applied twice
    served = build_model(info, CPU)
    served.load()
    for prompt, want in zip(PROMPTS, expected_logits, strict=True):
        got = logits(served.model, served.tokenizer, prompt)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
        assert not torch.allclose(got, logits(base, tokenizer, prompt), atol=1e-2)
    done = served.predict([CompletionItem(p, max_tokens=8, temperature=0) for p in PROMPTS])
    assert [c.text for c in done] == expected_text


def test_the_server_answers_with_the_unmerged_adapter(tmp_path: Path, lm) -> None:
    """End to end over HTTP: `lora.merge: false` serves the trained model, not the base."""
    _, trained, tokenizer = lm
    want = greedy(trained, tokenizer, PROMPTS[0])
    out = export(tmp_path, copy.deepcopy(trained), tokenizer, "causal-lm", merge=False)
    with running_server(out, max_wait_ms=5) as url:
        body = {"prompt": PROMPTS[0], "max_tokens": 8, "temperature": 0}
        resp = httpx.post(f"{url}/v1/completions", json=body, timeout=60)
    assert resp.status_code == 200, resp.text
    assert resp.json()["choices"][0]["text"] == want


def test_an_adapter_missing_weights_is_refused_not_served_as_the_base(tmp_path: Path, lm) -> None:
    from safetensors.torch import load_file, save_file

    _, trained, tokenizer = lm
    out = export(tmp_path, copy.deepcopy(trained), tokenizer, "causal-lm", merge=False)
    weights = out / "adapter" / "adapter_model.safetensors"
    tensors = load_file(weights)
    save_file({k: v for k, v in tensors.items() if ".h.1." not in k}, weights)
    with pytest.raises(ValueError, match="does not fit the model"):
        build_model(inspect_model_dir(out), CPU).load()


@pytest.mark.parametrize("merge", [False, True])
def test_classifier_scores_come_from_the_trained_adapter_and_head(
    tmp_path: Path, tiny_classifier_dir: Path, merge: bool
) -> None:
    """peft trains a classifier's head as `modules_to_save`: the served scores include it."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_classifier_dir)
    base = AutoModelForSequenceClassification.from_pretrained(tiny_classifier_dir).eval()
    trained = trained_lora(base, "classification")
    want = [logits(trained, tokenizer, t).softmax(-1)[0] for t in TEXTS]
    base_probs = [logits(base, tokenizer, t).softmax(-1)[0] for t in TEXTS]

    out = export(
        tmp_path, copy.deepcopy(trained), tokenizer, "classification", merge=merge, labels=LABELS
    )
    info = inspect_model_dir(out)
    assert info.adapter == (None if merge else out / "adapter")
    served = build_model(info, CPU)
    served.load()
    for got, expected, untrained in zip(served.predict(TEXTS), want, base_probs, strict=True):
        probs = torch.tensor([got.scores[label] for label in LABELS])
        torch.testing.assert_close(probs, expected, atol=1e-5, rtol=1e-4)
        assert not torch.allclose(probs, untrained, atol=1e-3)


# -- what the model directory says ---------------------------------------------------------


def _dir(tmp_path: Path, lineage: dict, adapter: bool = True) -> Path:
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"]}))
    (tmp_path / "snowtrain.json").write_text(json.dumps({"task": "causal-lm", **lineage}))
    if adapter:
        (tmp_path / "adapter").mkdir(exist_ok=True)
        (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    return tmp_path


def test_exports_before_the_lora_record_are_read_from_their_trainer_config(
    tmp_path: Path,
) -> None:
    def lora(merge: bool) -> dict:
        return {"config": {"training": {"lora": {"enabled": True, "merge": merge}}}}

    assert inspect_model_dir(_dir(tmp_path, lora(False))).adapter == tmp_path / "adapter"
    assert inspect_model_dir(_dir(tmp_path, lora(True))).adapter is None
    assert inspect_model_dir(_dir(tmp_path, {"config": {"training": {}}})).adapter is None


def test_an_unmerged_export_without_its_adapter_is_refused(tmp_path: Path) -> None:
    d = _dir(tmp_path, {"lora": {"adapter": "adapter", "merged": False}}, adapter=False)
    with pytest.raises(ModelDirError, match="untrained base model"):
        inspect_model_dir(d)
    with pytest.raises(ModelDirError, match="lora must be"):
        inspect_model_dir(_dir(tmp_path, {"lora": {"merged": "no"}}))
