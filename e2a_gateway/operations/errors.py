"""What an operation refuses, as typed errors. Each carries the snake_case `code` a client
branches on and a sentence saying what to do; a face maps the type to its own answer (an HTTP
status, a page, a tool error). Nothing here knows a protocol.
"""

from __future__ import annotations

from typing import Any


class OperationError(Exception):
    """A refusal: a stable snake_case `code`, a `message` saying how to fix it, and optionally
    `details` a client can act on (which template part failed, say)."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details


class Invalid(OperationError):
    """The request is malformed or breaks a rule: the caller must change it."""


class Unauthorized(OperationError):
    """No credentials, or credentials that are not (or no longer) valid."""


class Forbidden(OperationError):
    """Valid credentials, but not for this (a form from elsewhere, say)."""


class NotFound(OperationError):
    """What was asked for does not exist, or is not the caller's: the two are
    indistinguishable on purpose."""

    @classmethod
    def of(cls, what: str) -> NotFound:
        """`{what} not found`, code `not_found`."""
        return cls("not_found", f"{what} not found")


class Unprocessable(OperationError):
    """Well formed, but refused for what it means: an Idempotency-Key sent again with another
    request. Sending it again unchanged never helps."""


class Conflict(OperationError):
    """The state of what is named forbids it now (taken, in use, already resolved)."""


class Gone(OperationError):
    """It existed, and has expired for good (a magic link past its deadline)."""


class Undeliverable(OperationError):
    """The request was sound, but the message was refused for good where it was handed on (a
    relay's 5xx, no relay for a remote recipient): nothing was sent, and sending it again as
    it is would be refused again."""


class PreconditionUnmet(OperationError):
    """Something outside the request is not in place yet (a DNS record): set it up, retry."""


class RateLimited(OperationError):
    """Too many requests of this kind; `retry_after` says in how many seconds to try again,
    when that is known."""

    def __init__(self, code: str, message: str, retry_after: int | None = None) -> None:
        super().__init__(code, message)
        self.retry_after = retry_after


class Unavailable(OperationError):
    """A service the operation depends on does not answer now (DNS): try again."""


class NotAvailable(OperationError):
    """A feature this gateway does not have (e2a's content scan): asking for it is refused,
    never silently ignored."""
