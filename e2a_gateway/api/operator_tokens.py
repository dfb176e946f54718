"""The bearer tokens guarding the operator's probes (`GET /selftest`, `GET /metrics`): a
secret from the config file, compared in constant time."""

from __future__ import annotations

import hmac

from quart import Response, request

from e2a_gateway.api.errors import error_response
from e2a_gateway.web.context import bearer_key


def token_refusal(secret: str, route: str, setting: str) -> Response | None:
    """None when the request's `Authorization: Bearer` carries `secret`; else the 401 answer
    saying that `route` needs the value of `setting`."""
    presented = bearer_key(request.headers)
    if presented is not None and hmac.compare_digest(presented.encode(), secret.encode()):
        return None
    return error_response(
        401,
        "unauthorized",
        f"{route} needs Authorization: Bearer <{setting}>",
        {"WWW-Authenticate": 'Bearer realm="e2a"'},
    )
