"""The two custom resources: FineTuneJob and PretrainJob (snowtrain.io/v1alpha1).

These models are the single source of truth for the API: the CRDs under manifests/crds and
the Helm chart are generated from them (``snowtrain crds``), the admission webhook and local
mode validate with them, and the operator renders children from them.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final, Literal

from pydantic import Field, model_validator

from .base import ApiModel
from .pod import PodOverrides
from .promotion import PromotionSpec
from .spec import (
    ArchitectureSpec,
    BaseModelRef,
    DataSpec,
    OutputSpec,
    ResourcesSpec,
    ServingSpec,
    TokenizerSpec,
    TrainingSpec,
)
from .status import JobStatusBlock

API_VERSION: Final = "snowtrain.io/v1alpha1"
GROUP, VERSION = API_VERSION.split("/")

JobKind = Literal["FineTuneJob", "PretrainJob"]
Task = Literal["classification", "causal-lm", "pretrain"]

#: Column roles each task reads, in the order the trainer uses them.
TASK_COLUMNS: dict[str, tuple[str, ...]] = {
    "classification": ("text", "label"),
    "causal-lm": ("prompt", "completion"),
    "pretrain": ("text",),
}


class CommonJobSpec(ApiModel):
    """Fields both kinds share: data, training, resources, output, serving, lifecycle."""

    data: DataSpec
    """The Snowflake data to train on."""
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    """Optimisation settings."""
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    """GPUs, CPU, memory and placement."""
    output: OutputSpec = Field(default_factory=OutputSpec)
    """Where the model goes."""
    serving: ServingSpec | None = None
    """Serve the model when training succeeds."""
    promotion: PromotionSpec | None = None
    """An evaluation gate: serve the model only if its validation metric clears a bar (and
    is no worse than the model in service). A run below the bar ends Succeeded, not served."""
    image: str | None = Field(default=None, max_length=1024)
    """Trainer image; default: the operator's configured trainer image."""
    suspend: bool = False
    """Pause the job (its pods are removed; it resumes from its last checkpoint)."""
    active_deadline_seconds: int | None = Field(default=None, ge=1)
    """Fail an attempt that runs longer than this (DeadlineExceeded)."""
    backoff_limit: int = Field(default=2, ge=0, le=100)
    """Retries of a failed pod within an attempt before the job fails."""
    pod_template: PodOverrides | None = None
    """Typed additions to the training pods ({metadata, spec}): labels, annotations,
    placement, grace period, env and extra volumes of the container named "trainer", probe
    timings. Nothing that widens what the pod may do (see the README)."""


class FineTuneJobSpec(CommonJobSpec):
    """Fine-tune a pretrained model on Snowflake data."""

    task: Literal["classification", "causal-lm"] = "classification"
    """classification (text -> label) or causal-lm (prompt -> completion, loss on the
    completion only, as Snowflake Cortex fine-tuning)."""
    base_model: BaseModelRef
    """The model to start from."""


class PretrainJobSpec(CommonJobSpec):
    """Pretrain a causal language model from scratch on a Snowflake text corpus."""

    architecture: ArchitectureSpec = Field(default_factory=ArchitectureSpec)
    """The model to build."""
    tokenizer: TokenizerSpec = Field(default_factory=TokenizerSpec)
    """The tokenizer to train or use."""


class ObjectMeta(ApiModel):
    """The subset of metadata snowtrain reads; everything else is kept as-is."""

    model_config = ApiModel.model_config | {"extra": "allow"}

    name: str | None = Field(default=None, pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
    """Name (a DNS-1123 label: children are named after it)."""
    namespace: str | None = None
    generation: int | None = None
    uid: str | None = None


class Resource(ApiModel):
    """Envelope of every snowtrain kind: apiVersion, kind and metadata."""

    KIND: ClassVar[str]
    PLURAL: ClassVar[str]
    SHORT_NAMES: ClassVar[list[str]]

    api_version: Literal["snowtrain.io/v1alpha1"] = API_VERSION
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)

    @model_validator(mode="before")
    @classmethod
    def _check_kind(cls, data: Any) -> Any:
        if isinstance(data, dict) and "kind" in data:
            if data["kind"] != cls.KIND:
                raise ValueError(f"kind must be {cls.KIND}, got {data['kind']!r}")
            data = {k: v for k, v in data.items() if k != "kind"}
        return data

    def to_wire(self) -> dict[str, Any]:
        return {"apiVersion": API_VERSION, "kind": self.KIND, **super().to_wire()}


class _JobResource(Resource):
    """Envelope shared by both training kinds."""

    KIND: ClassVar[JobKind]
    TASK: ClassVar[str | None] = None

    status: JobStatusBlock | None = None

    @property
    def kind(self) -> JobKind:
        return self.KIND

    @property
    def task(self) -> Task:
        raise NotImplementedError


class FineTuneJob(_JobResource):
    """A FineTuneJob resource."""

    KIND = "FineTuneJob"
    PLURAL = "finetunejobs"
    SHORT_NAMES = ["ftj"]

    spec: FineTuneJobSpec

    @property
    def task(self) -> Literal["classification", "causal-lm"]:
        return self.spec.task


class PretrainJob(_JobResource):
    """A PretrainJob resource."""

    KIND = "PretrainJob"
    PLURAL = "pretrainjobs"
    SHORT_NAMES = ["ptj"]

    spec: PretrainJobSpec

    @property
    def task(self) -> Literal["pretrain"]:
        return "pretrain"


AnyJob = FineTuneJob | PretrainJob
JOB_KINDS: dict[str, type[AnyJob]] = {k.KIND: k for k in (FineTuneJob, PretrainJob)}
