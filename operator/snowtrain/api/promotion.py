"""The evaluation gate: the bar a trained model must clear before it is served.

A job with ``spec.promotion`` serves its model only when the gate passes. The gate has an
absolute bar (``threshold``) and, when a model is already in service (``championUri``, which a
TrainingSchedule fills in with the model it serves), a relative one: the new model may be
worse than that champion by at most ``maxRegression``. The comparison is fair because the
trainer evaluates the champion on the same validation rows as the new model, in the same
run, and both numbers land in the status.

The decision itself is pure (:func:`decide`): the operator calls it with what the trainer
reported, and local mode with the same numbers, so both say the same thing for the same run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal

from pydantic import Field

from .base import ApiModel, Float
from .events import ChampionEvaluation
from .status import PromotionStatus

GateMetric = Literal["evalAccuracy", "evalMacroF1", "evalLoss", "perplexity"]

#: Metrics where a smaller number is the better model.
LOWER_IS_BETTER: Final = frozenset({"evalLoss", "perplexity"})

#: The gate metrics each task's evaluation produces.
TASK_METRICS: Final[dict[str, tuple[str, ...]]] = {
    "classification": ("evalAccuracy", "evalMacroF1", "evalLoss"),
    "causal-lm": ("evalLoss", "perplexity"),
    "pretrain": ("evalLoss", "perplexity"),
}

GATE_PASSED: Final = "GatePassed"
GATE_FAILED: Final = "GateFailed"
NOT_EVALUATED: Final = "NotEvaluated"


class PromotionSpec(ApiModel):
    """An evaluation gate: the model is served only if it clears these bars; otherwise the
    job still ends Succeeded (its model is kept) with ``Promoted=False``."""

    metric: GateMetric
    """The validation metric that decides: evalAccuracy or evalMacroF1 (classification,
    higher is better), evalLoss (any task) or perplexity (language models), both lower is
    better."""
    threshold: Float | None = None
    """Absolute bar: at least this (accuracy, macro F1) or at most this (loss, perplexity)."""
    max_regression: Float | None = Field(default=None, ge=0)
    """Relative bar, applied when a champion is known: the new model may be worse than the
    champion by at most this much, in the metric's units (0: at least as good). Unset: the
    champion is evaluated and reported, and only the threshold decides."""
    champion_uri: str | None = Field(default=None, min_length=1, max_length=1024)
    """The model to compare with (the one in service), in the forms of baseModel.uri. The
    trainer evaluates it on this run's validation rows. A TrainingSchedule sets it to the
    model its endpoint serves."""


def _number(value: Any) -> float | None:
    """A metric as a float; None for a missing one (or a NaN the wire wrote as null)."""
    return float(value) if isinstance(value, int | float) and value == value else None


def _format(value: float) -> str:
    return f"{value:.4g}"


def decide(
    spec: PromotionSpec,
    metrics: Mapping[str, Any],
    champion_metrics: Mapping[str, Any] | None = None,
    champion_problem: str | None = None,
) -> PromotionStatus:
    """The gate's verdict on a finished run.

    ``metrics`` and ``champion_metrics`` are camelCase metric names to values (the trainer's
    summary). ``champion_problem`` says why a champion that was asked for could not be
    evaluated; the gate then fails, since "no worse than the model in service" cannot be
    shown. A missing metric (no validation rows) fails too: a gate never passes unmeasured.
    """
    name = spec.metric
    lower = name in LOWER_IS_BETTER
    value = _number(metrics.get(name))
    status = PromotionStatus(
        metric=name,
        value=value,
        threshold=spec.threshold,
        champion_model=spec.champion_uri,
        max_regression=spec.max_regression if spec.champion_uri else None,
    )  # a champion without maxRegression is reported, not compared
    if value is None:
        return status.model_copy(
            update={
                "promoted": False,
                "reason": NOT_EVALUATED,
                "message": f"no {name} to compare: the run evaluated no validation rows",
            }
        )
    failures: list[str] = []
    passes: list[str] = [f"{name} {_format(value)}"]
    if spec.threshold is not None:
        ok = value <= spec.threshold if lower else value >= spec.threshold
        bar = f"{'at most' if lower else 'at least'} {_format(spec.threshold)}"
        (passes if ok else failures).append(f"{name} {_format(value)} (must be {bar})")
    if spec.champion_uri:
        champion = _number((champion_metrics or {}).get(name))
        status.champion_value = champion
        if spec.max_regression is not None and champion is None:
            problem = champion_problem or f"the champion reported no {name}"
            failures.append(f"the champion {spec.champion_uri} was not evaluated: {problem}")
        elif spec.max_regression is not None and champion is not None:
            allowed = spec.max_regression
            worse_by = value - champion if lower else champion - value
            text = (
                f"{name} {_format(value)} vs the champion's {_format(champion)} "
                f"on the same rows (may be worse by at most {_format(allowed)})"
            )
            (passes if worse_by <= allowed + 1e-12 else failures).append(text)
        elif champion is not None:
            passes.append(f"the champion's {name} on the same rows: {_format(champion)}")
    if failures:
        return status.model_copy(
            update={"promoted": False, "reason": GATE_FAILED, "message": "; ".join(failures)}
        )
    message = "; ".join(passes[1:]) or f"{passes[0]} (no bar applies: no threshold set)"
    return status.model_copy(update={"promoted": True, "reason": GATE_PASSED, "message": message})


def verdict(
    spec: PromotionSpec, metrics: Mapping[str, Any], champion: ChampionEvaluation | None
) -> PromotionStatus:
    """:func:`decide` on what the trainer's summary says: its metrics and its champion's
    (the operator's status and local mode both decide this way)."""
    return decide(
        spec,
        metrics,
        champion.metrics.to_wire() if champion and champion.metrics else None,
        (champion.problem if champion else None) or "the trainer reported no champion metrics",
    )
