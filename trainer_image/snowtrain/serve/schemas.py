"""Request bodies of the three wire protocols, as pydantic models.

Only the shape is checked here (types, required fields, value ranges), which FastAPI turns
into a 400 naming the field. Limits that depend on server settings (how many instances, how
long a text) are checked in the routes, because they answer 413 and quote the setting.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextInstance(_Body):
    text: str


class PredictRequest(_Body):
    """KServe v1 `:predict`: `{"instances": ["text", ...]}` (or `[{"text": ...}, ...]`)."""

    instances: list[str | TextInstance] = Field(min_length=1)

    def texts(self) -> list[str]:
        return [i if isinstance(i, str) else i.text for i in self.instances]


class InferInput(_Body):
    """One Open Inference Protocol (v2) input tensor; text arrives as a BYTES tensor."""

    name: str
    shape: list[int]
    datatype: Literal["BYTES"]
    data: list[str] = Field(min_length=1)
    parameters: dict | None = None


class InferRequest(_Body):
    """Open Inference Protocol v2 `/infer` with exactly one BYTES input holding the texts."""

    id: str | None = None
    inputs: list[InferInput] = Field(min_length=1, max_length=1)
    outputs: list[dict] | None = None
    parameters: dict | None = None

    @field_validator("inputs")
    @classmethod
    def _shape_matches(cls, inputs: list[InferInput]) -> list[InferInput]:
        for inp in inputs:
            n = 1
            for d in inp.shape:
                n *= d
            if n != len(inp.data):
                raise ValueError(
                    f"input {inp.name!r}: shape {inp.shape} holds {n} elements "
                    f"but data has {len(inp.data)}"
                )
        return inputs


class CompletionRequest(_Body):
    """OpenAI `POST /v1/completions` (the fields this server honours; others are ignored)."""

    model: str | None = None
    prompt: str | Annotated[list[str], Field(min_length=1)]
    max_tokens: int = Field(default=16, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    stream: bool = False
    n: Literal[1] = 1
    user: str | None = None

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        stops = [self.stop] if isinstance(self.stop, str) else self.stop
        return tuple(s for s in stops if s)
