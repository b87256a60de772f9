"""Pretraining speed on a GPU: tokens/s, MFU and peak memory of a PretrainJob's model in bf16.

The model is built the way a PretrainJob builds it (``models.new_causal_lm``; by default
the gpt2 ``base`` preset, ~124M parameters, a 50304-token vocabulary, 1024-token blocks) and
fed full packed blocks the way ``PackedDataset.collate`` hands them over (no attention
mask). For each batch size it runs the snowtrain loop eagerly and, with ``--modes compile``,
under ``torch.compile``. The baseline, measured in the same run, is a plain Hugging Face
Trainer on the same model, blocks, first batch size and fused AdamW, in bf16; ratios are
printed.

Tokens/s is the steady state: from the first progress event after ``--warmup`` steps (CUDA
start-up, cuBLAS heuristics, compilation) to the last step. Progress events read the loss
(a GPU sync), so their timestamps are exact. MFU counts 6N + 12 * layers * d * seq FLOPs per
token (``metrics.train_flops_per_token``) over the GPU's dense bf16 peak; the 6N-only
figure is printed beside it. ``syncsPerStep`` counts host-device syncs in 10 eager steps
(``torch.cuda.set_sync_debug_mode``): each one stalls the queue of kernels.

    python bench/bench_mfu.py                                   # a CUDA machine
    python bench/bench_mfu.py --preset tiny --seq-len 128 --batch-sizes 4 --steps 30  # CPU check
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import tempfile
import time
import warnings
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from torch.utils.data import Dataset
from transformers import PreTrainedModel

from snowtrain.api.spec import ArchitectureSpec, TrainingSpec
from snowtrain.trainer.distributed import World, init_world
from snowtrain.trainer.loop import Objective, RunContext, TrainData, fit
from snowtrain.trainer.metrics import device_peak_flops, mfu, train_flops_per_token
from snowtrain.trainer.models import new_causal_lm, pretraining_flops_per_token
from snowtrain.trainer.progress import Reporter

LEARNING_RATE = 6e-4
BETAS = (0.9, 0.95)


class Blocks(Dataset):
    """Random full blocks (speed does not depend on the token values)."""

    def __init__(self, vocab: int, seq_len: int, count: int = 2048) -> None:
        self.blocks = torch.randint(0, vocab, (count, seq_len))

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.blocks[i], "labels": self.blocks[i]}

    @staticmethod
    def collate(batch: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        ids = torch.stack([b["input_ids"] for b in batch])
        return {"input_ids": ids, "labels": ids}


class StepClock(Reporter):
    """Keeps (step, time) of every progress event instead of printing it."""

    def __init__(self) -> None:
        super().__init__(interval_seconds=1.0)
        self.marks: list[tuple[int, float]] = []
        self.compiled: bool | None = None

    def event(self, name: str, **fields: Any) -> None:
        if name == "progress":
            self.marks.append((int(fields["step"]), time.perf_counter()))
        elif name == "start":  # a "compile" row without a compiler would measure eager mode
            self.compiled = fields.get("compiled")


def steady_tokens_per_second(marks: list[tuple[int, float]], warmup: int, per_step: int) -> float:
    """Tokens/s between the first mark at or after ``warmup`` steps and the last mark."""
    after = [(step, t) for step, t in marks if step >= warmup]
    if len(after) < 2 or after[-1][0] == after[0][0]:
        raise SystemExit(f"too few steps after a warmup of {warmup}: raise --steps")
    (s0, t0), (s1, t1) = after[0], after[-1]
    return (s1 - s0) * per_step / (t1 - t0)


def build_model(args: argparse.Namespace, device: torch.device) -> PreTrainedModel:
    torch.manual_seed(0)
    arch = ArchitectureSpec(family=args.family, size=args.preset)
    return new_causal_lm(arch, args.vocab, args.seq_len).to(device)


def precision(device: torch.device) -> str:
    return "bf16" if device.type == "cuda" else "fp32"


def reset_peak_memory(device: torch.device) -> int:
    """Free what earlier runs left (compiled graphs hold their models) and restart the peak.

    Returns the bytes still allocated, which the run's peak is measured above.
    """
    torch._dynamo.reset()
    gc.collect()
    if device.type != "cuda":
        return 0
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    return torch.cuda.memory_allocated()


def peak_memory_gib(device: torch.device, before: int) -> float | None:
    """Peak CUDA memory of one run: weights, gradients, optimizer state and activations."""
    if device.type != "cuda":
        return None
    return round((torch.cuda.max_memory_allocated() - before) / 2**30, 2)


def pretrain(
    model: PreTrainedModel, data: Blocks, spec: TrainingSpec, world: World, **loop: Any
) -> None:
    """The snowtrain loop as a PretrainJob runs it (AdamW betas included), no evaluation."""
    fit(
        model,
        TrainData(data, None, data.collate),
        spec,
        Objective("pretrain", betas=BETAS),
        RunContext(world, **loop),
    )


def run_snowtrain(args: argparse.Namespace, data: Blocks, batch: int, compiled: bool) -> dict:
    world = init_world()
    before = reset_peak_memory(world.device)
    model = build_model(args, world.device)
    spec = TrainingSpec(
        max_steps=args.steps,
        batch_size=batch,
        learning_rate=LEARNING_RATE,
        precision=precision(world.device),
        compile=compiled,
        max_seq_length=args.seq_len,
    )
    clock = StepClock()
    pretrain(model, data, spec, world, reporter=clock)
    return {
        "tokensPerSecond": steady_tokens_per_second(clock.marks, args.warmup, batch * args.seq_len),
        "peakMemoryGiB": peak_memory_gib(world.device, before),
        "compiled": clock.compiled,
    }


def run_hf_trainer(args: argparse.Namespace, data: Blocks, batch: int) -> dict:
    """The baseline: transformers.Trainer, timed over the same steady-state steps."""
    from transformers import Trainer, TrainerCallback, TrainingArguments

    device = init_world().device
    marks: list[tuple[int, float]] = []

    class Clock(TrainerCallback):
        def on_step_end(self, targs, state, control, **kwargs):
            if state.global_step in (args.warmup, args.steps):
                if device.type == "cuda":
                    torch.cuda.synchronize()
                marks.append((state.global_step, time.perf_counter()))

    before = reset_peak_memory(device)
    model = build_model(args, device)
    with tempfile.TemporaryDirectory() as out:
        targs = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=batch,
            max_steps=args.steps,
            learning_rate=LEARNING_RATE,
            adam_beta1=BETAS[0],
            adam_beta2=BETAS[1],
            weight_decay=0.01,
            warmup_steps=0,
            lr_scheduler_type="cosine",
            optim="adamw_torch_fused",
            bf16=device.type == "cuda",
            use_cpu=device.type != "cuda",
            report_to=[],
            save_strategy="no",
            logging_strategy="no",
            dataloader_num_workers=0,
            disable_tqdm=True,
            seed=0,
        )
        Trainer(
            model=model,
            args=targs,
            train_dataset=data,
            data_collator=data.collate,
            callbacks=[Clock()],
        ).train()
    return {
        "tokensPerSecond": steady_tokens_per_second(marks, args.warmup, batch * args.seq_len),
        "peakMemoryGiB": peak_memory_gib(device, before),
    }


def syncs_per_step(
    args: argparse.Namespace, data: Blocks, batch: int, steps: int = 10
) -> float | None:
    """Host-device syncs per eager step after warm-up (CUDA only; 0 is the goal)."""
    if not torch.cuda.is_available():
        return None
    world = init_world()
    model = build_model(args, world.device)
    spec = TrainingSpec(
        max_steps=steps + 2, batch_size=batch, precision="bf16", max_seq_length=args.seq_len
    )
    counted = {"steps": 0}

    def count_after_warmup() -> bool:  # called at the end of every step by the loop
        counted["steps"] += 1
        if counted["steps"] == 2:  # count steps 3 .. steps + 2
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("warn")
        elif counted["steps"] == steps + 2:  # not the final read of the run's mean loss
            torch.cuda.set_sync_debug_mode("default")
        return False

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            pretrain(
                model,
                data,
                spec,
                world,
                reporter=Reporter(enabled=False),
                should_stop=count_after_warmup,
            )
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    for w in syncs[:5]:
        print(f"  sync: {w.filename}:{w.lineno}: {str(w.message)[:120]}", flush=True)
    return len(syncs) / steps


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--family", choices=["gpt2", "llama"], default="gpt2")
    parser.add_argument("--preset", choices=["tiny", "small", "base", "medium"], default="base")
    parser.add_argument("--vocab", type=int, default=50304)
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 32])
    parser.add_argument(
        "--modes", nargs="+", choices=["eager", "compile"], default=["eager", "compile"]
    )
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()

    device = init_world().device
    name = (
        torch.cuda.get_device_name() if device.type == "cuda" else f"cpu x{torch.get_num_threads()}"
    )
    peak = device_peak_flops(device)
    with torch.device("meta"):
        shape = build_model(args, torch.device("meta"))
    n_params = sum(p.numel() for p in shape.parameters())
    arch = ArchitectureSpec(family=args.family, size=args.preset)
    per_token = pretraining_flops_per_token(shape, arch, args.seq_len)  # what jobs report
    per_token_6n = train_flops_per_token(n_params)
    data = Blocks(args.vocab, args.seq_len)
    print(
        f"{name}: {args.family} {args.preset}, {n_params / 1e6:.1f}M parameters, "
        f"{args.seq_len} tokens/block",
        flush=True,
    )

    def describe(result: dict) -> dict:
        tps = result["tokensPerSecond"]
        if peak:
            result["mfu"] = round(mfu(per_token, tps, peak), 4)
            result["mfu6N"] = round(mfu(per_token_6n, tps, peak), 4)
        result["tokensPerSecond"] = round(tps)
        return result

    runs: dict[str, dict] = {}
    for batch in args.batch_sizes:
        for mode in args.modes:
            key = f"snowtrain {mode} b{batch}"
            runs[key] = describe(run_snowtrain(args, data, batch, compiled=mode == "compile"))
            print(f"{key}: {runs[key]}", flush=True)
    baseline_batch = args.batch_sizes[0]
    baseline = f"hf_trainer b{baseline_batch}"
    try:  # after our runs: a failing baseline must not cost the numbers above
        runs[baseline] = describe(run_hf_trainer(args, data, baseline_batch))
        print(f"{baseline}: {runs[baseline]}", flush=True)
    except Exception as exc:  # reported, and the report still prints
        print(f"{baseline} failed: {exc!r}", flush=True)
    base = runs.get(baseline, {}).get("tokensPerSecond")
    report = {
        "device": name,
        "params": n_params,
        "flopsPerToken": per_token,
        "peakFlops": peak,
        "runs": runs,
        "ratioOverHfTrainer": {
            key: round(run["tokensPerSecond"] / base, 3) for key, run in runs.items()
        }
        if base
        else None,
        "syncsPerStep": syncs_per_step(args, data, baseline_batch),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
