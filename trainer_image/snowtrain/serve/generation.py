"""One completion's text as its tokens arrive: stop strings, token limits, streaming.

OpenAI completion requests each carry their own `max_tokens` and `stop` strings and may want
their text streamed. `RowText` does that per request, fed one token at a time by either
scheduler: continuous batching (`continuous`) hands it each step's new token, and lockstep
batching hands it every row of a `generate` batch through `RowTracker`, a stopping criterion
that generate calls after every decoding step (generate then pads a finished row while the
others continue). Text that might still turn out to be the start of a stop string, or half
of a multi-byte character, is held back until it is certain, so a stream never shows text
the final answer would not contain.
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
    """Called with each new piece of text (streaming only): from the worker thread when
    batching in lockstep, on the event loop when batching continuously."""
    cancelled: threading.Event = field(default_factory=threading.Event)
    """Set when the client went away: the row stops at the next step."""
    streamed: bool = False
    """Whether on_text was called: such a row cannot be rerun without repeating its text."""
    prompt_ids: list[int] | None = None
    """The prompt's tokens when the route already has them (continuous batching needs them;
    the lockstep path tokenizes its batch itself)."""

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


class RowText:
    """One completion's text as its tokens arrive: its own token limit, stop strings, EOS,
    and streaming. Both schedulers feed it one token at a time (lockstep `generate` through
    RowTracker, continuous batching from each step's output), so both answer alike."""

    def __init__(
        self,
        item: CompletionItem,
        prompt_tokens: int,
        decode: Callable[[list[int]], str],
        eos_token_ids: set[int],
    ) -> None:
        self.item = item
        self.prompt_tokens = prompt_tokens
        self.ids: list[int] = []
        self.text = ""
        self.emitted = 0
        self.finish_reason: str | None = None
        self._decode = decode
        self._eos = eos_token_ids

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def advance(self, token: int) -> None:
        """Take the next generated token (ignored once the row finished)."""
        if self.finish_reason is not None:
            return
        item = self.item
        if item.cancelled.is_set():
            self.finish_reason = "cancelled"
            return
        if token in self._eos:
            self.finish_reason = "stop"
        else:
            self.ids.append(token)
            text = self._decode(self.ids)
            cut = min((i for s in item.stop if (i := text.find(s)) >= 0), default=-1)
            if cut >= 0:
                text, self.finish_reason = text[:cut], "stop"
            elif len(self.ids) >= item.max_tokens:
                self.finish_reason = "length"
            self.text = text
        self._emit()

    def _emit(self) -> None:
        if self.item.on_text is None:
            return
        safe = len(self.text)
        if self.finish_reason is None:
            safe -= _held_back(self.text, self.item.stop)
        if safe > self.emitted:
            self.item.streamed = True
            self.item.on_text(self.text[self.emitted : safe])
            self.emitted = safe

    def end(self) -> Completion:
        """The completion once generation stopped (a row still open ends at its limit)."""
        if self.finish_reason is None:
            self.finish_reason = "length"
            self._emit()
        return Completion(
            text=self.text,
            finish_reason="stop" if self.finish_reason == "cancelled" else self.finish_reason,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=len(self.ids),
        )


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
    """Stopping criterion that tracks, finishes and streams every row of a lockstep batch."""

    def __init__(
        self,
        items: Sequence[CompletionItem],
        prompt_tokens: Sequence[int],
        decode: Callable[[list[int]], str],
        eos_token_ids: set[int],
    ) -> None:
        self.rows = [
            RowText(it, n, decode, eos_token_ids)
            for it, n in zip(items, prompt_tokens, strict=True)
        ]

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs
    ) -> torch.BoolTensor:  # type: ignore[override]
        last = input_ids[:, -1].tolist()
        for row, token in zip(self.rows, last, strict=True):
            row.advance(int(token))
        return torch.tensor([r.finished for r in self.rows], device=input_ids.device)

    def finish(self) -> list[Completion]:
        """Results once generate returned (rows it stopped at max_new_tokens end as length)."""
        return [row.end() for row in self.rows]
