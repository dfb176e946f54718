"""What a caller asks an operation to do, as validated models: unknown fields are refused and
values must have their documented type. Every face validates through here, so a request is
refused with the same sentence whether it came as JSON, a form or a tool call."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, TypeVar

from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError

from e2a_gateway.operations.errors import Invalid


class RequestBody(BaseModel):
    """Base of every request: extra fields are refused naming the field, and values must have
    their documented JSON type (`0` is not a boolean, `"5"` not an integer). Strings lose
    surrounding whitespace (addresses, ids, names), but `Verbatim` ones."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, strict=True)


Verbatim = Annotated[str, StringConstraints(strip_whitespace=False)]
"""A string kept exactly as sent: what a message or a template says (subject, text, HTML), where
whitespace is content (an indented first line, a closing newline), and names looked up as
written (a template's alias), as e2a keeps them."""


Body = TypeVar("Body", bound=BaseModel)


def parse_request(model: type[Body], data: Mapping[str, object]) -> Body:
    """`data` validated as `model`; Invalid (`invalid_request`) naming each offending field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise Invalid("invalid_request", describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    """One sentence naming each offending field."""
    parts = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "body"
        if error["type"] == "extra_forbidden":
            parts.append(f"unknown field '{field}'")
        elif error["type"] == "missing":
            parts.append(f"missing required field '{field}'")
        else:
            parts.append(f"field '{field}': {error['msg']}")
    return "; ".join(parts)
