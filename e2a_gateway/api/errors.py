"""JSON errors: `{"error": {"code", "message"}}` for every non-2xx answer, never HTML."""

from __future__ import annotations

import json
import logging

from quart import Response
from werkzeug.exceptions import HTTPException

log = logging.getLogger("e2a.api")


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    """Build the JSON error response."""
    body = json.dumps({"error": {"code": code, "message": message}})
    return Response(body, status=status, content_type="application/json", headers=headers)


_HTTP_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def http_exception_response(exc: HTTPException) -> Response:
    """Turn a Werkzeug/Quart HTTP exception (unknown route, wrong method…) into a JSON error."""
    status = exc.code or 500
    code = _HTTP_CODES.get(status, "http_error")
    # A 405 must say which methods the route allows (RFC 9110 §15.5.6).
    allow = {name: value for name, value in exc.get_headers() if name == "Allow"}
    messages = {
        404: "no such endpoint — see the REST reference in docs/api.md",
        405: "method not allowed on this endpoint",
        413: "request body too large",
    }
    return error_response(status, code, messages.get(status, exc.description or exc.name), allow)
