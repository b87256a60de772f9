"""Continuous batching for completions: iteration-level scheduling on transformers' own engine.

Lockstep batching (`generate` over a batch) runs until the batch's longest request ends, and
requests that arrive meanwhile wait for the whole batch. Here every decoding step runs all
active sequences, a finished sequence leaves at once and a waiting one joins at the next
step. The engine is transformers' `ContinuousBatchingManager` (`model.init_continuous_batching`,
what `transformers serve` runs): a paged KV cache allocated once (so memory is bounded by
construction), chunked prefill, prefix sharing, and on CUDA its fast kernels. This module
adds what an OpenAI server needs around it:

- per-request sampling in one engine: greedy rows stay exact argmax, sampled rows are scaled
  by their temperature, cut to their nucleus and drawn with the Gumbel-max trick (argmax of
  logits plus Gumbel noise is an exact draw from the softmax, without a multinomial over the
  vocabulary for every row, which costs far more on a CPU);
- per-request stop strings, token limits and streaming (`generation.RowText`, shared with the
  lockstep path, so both answer alike); a stop string or a client that left cancels the
  sequence in the engine, freeing its cache pages at the next step;
- admission: a request is refused (429) when more than `max_batch_size + max_queue` prompts
  would be in the system, or when the cache pages all accepted requests may need would exceed
  twice the cache (one cache's worth running, one waiting), so waiting stays bounded too.

The same small interface as `DynamicBatcher` (start, submit_nowait, stop_accepting, close,
queued, in_flight), so the routes do not know which scheduler runs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from transformers import GenerationConfig, LogitsProcessorList
from transformers.generation.configuration_utils import ContinuousBatchingConfig
from transformers.generation.continuous_batching.cb_logits_processors import (
    ContinuousBatchingLogitsProcessor,
    ContinuousBatchingLogitsProcessorList,
)
from transformers.generation.continuous_batching.requests import GenerationOutput, RequestStatus

from snowtrain.serve import varlen_attention
from snowtrain.serve.batcher import NotAccepting, QueueFull
from snowtrain.serve.generation import MIN_TEMPERATURE, Completion, CompletionItem, RowText

if TYPE_CHECKING:
    from snowtrain.serve.models import CompletionModel

log = logging.getLogger(__name__)

PAGE_SIZE = 64
"""Tokens per KV cache page: small pages waste little on short requests."""
CPU_BATCH_TOKENS = 1024
"""Most tokens per step on a CPU (a long prompt is prefilled in chunks of this size between
decoding steps, so running sequences keep producing tokens); on CUDA the engine's default."""


class GenerationFailed(RuntimeError):
    """The engine failed this request (the server's fault: HTTP 500)."""


# -- per-request sampling -------------------------------------------------------------------
class _FloatArg(ContinuousBatchingLogitsProcessor):
    """A per-request float (one of the request's logit_processor_kwargs) as the engine's
    int32-viewed tensor argument."""

    key = ""
    default = 0.0
    ignored_kwargs: tuple[str, ...] = ()

    def fill_defaults(self, int32_tensor: torch.Tensor) -> None:
        defaults = torch.full(int32_tensor.shape, self.default, dtype=torch.float32)
        int32_tensor.copy_(defaults.view(torch.int32))

    def prepare_tensor_args(self, requests_with_new_token: list[Any]) -> torch.Tensor:
        kwargs = [r.state.logit_processor_kwargs for r in requests_with_new_token]
        values = [float(k.get(self.key, self.default)) for k in kwargs]
        return torch.tensor(values, dtype=torch.float32).view(torch.int32)

    @staticmethod
    def values(scores: torch.Tensor, tensor_arg: torch.Tensor) -> torch.Tensor:
        return tensor_arg[: scores.size(0)].view(torch.float32)


class _SampledRowsOnly(_FloatArg):
    """A processor by temperature that leaves greedy rows (temperature 0) untouched."""

    key, default = "temperature", 0.0
    supported_kwargs = {"temperature": float}

    def __call__(self, scores: torch.Tensor, tensor_arg: torch.Tensor) -> torch.Tensor:
        t = self.values(scores, tensor_arg).unsqueeze(-1)
        # On a CPU an all-greedy step skips the work over the vocabulary; on an accelerator
        # every step takes the same path (no host sync).
        if scores.device.type == "cpu" and not bool((t > 0).any()):
            return scores
        return torch.where(t > 0, self.sampled(scores, t), scores)

    def sampled(self, scores: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class TemperatureScale(_SampledRowsOnly):
    """Divide sampled rows' logits by their temperature."""

    def sampled(self, scores: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return scores / t.clamp_min(MIN_TEMPERATURE)


class Nucleus(_FloatArg):
    """Keep each row's smallest set of tokens whose probability reaches its top_p.

    On a CPU the sort over the vocabulary is the costly part, so rows at top_p 1 (nothing to
    cut) skip it; on an accelerator every row takes the same path (no host sync in a step).
    """

    key, default = "top_p", 1.0
    supported_kwargs = {"top_p": float}

    def __call__(self, scores: torch.Tensor, tensor_arg: torch.Tensor) -> torch.Tensor:
        top_p = self.values(scores, tensor_arg)
        if scores.device.type == "cpu":
            rows = (top_p < 1).nonzero().squeeze(-1)
            if rows.numel() == 0:
                return scores
            scores = scores.clone()
            scores[rows] = _nucleus(scores[rows], top_p[rows])
            return scores
        return _nucleus(scores, top_p)


def _nucleus(scores: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """The same cut as transformers' TopPLogitsWarper, per row."""
    ascending, order = torch.sort(scores, dim=-1)
    cumulative = ascending.softmax(dim=-1).cumsum(dim=-1)
    remove = cumulative <= (1 - top_p).unsqueeze(-1)
    remove[..., -1] = False  # always keep the most likely token
    return scores.masked_fill(remove.scatter(-1, order, remove), float("-inf"))


class GumbelDraw(_SampledRowsOnly):
    """Add Gumbel noise to sampled rows, so the engine's argmax draws from their softmax."""

    def sampled(self, scores: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return scores - torch.empty_like(scores).exponential_().log()


def sampling_processors() -> ContinuousBatchingLogitsProcessorList:
    """The engine's logits processors: temperature, nucleus, then the Gumbel draw."""
    processors = [TemperatureScale(), Nucleus(), GumbelDraw()]
    out = ContinuousBatchingLogitsProcessorList(LogitsProcessorList(processors))
    out.tensors_required = len(processors)  # one argument row per processor
    return out


def sampling_kwargs(item: CompletionItem) -> dict[str, float]:
    """The request's sampling as the processors read it (greedy: temperature 0)."""
    temperature, top_p = item.sampling_key
    return {"temperature": temperature, "top_p": top_p if temperature > 0 else 1.0}


# -- the scheduler --------------------------------------------------------------------------
@dataclass
class _Active:
    request_id: str
    item: CompletionItem
    row: RowText
    future: asyncio.Future[Completion]
    need: int
    """Cache tokens this request may take (prompt + max_tokens)."""
    consumed: int = 0
    """Generated tokens already handed to `row`."""
    engine_done: bool = False
    """The engine finished or failed the request (nothing to cancel there)."""


class ContinuousGenerator:
    """Completions through transformers' continuous batching engine, one request per prompt."""

    def __init__(
        self,
        model: CompletionModel,
        *,
        max_batch_size: int,
        max_queue: int,
        kv_cache_tokens: int | None,
        max_batch_tokens: int | None = None,
        on_tokens: Callable[[int], None] | None = None,
    ) -> None:
        self.model = model
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self.kv_cache_tokens = kv_cache_tokens or default_cache_tokens(model, max_batch_size)
        if self.kv_cache_tokens < model.context_length:
            raise ValueError(
                f"the KV cache ({self.kv_cache_tokens} tokens) must hold at least one full "
                f"context ({model.context_length} tokens)"
            )
        if max_batch_tokens is None and model.runtime.device.type == "cpu":
            max_batch_tokens = CPU_BATCH_TOKENS
        self.max_batch_tokens = max_batch_tokens
        self._on_tokens = on_tokens
        """Told how many tokens each output brought (the server's tokens-per-second gauge)."""
        self._manager: Any = None
        self._active: dict[str, _Active] = {}
        self._accepting = False
        self._closed = False
        self._counter = 0

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        return len(self._active)

    @property
    def queued(self) -> int:
        """Prompts beyond what one step runs: the ones waiting for a place."""
        return max(0, len(self._active) - self.max_batch_size)

    @property
    def healthy(self) -> bool:
        """False once the engine's thread died (its requests were failed with the reason)."""
        return self._manager is not None and self._manager.is_running()

    async def start(self) -> None:
        await asyncio.to_thread(self._start_engine)
        self._accepting = True

    def _start_engine(self) -> None:
        model = self.model.model
        assert model is not None, "load the model first"
        eos = sorted(self.model.eos_token_ids)
        generation = GenerationConfig(
            do_sample=False,  # the Gumbel draw samples; argmax keeps greedy rows exact
            max_new_tokens=self.model.context_length,
            eos_token_id=eos or -1,
            pad_token_id=self.model.tokenizer.pad_token_id,
        )
        pages = -(-self.kv_cache_tokens // PAGE_SIZE)
        config = ContinuousBatchingConfig(
            page_size=PAGE_SIZE,
            num_blocks=pages,
            max_batch_tokens=self.max_batch_tokens,
            max_requests_per_batch=self.max_batch_size,
        )
        manager = model.init_continuous_batching(
            generation_config=generation, continuous_batching_config=config
        )
        manager.logit_processor = sampling_processors()
        on_cpu = self.model.runtime.device.type == "cpu"
        if on_cpu and varlen_attention.applies_to(model.config):
            # After the engine's own check of the implementation (it knows only its own).
            for config in {
                id(c): c for c in (model.config, model.config.get_text_config())
            }.values():
                config._attn_implementation = varlen_attention.NAME
        manager.start()
        self._manager = manager
        # First-step allocations happen now, not in a request.
        warm = manager.add_request(
            self.model.tokenizer("warm up")["input_ids"], max_new_tokens=2, streaming=False
        )
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            out = manager.get_result(request_id=warm, timeout=1)
            if out is not None and out.is_finished():
                break
            if not manager.is_running():
                raise RuntimeError("the continuous batching engine stopped during warm-up")
        log.info(
            "continuous batching: KV cache of %d tokens (%d pages of %d), up to %d sequences "
            "per step",
            pages * PAGE_SIZE,
            pages,
            PAGE_SIZE,
            self.max_batch_size,
        )

    def stop_accepting(self) -> None:
        self._accepting = False

    async def close(self, timeout: float | None = None) -> None:
        """Stop accepting, let accepted requests finish (until `timeout`), stop the engine."""
        self.stop_accepting()
        self._closed = True
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._active and (deadline is None or time.monotonic() < deadline):
            await asyncio.sleep(0.01)
        for active in list(self._active.values()):
            self._finish(active, NotAccepting("server shut down"))
        if self._manager is not None:
            manager, self._manager = self._manager, None
            await asyncio.to_thread(manager.stop, block=True, timeout=10)

    # -- producer side ---------------------------------------------------------------------
    def submit_nowait(
        self, items: Sequence[CompletionItem], admitted: bool = False
    ) -> list[asyncio.Future[Completion]]:
        """Start every item (each with its `prompt_ids`) or none: NotAccepting when closed
        or the engine died, QueueFull beyond the admission bounds."""
        open_to_it = self._accepting or (admitted and not self._closed)
        if not open_to_it or not self.healthy:
            raise NotAccepting("not accepting requests")
        assert all(it.prompt_ids is not None for it in items), "the route tokenizes first"
        needs = [len(it.prompt_ids or ()) + it.max_tokens for it in items]
        if len(self._active) + len(items) > self.max_batch_size + self.max_queue:
            raise QueueFull(f"queue full ({self.queued} of {self.max_queue} waiting); retry later")
        booked = sum(a.need for a in self._active.values())
        if booked + sum(needs) > 2 * self.kv_cache_tokens:
            raise QueueFull(
                f"the KV cache is fully booked ({booked} tokens held or waiting for "
                f"a cache of {self.kv_cache_tokens}); retry later"
            )
        loop = asyncio.get_running_loop()
        futures = []
        for item, need in zip(items, needs, strict=True):
            assert item.prompt_ids is not None
            self._counter += 1
            rid = f"cmpl-{self._counter}"
            row = RowText(item, len(item.prompt_ids), self.model.decode, self.model.eos_token_ids)
            fut: asyncio.Future[Completion] = loop.create_future()
            active = _Active(rid, item, row, fut, need)
            self._active[rid] = active
            fut.add_done_callback(lambda f, a=active: self._on_done(a, f))
            self._manager.register_result_handler(
                rid, lambda out, a=active: self._on_output(a, out)
            )
            self._manager.add_request(
                list(item.prompt_ids),
                request_id=rid,
                max_new_tokens=item.max_tokens,
                streaming=True,  # every token: stop strings, streaming and cancellation
                **sampling_kwargs(item),
            )
            futures.append(fut)
        return futures

    # -- consumer side (on the event loop) -------------------------------------------------
    def _on_output(self, active: _Active, out: GenerationOutput) -> None:
        if active.future.done():
            return
        active.engine_done = out.is_finished()
        if out.status == RequestStatus.FAILED or out.error is not None:
            log.error("generation %s failed: %s", active.request_id, out.error)
            self._finish(active, GenerationFailed(out.error or "generation failed"))
            return
        tokens = out.generated_tokens
        if self._on_tokens is not None and len(tokens) > active.consumed:
            self._on_tokens(len(tokens) - active.consumed)
        for token in tokens[active.consumed :]:
            active.row.advance(int(token))
            if active.row.finished:
                break
        active.consumed = len(tokens)
        if active.row.finished or out.is_finished():
            self._finish(active, active.row.end())

    def _finish(self, active: _Active, result: Completion | BaseException) -> None:
        if not active.future.done():
            if isinstance(result, BaseException):
                active.future.set_exception(result)
            else:
                active.future.set_result(result)

    def _on_done(self, active: _Active, fut: asyncio.Future[Completion]) -> None:
        """Release the request's booking; stop it in the engine if it is still running
        (stop string, client gone, shutdown)."""
        if self._active.pop(active.request_id, None) is None:
            return
        manager = self._manager
        if manager is None or active.engine_done:
            return
        manager.cancel_request(active.request_id)
        # The engine sends nothing more for a cancelled request, so its result handler
        # (removed by the engine only after a final output) is dropped here.
        router = manager.output_router
        with router._lock:
            router.result_handlers.pop(active.request_id, None)


def default_cache_tokens(model: CompletionModel, max_batch_size: int) -> int:
    """Room for `max_batch_size` sequences of up to 1024 tokens (or the context, if shorter),
    and never less than one full context."""
    per_sequence = min(model.context_length, 1024)
    return max(model.context_length, max_batch_size * per_sequence)
