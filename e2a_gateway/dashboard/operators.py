"""Dashboard pages for the gateway's operators (`operators.accounts`): the feedback people
sent to `POST /api/feedback`. Anyone else is answered 404, as for a page that does not exist."""

from __future__ import annotations

from quart import Response

from e2a_gateway.dashboard.auth import Session, requires_session
from e2a_gateway.dashboard.site import blueprint, page
from e2a_gateway.operations import feedback
from e2a_gateway.web.context import current_gateway


@blueprint.app_template_global()
def operator_session(session: Session | None) -> bool:
    """Whether the signed-in user is an operator (the layout shows their pages then)."""
    return session is not None and feedback.is_operator(current_gateway(), session.caller)


@blueprint.get("/feedback")
@requires_session
async def feedback_list(session: Session) -> Response:
    """The newest feedback, newest first."""
    entries = await feedback.list_feedback(current_gateway(), session.caller)
    return await page("feedback.html", session, entries=entries, limit=feedback.LISTED)
