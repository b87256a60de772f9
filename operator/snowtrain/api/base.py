"""Base model for every API object: camelCase on the wire, snake_case in Python.

Kubernetes field names are camelCase; Python attributes stay idiomatic. Unknown fields are
rejected (``extra="forbid"``) so a typo in a spec fails loudly instead of being ignored.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict
from pydantic.alias_generators import to_camel

_YAML11_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def _float_as_yaml_writes_it(value: Any) -> Any:
    """``1e-4`` in a YAML file is a number to the API server (YAML 1.2) but a string to
    PyYAML (YAML 1.1): read such strings as the number they are. Anything else is left to
    strict validation, so ``"0.1"`` or ``true`` is refused as the API server refuses it."""
    if isinstance(value, str) and _YAML11_FLOAT.match(value):
        return float(value)
    return value


YAML_FLOAT = BeforeValidator(_float_as_yaml_writes_it)
Float = Annotated[float, YAML_FLOAT]
"""A number field: strict, except for exponent floats PyYAML reads as strings."""


class ApiModel(BaseModel):
    """Strict camelCase model used for specs, status and the trainer config."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_default=False,
        use_attribute_docstrings=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """Serialise with camelCase keys, dropping unset optional fields (what the API stores)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)
