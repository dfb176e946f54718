"""The exceptions the SDK raises: API answers that were not 2xx, no answer at all, and
unverified email access.

Pure data; no I/O. `E2AApiError` keeps the published SDK's `status_code` and `message`, adds
the gateway's machine-readable `code`, and has a subclass per family of refusal as e2a's SDK
5.x has (`E2ANotFoundError`, `E2ARateLimitError`, …), chosen by the code first, else by the
status; `retryable` says whether a retry may succeed, by the same rule.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import httpx

REQUEST_ID_HEADER = "X-Request-Id"

RETRYABLE_CODES = frozenset({"idempotency_in_flight", "rate_limited"})
"""Codes a retry may clear, whatever their status (e2a's SDK, errors.ts CODE_TABLE)."""
NOT_RETRYABLE_CODES = frozenset(
    {
        "not_implemented",
        "events_log_disabled",
        "idempotency_key_reuse",
        "unauthorized",
        "forbidden",
        "blocked_by_policy",
        "not_found",
        "gone",
        "conflict",
        "message_not_pending",
        "webhook_cooldown",
        "webhook_disabled",
        "bad_request",
        "unprocessable_entity",
        "domain_not_verified",
        "recipient_suppressed",
        "limit_exceeded",
        "template_limit_reached",
        "webhook_limit_reached",
    }
)
"""Codes a retry never clears, whatever their status (a 501 `not_implemented` included)."""


def is_retryable(code: str | None, status: int) -> bool:
    """Whether a retry may succeed, as e2a's SDK decides it: by the error's code first (its
    code table, then the `*_not_found`, `*_taken` and `invalid_*` families), else by the
    status (408, 429 and 5xx)."""
    code = code or ""
    if code in RETRYABLE_CODES:
        return True
    if (
        code in NOT_RETRYABLE_CODES
        or code.endswith(("_not_found", "_taken", "_exists"))
        or code.startswith("invalid_")
    ):
        return False
    return status in (408, 429) or 500 <= status <= 599


class E2AApiError(Exception):
    """The e2a API answered with an HTTP error, or (`E2AConnectionError`) did not answer.

    `status_code` is the HTTP status (0 when there was no answer), `code` the snake_case
    error code from the JSON body (`{"error": {"code", "message"}}`; None when the body was
    not that shape) and `message` the sentence saying what went wrong. `retry_after` is the
    wait in seconds a 429 or 503 answer asked for (its `Retry-After`), None when it named
    none. `request_id` is the answer's `X-Request-Id` (quote it when asking about a failed
    call: the gateway's log names it), `details` the body's `error.details` when it has any.
    `retryable` says whether making the call again may succeed (`is_retryable`).
    """

    def __init__(
        self,
        status_code: int,
        message: str,
        code: str | None = None,
        retry_after: float | None = None,
        *,
        request_id: str | None = None,
        details: Any = None,
    ) -> None:
        self.status_code = status_code
        self.message = message
        self.code = code
        self.retry_after = retry_after
        self.request_id = request_id
        self.details = details
        label = f"{status_code} {code}" if code else str(status_code)
        super().__init__(f"e2a API error ({label}): {message}")

    @property
    def retryable(self) -> bool:
        """Whether a retry may succeed (429, 5xx, an idempotent write still in flight…)."""
        return is_retryable(self.code, self.status_code)

    @classmethod
    def from_body(cls, status_code: int, text: str) -> E2AApiError:
        """Read the gateway's JSON error body, or keep the plain text of any other body; the
        subclass of the error's family (`error_class`)."""
        try:
            error = json.loads(text)["error"]
            code, message = str(error["code"]), str(error["message"])
        except (ValueError, KeyError, TypeError):
            return error_class(status_code, None)(
                status_code, text.strip() or f"HTTP {status_code}"
            )
        request_id = error.get("request_id")
        return error_class(status_code, code)(
            status_code,
            message,
            code,
            request_id=request_id if isinstance(request_id, str) else None,
            details=error.get("details"),
        )

    @classmethod
    def from_response(cls, response: httpx.Response) -> E2AApiError:
        """The error an HTTP answer of status >= 400 stands for. An HTML page (a proxy's
        error page, say) is summed up in a sentence rather than kept as the message."""
        if _is_html(response):
            status = f"{response.status_code} {response.reason_phrase}".strip()
            error = error_class(response.status_code, None)(
                response.status_code,
                f"HTTP {status}: an HTML page, not the e2a API's JSON error "
                "(a proxy or another web server answered for the gateway)",
            )
        else:
            error = cls.from_body(response.status_code, response.text)
        error.retry_after = retry_after_seconds(response.headers.get("retry-after"))
        error.request_id = response.headers.get(REQUEST_ID_HEADER) or error.request_id
        return error


class E2AAuthError(E2AApiError):
    """401: the API key is missing, unknown or revoked."""


class E2APermissionError(E2AApiError):
    """403: the key may not do this."""


class E2ANotFoundError(E2AApiError):
    """404 or 410: no such agent, message, domain or key (or not the caller's)."""


class E2AConflictError(E2AApiError):
    """409: the state forbids it (the address is taken, the message is no longer held…)."""


class E2AValidationError(E2AApiError):
    """400 or 422: the request is wrong (a bad address, a reserved name, a missing field)."""


class E2AIdempotencyError(E2AApiError):
    """An Idempotency-Key refused: `idempotency_in_flight` (the first request is still
    running: retryable) or `idempotency_key_reuse` (the key came with another request)."""


class E2ALimitExceededError(E2AApiError):
    """402 `limit_exceeded`: a quota of the account is used up; a retry does not clear it."""


class E2ARateLimitError(E2AApiError):
    """429: too many requests; wait `retry_after` seconds and try again."""


class E2AServerError(E2AApiError):
    """5xx or 408: the gateway (or a proxy before it) failed, is busy or is restarting."""


class E2AConnectionError(E2AApiError, httpx.TransportError):
    """No answer: the connection was refused, dropped or timed out (`status_code` 0, `code`
    `connection_error`); the httpx error is its `__cause__`. Also an `httpx.TransportError`,
    as the SDK raised before. Retryable unless the URL itself is wrong (an unsupported
    scheme)."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(0, message, "connection_error")
        self._retryable = retryable

    @property
    def retryable(self) -> bool:
        """Whether a retry may succeed: the gateway may answer next time."""
        return self._retryable

    @classmethod
    def wrapping(cls, exc: httpx.TransportError, url: str) -> E2AConnectionError:
        """The error for `exc`, raised while calling the gateway at `url`."""
        error = cls(
            f"no answer from the e2a gateway at {url} ({type(exc).__name__}: "
            f"{exc or 'no detail'}): check the base URL and that the gateway is running",
            retryable=not isinstance(exc, httpx.UnsupportedProtocol | httpx.LocalProtocolError),
        )
        error.__cause__ = exc
        with contextlib.suppress(RuntimeError):  # raised by httpx when it set none
            error.request = exc.request
        return error


_CODE_CLASSES: dict[str, type[E2AApiError]] = {
    "unauthorized": E2AAuthError,
    "forbidden": E2APermissionError,
    "blocked_by_policy": E2APermissionError,
    "not_found": E2ANotFoundError,
    "gone": E2ANotFoundError,
    "conflict": E2AConflictError,
    "message_not_pending": E2AConflictError,
    "webhook_cooldown": E2AConflictError,
    "webhook_disabled": E2AConflictError,
    "domain_not_verified": E2AValidationError,
    "recipient_suppressed": E2AValidationError,
    "invalid_request": E2AValidationError,
    "bad_request": E2AValidationError,
    "unprocessable_entity": E2AValidationError,
    "idempotency_in_flight": E2AIdempotencyError,
    "idempotency_key_reuse": E2AIdempotencyError,
    "limit_exceeded": E2ALimitExceededError,
    "template_limit_reached": E2ALimitExceededError,
    "webhook_limit_reached": E2ALimitExceededError,
    "rate_limited": E2ARateLimitError,
    "not_implemented": E2AServerError,
    "events_log_disabled": E2AServerError,
}
"""A known code's family, whatever status it came with (e2a's SDK 5.x, errors.py _CODE_MAP)."""
_STATUS_CLASSES: dict[int, type[E2AApiError]] = {
    400: E2AValidationError,
    401: E2AAuthError,
    402: E2ALimitExceededError,
    403: E2APermissionError,
    404: E2ANotFoundError,
    409: E2AConflictError,
    410: E2ANotFoundError,
    422: E2AValidationError,
    429: E2ARateLimitError,
}


def error_class(status: int, code: str | None) -> type[E2AApiError]:
    """The class of an error answered with `status` and `code`: by the code first (a known
    one, then the `*_not_found`, `*_taken`/`*_exists` and `invalid_*` families), else by the
    status; `E2AApiError` itself for a status of no family (a redirect, say)."""
    code = code or ""
    if code in _CODE_CLASSES:
        return _CODE_CLASSES[code]
    if code.endswith("_not_found"):
        return E2ANotFoundError
    if code.endswith(("_taken", "_exists")):
        return E2AConflictError
    if code.startswith("invalid_"):
        return E2AValidationError
    if status in _STATUS_CLASSES:
        return _STATUS_CLASSES[status]
    if status == 408 or 500 <= status <= 599:
        return E2AServerError
    return E2AApiError


def _is_html(response: httpx.Response) -> bool:
    """Whether an answer is a web page: by its Content-Type, else by its first character."""
    kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind:
        return kind in ("text/html", "application/xhtml+xml")
    return response.text.lstrip().startswith("<")


def retry_after_seconds(value: str | None) -> float | None:
    """A `Retry-After` given in seconds; None when absent or an HTTP date."""
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and 0 <= seconds < float("inf") else None


class UnverifiedEmailError(RuntimeError):
    """A claim field of an `InboundEmail` was read before `verify_signature` succeeded.

    Use `client.parse_webhook(body, secret)` (verifies on the way in) or read
    `email.unverified_payload` when you deliberately want the unchecked values.
    """


class InvalidSignatureError(PermissionError):
    """`parse_webhook` refused a body: wrong body hash, wrong signature, stale timestamp, or
    no JSON object at all.

    A `PermissionError`, as in the published SDK, so handlers can map it to 401.
    """
