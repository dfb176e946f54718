"""A request body as a JSON object, for every HTTP face: parsed, at most MAX_JSON_DEPTH deep,
an object at the top. How a refusal is answered is each face's own."""

from __future__ import annotations

import json
from typing import Any

MAX_JSON_DEPTH = 32
"""The deepest nesting of arrays and objects a request body may have (the APIs need 4)."""


class NotAJsonObject(ValueError):
    """The body is not a JSON object within the bounds; the message says what is wrong."""


def json_object(raw: bytes) -> dict[str, Any]:
    """`raw` parsed as a JSON object; NotAJsonObject saying why it is not one."""
    try:
        data = json.loads(raw)
    except RecursionError:
        raise _too_deep() from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise NotAJsonObject(f"request body is not valid JSON: {exc}") from None
    if json_depth(data) > MAX_JSON_DEPTH:
        raise _too_deep()
    if not isinstance(data, dict):
        raise NotAJsonObject("request body must be a JSON object")
    return data


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


def _too_deep() -> NotAJsonObject:
    return NotAJsonObject(
        f"request body nests arrays and objects more than {MAX_JSON_DEPTH} levels deep; "
        "no request of this API needs more",
    )
