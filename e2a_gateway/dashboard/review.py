"""Dashboard pages for outbound mail: the review queue, edit-then-approve, reject, history."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from quart import Response, request

from e2a_gateway.dashboard.auth import Session, requires_session
from e2a_gateway.dashboard.site import blueprint, done, page
from e2a_gateway.operations import lifecycle, reviews
from e2a_gateway.operations.agents import agent_page
from e2a_gateway.operations.errors import NotFound, OperationError
from e2a_gateway.operations.messages import decode_page_token, encode_page_token
from e2a_gateway.operations.requests import parse_request
from e2a_gateway.operations.reviews import ApproveBody
from e2a_gateway.rfc5322 import address_list as mailbox_addresses
from e2a_gateway.storage.base import OutboundSummary
from e2a_gateway.storage.vocabulary import PENDING_APPROVAL
from e2a_gateway.web.context import current_gateway
from e2a_gateway.web.errors import status_of
from e2a_gateway.web.views import outbound_summary_view, outbound_view

APPROVALS_PAGE_SIZE = 25
"""Held messages on one page of the reviewer's screen."""
PREVIEW_CHARS = 2_000
"""How much of a held message's text its card on the reviewer's screen shows."""
HISTORY_PAGE_SIZE = 200
"""Messages on one page of the outbound history."""
_ADDRESS_SPLIT = re.compile(r"[,\s;]+")


def address_list(text: str) -> list[str]:
    """Addresses typed into one field, separated by commas, semicolons or spaces."""
    return [part for part in _ADDRESS_SPLIT.split(text.strip()) if part]


def _page_of(found: list[OutboundSummary], size: int) -> tuple[list[OutboundSummary], str | None]:
    """The first `size` of `found` (read `size + 1` at a time) and the token of the page after
    them, None when there is none."""
    shown = found[:size]
    return shown, encode_page_token(shown[-1].seq) if len(found) > size else None


def _page_asked() -> int | None:
    """The position the request's `page` token names, None for the first page."""
    token = request.args.get("page")
    return decode_page_token(token) if token else None


async def _approvals_page(
    session: Session, status: int = 200, error: str | None = None, after: int | None = None
) -> Response:
    """A page of held messages, soonest deadline first, after the one at `after`: read
    without their bodies, each with the beginning of its text (PREVIEW_CHARS)."""
    found = await reviews.outbound_summaries(
        current_gateway(),
        session.caller,
        PENDING_APPROVAL,
        None,
        APPROVALS_PAGE_SIZE + 1,
        after,
        by_deadline=True,
        preview_chars=PREVIEW_CHARS,
    )
    pending, next_page = _page_of(found, APPROVALS_PAGE_SIZE)
    return await page(
        "approvals.html",
        session,
        status=status,
        error=error,
        messages=[outbound_summary_view(message) for message in pending],
        next_page=next_page,
    )


@blueprint.get("/approvals")
@requires_session
async def approvals(session: Session) -> Response:
    """The reviewer's screen: the messages waiting for approval, soonest deadline first, a
    page at a time."""
    return await _approvals_page(session, after=_page_asked())


EDITABLE_FIELDS = ("to", "cc", "bcc", "subject", "body_text", "body_html")
"""The review form's fields a reviewer types into."""


async def _review_page(
    session: Session,
    message_id: str,
    status: int = 200,
    error: str | None = None,
    typed: Mapping[str, str] | None = None,
) -> Response:
    """The review page of a held message, naming where answers to it go (its Reply-To's
    addresses, which no edit changes); after a refused approval, its form holds what the
    reviewer `typed` rather than the message as held, so their edits are not lost."""
    found = await reviews.outbound_message(current_gateway(), session.caller, message_id)
    kept = {name: typed[name] for name in EDITABLE_FIELDS if typed and name in typed}
    return await page(
        "review.html",
        session,
        status=status,
        error=error,
        message=outbound_view(found),
        reply_to=mailbox_addresses(found.reply_to),
        typed=kept,
    )


@blueprint.get("/approvals/<message_id>")
@requires_session
async def review(session: Session, message_id: str) -> Response:
    """One held message in full, with the form to edit it before approving."""
    return await _review_page(session, message_id)


def _changed_fields(form: Mapping[str, str], current: dict[str, Any]) -> dict[str, object]:
    """The edits a review form asks for: only the fields that differ from the message (line
    endings aside: a browser sends a text area's lines ended by CRLF, whatever the message
    held)."""
    edits: dict[str, object] = {}
    for field in ("subject", "body_text", "body_html"):
        if field not in form:
            continue
        sent = form[field].replace("\r\n", "\n")
        if sent != (current[field] or "").replace("\r\n", "\n"):
            edits[field] = sent
    for field in ("to", "cc", "bcc"):
        if field in form and address_list(form[field]) != current[field]:
            edits[field] = address_list(form[field])
    return edits


@blueprint.post("/approvals/<message_id>/approve")
@requires_session
async def approve(session: Session, message_id: str) -> Response:
    """Approve a held message, with the edits the review form made, if any."""
    gateway = current_gateway()
    form = await request.form
    current = outbound_view(await reviews.outbound_message(gateway, session.caller, message_id))
    try:
        edits = parse_request(ApproveBody, _changed_fields(form, current))
        await reviews.approve(gateway, session.caller, message_id, edits, "dashboard")
    except NotFound:
        raise
    except OperationError as refused:
        return await _review_page(
            session, message_id, status_of(refused), refused.message, typed=form
        )
    return done("dashboard.approvals", "approved")


@blueprint.post("/approvals/<message_id>/reject")
@requires_session
async def reject(session: Session, message_id: str) -> Response:
    """Reject a held message, with the reviewer's reason."""
    form = await request.form
    reason = form.get("reason", "").strip()[:1000] or None
    try:
        await reviews.reject(current_gateway(), session.caller, message_id, reason, "dashboard")
    except NotFound:
        raise
    except OperationError as refused:
        return await _approvals_page(session, status_of(refused), refused.message)
    return done("dashboard.approvals", "rejected")


AGENT_CHOICES = 100
"""Most agents the outbound page's agent filter offers as a list; an account with more types
the address instead."""


async def _agent_choices(session: Session) -> list[str] | None:
    """The addresses the outbound page's agent filter offers, in order; None when the account
    has more than AGENT_CHOICES (read no further than that)."""
    found = await agent_page(
        current_gateway(), session.caller, AGENT_CHOICES + 1, None, trashed=False
    )
    if len(found) > AGENT_CHOICES:
        return None
    return sorted(entry.agent.email for entry in found)


@blueprint.get("/outbound")
@requires_session
async def outbound(session: Session) -> Response:
    """Sent and held mail with its state, newest first, a page at a time; filter by status
    and agent."""
    gateway = current_gateway()
    status = request.args.get("status", "")
    agent_filter = request.args.get("agent") or None
    found = await reviews.outbound_summaries(
        gateway,
        session.caller,
        status or None,
        agent_filter,
        HISTORY_PAGE_SIZE + 1,
        _page_asked(),
    )
    shown, next_page = _page_of(found, HISTORY_PAGE_SIZE)
    return await page(
        "outbound.html",
        session,
        messages=[outbound_summary_view(message) for message in shown],
        statuses=lifecycle.STATES,
        shown=status,
        agent_filter=agent_filter or "",
        agents=await _agent_choices(session),
        page_size=HISTORY_PAGE_SIZE,
        next_page=next_page,
    )
