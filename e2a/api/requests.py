"""Request bodies of the REST API: pydantic models (unknown fields refused) and their reader."""

from __future__ import annotations

import json
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from quart import request

from e2a.api.errors import ApiError

MAX_JSON_DEPTH = 32
"""The deepest nesting of arrays and objects a request body may have (the API needs 3)."""


class RequestBody(BaseModel):
    """Base of every request body: extra fields are a 400 naming the field, and values must
    have their documented JSON type (`0` is not a boolean, `"5"` not an integer)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, strict=True)


class CreateAgent(RequestBody):
    """POST /agents."""

    slug: str | None = None
    email: str | None = None
    name: str | None = Field(default=None, max_length=200)
    webhook_url: str | None = Field(default=None, max_length=2048)
    agent_mode: Literal["cloud", "local"] | None = None


class UpdateAgent(RequestBody):
    """PUT /agents/{email}: any subset of the settings."""

    name: str | None = Field(default=None, max_length=200)
    webhook_url: str | None = Field(default=None, max_length=2048)
    agent_mode: Literal["cloud", "local"] | None = None
    hitl_enabled: bool | None = None
    hitl_ttl_seconds: int | None = Field(default=None, ge=1, le=604800)
    hitl_expiration_action: Literal["approve", "reject"] | None = None


class CreateDomain(RequestBody):
    """POST /domains."""

    domain: str = Field(max_length=253)


class CreateSigningSecret(RequestBody):
    """POST /users/me/signing-secrets."""

    name: str | None = Field(default=None, max_length=100)


class CreateApiKey(RequestBody):
    """POST /users/me/api-keys."""

    name: str | None = Field(default=None, max_length=100)


Body = TypeVar("Body", bound=RequestBody)


async def read_body(model: type[Body], *, allow_empty: bool = False) -> Body:
    """Read the request body as a JSON object validated against `model` (unknown fields refused).

    Content-Type is not required to be application/json, so `curl -d` works as users expect.
    """
    raw = await request.get_data(as_text=False)
    assert isinstance(raw, bytes)
    if not raw.strip():
        if allow_empty and not raw:  # an optional body may be left out, not sent as blanks
            raw = b"{}"
        else:
            raise ApiError(400, "invalid_json", "request body is empty; send a JSON object")
    try:
        data = json.loads(raw)
    except RecursionError:
        raise _too_deep() from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid_json", f"request body is not valid JSON: {exc}") from None
    if json_depth(data) > MAX_JSON_DEPTH:
        raise _too_deep()
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ApiError(400, "invalid_request", describe_validation_error(exc)) from None


def json_depth(value: object) -> int:
    """How deeply `value` nests arrays and objects (a scalar is 0, `[]` and `{}` are 1)."""
    deepest = 0
    pending: list[tuple[object, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, depth + 1)
            pending.extend((child, depth + 1) for child in item)
    return deepest


def _too_deep() -> ApiError:
    return ApiError(
        400,
        "invalid_json",
        f"request body nests arrays and objects more than {MAX_JSON_DEPTH} levels deep; "
        "no request of this API needs more",
    )


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
