"""Base model for every API object: camelCase on the wire, snake_case in Python.

Kubernetes field names are camelCase; Python attributes stay idiomatic. Unknown fields are
rejected (``extra="forbid"``) so a typo in a spec fails loudly instead of being ignored.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class ApiModel(BaseModel):
    """Strict camelCase model used for specs, status and the trainer config."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_default=False,
        use_attribute_docstrings=True,
    )

    def to_wire(self) -> dict:
        """Serialise with camelCase keys, dropping unset optional fields (what the API stores)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)
