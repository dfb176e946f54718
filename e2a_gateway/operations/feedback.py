"""Feedback for the gateway's operators: anyone may send it (`POST /api/feedback`, counted
per client address), only the operators (`operators.accounts`) may read it."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from e2a_gateway.clock import utc_now
from e2a_gateway.gateway import Gateway
from e2a_gateway.ids import new_id
from e2a_gateway.operations.caller import Caller
from e2a_gateway.operations.errors import NotFound
from e2a_gateway.operations.rate_limits import NamedLimit, count_request, counted_address
from e2a_gateway.operations.requests import RequestBody
from e2a_gateway.rate_windows import RateLimit
from e2a_gateway.storage.base import Feedback

MAX_MESSAGE_CHARACTERS = 5000
MAX_EMAIL_CHARACTERS = 254
MAX_BODY_BYTES = 65_536
"""The largest request body `POST /api/feedback` reads (e2a's bound for small requests)."""
WINDOW_SECONDS = 3600
LISTED = 200
"""Pieces of feedback an operator's page shows, newest first."""
_ADDRESS = re.compile(r"[^@\s]+@[^@\s]+")


class SendFeedback(RequestBody):
    """`POST /api/feedback`: what the sender says, what kind of remark it is, and optionally
    where to answer them."""

    message: str = Field(min_length=1, max_length=MAX_MESSAGE_CHARACTERS)
    category: Literal["bug", "feature", "general"] = "general"
    email: str | None = Field(default=None, max_length=MAX_EMAIL_CHARACTERS)

    @field_validator("email")
    @classmethod
    def _an_address(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not _ADDRESS.fullmatch(value):
            raise ValueError("must be an email address (name@example.com), or left out")
        return value


async def count_feedback(gateway: Gateway, remote_addr: str | None) -> None:
    """Count a feedback request against the client's address (`remote_addr`, as trusted
    proxies reveal it); RateLimited past `limits.feedback_per_ip_per_hour`. Counted before the
    body is read, so malformed requests use up the allowance too."""
    per_hour = gateway.settings.limits.feedback_per_ip_per_hour
    limit = RateLimit(
        f"feedback:ip:{counted_address(gateway, remote_addr)}", WINDOW_SECONDS, per_hour
    )
    await count_request(
        gateway, NamedLimit(limit, "feedback submissions per hour from this address")
    )


async def send_feedback(gateway: Gateway, body: SendFeedback, sender: Caller | None) -> Feedback:
    """Store `body`, with the address of the account of `sender` (the API key the request
    carried, if any) when it gives none."""
    email = body.email or (sender.user.email if sender is not None else None)
    feedback = Feedback(new_id("fbk"), body.category, body.message, email, utc_now())
    await gateway.storage.add_feedback(feedback)
    return feedback


def is_operator(gateway: Gateway, caller: Caller) -> bool:
    """Whether the caller's account is one of `operators.accounts`."""
    return caller.user.email.lower() in gateway.settings.operators.accounts


async def list_feedback(gateway: Gateway, caller: Caller) -> list[Feedback]:
    """The newest feedback, for an operator; NotFound for anyone else (the page is not
    theirs to know of)."""
    if not is_operator(gateway, caller):
        raise NotFound.of("page")
    return await gateway.storage.list_feedback(LISTED)
