"""Per-row bookkeeping for one batched `generate` call: stop strings, token limits, streaming.

`model.generate` runs a whole batch in lockstep, but OpenAI completion requests each carry
their own `max_tokens` and `stop` strings and may want their text streamed. Hugging Face's
streamers handle a single sequence only, so this stopping criterion, which generate calls
after every decoding step with all sequences, does the per-row work: it decodes each row's
new tokens, ends a row at its own limit or stop string (generate then pads it while the others
continue), and hands each row's new text to that request's callback. Text that might still
turn out to be the start of a stop string, or half of a multi-byte character, is held back
until it is certain, so a stream never shows text the final answer would not contain.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from transformers import StoppingCriteria

MIN_TEMPERATURE = 1e-3
"""Temperatures below this decode greedily: dividing logits by 1e-300 makes them infinite,
softmax turns them into NaN and sampling fails; at 1e-3 sampling is already greedy anyway."""


@dataclass
class CompletionItem:
    """One prompt waiting to be completed (one batcher item)."""

    prompt: str
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    on_text: Callable[[str], None] | None = None
    """Called from the worker thread with each new piece of text (streaming only)."""
    cancelled: threading.Event = field(default_factory=threading.Event)
    """Set when the client went away: the row stops at the next step."""
    streamed: bool = False
    """Whether on_text was called: such a row cannot be rerun without repeating its text."""

    @property
    def sampling_key(self) -> tuple[float, float]:
        """Items with equal keys can share one generate call (same sampling settings)."""
        if self.temperature < MIN_TEMPERATURE:
            return (0.0, 1.0)
        return (self.temperature, self.top_p)


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str  # "stop" | "length" (OpenAI's values)
    prompt_tokens: int
    completion_tokens: int


@dataclass
class _Row:
    item: CompletionItem
    prompt_tokens: int
    ids: list[int] = field(default_factory=list)
    text: str = ""
    emitted: int = 0
    finish_reason: str | None = None


def _held_back(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters of `text` are not yet safe to show."""
    hold = 0
    # An incomplete UTF-8 sequence decodes to U+FFFD until its last byte arrives.
    while hold < len(text) and text[len(text) - 1 - hold] == "\ufffd":
        hold += 1
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:k]):
                hold = max(hold, k)
                break
    return hold


class RowTracker(StoppingCriteria):
    """Stopping criterion that tracks, finishes and streams every row of a batch."""

    def __init__(
        self,
        items: Sequence[CompletionItem],
        prompt_tokens: Sequence[int],
        decode: Callable[[list[int]], str],
        eos_token_ids: set[int],
    ) -> None:
        self.rows = [_Row(it, n) for it, n in zip(items, prompt_tokens, strict=True)]
        self._decode = decode
        self._eos = eos_token_ids

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs
    ) -> torch.BoolTensor:  # type: ignore[override]
        last = input_ids[:, -1].tolist()
        for row, token in zip(self.rows, last, strict=True):
            if row.finish_reason is None:
                self._advance(row, int(token))
        return torch.tensor(
            [r.finish_reason is not None for r in self.rows], device=input_ids.device
        )

    def _advance(self, row: _Row, token: int) -> None:
        item = row.item
        if item.cancelled.is_set():
            row.finish_reason = "cancelled"
            return
        if token in self._eos:
            row.finish_reason = "stop"
        else:
            row.ids.append(token)
            text = self._decode(row.ids)
            cut = min((i for s in item.stop if (i := text.find(s)) >= 0), default=-1)
            if cut >= 0:
                text, row.finish_reason = text[:cut], "stop"
            elif len(row.ids) >= item.max_tokens:
                row.finish_reason = "length"
            row.text = text
        self._emit(row)

    def _emit(self, row: _Row) -> None:
        if row.item.on_text is None:
            return
        safe = len(row.text)
        if row.finish_reason is None:
            safe -= _held_back(row.text, row.item.stop)
        if safe > row.emitted:
            row.item.streamed = True
            row.item.on_text(row.text[row.emitted : safe])
            row.emitted = safe

    def finish(self) -> list[Completion]:
        """Results once generate returned (rows it stopped at max_new_tokens end as length)."""
        results = []
        for row in self.rows:
            if row.finish_reason is None:
                row.finish_reason = "length"
                self._emit(row)
            results.append(
                Completion(
                    text=row.text,
                    finish_reason="stop" if row.finish_reason == "cancelled" else row.finish_reason,
                    prompt_tokens=row.prompt_tokens,
                    completion_tokens=len(row.ids),
                )
            )
        return results
