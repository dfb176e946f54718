"""What a request brings along: the gateway the Quart app serves, and the API key it presents.

The app is bound to its gateway once, where it is assembled; handlers of every Quart face find
it here instead of reaching into the app's configuration themselves.
"""

from __future__ import annotations

from quart import Quart, current_app
from werkzeug.datastructures import Headers

from e2a_gateway.gateway import Gateway

_GATEWAY = "E2A_GATEWAY"


def bind_gateway(app: Quart, gateway: Gateway) -> None:
    """Make `gateway` the one `app`'s handlers serve."""
    app.config[_GATEWAY] = gateway


def current_gateway() -> Gateway:
    """The gateway the running app serves (inside a request or WebSocket context)."""
    found: Gateway = current_app.config[_GATEWAY]
    return found


def bearer_key(headers: Headers) -> str | None:
    """The key in an `Authorization: Bearer …` header, or None."""
    scheme, _, value = str(headers.get("Authorization", "")).partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None
