"""The model over a table's rows: length-sorted batches through the model server's own
classes (``snowtrain.serve.models``), so batch predictions and served predictions are the
same computation.

Rows are sorted by text length within each batch read from Snowflake and cut into forward
passes of ``batch_size`` rows: similar lengths share a pass, so little compute goes to
padding (the classifier then groups within a pass by its measured cost model, as it does
for requests). A NULL text gets NULL answers; a text the tokenizer cannot take, or a
generation that fails, fails only its own row (NULL answers and a count in the log).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa
import torch

from snowtrain.api.batch import GenerationSettings
from snowtrain.serve.generation import Completion, CompletionItem
from snowtrain.serve.model_dir import Task, inspect_model_dir
from snowtrain.serve.models import ClassifierModel, CompletionModel, build_model
from snowtrain.serve.runtime import choose_runtime
from snowtrain.trainer.errors import TrainerError

log = logging.getLogger(__name__)


class Predictor:
    """A loaded model and how to turn a list of texts into answer columns."""

    def __init__(self, model_dir: str, *, batch_size: int, generation: GenerationSettings) -> None:
        info = inspect_model_dir(model_dir)
        self.task = "classification" if info.task is Task.CLASSIFICATION else "causal-lm"
        self.model = build_model(info, choose_runtime())
        self.model.load()
        self.batch_size = batch_size
        self.generation = generation
        self.failed_rows = 0
        """Rows whose text the model could not take (NULL answers)."""

    def predict(
        self,
        texts: Sequence[str | None],
        first_row: int,
        check: Callable[[], None] = lambda: None,
    ) -> dict[str, pa.Array]:
        """Answer columns for ``texts`` (rows ``first_row`` on of the ordered input);
        ``check`` runs before each forward batch (it raises to stop, e.g. on SIGTERM)."""
        todo = sorted(
            (i for i, t in enumerate(texts) if t is not None), key=lambda i: len(texts[i] or "")
        )
        answers: list[Any] = [None] * len(texts)
        for start in range(0, len(todo), self.batch_size):
            check()
            rows = todo[start : start + self.batch_size]
            for i, answer in zip(
                rows, self._answer([texts[i] or "" for i in rows], first_row + start), strict=True
            ):
                answers[i] = answer
        if isinstance(self.model, ClassifierModel):
            return {
                "LABEL": pa.array([a.label if a else None for a in answers], pa.string()),
                "SCORE": pa.array(
                    [a.scores[a.label] if a else None for a in answers], pa.float64()
                ),
                "SCORES": pa.array(
                    [json.dumps(a.scores) if a else None for a in answers], pa.string()
                ),
            }
        return {
            "COMPLETION": pa.array([a.text if a else None for a in answers], pa.string()),
            "FINISH_REASON": pa.array(
                [a.finish_reason if a else None for a in answers], pa.string()
            ),
        }

    def _answer(self, texts: list[str], seed: int) -> list[Any]:
        model = self.model
        if isinstance(model, ClassifierModel):
            try:
                return list(model.predict(texts))
            except TrainerError:
                raise
            except Exception:  # one bad text: find it, fail it alone
                return [self._one(model, t) for t in texts]
        assert isinstance(model, CompletionModel)
        gen = self.generation
        if gen.temperature > 0:  # sampling: the same rows sample the same way on a rerun
            torch.manual_seed(self.generation.seed + seed)
        items = [
            CompletionItem(
                t,
                max_tokens=gen.max_tokens,
                temperature=gen.temperature,
                top_p=gen.top_p,
                stop=tuple(gen.stop),
            )
            for t in texts
        ]
        out: list[Any] = []
        for result in model.predict(items):
            if isinstance(result, TrainerError):
                raise result
            if isinstance(result, Completion):
                out.append(result)
            else:
                self.failed_rows += 1
                log.warning("a row failed to generate: %s", type(result).__name__)
                out.append(None)
        return out

    def _one(self, model: ClassifierModel, text: str) -> Any:
        try:
            return model.predict([text])[0]
        except TrainerError:
            raise
        except Exception as exc:
            self.failed_rows += 1
            log.warning("a row could not be classified: %s", type(exc).__name__)
            return None
