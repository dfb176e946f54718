"""e2a's error envelope on `/v1`: `{"error": {"code", "message", "request_id", "details"}}` on
every non-2xx answer, and the one table that turns the gateway's refusals into e2a's statuses
and code vocabulary (docs/api.md, "/v1"). Knows the operations' error types, not their callers.
"""

from __future__ import annotations

import json
from typing import Any

from quart import Response, request
from werkzeug.exceptions import HTTPException

from e2a_gateway.operations.errors import (
    NotAvailable,
    OperationError,
    PreconditionUnmet,
    RateLimited,
    Unauthorized,
    Undeliverable,
)
from e2a_gateway.web import errors as web_errors
from e2a_gateway.web.context import current_request_id

CODES = frozenset(
    {
        "unauthorized",
        "forbidden",
        "blocked_by_policy",
        "invalid_request",
        "invalid_cursor",
        "invalid_filter",
        "invalid_domain",
        "invalid_slug",
        "invalid_recipient",
        "invalid_attachment",
        "invalid_template",
        "invalid_event_type",
        "invalid_webhook_url",
        "invalid_expires_at",
        "invalid_scope",
        "reserved_domain",
        "too_many_recipients",
        "template_render_failed",
        "template_rendered_empty",
        "recipient_suppressed",
        "not_found",
        "attachment_not_found",
        "template_not_found",
        "starter_template_not_found",
        "gone",
        "conflict",
        "agent_taken",
        "domain_taken",
        "alias_taken",
        "address_in_trash",
        "message_held",
        "message_not_pending",
        "message_not_yet_delivered",
        "not_in_trash",
        "send_in_progress",
        "webhook_disabled",
        "webhook_cooldown",
        "domain_not_registered",
        "domain_has_agents",
        "domain_not_verified",
        "inbound_mx_missing",
        "limit_exceeded",
        "rate_limited",
        "template_limit_reached",
        "webhook_limit_reached",
        "idempotency_in_flight",
        "idempotency_key_reuse",
        "payload_too_large",
        "attachment_too_large",
        "not_implemented",
        "events_log_disabled",
        "limits_unavailable",
        "inbound_mx_check_failed",
        "internal_error",
        "method_not_allowed",
        "unsupported_media_type",
        "error",
    }
)
"""e2a's error codes (its docs/api.md catalog at 220fe0a7): the only codes `/v1` answers with."""

STATUSES: dict[type[OperationError], int] = {
    **{kind: status for kind, status in web_errors.STATUSES.items() if kind is not Undeliverable},
    PreconditionUnmet: 400,
    NotAvailable: 501,
}
"""The status of each kind of refusal on `/v1`: every HTTP face's, except that e2a has no 412
(an unmet precondition is 400), gives Undeliverable no status of its own (500), and answers
what the gateway does not offer with 501."""

RENAMED: dict[str, tuple[int | None, str]] = {
    "agent_exists": (None, "agent_taken"),
    "domain_exists": (None, "domain_taken"),
    "domain_reserved": (None, "reserved_domain"),
    "domain_in_use": (400, "domain_has_agents"),
    "reserved_slug": (None, "invalid_slug"),
    "invalid_json": (None, "invalid_request"),
    "invalid_email": (None, "invalid_request"),
    "too_many_websockets": (None, "rate_limited"),
    "too_many_exports": (None, "rate_limited"),
    "dns_unavailable": (None, "inbound_mx_check_failed"),
    "payload_too_large": (413, "payload_too_large"),
    "malformed_expires_at": (422, "invalid_request"),
}
"""The gateway's own codes that e2a spells otherwise: (the status e2a gives it, when it differs
from the kind's; e2a's code)."""

DEFAULT_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "rate_limited",
}
"""The code of a status when nothing more precise is known (e2a's defaultCodeForStatus)."""


class V1Error(Exception):
    """A refusal in e2a's terms: status, code, message, and `details` when the code has them
    (`invalid_request`: the fields; `rate_limited`: the wait)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or {}


def field_errors(*fields: tuple[str, str]) -> dict[str, Any]:
    """`details` of `invalid_request`: each (location such as `body.name`, message)."""
    return {"fields": [{"location": location, "message": message} for location, message in fields]}


def invalid(status: int, message: str, *fields: tuple[str, str]) -> V1Error:
    """`invalid_request` (400 malformed, 422 schema) naming the offending fields."""
    return V1Error(status, "invalid_request", message, field_errors(*(fields or (("", message),))))


def refusal(error: OperationError) -> V1Error:
    """The answer on `/v1` to a refused operation."""
    status = web_errors.status_of(error, STATUSES)
    renamed_status, code = RENAMED.get(error.code, (None, error.code))
    status = renamed_status or status
    if code not in CODES:
        code = DEFAULT_CODES.get(status, "internal_error" if status >= 500 else "error")
    details: dict[str, Any] | None = None
    headers: dict[str, str] = {}
    if error.details is not None:
        details = dict(error.details)
    elif code == "invalid_request":
        details = field_errors(("", error.message))
    if isinstance(error, RateLimited):
        wait = max(1, error.retry_after or 1)
        details = {"retry_after_seconds": wait}
        headers["Retry-After"] = str(wait)
    if isinstance(error, Unauthorized):
        headers["WWW-Authenticate"] = 'Bearer realm="e2a"'
    return V1Error(status, code, error.message, details, headers)


def http_refusal(exc: HTTPException) -> V1Error:
    """The answer on `/v1` to a refusal of the HTTP layer (no such route, wrong method, body
    too large, …)."""
    status = exc.code or 500
    code = DEFAULT_CODES.get(status, "internal_error" if status >= 500 else "error")
    messages = {
        404: "no such endpoint — see the /v1 section of docs/api.md",
        405: f"{request.method} is not allowed on this endpoint",
        413: "request body too large",
    }
    headers = {name: value for name, value in exc.get_headers() if name == "Allow"}
    details = None
    if status == 413:
        limit = request.max_content_length or 0
        declared = request.content_length or limit
        details = {"scope": "request_body", "actual_bytes": declared, "max_bytes": limit}
    message = messages.get(status, exc.description or exc.name)
    if code == "invalid_request":
        details = field_errors(("", message))
    return V1Error(status, code, message, details, headers)


def error_answer(error: V1Error) -> Response:
    """The envelope of `error`, with its headers and the request id."""
    body: dict[str, Any] = {
        "code": error.code,
        "message": error.message,
        "request_id": current_request_id(),
    }
    if error.details is not None:
        body["details"] = error.details
    return Response(
        json.dumps({"error": body}),
        status=error.status,
        content_type="application/json",
        headers=error.headers,
    )
