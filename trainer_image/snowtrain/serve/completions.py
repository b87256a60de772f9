"""OpenAI-compatible `POST /v1/completions` and `POST /v1/chat/completions`, with
server-sent events when `stream` is set.

A chat request is a completion of the prompt the model's own chat template renders from the
conversation (the tokenizer's `chat_template`); a model without one answers 400 naming
`/v1/completions`. Both answer in their own OpenAI shapes from one generation path.

Each prompt is one batcher item. For streaming, the worker thread hands each new piece of
text to this request's asyncio queue (`call_soon_threadsafe`), so a stream shares batches
with every other request; status errors (400/429/503) are answered before the stream starts.

No `from __future__ import annotations` here: the body class is built per server (it carries
its limits), so FastAPI must see the annotation object, not a name it cannot resolve.
"""

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from fastapi.sse import EventSourceResponse

from snowtrain.serve.batcher import NotAccepting
from snowtrain.serve.errors import ApiError, error_body
from snowtrain.serve.generation import Completion, CompletionItem
from snowtrain.serve.model_dir import Task
from snowtrain.serve.models import CompletionModel, InvalidInput
from snowtrain.serve.schemas import CompletionBody
from snowtrain.serve.state import ServerState, item_error

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Shape:
    """How one OpenAI API words its answer: a text completion or a chat message."""

    chat: bool

    @property
    def object(self) -> str:
        return "chat.completion" if self.chat else "text_completion"

    @property
    def chunk_object(self) -> str:
        return "chat.completion.chunk" if self.chat else "text_completion"

    def choice(self, index: int, text: str, finish: str | None) -> dict[str, Any]:
        if self.chat:
            message = {"role": "assistant", "content": text}
            return {"index": index, "message": message, "logprobs": None, "finish_reason": finish}
        return {"text": text, "index": index, "logprobs": None, "finish_reason": finish}

    def delta(self, index: int, text: str, finish: str | None) -> dict[str, Any]:
        if self.chat:
            delta = {"content": text} if text else {}
            return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        return self.choice(index, text, finish)

    def opening(self, index: int) -> dict[str, Any] | None:
        """A chat stream names the speaker first; a text stream starts with text."""
        if not self.chat:
            return None
        delta = {"role": "assistant", "content": ""}
        return {"index": index, "delta": delta, "logprobs": None, "finish_reason": None}


TEXT, CHAT = _Shape(chat=False), _Shape(chat=True)


def completions_router(state: ServerState) -> APIRouter:
    """`/v1/completions` and `/v1/chat/completions` for a causal LM; on a classifier they
    answer 400 naming `:predict`."""
    router = APIRouter()
    CompletionRequest = state.requests.completion
    ChatRequest = state.requests.chat

    @router.post("/v1/completions", response_model=None)
    async def completions(body: CompletionRequest) -> Response | dict:
        state.require(body.model, Task.COMPLETION)
        prompts = body.prompts()
        state.check_texts(prompts, "prompt")  # max_tokens is bounded by the schema
        state.ensure_ready()
        return await _generate(state, body, prompts, TEXT)

    @router.post("/v1/chat/completions", response_model=None)
    async def chat_completions(body: ChatRequest) -> Response | dict:
        state.require(body.model, Task.COMPLETION)
        state.ensure_ready()
        model = state.model
        assert isinstance(model, CompletionModel)
        try:
            prompt = await asyncio.to_thread(model.render_chat, body.conversation())
        except InvalidInput as exc:
            raise ApiError(400, str(exc)) from exc
        state.check_texts([prompt], "messages (rendered by the chat template)")
        return await _generate(state, body, [prompt], CHAT)

    return router


async def _generate(
    state: ServerState, body: CompletionBody, prompts: list[str], shape: _Shape
) -> Response | dict:
    """Generate a completion of every prompt; the whole answer, or its events as they come."""
    info = state.info
    model = state.model
    assert isinstance(model, CompletionModel)
    try:  # long prompts take a while to tokenize: not on the event loop
        prompt_ids = await asyncio.to_thread(model.encode_many, prompts)
    except InvalidInput as exc:
        raise ApiError(400, str(exc)) from exc
    for i, ids in enumerate(prompt_ids):
        n = len(ids)
        if n == 0:  # nothing to continue from (the engine must never see an empty prompt)
            raise ApiError(400, f"prompt[{i}] has no tokens for this model's tokenizer")
        if n + body.max_tokens > model.context_length:
            raise ApiError(
                400,
                f"prompt[{i}] is {n} tokens and max_tokens is {body.max_tokens}, but the "
                f"model's context holds {model.context_length} tokens",
            )
    completion_id = f"{'chatcmpl' if shape.chat else 'cmpl'}-{uuid.uuid4().hex}"
    created = int(time.time())

    def chunk(choice: dict[str, Any]) -> str:
        event = {
            "id": completion_id,
            "object": shape.chunk_object,
            "created": created,
            "model": info.name,
            "choices": [choice],
        }
        return "data: " + json.dumps(event) + "\n\n"

    def account(results: Sequence[Completion]) -> None:
        state.metrics.items.inc(len(results))
        state.metrics.prompt_tokens.inc(sum(r.prompt_tokens for r in results))
        state.metrics.generated_tokens.inc(sum(r.completion_tokens for r in results))

    def make_items(on_text: Any = None) -> list[CompletionItem]:
        return [
            CompletionItem(
                prompt=p,
                max_tokens=body.max_tokens,
                temperature=body.temperature,
                top_p=body.top_p,
                stop=body.stops(),
                on_text=on_text(i) if on_text else None,
                prompt_ids=prompt_ids[i],
            )
            for i, p in enumerate(prompts)
        ]

    if not body.stream:
        items = make_items()
        futures = state.submit_nowait(items, admitted=True)
        try:
            answers = await asyncio.gather(*futures, return_exceptions=True)
        finally:
            for it, fut in zip(items, futures, strict=True):
                it.cancelled.set()
                fut.cancel()
        for i, answer in enumerate(answers):
            if isinstance(answer, BaseException):
                raise item_error(answer, f"prompt[{i}]") from answer
        results: list[Completion] = list(answers)
        account(results)
        return {
            "id": completion_id,
            "object": shape.object,
            "created": created,
            "model": info.name,
            "choices": [shape.choice(i, r.text, r.finish_reason) for i, r in enumerate(results)],
            "usage": {
                "prompt_tokens": sum(r.prompt_tokens for r in results),
                "completion_tokens": sum(r.completion_tokens for r in results),
                "total_tokens": sum(r.prompt_tokens + r.completion_tokens for r in results),
            },
        }

    # Streaming: the worker thread pushes text pieces into this request's queue.
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[tuple[int, str | None]] = asyncio.Queue()

    def on_text(index: int) -> Any:
        return lambda text: loop.call_soon_threadsafe(events.put_nowait, (index, text))

    items = make_items(on_text)
    # 429 happens here, before the stream starts (503 did at ensure_ready).
    futures = state.submit_nowait(items, admitted=True)
    for i, fut in enumerate(futures):
        fut.add_done_callback(lambda _f, i=i: events.put_nowait((i, None)))

    async def stream() -> AsyncIterator[str]:
        pending = len(futures)
        done: list[Completion] = []
        try:
            for i in range(len(futures)):
                opening = shape.opening(i)
                if opening is not None:
                    yield chunk(opening)
            while pending:
                index, text = await events.get()
                if text is not None:
                    yield chunk(shape.delta(index, text, None))
                    continue
                pending -= 1
                fut = futures[index]
                if fut.cancelled() or fut.exception() is not None:
                    exc = None if fut.cancelled() else fut.exception()
                    status, msg = 500, "generation failed"
                    if isinstance(exc, NotAccepting):
                        msg = "server is shutting down"
                    elif isinstance(exc, InvalidInput):
                        status, msg = 400, f"prompt[{index}]: {exc}"
                    log.error("stream %s failed: %r", completion_id, exc)
                    yield "data: " + json.dumps(error_body(status, msg)) + "\n\n"
                    continue
                result = fut.result()
                done.append(result)
                yield chunk(shape.delta(index, "", result.finish_reason))
            yield "data: [DONE]\n\n"
        finally:
            account(done)
            for it, fut in zip(items, futures, strict=True):
                if not fut.done():
                    # The client went away: its rows stop at the next decoding step
                    # (queued ones after one step), and the tokens they did generate
                    # still count once the batch returns.
                    it.cancelled.set()
                    fut.add_done_callback(
                        lambda f: (
                            account([f.result()])
                            if not f.cancelled() and f.exception() is None
                            else None
                        )
                    )

    return EventSourceResponse(stream(), headers={"Cache-Control": "no-cache"})
