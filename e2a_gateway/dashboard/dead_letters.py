"""Dashboard page of an agent's dead letters: webhook deliveries that ran out of retries, with
the last error, redelivered by hand (one, or all of them) through the same operations as
`/api/v1/agents/{email}/dead-letters`."""

from __future__ import annotations

from quart import Response, request

from e2a_gateway.dashboard.auth import Session, requires_session
from e2a_gateway.dashboard.site import blueprint, done, page
from e2a_gateway.operations import dead_letters
from e2a_gateway.operations.messages import MAX_PAGE_SIZE, decode_page_token, encode_page_token
from e2a_gateway.web.context import current_gateway


@blueprint.get("/agents/<email>/dead-letters")
@requires_session
async def dead_letters_page(session: Session, email: str) -> Response:
    """The agent's dead letters, oldest first, a page at a time."""
    token = request.args.get("page")
    found = await dead_letters.dead_letter_page(
        current_gateway(),
        session.caller,
        email,
        MAX_PAGE_SIZE,
        decode_page_token(token) if token else None,
    )
    return await page(
        "dead_letters.html",
        session,
        email=email,
        letters=found.letters,
        next_page=encode_page_token(found.next_after) if found.next_after is not None else None,
    )


@blueprint.post("/agents/<email>/dead-letters/<message_id>/redeliver")
@requires_session
async def redeliver_dead_letter(session: Session, email: str, message_id: str) -> Response:
    """Queue one dead letter for delivery again."""
    await dead_letters.redeliver(current_gateway(), session.caller, email, message_id)
    return done("dashboard.dead_letters_page", "redelivered", email=email)


@blueprint.post("/agents/<email>/dead-letters/redeliver")
@requires_session
async def redeliver_all_dead_letters(session: Session, email: str) -> Response:
    """Queue every dead letter of the agent for delivery again."""
    await dead_letters.redeliver_all(current_gateway(), session.caller, email)
    return done("dashboard.dead_letters_page", "redelivered", email=email)
