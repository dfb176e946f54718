"""Dashboard pages for outbound mail: the review queue, edit-then-approve, reject, history."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from quart import Response, request

from e2a.api.auth import gateway
from e2a.api.errors import ApiError
from e2a.api.outbound import (
    OUTBOUND_STATUSES,
    ApproveBody,
    approval_edits,
    outbound_message,
    outbound_messages,
    outbound_view,
    review_message,
)
from e2a.api.requests import describe_validation_error
from e2a.dashboard.auth import Session, requires_session
from e2a.dashboard.site import blueprint, done, page

HISTORY_LIMIT = 200
_ADDRESS_SPLIT = re.compile(r"[,\s;]+")


def address_list(text: str) -> list[str]:
    """Addresses typed into one field, separated by commas, semicolons or spaces."""
    return [part for part in _ADDRESS_SPLIT.split(text.strip()) if part]


async def _approvals_page(
    session: Session, status: int = 200, error: str | None = None
) -> Response:
    pending = await outbound_messages(session.user, "pending_approval", None)
    return await page(
        "approvals.html",
        session,
        status=status,
        error=error,
        messages=[outbound_view(message) for message in pending],
    )


@blueprint.get("/approvals")
@requires_session
async def approvals(session: Session) -> Response:
    """The reviewer's screen: every message waiting for approval, soonest deadline first."""
    return await _approvals_page(session)


async def _review_page(
    session: Session, message_id: str, status: int = 200, error: str | None = None
) -> Response:
    found = await outbound_message(session.user, message_id)
    return await page(
        "review.html", session, status=status, error=error, message=outbound_view(found)
    )


@blueprint.get("/approvals/<message_id>")
@requires_session
async def review(session: Session, message_id: str) -> Response:
    """One held message in full, with the form to edit it before approving."""
    return await _review_page(session, message_id)


def _changed_fields(form: Mapping[str, str], current: dict[str, Any]) -> dict[str, object]:
    """The edits a review form asks for: only the fields that differ from the message."""
    edits: dict[str, object] = {}
    for field in ("subject", "body_text", "body_html"):
        if field in form and form[field].replace("\r\n", "\n") != (current[field] or ""):
            edits[field] = form[field].replace("\r\n", "\n")
    for field in ("to", "cc", "bcc"):
        if field in form and address_list(form[field]) != current[field]:
            edits[field] = address_list(form[field])
    return edits


@blueprint.post("/approvals/<message_id>/approve")
@requires_session
async def approve(session: Session, message_id: str) -> Response:
    """Approve a held message, with the edits the review form made, if any."""
    form = await request.form
    current = outbound_view(await outbound_message(session.user, message_id))
    try:
        body = ApproveBody.model_validate(_changed_fields(form, current))
        await review_message(session.user, message_id, True, approval_edits(body), None)
    except ValidationError as exc:
        return await _review_page(session, message_id, 400, describe_validation_error(exc))
    except ApiError as exc:
        if exc.status == 404:
            raise
        return await _review_page(session, message_id, exc.status, exc.message)
    return done("dashboard.approvals", "approved")


@blueprint.post("/approvals/<message_id>/reject")
@requires_session
async def reject(session: Session, message_id: str) -> Response:
    """Reject a held message, with the reviewer's reason."""
    form = await request.form
    reason = form.get("reason", "").strip()[:1000] or None
    try:
        await review_message(session.user, message_id, False, None, reason)
    except ApiError as exc:
        if exc.status == 404:
            raise
        return await _approvals_page(session, exc.status, exc.message)
    return done("dashboard.approvals", "rejected")


@blueprint.get("/outbound")
@requires_session
async def outbound(session: Session) -> Response:
    """Sent and held mail with its state, newest first; filter by status and agent."""
    status = request.args.get("status", "")
    agent_filter = request.args.get("agent") or None
    statuses = [status] if status else list(OUTBOUND_STATUSES)
    found = [
        message
        for each in statuses
        for message in await outbound_messages(session.user, each, agent_filter)
    ]
    found.sort(key=lambda message: message.created_epoch, reverse=True)
    return await page(
        "outbound.html",
        session,
        messages=[outbound_view(message) for message in found[:HISTORY_LIMIT]],
        statuses=OUTBOUND_STATUSES,
        shown=status,
        agent_filter=agent_filter or "",
        agents=await gateway().storage.list_agents(session.user.id),
        limit=HISTORY_LIMIT,
    )
