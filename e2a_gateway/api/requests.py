"""Reading a REST request: its body as JSON, at most MAX_JSON_DEPTH deep, an object holding
nothing no request may carry, validated against the operation's request model (unknown fields
refused); `/api/v1`'s `page_size` and `mark_read`."""

from __future__ import annotations

from typing import Any, TypeVar

from quart import request

from e2a_gateway.operations.errors import Invalid
from e2a_gateway.operations.messages import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from e2a_gateway.operations.requests import RequestBody, parse_request
from e2a_gateway.web.json_bodies import NotAJsonObject, UnfitValue, json_object

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
    return parse_request(model, json_body(raw))


def json_body(raw: bytes) -> dict[str, Any]:
    """`raw` as a JSON object (`json_object`): Invalid `invalid_json` when it is not one,
    `invalid_request` naming a value in it that no request may carry."""
    try:
        return json_object(raw)
    except UnfitValue as exc:
        raise Invalid("invalid_request", str(exc)) from None
    except NotAJsonObject as exc:
        raise Invalid("invalid_json", str(exc)) from None


def page_size() -> int:
    """The `page_size` query parameter of an `/api/v1` listing: 1 to MAX_PAGE_SIZE (default
    DEFAULT_PAGE_SIZE); Invalid otherwise, however many digits it has."""
    raw = request.args.get("page_size", str(DEFAULT_PAGE_SIZE))
    if (
        not (raw.isascii() and raw.isdigit() and len(raw) <= 4)
        or not 1 <= int(raw) <= MAX_PAGE_SIZE
    ):
        raise Invalid("invalid_request", f"page_size must be an integer from 1 to {MAX_PAGE_SIZE}")
    return int(raw)


def mark_read() -> bool:
    """The `mark_read` query parameter of a message's full read: `true` (the default) or
    `false` (read it in full, leave it unread); Invalid otherwise."""
    raw = request.args.get("mark_read", "true")
    if raw not in ("true", "false"):
        raise Invalid("invalid_request", "mark_read must be true or false")
    return raw == "true"
