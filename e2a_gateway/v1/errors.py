"""The exceptions the SDK raises: API answers that were not 2xx, and unverified email access.

Pure data; no I/O. `E2AApiError` keeps the published SDK's `status_code` and `message` and
adds the gateway's machine-readable `code`.
"""

from __future__ import annotations

import json

import httpx


class E2AApiError(Exception):
    """The e2a API answered with an HTTP error.

    `status_code` is the HTTP status, `code` the snake_case error code from the JSON body
    (`{"error": {"code", "message"}}`; None when the body was not that shape) and `message`
    the sentence saying what went wrong. `retry_after` is the wait in seconds a 429 or 503
    answer asked for (its `Retry-After`), None when it named none.
    """

    def __init__(
        self,
        status_code: int,
        message: str,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.status_code = status_code
        self.message = message
        self.code = code
        self.retry_after = retry_after
        label = f"{status_code} {code}" if code else str(status_code)
        super().__init__(f"e2a API error ({label}): {message}")

    @classmethod
    def from_body(cls, status_code: int, text: str) -> E2AApiError:
        """Read the gateway's JSON error body, or keep the plain text of any other body."""
        try:
            error = json.loads(text)["error"]
            return cls(status_code, str(error["message"]), str(error["code"]))
        except (ValueError, KeyError, TypeError):
            return cls(status_code, text.strip() or f"HTTP {status_code}")

    @classmethod
    def from_response(cls, response: httpx.Response) -> E2AApiError:
        """The error an HTTP answer of status >= 400 stands for. An HTML page (a proxy's
        error page, say) is summed up in a sentence rather than kept as the message."""
        if _is_html(response):
            status = f"{response.status_code} {response.reason_phrase}".strip()
            error = cls(
                response.status_code,
                f"HTTP {status}: an HTML page, not the e2a API's JSON error "
                "(a proxy or another web server answered for the gateway)",
            )
        else:
            error = cls.from_body(response.status_code, response.text)
        error.retry_after = retry_after_seconds(response.headers.get("retry-after"))
        return error


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
