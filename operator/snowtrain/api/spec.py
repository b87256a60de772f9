"""Spec building blocks shared by FineTuneJob and PretrainJob.

Each class is one section of a spec. Field docstrings become the CRD's descriptions (what
``kubectl explain`` prints), so they are written for the person filling the YAML in.
Cross-field rules that the API server can express (one-of, enums, bounds, patterns) are put
into the generated schema; the rest live in :mod:`snowtrain.api.validation`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from .base import YAML_FLOAT, ApiModel, Float
from .identifiers import COLUMN_PATTERN, STAGE_PATTERN, TABLE_PATTERN
from .pod import PodOverrides

#: Kubernetes resource quantity (``"4"``, ``"500m"``, ``"16Gi"``).
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$"
#: Kubernetes object name (DNS-1123 subdomain).
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
#: A relative path inside the model volume; no ``..`` and no leading ``/``.
RELATIVE_PATH_PATTERN = r"^[A-Za-z0-9_\-][A-Za-z0-9_.\-]*(/[A-Za-z0-9_\-][A-Za-z0-9_.\-]*)*$"


def _one_of(*fields: str) -> dict[str, Any]:
    """JSON-schema extra: exactly one of ``fields`` must be set (enforced by the API server)."""
    return {"oneOf": [{"required": [f]} for f in fields]}


class LocalObjectReference(ApiModel):
    """A reference to an object in the same namespace."""

    name: str = Field(pattern=NAME_PATTERN, max_length=253)
    """Name of the referenced object."""


class SnowflakeConnection(ApiModel):
    """How the trainer reaches Snowflake. Secrets only ever come from ``secretRef``."""

    secret_ref: LocalObjectReference | None = None
    """Secret with the credentials. Keys: account, user, and one of password, privateKey
    (PEM, with optional privateKeyPassphrase) or token (OAuth); optionally role, warehouse,
    database, schema, host, port, protocol. Required on a cluster; local mode reads the
    environment or ~/.snowflake/connections.toml instead."""
    account: str | None = Field(default=None, max_length=255)
    """Account identifier, local mode only: on a cluster it comes from the Secret alone."""
    user: str | None = Field(default=None, max_length=255)
    """Login name, local mode only: on a cluster it comes from the Secret alone."""
    role: str | None = Field(default=None, max_length=255)
    """Role for the session; on a cluster only a role the installation allows
    (snowflake.allowedRoles), otherwise the Secret's."""
    warehouse: str | None = Field(default=None, max_length=255)
    """Virtual warehouse that runs the query."""
    database: str | None = Field(default=None, max_length=255)
    """Default database for unqualified table names."""
    schema_: str | None = Field(default=None, alias="schema", max_length=255)
    """Default schema for unqualified table names."""
    login_timeout_seconds: int = Field(default=60, ge=1, le=3600)
    """Give up logging in after this long (then retry)."""
    network_timeout_seconds: int = Field(default=300, ge=1, le=86400)
    """Give up on a silent connection after this long (then retry)."""
    retries: int = Field(default=3, ge=0, le=20)
    """Retries on transient errors (network, 5xx, expired session), with backoff."""


class ValidationSource(ApiModel):
    """Where validation rows come from: a fraction of the training rows, or their own source."""

    fraction: Float = Field(default=0.1, ge=0.0, le=0.5)
    """Fraction of rows held out, chosen deterministically by hashing each row (stable across
    runs and resumes). Ignored when table or query is set."""
    table: str | None = Field(default=None, pattern=TABLE_PATTERN, max_length=800)
    """A separate validation table with the same columns."""
    query: str | None = Field(default=None, min_length=1, max_length=100_000)
    """A separate validation query with the same columns."""

    @model_validator(mode="after")
    def _not_both(self) -> ValidationSource:
        if self.table and self.query:
            raise ValueError("set at most one of table or query")
        return self


class DataSpec(ApiModel):
    """The training data: one Snowflake table or query, read in Arrow batches."""

    model_config = ApiModel.model_config | {"json_schema_extra": _one_of("table", "query")}

    snowflake: SnowflakeConnection = Field(default_factory=SnowflakeConnection)
    """Connection settings."""
    table: str | None = Field(default=None, pattern=TABLE_PATTERN, max_length=800)
    """Table to read: ``TABLE``, ``SCHEMA.TABLE`` or ``DB.SCHEMA.TABLE`` (letters, digits,
    _ and $; double-quote a part to keep its case). Exactly one of table or query."""
    query: str | None = Field(default=None, min_length=1, max_length=100_000)
    """A single SELECT statement. Exactly one of table or query."""
    columns: dict[str, str] = Field(default_factory=dict)
    """Column mapping from role to column name. FineTuneJob classification: text, label;
    causal-lm: prompt, completion; PretrainJob: text. Defaults to the upper-cased role."""
    validation: ValidationSource = Field(default_factory=ValidationSource)
    """Validation split."""
    max_rows: int | None = Field(default=None, ge=1)
    """Read at most this many rows (handy for trial runs)."""
    batch_rows: int = Field(default=8192, ge=64, le=1_000_000)
    """Rows per Arrow batch tokenised at a time: bounds the trainer's memory."""

    @model_validator(mode="after")
    def _one_source(self) -> DataSpec:
        if bool(self.table) == bool(self.query):
            raise ValueError("set exactly one of table or query")
        for role, column in self.columns.items():
            if not re.fullmatch(COLUMN_PATTERN, column):
                raise ValueError(f"columns.{role}: {column!r} is not a valid column name")
        return self


class LoraSpec(ApiModel):
    """Low-rank adapters (peft) instead of full fine-tuning."""

    enabled: bool = True
    """Train LoRA adapters."""
    r: int = Field(default=16, ge=1, le=1024)
    """Adapter rank."""
    alpha: int = Field(default=32, ge=1, le=4096)
    """Scaling numerator (effective scale alpha / r)."""
    dropout: Float = Field(default=0.05, ge=0.0, lt=1.0)
    """Dropout on the adapter input."""
    target_modules: list[str] | None = None
    """Module names to adapt; default: the attention and MLP projections of the family."""
    merge: bool = True
    """Merge the adapter into the exported weights, which then serve without peft. false exports
    the base weights unchanged and the model server applies the adapter when it loads them.
    Either way the trained adapter is saved under adapter/."""


class CheckpointSpec(ApiModel):
    """When to checkpoint; the trainer resumes from the latest one by itself."""

    every_steps: int | None = Field(default=500, ge=1)
    """Checkpoint every N optimizer steps."""
    every_minutes: Annotated[float | None, YAML_FLOAT] = Field(default=10.0, gt=0, le=1440)
    """Also checkpoint when this much time passed since the last one."""
    keep: int = Field(default=2, ge=1, le=100)
    """Keep the newest K checkpoints."""


class TrainingSpec(ApiModel):
    """Optimisation hyper-parameters."""

    epochs: Float = Field(default=3.0, gt=0, le=1000)
    """Passes over the training rows (fractions allowed). Ignored when maxSteps is set."""
    max_steps: int | None = Field(default=None, ge=1)
    """Stop after this many optimizer steps."""
    batch_size: int = Field(default=16, ge=1, le=4096)
    """Sequences per device per micro-step."""
    gradient_accumulation_steps: int = Field(default=1, ge=1, le=1024)
    """Micro-steps per optimizer step."""
    learning_rate: Float = Field(default=5e-5, gt=0, le=1)
    """Peak learning rate (AdamW)."""
    lr_scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    """Decay after warmup."""
    warmup_ratio: Float = Field(default=0.05, ge=0, le=0.5)
    """Fraction of steps spent warming up linearly."""
    weight_decay: Float = Field(default=0.01, ge=0, le=1)
    """AdamW weight decay (not applied to biases and norms)."""
    max_grad_norm: Float = Field(default=1.0, gt=0, le=1000)
    """Gradient clipping norm."""
    max_seq_length: int = Field(default=256, ge=8, le=131072)
    """Truncate (fine-tuning) or pack (pretraining) sequences to this many tokens."""
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    """auto: bf16 autocast on GPUs that support it, else fp32."""
    seed: int = Field(default=42, ge=0, le=2**31 - 1)
    """Seed for initialisation, shuffling and dropout."""
    eval_every_steps: int | None = Field(default=None, ge=1)
    """Evaluate every N steps (always at the end)."""
    gradient_checkpointing: bool = False
    """Trade compute for activation memory."""
    compile: bool = False
    """torch.compile the model (slow start, faster steps on GPUs)."""
    group_by_length: bool = True
    """Batch rows of similar length together, so less compute goes to padding: each epoch's
    shuffled rows are cut into groups of 50 batches and sorted by length within a group.
    Pretraining blocks all have one length, so it changes nothing there."""
    lora: LoraSpec | None = None
    """Train LoRA adapters instead of all weights (causal-lm fine-tuning)."""
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec)
    """Checkpoint cadence."""


class ResourcesSpec(ApiModel):
    """What each training pod asks the scheduler for."""

    gpus_per_node: int = Field(default=1, ge=0, le=16)
    """GPUs per pod; the trainer runs one DDP rank per GPU (torch.distributed.run)."""
    nodes: int = Field(default=1, ge=1, le=256)
    """Pods (nodes) in the job; several meet through a rendezvous store the operator runs beside
    them (README: several nodes)."""
    cpu: str | None = Field(default=None, pattern=QUANTITY_PATTERN)
    """CPU request and limit per pod, e.g. "8"."""
    memory: str | None = Field(default=None, pattern=QUANTITY_PATTERN)
    """Memory request and limit per pod, e.g. "64Gi"."""
    shared_memory: str | None = Field(default=None, pattern=QUANTITY_PATTERN)
    """Size of /dev/shm (an in-memory emptyDir) for data loader workers."""
    gpu_resource_name: str = Field(default="nvidia.com/gpu", max_length=253)
    """Extended resource name of the GPU."""
    node_selector: dict[str, str] = Field(default_factory=dict)
    """Node labels the pods must match."""
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    """Pod tolerations (core/v1 Toleration)."""
    priority_class_name: str | None = Field(default=None, pattern=NAME_PATTERN)
    """PriorityClass of the training pods (preemption order)."""
    queue_name: str | None = Field(default=None, pattern=NAME_PATTERN)
    """Kueue LocalQueue: sets the kueue.x-k8s.io/queue-name label; Kueue then admits the job."""


class OutputSpec(ApiModel):
    """Where the trained model goes."""

    volume_claim_name: str | None = Field(default=None, pattern=NAME_PATTERN)
    """PersistentVolumeClaim holding models and checkpoints (checkpoints survive preemption
    only on a persistent volume). Required for serving on a cluster."""
    path: str | None = Field(default=None, pattern=RELATIVE_PATH_PATTERN, max_length=512)
    """Directory inside the claim; default <kind>/<namespace>/<name>."""
    stage: str | None = Field(default=None, pattern=STAGE_PATTERN, max_length=1000)
    """Also upload the exported model to this Snowflake internal stage (PUT), e.g.
    @MODELS/sentiment."""


class ServingResources(ApiModel):
    """Resources of each serving pod."""

    cpu: str | None = Field(default=None, pattern=QUANTITY_PATTERN)
    """CPU request and limit."""
    memory: str | None = Field(default=None, pattern=QUANTITY_PATTERN)
    """Memory request and limit."""
    gpus: int = Field(default=0, ge=0, le=16)
    """GPUs per serving pod."""


#: A key of a Secret's data (what the API server accepts as a data key).
SECRET_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"


class SecretKeySelector(ApiModel):
    """One key of a Secret in the job's namespace."""

    name: str = Field(pattern=NAME_PATTERN, max_length=253)
    """Name of the Secret."""
    key: str = Field(default="token", pattern=SECRET_KEY_PATTERN, max_length=253)
    """The key holding the value."""


class ServingAuth(ApiModel):
    """Bearer-token authentication of the model server."""

    secret_ref: SecretKeySelector
    """Secret key holding the token. Every request but health checks and /metrics must carry
    ``Authorization: Bearer <token>`` (401 otherwise); the token is compared in constant
    time, never logged, and re-read within seconds of the Secret changing (rotation without
    a restart)."""


class ServingSpec(ApiModel):
    """Roll out an inference Deployment + Service once training succeeds."""

    enabled: bool = True
    """Serve the model after success."""
    replicas: int = Field(default=1, ge=0, le=1000)
    """Serving pods."""
    resources: ServingResources = Field(default_factory=ServingResources)
    """Per-pod resources."""
    port: int = Field(default=8080, ge=1, le=65535)
    """Container and Service port."""
    max_batch_size: int = Field(default=32, ge=1, le=1024)
    """Dynamic batching: most requests per forward pass."""
    max_wait_ms: int = Field(default=5, ge=0, le=10_000)
    """Dynamic batching: longest wait for a batch to fill."""
    max_queue: int = Field(default=256, ge=1, le=100_000)
    """Requests waiting beyond this are answered 429 instead of growing memory."""
    quantize: Literal["none", "int8"] = "none"
    """int8: dynamic int8 linear layers on CPU serving pods (faster forwards, probabilities
    slightly different from fp32; bench/bench_serve.py compares them); CPU only."""
    auth: ServingAuth | None = None
    """Require a bearer token on inference requests (token from a Secret); without it, any
    client the network policy lets in may query the model."""
    pod_template: PodOverrides | None = None
    """Typed additions to the serving pods, as spec.podTemplate (the container is named
    "server")."""

    @model_validator(mode="after")
    def _int8_on_cpu(self) -> ServingSpec:
        if self.quantize == "int8" and self.resources.gpus > 0:
            raise ValueError(
                "quantize int8 runs on CPU only (GPU pods serve in bf16/fp16); "
                "set resources.gpus to 0 or quantize to none"
            )
        return self


class BaseModelRef(ApiModel):
    """The model a FineTuneJob starts from."""

    model_config = ApiModel.model_config | {"json_schema_extra": _one_of("uri", "pretrainJobRef")}

    uri: str | None = Field(default=None, min_length=1, max_length=1024)
    """pvc://CLAIM/PATH (mounted read-only), an absolute path inside the image or a mounted
    volume, or a Hugging Face hub id (org/name) where the cluster can reach the hub."""
    pretrain_job_ref: LocalObjectReference | None = None
    """Start from the model of this PretrainJob; the job waits until it has succeeded."""

    @model_validator(mode="after")
    def _one_source(self) -> BaseModelRef:
        if bool(self.uri) == bool(self.pretrain_job_ref):
            raise ValueError("set exactly one of uri or pretrainJobRef")
        return self


class ArchitectureSpec(ApiModel):
    """The causal LM a PretrainJob builds from scratch: a family plus a size preset,
    with any explicit dimension overriding the preset."""

    family: Literal["llama", "gpt2"] = "llama"
    """Model family (transformers config class)."""
    size: Literal["tiny", "small", "base", "medium"] = "small"
    """Preset: tiny (2 layers, d=64), small (6, 384), base (12, 768; ~124M with a 50k
    vocabulary), medium (24, 1024)."""
    num_layers: int | None = Field(default=None, ge=1, le=256)
    """Transformer blocks."""
    hidden_size: int | None = Field(default=None, ge=8, le=65536)
    """Model width."""
    num_heads: int | None = Field(default=None, ge=1, le=512)
    """Attention heads (must divide hiddenSize)."""
    num_kv_heads: int | None = Field(default=None, ge=1, le=512)
    """Key/value heads for grouped-query attention (llama)."""
    intermediate_size: int | None = Field(default=None, ge=8, le=262144)
    """MLP width."""
    dropout: Float = Field(default=0.0, ge=0.0, lt=1.0)
    """Dropout probability (gpt2: embeddings, residuals and attention; llama: attention).
    0 is usual for pretraining and runs fastest; raise it (e.g. 0.1) when a small corpus is
    trained for many epochs."""


class TokenizerSpec(ApiModel):
    """The PretrainJob's tokenizer: trained on the corpus (byte-level BPE) unless a path is given."""

    vocab_size: int = Field(default=8192, ge=256, le=262144)
    """Vocabulary size of the trained tokenizer."""
    min_frequency: int = Field(default=2, ge=1, le=1000)
    """Merges seen fewer times are dropped."""
    uri: str | None = Field(default=None, min_length=1, max_length=1024)
    """Use this tokenizer instead of training one (same forms as baseModel.uri)."""
    train_rows: int = Field(default=200_000, ge=100)
    """Train the tokenizer on at most this many corpus rows."""
