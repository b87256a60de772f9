"""The champion: the model in service, evaluated on this run's validation rows (the
evaluation gate, ``snowtrain.api.promotion``).

After training, the trainer evaluates the model a job names in ``spec.promotion.championUri``
with the same ``evaluate`` over the same validation rows, with the same batch size, precision
and ranks as its own model, so the gate compares two numbers measured the same way. What
keeps that fair when the two models differ:

- Labels. A classifier's logits columns follow its own ``id2label``; they are mapped by name
  into this run's label order. A label this run has and the champion lacks gets a -inf logit
  (its rows count as the champion's wrong predictions); a label only the champion knows is
  dropped. The validation rows themselves are never changed.
- Tokenizer. The validation rows were tokenized with this run's tokenizer, whose ids mean
  nothing to a champion with another vocabulary. A classifier's metrics are per row, so its
  rows are tokenized again with the champion's tokenizer, from the same validation rows (the
  source still holds them: the training pass's spill, or the validation relation's ordered
  query). A language model's loss and perplexity are per token, and the tokens are the
  tokenizer's: they cannot be compared across tokenizers, so such a champion is reported
  unevaluated.

Whatever goes wrong with the champion (missing, another task, unreadable) becomes
``ChampionEvaluation.problem`` and the run still succeeds: the gate, not the trainer, decides
what an unevaluated champion means (it fails closed). SIGTERM is the exception: it stops the
evaluation at the next batch and the run ends Preempted, as during the main evaluation (its
final checkpoint is saved, so a rerun only evaluates again).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from snowtrain.api.events import ChampionEvaluation, TrainerMetrics
from snowtrain.api.trainer_config import ChampionConfig

from .batches import Collate
from .distributed import GroupExchange, World
from .errors import Preempted, TrainerError
from .evaluate import evaluate
from .precision import Precision

log = logging.getLogger(__name__)

#: The validation metrics a champion reports (``TrainerMetrics`` declares each of them).
CHAMPION_METRICS = ("evalLoss", "evalAccuracy", "evalMacroF1", "perplexity")

TOKENIZER_DIFFERS = (
    "the champion's tokenizer differs from this run's, so its metrics on these rows would "
    "not be comparable"
)

#: A problem is one line of about this many characters: it travels in the termination
#: message (4 KiB in all) and the job's status.
_PROBLEM_CHARS = 300

#: Texts both tokenizers encode to the same ids when they are the same tokenizer: they catch
#: what equal vocabularies can hide (another normalizer, another [CLS] x [SEP] template).
_PROBES = ["", "a", "Hello, World!", "ünïcödé TEXT 123 ?!", "the quick brown fox " * 8]


class ChampionProblem(Exception):
    """Why the champion cannot be evaluated (one line; ``ChampionEvaluation.problem``)."""


@dataclass(frozen=True)
class ValidationRows:
    """This run's validation rows and how its own evaluation went over them."""

    data: Any
    """The token dataset the run evaluated (this rank's share when ``sharded``)."""
    collate: Collate
    tokenizer: Any
    """The tokenizer ``data`` was built with."""
    task: str
    labels: list[str] | None
    """A classifier's labels, in the run's order (its label ids)."""
    batch_size: int
    precision: Precision
    sharded: bool
    retokenize: Callable[[Any], Any] | None = None
    """The same rows tokenized with another tokenizer, as a token dataset; None where the
    metrics would not be comparable after that (language models)."""


def evaluate_champion(
    champion: ChampionConfig,
    rows: ValidationRows | None,
    *,
    world: World,
    should_abort: Callable[[], bool] = lambda: False,
) -> ChampionEvaluation:
    """The champion's metrics on ``rows``, or the problem that kept it from them.

    Called on every rank (the evaluation sums over them); every rank takes the same branch,
    since the ranks agree on each problem before acting on it. ``should_abort`` is asked as
    by the main evaluation (it may be a collective); True raises ``Preempted``. The champion
    is freed before this returns, so the export after it does not hold two models.
    """
    held: dict[str, Any] = {}
    try:
        return _evaluate(champion, rows, world, should_abort, held)
    except ChampionProblem as exc:
        return ChampionEvaluation(model=champion.uri, problem=one_line(str(exc)))
    finally:
        held.clear()
        gc.collect()
        if world.device.type == "cuda":
            torch.cuda.empty_cache()


def _evaluate(
    champion: ChampionConfig,
    rows: ValidationRows | None,
    world: World,
    should_abort: Callable[[], bool],
    held: dict[str, Any],
) -> ChampionEvaluation:
    """The steps of ``evaluate_champion``; the models live in ``held`` (and this frame)."""
    if rows is None:
        raise ChampionProblem("this run has no validation rows to evaluate the champion on")
    _stop_if(should_abort)  # a SIGTERM already here need not wait for a large model to load
    with agreed(world, "cannot load the champion"):
        held["model"], tokenizer = load_champion(champion.path, rows.task)
    _stop_if(should_abort)
    data, collate = rows.data, rows.collate
    with agreed(world, "cannot compare the champion's tokenizer with this run's"):
        same = same_tokenizer(tokenizer, rows.tokenizer)
    if not same:
        if rows.retokenize is None:
            raise ChampionProblem(TOKENIZER_DIFFERS)
        log.info("the champion has its own tokenizer: tokenizing the validation rows again")
        with agreed(world, "cannot tokenize the validation rows for the champion"):
            data = rows.retokenize(tokenizer)
            if len(data) != len(rows.data):
                raise ChampionProblem(
                    "the validation rows changed between two reads "
                    f"({len(rows.data)} rows, then {len(data)})"
                )
        collate = data.collate
        _stop_if(should_abort)
    missing: list[str] = []
    with agreed(world, "cannot prepare the champion"):
        forward: nn.Module = held["model"]
        if rows.task == "classification":
            assert rows.labels is not None
            forward, missing = in_run_label_order(forward, rows.labels)
        held["forward"] = forward = forward.to(world.device)
    with agreed(world, "evaluating the champion failed"):
        result = evaluate(
            forward,
            data,
            collate,
            task=rows.task,
            batch_size=rows.batch_size,
            precision=rows.precision,
            world=world,
            num_labels=len(rows.labels) if rows.labels else None,
            should_abort=should_abort,
            sharded=rows.sharded,
        )
    if result is None:
        raise _preempted()
    return champion_evaluation(champion.uri, result, missing)


def champion_evaluation(
    uri: str, result: Mapping[str, float], missing_labels: Sequence[str] = ()
) -> ChampionEvaluation:
    """The wire form of the champion's ``evaluate`` result.

    A value that is not finite has no JSON form (the summary would carry null): it is left
    out and ``problem`` says why, so the gate fails closed on it with a reason. That happens
    when a validation row's label is one the champion lacks: -inf is its logit there, and
    the loss on that row is infinite.
    """
    metrics = {k: result[k] for k in CHAMPION_METRICS if k in result}
    finite = {k: v for k, v in metrics.items() if math.isfinite(v)}
    dropped = sorted(set(metrics) - set(finite))
    problem = None
    if missing_labels and dropped:
        problem = (
            f"the champion lacks the label(s) {_names(missing_labels)}: their rows count as "
            f"its wrong predictions, and its {', '.join(dropped)} on them is infinite "
            "(not reported)"
        )
    elif dropped:
        problem = f"the champion's {', '.join(dropped)} is not finite (not reported)"
    return ChampionEvaluation(
        model=uri,
        metrics=TrainerMetrics.model_validate(finite) if finite else None,
        problem=one_line(problem) if problem else None,
    )


def comparison(evaluation: ChampionEvaluation, own: Mapping[str, Any]) -> str:
    """One log line with the champion's numbers next to this run's."""
    theirs = evaluation.metrics.to_wire() if evaluation.metrics is not None else {}
    parts = []
    for name in CHAMPION_METRICS:
        value = theirs.get(name)
        if isinstance(value, int | float):
            mine = own.get(name)
            vs = f" (this run {mine:.4g})" if isinstance(mine, int | float) else ""
            parts.append(f"{name} {value:.4g}{vs}")
    if not parts:
        return f"champion {evaluation.model} not evaluated: {evaluation.problem}"
    text = f"champion {evaluation.model} on the same validation rows: {', '.join(parts)}"
    return f"{text}; {evaluation.problem}" if evaluation.problem else text


# --------------------------------------------------------------------------- loading
def load_champion(path: str, task: str) -> tuple[nn.Module, Any]:
    """(model on the CPU, tokenizer) of the champion at ``path`` (a directory or a hub id),
    loaded as a base model is; ``ChampionProblem`` when it is not a model of ``task``.

    A LoRA fine-tune exported unmerged holds the base weights and ``adapter/``: the adapter
    is applied as the model server applies it, so the champion is the model in service.
    """
    from . import models

    kind, adapter = _champion_kind(path)
    wanted = "a sequence classifier" if task == "classification" else "a language model"
    if kind != wanted:
        raise ChampionProblem(
            f"the champion {path} is {kind}, and this {task} run's validation rows need {wanted}"
        )
    tokenizer = models.load_tokenizer(path)
    if task == "classification":
        model = models.load_trained_classifier(path, tokenizer)
    else:
        model = models.load_causal_lm(path, tokenizer)
    if adapter is not None:
        from snowtrain.serve.models import apply_adapter

        model = apply_adapter(model, adapter)
    return model, tokenizer


def _champion_kind(path: str) -> tuple[str, Path | None]:
    """("a sequence classifier" | "a language model", an unmerged LoRA adapter or None).

    A directory says what it is as the model server reads it (``snowtrain.json``'s task,
    else ``config.json``'s architectures); a hub id by its config's architectures.
    """
    from snowtrain.serve.model_dir import ModelDirError, Task, inspect_model_dir

    local = Path(path).expanduser()
    if path.startswith(("/", ".", "~")) or local.exists():
        if not local.exists():
            raise ChampionProblem(f"the champion's directory {path} does not exist")
        if not local.is_dir():
            raise ChampionProblem(f"the champion {path} is not a model directory")
        try:
            info = inspect_model_dir(local)
        except ModelDirError as exc:
            raise ChampionProblem(f"cannot read the champion: {exc}") from None
        kind = "a sequence classifier" if info.task is Task.CLASSIFICATION else "a language model"
        return kind, info.adapter
    from transformers import AutoConfig

    from .models import _from_pretrained

    architectures = _from_pretrained(AutoConfig, path).architectures or []
    if any(a.endswith("ForSequenceClassification") for a in architectures):
        return "a sequence classifier", None
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
        return "a language model", None
    raise ChampionProblem(
        f"the champion {path} is neither a sequence classifier nor a language model "
        f"(architectures {architectures})"
    )


def same_tokenizer(a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b`` turn text into the same ids: the same vocabulary, the same
    special tokens, and the same ids for a few probe texts (special tokens included)."""
    if a.get_vocab() != b.get_vocab():
        return False
    specials = ("pad", "bos", "eos", "unk", "cls", "sep", "mask")
    if any(getattr(a, f"{s}_token_id") != getattr(b, f"{s}_token_id") for s in specials):
        return False
    return bool(a(_PROBES)["input_ids"] == b(_PROBES)["input_ids"])


# --------------------------------------------------------------------------- labels
@dataclass
class _Logits:
    """What ``evaluate`` reads from a forward pass."""

    logits: torch.Tensor


class _InRunLabelOrder(nn.Module):
    """A classifier whose logits columns are put in the run's label order (by name); a
    label it lacks gets -inf, so it is never predicted and its rows count as wrong."""

    def __init__(self, model: nn.Module, columns: Sequence[int | None]) -> None:
        super().__init__()
        self.model = model
        index = torch.tensor([c if c is not None else 0 for c in columns], dtype=torch.long)
        self.columns: torch.Tensor
        self.missing: torch.Tensor
        self.register_buffer("columns", index, persistent=False)
        self.register_buffer(
            "missing", torch.tensor([c is None for c in columns]), persistent=False
        )

    def forward(self, **batch: torch.Tensor) -> _Logits:
        logits = self.model(**batch).logits.index_select(-1, self.columns)
        return _Logits(logits.masked_fill(self.missing, float("-inf")))


def label_columns(champion_labels: Mapping[int, str], labels: Sequence[str]) -> list[int | None]:
    """For each of the run's labels, the champion's logits column of that name (None: it
    has none)."""
    by_name: dict[str, int] = {}
    for column in sorted(champion_labels):
        by_name.setdefault(str(champion_labels[column]), column)
    return [by_name.get(str(name)) for name in labels]


def in_run_label_order(model: nn.Module, labels: Sequence[str]) -> tuple[nn.Module, list[str]]:
    """(``model`` with logits in the order of ``labels``, the labels it lacks).

    The model itself when its labels already are ``labels`` in that order; the mapping by
    name otherwise. ``ChampionProblem`` when it knows none of them: every prediction would
    be wrong, which says nothing about the model (its labels are most likely named
    differently, e.g. LABEL_0 ...).
    """
    id2label: Mapping[int, str] = dict(getattr(model.config, "id2label", None) or {})
    columns = label_columns(id2label, labels)
    if all(c is None for c in columns):
        raise ChampionProblem(
            f"the champion's labels {_names(id2label[i] for i in sorted(id2label))} share "
            f"none with this run's {_names(labels)}"
        )
    missing = [name for name, c in zip(labels, columns, strict=True) if c is None]
    if missing:
        log.warning(
            "the champion lacks the label(s) %s: their rows count as its wrong predictions",
            _names(missing),
        )
    if columns == list(range(len(id2label))):
        return model, missing
    return _InRunLabelOrder(model, columns), missing


# --------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def agreed(world: World, failure: str) -> Iterator[None]:
    """Run a step on every rank; when it fails on any, raise ``ChampionProblem`` on all.

    Ranks that went separate ways would deadlock in the next collective. A step's error
    (anything but ``Preempted``) becomes the problem, ``failure`` saying which step failed;
    the first rank's problem, in rank order. An error in the middle of the evaluation of a
    multi-rank run is the exception: the other ranks are in one of its collectives by then
    (the first batch, the longest, is where a model that cannot take the rows fails).
    """
    problem: str | None = None
    try:
        yield
    except Preempted:
        raise
    except ChampionProblem as exc:
        problem = str(exc) or "the champion could not be evaluated"
    except TrainerError as exc:  # InvalidConfig, Unavailable, DataError: the message says it
        problem = f"{failure}: {exc}"
    except Exception as exc:
        log.warning("%s", failure, exc_info=True)
        problem = f"{failure}: {type(exc).__name__}: {exc}"
    if world.distributed:
        problems = GroupExchange(world).all_gather(problem)
        problem = next((p for p in problems if p), None)
    if problem:
        raise ChampionProblem(problem)


def _stop_if(should_abort: Callable[[], bool]) -> None:
    if should_abort():
        raise _preempted()


def _preempted() -> Preempted:
    return Preempted(
        "stopped by SIGTERM while evaluating the champion; the final checkpoint is saved, "
        "and a rerun evaluates again"
    )


def one_line(text: str) -> str:
    """``text`` on one line, cut to about ``_PROBLEM_CHARS`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= _PROBLEM_CHARS else flat[: _PROBLEM_CHARS - 3] + "..."


def _names(names: Any, limit: int = 10) -> str:
    """``a, b, c`` (at most ``limit`` names, then how many more)."""
    items = [str(n) for n in names]
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more
