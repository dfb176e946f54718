"""Cursor pages on `/v1`: `{"items": [...], "next_cursor": "…" | null}`, `?cursor=` and
`?limit=` (1-100, default 100) as e2a names them.

A cursor is opaque and tamper-evident: the position a page ended on and the listing it belongs
to (its `view`: a resource, its filters), as base64url JSON followed by an HMAC under a key
derived from the server key. A cursor edited, forged or replayed on another listing is refused
with 400 `invalid_cursor`, never read as a position.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from pydantic import Field

from e2a_gateway.api.v1.bodies import QueryParams
from e2a_gateway.api.v1.errors import V1Error
from e2a_gateway.gateway import Gateway
from e2a_gateway.web.context import current_gateway

DEFAULT_LIMIT = 100
MAX_CURSOR_LENGTH = 2048
Row = TypeVar("Row")
Position = tuple[Any, ...]
"""Where a page ended, as the listing's storage query continues from it."""


class PageQuery(QueryParams):
    """`?cursor=&limit=`."""

    cursor: str | None = Field(default=None, max_length=MAX_CURSOR_LENGTH)
    limit: int = Field(default=DEFAULT_LIMIT, ge=1, le=100)


def encode_cursor(view: str, position: Position, gateway: Gateway | None = None) -> str:
    """The cursor continuing listing `view` after `position` (`gateway`: the one serving the
    request, unless given)."""
    payload = _b64(json.dumps({"v": view, "p": list(position)}, separators=(",", ":")).encode())
    return f"{payload}.{_b64(_mac(payload, gateway))}"


def decode_cursor(view: str, cursor: str, gateway: Gateway | None = None) -> Position:
    """The position `cursor` continues listing `view` from; 400 `invalid_cursor` unless this
    gateway made it for `view`."""
    payload, _, mac = cursor.partition(".")
    try:
        genuine = hmac.compare_digest(_unb64(mac), _mac(payload, gateway))
        decoded = json.loads(_unb64(payload)) if genuine else None
    except (ValueError, binascii.Error, UnicodeDecodeError):
        decoded = None
    if not isinstance(decoded, dict) or not isinstance(decoded.get("p"), list):
        raise _invalid("this cursor was not made by this API; start again without it")
    if decoded.get("v") != view:
        raise _invalid(
            "this cursor belongs to another listing (other filters); start again without it"
        )
    return tuple(decoded["p"])


async def keyset_page(
    view: str,
    query: PageQuery,
    fetch: Callable[[int, Position | None], Awaitable[Sequence[Row]]],
    position_of: Callable[[Row], Position],
    render: Callable[[Row], dict[str, Any]],
    gateway: Gateway | None = None,
) -> dict[str, Any]:
    """One page of listing `view`: `fetch(limit + 1, after)` reads the rows after the cursor's
    position (one more than shown, to know whether another page follows). `gateway` signs the
    cursors: the one serving the request unless given (the MCP tools, outside a request)."""
    after = decode_cursor(view, query.cursor, gateway) if query.cursor else None
    rows = list(await fetch(query.limit + 1, after))
    shown = rows[: query.limit]
    more = len(rows) > query.limit
    next_cursor = encode_cursor(view, position_of(shown[-1]), gateway) if more else None
    return {"items": [render(row) for row in shown], "next_cursor": next_cursor}


def _invalid(message: str) -> V1Error:
    return V1Error(400, "invalid_cursor", message)


def _mac(payload: str, gateway: Gateway | None) -> bytes:
    server_key = (gateway or current_gateway()).server_key
    key = hmac.new(server_key.encode(), b"e2a v1 page cursor", hashlib.sha256).digest()
    return hmac.new(key, payload.encode(), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    if not text.isascii():
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
