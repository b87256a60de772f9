"""Causal-LM loss benchmark: snowtrain's sliced cross-entropy vs transformers' ForCausalLMLoss.

Both compute the same loss and gradient from the same bf16 logits (a GPT-2 vocabulary of
50304 at 4096 tokens by default: one 4 x 1024 batch). transformers upcasts all the logits to
fp32 and ``cross_entropy`` keeps an fp32 log-softmax for backward; snowtrain keeps the bf16
logits and one fp32 number per token, and works on slices. What is measured is the loss
alone, forward + backward, since the output-layer matmul before it is the same for both:

- peak memory above the logits and labels (CUDA: ``max_memory_allocated``; CPU: peak RSS
  growth of a fresh subprocess per variant, so one variant's freed pages do not hide the
  other's);
- time per forward + backward (median of ``--repeats`` after one warm-up).

    .venv/bin/python -m bench.bench_loss            # CPU
    .venv/bin/python -m bench.bench_loss --tokens 16384   # a 16 x 1024 batch, on a GPU

Prints one JSON line per variant and the ratios (transformers / snowtrain).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

VARIANTS = ("transformers", "snowtrain")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _loss_fn(variant: str):
    if variant == "transformers":
        from transformers.loss.loss_utils import ForCausalLMLoss

        return ForCausalLMLoss
    from snowtrain.trainer.loss import causal_lm_loss

    return causal_lm_loss


def measure(variant: str, tokens: int, vocab: int, repeats: int, device: str) -> dict:
    """Peak memory and time of one variant, in this process."""
    torch.manual_seed(0)
    dev = torch.device(device)
    logits = (torch.randn(1, tokens, vocab, device=dev) * 2).to(torch.bfloat16)
    logits.requires_grad_()
    labels = torch.randint(0, vocab, (1, tokens), device=dev)
    loss_fn = _loss_fn(variant)

    def step() -> float:
        logits.grad = None
        loss = loss_fn(logits, labels, vocab_size=vocab)
        loss.backward()
        return loss.item()  # a sync: the step is done when it returns

    if dev.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        value = step()
        peak = torch.cuda.max_memory_allocated() - before
    else:
        before = _rss_bytes()
        value = step()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {
        "variant": variant,
        "device": device,
        "tokens": tokens,
        "vocab": vocab,
        "loss": round(value, 6),
        "peakMiB": round(peak / 2**20),
        "msPerStep": round(1000 * statistics.median(times), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--vocab", type=int, default=50304)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = measure(args.child, args.tokens, args.vocab, args.repeats, args.device)
        print(json.dumps(result), flush=True)
        return

    results = {}
    for variant in VARIANTS:
        cmd = [sys.executable, "-m", "bench.bench_loss", "--child", variant]
        cmd += ["--tokens", str(args.tokens), "--vocab", str(args.vocab)]
        cmd += ["--repeats", str(args.repeats), "--device", args.device]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        results[variant] = json.loads(out.strip().splitlines()[-1])
        print(json.dumps(results[variant]), flush=True)
    theirs, ours = results["transformers"], results["snowtrain"]
    print(
        json.dumps(
            {
                "sameLoss": abs(theirs["loss"] - ours["loss"]) <= 1e-4 * abs(theirs["loss"]),
                "peakMemory_transformers_over_snowtrain": round(
                    theirs["peakMiB"] / max(ours["peakMiB"], 1), 2
                ),
                "time_transformers_over_snowtrain": round(
                    theirs["msPerStep"] / ours["msPerStep"], 2
                ),
            }
        )
    )


if __name__ == "__main__":
    main()
