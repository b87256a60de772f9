"""The official OpenAI Python SDK against the model server: completions and chat
completions, plain and streamed, and the errors it raises for what the server refuses."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.fixtures.serving import running_server

NAME = "tiny-lm"
#: A minimal chat template in the tokenizer's config, as a causal-LM fine-tune may carry one.
TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)
CONVERSATION = [
    {"role": "system", "content": "answer briefly"},
    {"role": "user", "content": "question 3:"},
]
RENDERED = "system: answer briefly\nuser: question 3:\nassistant:"


def _with_chat_template(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    config_path = dst / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["chat_template"] = TEMPLATE
    config_path.write_text(json.dumps(config))
    return dst


@pytest.fixture(scope="module")
def chat_client(
    tiny_causal_lm_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[openai.OpenAI]:
    model_dir = _with_chat_template(tiny_causal_lm_dir, tmp_path_factory.mktemp("chat") / NAME)
    with running_server(model_dir, name=NAME) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        yield client
        client.close()


@pytest.fixture(scope="module")
def plain_client(tiny_causal_lm_dir: Path) -> Iterator[openai.OpenAI]:
    with running_server(tiny_causal_lm_dir, name=NAME) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        yield client
        client.close()


def test_models_and_completions_plain_stop_streamed_and_several(chat_client: openai.OpenAI) -> None:
    assert [m.id for m in chat_client.models.list().data] == [NAME]
    one = chat_client.completions.create(
        model=NAME, prompt="question 3:", max_tokens=4, temperature=0
    )
    assert one.object == "text_completion" and one.usage is not None
    assert one.usage.total_tokens == one.usage.prompt_tokens + one.usage.completion_tokens
    several = chat_client.completions.create(
        model=NAME, prompt=["a", "b"], max_tokens=2, temperature=0
    )
    assert [c.index for c in several.choices] == [0, 1]
    pieces = chat_client.completions.create(
        model=NAME, prompt="question 3:", max_tokens=4, temperature=0, stream=True
    )
    streamed = "".join(c.choices[0].text for c in pieces)
    assert streamed == one.choices[0].text
    text = one.choices[0].text
    stop = text[len(text) // 2 :][:1] or "x"
    stopped = chat_client.completions.create(
        model=NAME, prompt="question 3:", max_tokens=4, temperature=0, stop=[stop]
    )
    # Greedy: the same text, cut before the stop string.
    expected = text[: text.find(stop)] if stop in text else text
    assert stopped.choices[0].text == expected


def test_chat_is_the_completion_of_the_rendered_conversation(chat_client: openai.OpenAI) -> None:
    chat = chat_client.chat.completions.create(
        model=NAME, messages=CONVERSATION, max_tokens=5, temperature=0
    )
    assert chat.object == "chat.completion"
    (choice,) = chat.choices
    assert choice.message.role == "assistant"
    plain = chat_client.completions.create(model=NAME, prompt=RENDERED, max_tokens=5, temperature=0)
    assert choice.message.content == plain.choices[0].text  # greedy: the same tokens
    assert chat.usage is not None and chat.usage.prompt_tokens == plain.usage.prompt_tokens
    # max_completion_tokens, OpenAI's newer name, is honoured.
    short = chat_client.chat.completions.create(
        model=NAME, messages=CONVERSATION, max_completion_tokens=1, temperature=0
    )
    assert short.usage is not None and short.usage.completion_tokens <= 1


def test_chat_streams_the_role_then_the_same_text(chat_client: openai.OpenAI) -> None:
    whole = chat_client.chat.completions.create(
        model=NAME, messages=CONVERSATION, max_tokens=5, temperature=0
    )
    chunks = list(
        chat_client.chat.completions.create(
            model=NAME, messages=CONVERSATION, max_tokens=5, temperature=0, stream=True
        )
    )
    assert chunks[0].object == "chat.completion.chunk"
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == whole.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason in ("length", "stop")


def test_chat_without_a_template_or_with_bad_messages_is_a_clear_400(
    plain_client: openai.OpenAI, chat_client: openai.OpenAI
) -> None:
    with pytest.raises(openai.BadRequestError, match="no chat template"):
        plain_client.chat.completions.create(model=NAME, messages=CONVERSATION, max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="role"):
        chat_client.chat.completions.create(
            model=NAME, messages=[{"role": "tool", "content": "x"}], max_tokens=2
        )
    with pytest.raises(openai.BadRequestError, match="messages"):
        chat_client.chat.completions.create(model=NAME, messages=[], max_tokens=2)
