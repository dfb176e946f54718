"""Dead letters of an agent on `/api/v1`: the webhook deliveries that ran out of retries, with
the last error, and their redelivery by hand (one, or all of the agent's)."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, request

from e2a_gateway.api.auth import requires_caller
from e2a_gateway.api.requests import page_size
from e2a_gateway.operations import dead_letters
from e2a_gateway.operations.caller import Caller
from e2a_gateway.operations.messages import (
    agent_listing,
    decode_page_token,
    encode_page_token,
)
from e2a_gateway.storage.base import DeadLetter
from e2a_gateway.storage.vocabulary import DELIVERY_PENDING
from e2a_gateway.web.context import current_gateway

blueprint = Blueprint("dead_letters", __name__)


def dead_letter_view(letter: DeadLetter) -> dict[str, Any]:
    """A dead letter as the API shows it."""
    return {
        "message_id": letter.message_id,
        "from": letter.from_addr,
        "subject": letter.subject,
        "received_at": letter.received_at,
        "attempts": letter.attempts,
        "last_attempt_at": letter.last_attempt_at,
        "last_status_code": letter.last_status_code,
        "last_error": letter.last_error,
    }


@blueprint.get("/agents/<email>/dead-letters")
@requires_caller
async def list_dead_letters(caller: Caller, email: str) -> dict[str, Any]:
    """GET /agents/{email}/dead-letters?page_size=&token=, oldest first."""
    token = request.args.get("token")
    listing = agent_listing("dead-letters", email)
    page = await dead_letters.dead_letter_page(
        current_gateway(),
        caller,
        email,
        page_size(),
        decode_page_token(token, listing) if token else None,
    )
    following = page.next_after
    return {
        "dead_letters": [dead_letter_view(letter) for letter in page.letters],
        "next_token": encode_page_token(following, listing) if following is not None else None,
    }


@blueprint.post("/agents/<email>/dead-letters/<message_id>/redeliver")
@requires_caller
async def redeliver_dead_letter(
    caller: Caller, email: str, message_id: str
) -> tuple[dict[str, Any], int]:
    """POST …/dead-letters/{id}/redeliver: 202 once a new delivery is queued."""
    queued = await dead_letters.redeliver(current_gateway(), caller, email, message_id)
    return {"message_id": queued, "delivery_status": DELIVERY_PENDING}, 202


@blueprint.post("/agents/<email>/dead-letters/redeliver")
@requires_caller
async def redeliver_all_dead_letters(caller: Caller, email: str) -> tuple[dict[str, Any], int]:
    """POST …/dead-letters/redeliver: 202 with the ids of every dead letter queued again."""
    queued = await dead_letters.redeliver_all(current_gateway(), caller, email)
    return {"message_ids": queued, "delivery_status": DELIVERY_PENDING}, 202
