"""Request bodies of the three wire protocols, as pydantic models built from the limits.

Every list and string a request carries is bounded here, before any work is done with it:
pydantic checks the bounds while it validates the parsed JSON, so a request with a million
shape dimensions or a megabyte-long stop string is refused without the server ever looping
over it. The models are built per server from its `RequestLimits` (`request_models`), so the
bounds the server enforces are exactly the ones its OpenAPI document (`/openapi.json`)
states. Sizes the operator may tune come from `ServeSettings`; structural bounds (how many
dimensions a tensor shape has, how long a name or id is) are constants below.

Text is checked too: JSON may carry a lone UTF-16 surrogate ("\\ud800"), which Python
accepts in a str but which cannot be encoded as UTF-8, so the tokenizer (and the JSON encoder
of any answer that echoes it) would fail. Such text is refused here with the field and the
character index. `errors` turns these validation errors into 400 (malformed) or 413 (too big).
"""

from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from snowtrain.serve.settings import ServeSettings

MAX_SHAPE_DIMS = 8
"""Most dimensions of a v2 tensor shape (a text input is 1-D or 2-D in practice)."""
MAX_SHAPE_DIM = 2**31 - 1
"""Largest single dimension; any larger could never match a data list a body can carry."""
MAX_NAME_CHARS = 256
"""Longest model name, request id, tensor name or `user` string."""
MAX_MAP_ITEMS = 64
"""Most entries in a v2 `parameters` map (the server reads none of them)."""
MAX_OUTPUTS = 16
"""Most entries in a v2 `outputs` list (the server answers with its two outputs anyway)."""

UNION_TAGS = frozenset({"str", "list[str]", "TextInstance"})
"""Tags of the str-or-X unions below; pydantic puts them in an error's location."""

INVALID_TEXT = "invalid_text"
"""Error type of text that is not valid Unicode (a lone surrogate)."""
OVER_LIMIT = "over_server_limit"
"""Error type of a value above a server limit whose message already names the field."""


def invalid_text_message(value: str) -> str | None:
    """Why `value` cannot be encoded as UTF-8 (a lone surrogate, with its index), or None."""
    if value.isascii():
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (
            f"text is not valid Unicode: character {exc.start} is a lone UTF-16 surrogate "
            f"(U+{ord(value[exc.start]):04X}), which cannot be encoded as UTF-8"
        )
    return None


def check_text(value: str) -> str:
    """Refuse text that cannot be encoded as UTF-8 (a lone surrogate), naming the index.

    pydantic already refuses such a str where it must measure it (a `max_length`), with the
    error type `string_unicode`, which `errors` words the same way; this covers the rest.
    """
    message = invalid_text_message(value)
    if message is not None:
        raise PydanticCustomError(INVALID_TEXT, message)
    return value


@dataclass(frozen=True)
class RequestLimits:
    """The sizes one request may have; the request models are built from these."""

    max_instances: int = 64
    max_input_chars: int = 20_000
    max_new_tokens: int = 1024
    max_stop_strings: int = 4
    max_stop_chars: int = 128

    @classmethod
    def from_settings(cls, settings: ServeSettings) -> "RequestLimits":
        return cls(
            max_instances=settings.max_instances,
            max_input_chars=settings.max_input_chars,
            max_new_tokens=settings.max_new_tokens,
            max_stop_strings=settings.max_stop_strings,
            max_stop_chars=settings.max_stop_chars,
        )


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class PredictBody(_Body):
    """KServe v1 `:predict`: `{"instances": ["text", ...]}` (or `[{"text": ...}, ...]`)."""

    instances: list[Any]

    def texts(self) -> list[str]:
        return [i if isinstance(i, str) else i.text for i in self.instances]


class InferBody(_Body):
    """Open Inference Protocol v2 `/infer` with exactly one BYTES input holding the texts."""

    id: str | None
    inputs: list[Any]


class CompletionBody(_Body):
    """OpenAI `POST /v1/completions` (the fields this server honours; others are ignored)."""

    model: str | None
    prompt: Any
    max_tokens: int
    temperature: float
    top_p: float
    stop: Any
    stream: bool

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        stops = [self.stop] if isinstance(self.stop, str) else self.stop
        return tuple(s for s in stops if s)


class ChatBody(CompletionBody):
    """OpenAI `POST /v1/chat/completions`: the conversation, rendered with the model's chat
    template into the prompt a completion continues."""

    messages: Any

    def prompts(self) -> list[str]:
        raise TypeError("a chat request's prompt is rendered by the model's chat template")

    def conversation(self) -> list[dict[str, str]]:
        return [{"role": m.role, "content": m.content} for m in self.messages]


@dataclass(frozen=True)
class RequestModels:
    """The request body classes of one server, bounded by its limits."""

    predict: type[PredictBody]
    infer: type[InferBody]
    completion: type[CompletionBody]
    chat: type[ChatBody]


def _str_or(other: str, expected: str) -> Discriminator:
    """Pick the union member by JSON type, so only that member reports errors."""

    def tag(value: Any) -> str | None:
        if isinstance(value, str):
            return "str"
        if isinstance(value, list) if other == "list[str]" else isinstance(value, dict | BaseModel):
            return other
        return None

    return Discriminator(
        tag,
        custom_error_type="text_type",
        custom_error_message=f"Input should be {expected}",
    )


def _shape_elements(shape: list[int]) -> int:
    """Elements a shape holds; bounded dims make this a handful of multiplications."""
    n = 1
    for d in shape:
        n *= d
    return n


@cache
def request_models(limits: RequestLimits) -> RequestModels:
    """Request body classes enforcing `limits` (cached: equal limits share classes)."""
    Text = Annotated[str, Field(max_length=limits.max_input_chars), AfterValidator(check_text)]
    Name = Annotated[str, Field(max_length=MAX_NAME_CHARS), AfterValidator(check_text)]
    StopText = Annotated[str, Field(max_length=limits.max_stop_chars), AfterValidator(check_text)]

    class TextInstance(_Body):
        text: Text

    instance = Annotated[
        Annotated[Text, Tag("str")] | Annotated[TextInstance, Tag("TextInstance")],
        _str_or("TextInstance", "a string or an object with a text field"),
    ]

    class PredictRequest(PredictBody):
        __doc__ = PredictBody.__doc__
        instances: list[instance] = Field(min_length=1, max_length=limits.max_instances)

    class InferInput(_Body):
        """One Open Inference Protocol (v2) input tensor; text arrives as a BYTES tensor."""

        name: Name
        shape: list[Annotated[int, Field(ge=0, le=MAX_SHAPE_DIM)]] = Field(
            max_length=MAX_SHAPE_DIMS
        )
        datatype: Literal["BYTES"]
        data: list[Text] = Field(min_length=1, max_length=limits.max_instances)
        parameters: dict[str, Any] | None = Field(default=None, max_length=MAX_MAP_ITEMS)

    class InferRequest(InferBody):
        __doc__ = InferBody.__doc__
        id: Name | None = None
        inputs: list[InferInput] = Field(min_length=1, max_length=1)
        outputs: list[dict[str, Any]] | None = Field(default=None, max_length=MAX_OUTPUTS)
        parameters: dict[str, Any] | None = Field(default=None, max_length=MAX_MAP_ITEMS)

        @field_validator("inputs")
        @classmethod
        def _shape_matches(cls, inputs: list[InferInput]) -> list[InferInput]:
            for inp in inputs:
                n = _shape_elements(inp.shape)
                if n != len(inp.data):
                    raise ValueError(
                        f"input {inp.name!r}: shape {inp.shape} holds {n} elements "
                        f"but data has {len(inp.data)}"
                    )
            return inputs

    def max_tokens_limit(value: int) -> int:
        if value > limits.max_new_tokens:
            raise PydanticCustomError(
                OVER_LIMIT,
                "max_tokens {value} exceeds this server's limit of {limit}",
                {"value": value, "limit": limits.max_new_tokens},
            )
        return value

    prompts = Annotated[list[Text], Field(min_length=1, max_length=limits.max_instances)]
    stops = Annotated[list[StopText], Field(max_length=limits.max_stop_strings)]

    MaxTokens = Annotated[
        int,
        Field(ge=1, json_schema_extra={"maximum": limits.max_new_tokens}),
        AfterValidator(max_tokens_limit),
    ]

    class Sampling(_Body):
        """What both OpenAI generation APIs share (the bounds of this server)."""

        model: Name | None = None
        max_tokens: MaxTokens = 16
        temperature: float = Field(default=1.0, ge=0.0, le=2.0)
        top_p: float = Field(default=1.0, gt=0.0, le=1.0)
        stop: (
            Annotated[
                Annotated[StopText, Tag("str")] | Annotated[stops, Tag("list[str]")],
                _str_or("list[str]", "a string, a list of strings or null"),
            ]
            | None
        ) = None
        stream: bool = False
        n: Literal[1] = 1
        user: Name | None = None

    class CompletionRequest(Sampling, CompletionBody):
        __doc__ = CompletionBody.__doc__
        prompt: Annotated[
            Annotated[Text, Tag("str")] | Annotated[prompts, Tag("list[str]")],
            _str_or("list[str]", "a string or a list of strings"),
        ]

    class ChatMessage(_Body):
        role: Literal["system", "user", "assistant"]
        content: Text

    class ChatRequest(Sampling, ChatBody):
        __doc__ = ChatBody.__doc__
        messages: list[ChatMessage] = Field(min_length=1, max_length=limits.max_instances)
        prompt: None = None
        max_completion_tokens: MaxTokens | None = None

        @model_validator(mode="after")
        def _newer_token_limit(self) -> "ChatRequest":
            # OpenAI's newer name for max_tokens; it wins when both are given.
            if self.max_completion_tokens is not None:
                self.max_tokens = self.max_completion_tokens
            return self

    return RequestModels(PredictRequest, InferRequest, CompletionRequest, ChatRequest)
