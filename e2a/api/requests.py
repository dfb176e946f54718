"""Reading a REST request body: JSON, at most MAX_JSON_DEPTH deep, an object, validated against
the operation's request model (unknown fields refused)."""

from __future__ import annotations

import json
from typing import TypeVar

from quart import request

from e2a.operations.errors import Invalid
from e2a.operations.requests import RequestBody, parse_request

MAX_JSON_DEPTH = 32
"""The deepest nesting of arrays and objects a request body may have (the API needs 3)."""


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
            raise Invalid("invalid_json", "request body is empty; send a JSON object")
    try:
        data = json.loads(raw)
    except RecursionError:
        raise _too_deep() from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise Invalid("invalid_json", f"request body is not valid JSON: {exc}") from None
    if json_depth(data) > MAX_JSON_DEPTH:
        raise _too_deep()
    if not isinstance(data, dict):
        raise Invalid("invalid_json", "request body must be a JSON object")
    return parse_request(model, data)


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


def _too_deep() -> Invalid:
    return Invalid(
        "invalid_json",
        f"request body nests arrays and objects more than {MAX_JSON_DEPTH} levels deep; "
        "no request of this API needs more",
    )
