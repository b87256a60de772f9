"""Device, dtype, attention kernel and CPU thread choices for inference.

On CUDA the model runs in bf16 (fp16 on GPUs without bf16) with PyTorch's SDPA attention,
which halves memory and uses fused kernels. On CPU it stays fp32 and uses exactly as many
intra-op threads as the pod may use: a container sees every core of the node, so without
this torch would spawn one thread per node core and thrash against its CPU limit.

`--quantize int8` (CPU only) swaps every `nn.Linear` for a dynamically quantized int8 one
after loading (`torch.ao.quantization.quantize_dynamic`: int8 weights, activations quantized
per batch): faster forwards on CPU at the price of slightly different scores (README: "The
model server"; ``bench/bench_serve.py``). It is opt-in because it changes outputs. There are
no int8 dynamic kernels for CUDA, where the model already runs in bf16/fp16, so asking for
int8 on CUDA is refused at startup rather than silently ignored: a setting that quietly does
nothing is worse than an error that says so.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from dataclasses import dataclass

import torch

from snowtrain.trainer.cpus import usable_cpus

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    dtype: torch.dtype
    threads: int | None  # CPU intra-op threads; None on CUDA
    quantize: str = "none"  # "int8": dynamic int8 nn.Linear (CPU only)


class QuantizeUnsupported(ValueError):
    """int8 quantization was asked for on a device without int8 dynamic kernels."""


def choose_runtime(
    device: str = "auto", threads: int | None = None, quantize: str = "none"
) -> Runtime:
    """Pick device and dtype and configure torch threads; call once before loading a model."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if quantize != "none" and dev.type != "cpu":
        raise QuantizeUnsupported(
            f"--quantize {quantize} runs on CPU only, and this server would run on {dev}; "
            "use --device cpu or --quantize none"
        )
    if dev.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        torch.backends.cuda.matmul.allow_tf32 = True
        return Runtime(dev, dtype, None)
    n = threads or usable_cpus()
    torch.set_num_threads(n)
    # Batches already give parallelism across inputs; extra inter-op threads only contend.
    # RuntimeError: already set (a second server in the same process, e.g. tests).
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)
    log.info(
        "CPU inference with %d threads, %s",
        n,
        "int8 dynamic quantization of nn.Linear"
        if quantize == "int8"
        else "fp32 (no quantization)",
    )
    return Runtime(dev, torch.float32, n, quantize)


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """Dynamic int8 quantization of every nn.Linear (in place); logs how many were swapped.

    torch marks `torch.ao.quantization` deprecated in favour of torchao, yet ships it and its
    x86/fbgemm kernels; the notice is silenced here only, not process-wide.
    """
    linears = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"(?s).*deprecated", category=UserWarning)
        warnings.filterwarnings("ignore", message=r"(?s).*deprecated", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        from torch.ao.quantization import quantize_dynamic

        model = quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
    if linears == 0:
        log.warning("--quantize int8: the model has no nn.Linear layers; nothing was quantized")
    else:
        log.info(
            "int8 dynamic quantization: %d nn.Linear layers (engine %s)",
            linears,
            torch.backends.quantized.engine,
        )
    return model
