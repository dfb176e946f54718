"""What a request brings along: the gateway the Quart app serves, the API key it presents, and
its request id.

The app is bound to its gateway once, where it is assembled; handlers of every Quart face find
it here instead of reaching into the app's configuration themselves.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from quart import Quart, current_app, g, has_request_context, request, websocket
from quart.typing import ResponseTypes
from werkzeug.datastructures import Headers

from e2a_gateway.gateway import Gateway
from e2a_gateway.operations.errors import Unauthorized
from e2a_gateway.request_ids import HEADER as REQUEST_ID_HEADER
from e2a_gateway.request_ids import request_id_for

_GATEWAY = "E2A_GATEWAY"


def bind_gateway(app: Quart, gateway: Gateway) -> None:
    """Make `gateway` the one `app`'s handlers serve."""
    app.config[_GATEWAY] = gateway


def current_gateway() -> Gateway:
    """The gateway the running app serves (inside a request or WebSocket context)."""
    found: Gateway = current_app.config[_GATEWAY]
    return found


ONE_KEY_ONLY = (
    "more than one Authorization header: send exactly one API key, in one "
    "'Authorization: Bearer e2a_…' header"
)


def bearer_key(headers: Headers) -> str | None:
    """The key in an `Authorization: Bearer …` header, or None; Unauthorized when the request
    has several Authorization headers (even naming one key twice): which caller it speaks for
    would be a guess, so it is refused rather than answered as the first one's."""
    presented = headers.getlist("Authorization")
    if len(presented) > 1:
        raise Unauthorized("unauthorized", ONE_KEY_ONLY)
    scheme, _, value = str(presented[0] if presented else "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def current_path() -> str:
    """The path of the HTTP request, or of the WebSocket handshake, being served."""
    return str(request.path if has_request_context() else websocket.path)


def on_handshake_refusals(
    after_request: Callable[[ResponseTypes], Awaitable[ResponseTypes]],
) -> Callable[[ResponseTypes | None], Awaitable[ResponseTypes | None]]:
    """`after_request`, for `after_websocket`: applied to a WebSocket handshake's refusal (an
    accepted WebSocket has no answer to apply it to)."""

    async def after_websocket(response: ResponseTypes | None) -> ResponseTypes | None:
        return None if response is None else await after_request(response)

    return after_websocket


def current_request_id() -> str:
    """This request's id (the client's X-Request-Id when sane, else a new `req_…`): the one
    its answer names and the log lines about it quote, the same for the whole request."""
    found: str | None = g.get("e2a_request_id")
    if found is None:
        headers = request.headers if has_request_context() else websocket.headers
        found = g.e2a_request_id = request_id_for(headers.get(REQUEST_ID_HEADER))
    return found
