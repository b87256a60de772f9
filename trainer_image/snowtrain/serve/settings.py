"""Server settings: the command line of `python -m snowtrain.serve` as one frozen object.

Kept apart from the app (and torch) so the CLI can parse and validate arguments instantly.
Every size a request may carry is bounded by a setting here (or by a structural constant in
`schemas`), so a server operator can tune what one request may cost; the request schemas are
built from these values, so the limits also appear in the server's OpenAPI document.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

QUANTIZE_CHOICES = ("none", "int8")
BATCHING_CHOICES = ("continuous", "lockstep")

TOKEN_ENV = "SNOWTRAIN_SERVE_TOKEN"
"""Environment variable holding the bearer token itself (never a command-line flag: `ps`)."""
TOKEN_FILE_ENV = "SNOWTRAIN_SERVE_TOKEN_FILE"
"""Environment variable naming the token file (a mounted Kubernetes Secret)."""


@dataclass(frozen=True)
class ServeSettings:
    """Everything `python -m snowtrain.serve` accepts (README: "The model server"), with safe
    defaults."""

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
    max_stop_strings: int = 4
    """Most `stop` strings in one completion request (OpenAI's own limit)."""
    max_stop_chars: int = 128
    """Longest single stop string, in characters: each one is searched for after every
    generated token, so its length multiplies the per-token cost of the whole batch."""
    max_body_bytes: int = 4 * 1024 * 1024
    device: str = "auto"
    threads: int | None = None
    graceful_timeout_s: float = 30.0
    quantize: str = "none"
    """"int8": dynamic int8 quantization of the model's nn.Linear layers (CPU only)."""
    batching: str = "continuous"
    """How completions are scheduled: "continuous" (every decoding step admits waiting
    requests and releases finished ones) or "lockstep" (`generate` over a batch until its
    longest request ends). Classifiers always batch dynamically."""
    kv_cache_tokens: int | None = None
    """Continuous batching's KV cache size in tokens, allocated at start (default: room for
    max_batch_size sequences of up to 1024 tokens, at least one full context)."""
    max_batch_tokens: int | None = None
    """Continuous batching: most tokens one step processes (long prompts are prefilled in
    chunks of this size between decoding steps); default: the engine's."""
    token_file: Path | None = None
    """File holding the bearer token every non-health endpoint requires (re-read when it
    changes, so a rotated Kubernetes Secret takes effect without a restart)."""
    token: str | None = field(default=None, repr=False)
    """The bearer token itself (from $SNOWTRAIN_SERVE_TOKEN); kept out of repr and logs."""

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
        if self.batching not in BATCHING_CHOICES:
            raise ValueError(
                f"batching must be one of {', '.join(BATCHING_CHOICES)}, got {self.batching!r}"
            )
        for name in (
            "max_instances",
            "max_input_chars",
            "max_new_tokens",
            "max_stop_strings",
            "max_stop_chars",
            "max_body_bytes",
            "kv_cache_tokens",
            "max_batch_tokens",
        ):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.token is not None and self.token_file is not None:
            raise ValueError("give the bearer token as a file or as a value, not both")
        if self.token is not None and not self.token.strip():
            raise ValueError("the bearer token is empty")

    @property
    def auth_enabled(self) -> bool:
        """Whether requests other than health checks and metrics need a bearer token."""
        return self.token is not None or self.token_file is not None
