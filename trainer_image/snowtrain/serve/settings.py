"""Server settings: the command line of `python -m snowtrain.serve` as one frozen object.

Kept apart from the app (and torch) so the CLI can parse and validate arguments instantly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

QUANTIZE_CHOICES = ("none", "int8")


@dataclass(frozen=True)
class ServeSettings:
    """Everything `python -m snowtrain.serve` accepts (contracts §4), with safe defaults."""

    model_dir: Path
    name: str | None = None
    host: str = "0.0.0.0"
    port: int = 8080
    max_batch_size: int = 32
    max_wait_ms: float = 5.0
    max_queue: int = 256
    max_instances: int = 64
    """Most instances (classification) or prompts (completion) in one request."""
    max_input_chars: int = 20_000
    """Longest single text or prompt, in characters."""
    max_new_tokens: int = 1024
    """Largest `max_tokens` a completion request may ask for."""
    max_body_bytes: int = 4 * 1024 * 1024
    device: str = "auto"
    threads: int | None = None
    graceful_timeout_s: float = 30.0
    quantize: str = "none"
    """"int8": dynamic int8 quantization of the model's nn.Linear layers (CPU only)."""

    def __post_init__(self) -> None:
        if self.quantize not in QUANTIZE_CHOICES:
            raise ValueError(
                f"quantize must be one of {', '.join(QUANTIZE_CHOICES)}, got {self.quantize!r}"
            )
        if self.quantize != "none" and self.device.startswith("cuda"):
            raise ValueError(
                f"--quantize {self.quantize} runs on CPU only; use --device cpu (or auto on a "
                "machine without a GPU) or --quantize none"
            )
