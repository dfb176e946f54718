"""Dashboard pages for agents: the list, settings, the inbox (live), messages and raw source."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from quart import Response, request, stream_with_context, url_for

from e2a_gateway.dashboard.auth import Session, requires_session
from e2a_gateway.dashboard.live import inbox_events
from e2a_gateway.dashboard.site import (
    PAGE_HEADERS,
    blueprint,
    done,
    form_body,
    page,
    page_position,
    position_token,
    see_other,
)
from e2a_gateway.operations import messages
from e2a_gateway.operations.agents import (
    CreateAgent,
    UpdateAgent,
    agent_page,
    change_agent,
    get_agent,
    owned_agent,
    register_agent,
    remove_agent,
)
from e2a_gateway.operations.errors import Invalid, NotFound, OperationError
from e2a_gateway.operations.mailbox import parsed_body
from e2a_gateway.operations.messages import decode_page_token, encode_page_token
from e2a_gateway.storage.base import StatusFilter
from e2a_gateway.web.context import current_gateway
from e2a_gateway.web.errors import status_of
from e2a_gateway.web.json_bodies import bounded_int
from e2a_gateway.web.views import agent_view, message_full_view, message_summary_view

INBOX_PAGE_SIZE = 50
AGENTS_PAGE_SIZE = 100
"""Agents on one page of the agent list."""
INBOX_FILTERS: dict[str, StatusFilter] = {"all": "all", "unread": "unread", "read": "read"}
LIVE_FILTERS: dict[str, StatusFilter] = {"all": "all", "unread": "unread"}


@blueprint.get("/")
@requires_session
async def home(session: Session) -> Response:
    """The dashboard's home is the agent list."""
    return see_other(url_for("dashboard.agents"))


async def _agents_page(session: Session, status: int = 200, error: str | None = None) -> Response:
    """A page of AGENTS_PAGE_SIZE agents, newest first, after the one the `page` token names;
    only that page is read."""
    session.caller.require_account("list the account's agents")
    gateway = current_gateway()
    token = request.args.get("page")
    found = await agent_page(
        gateway,
        session.caller,
        AGENTS_PAGE_SIZE + 1,
        page_position(token) if token else None,
        trashed=False,
    )
    shown = found[:AGENTS_PAGE_SIZE]
    return await page(
        "agents.html",
        session,
        status=status,
        error=error,
        agents=[agent_view(entry) for entry in shown],
        next_page=(
            position_token(shown[-1].agent.created_at, shown[-1].agent.email)
            if len(found) > AGENTS_PAGE_SIZE
            else None
        ),
        shared_domain=gateway.settings.shared_domain,
        form=await request.form if request.method == "POST" else {},
    )


@blueprint.get("/agents")
@requires_session
async def agents(session: Session) -> Response:
    """A page of the user's agents, newest first, and the form to create one."""
    return await _agents_page(session)


@blueprint.post("/agents")
@requires_session
async def create_agent(session: Session) -> Response:
    """Create an agent by slug (on the shared domain) or by address (on a verified domain)."""
    form = await request.form
    address = form.get("address", "").strip()
    values = {
        "email" if "@" in address else "slug": address,
        "name": form.get("name", "").strip(),
        "agent_mode": form.get("agent_mode", ""),
        "webhook_url": form.get("webhook_url", "").strip(),
    }
    try:
        body = form_body(CreateAgent, values)
        entry = await register_agent(current_gateway(), session.caller, body, request.remote_addr)
    except OperationError as refused:
        return await _agents_page(session, status_of(refused), refused.message)
    return done("dashboard.agent", "agent_created", email=entry.agent.email)


SETTINGS_FIELDS = (
    "name",
    "webhook_url",
    "agent_mode",
    "hitl_ttl_seconds",
    "hitl_expiration_action",
)
"""The settings form's fields typed or chosen; its check boxes count by being sent at all."""
SETTINGS_BOXES = ("hitl_enabled", "approval_notifications")


def settings_shown(agent: Mapping[str, Any], typed: Mapping[str, str] | None) -> dict[str, Any]:
    """The values the settings form shows: the agent's, or after a refused save what was
    `typed` (a check box unticked included), so that correcting one field does not quietly
    undo the others — turning approval off among them."""
    shown = {name: agent[name] for name in (*SETTINGS_FIELDS, *SETTINGS_BOXES)}
    if typed is not None:
        shown.update({name: typed[name] for name in SETTINGS_FIELDS if typed.get(name)})
        shown.update({name: name in typed for name in SETTINGS_BOXES})
    return shown


async def _agent_page(
    session: Session,
    email: str,
    status: int = 200,
    error: str | None = None,
    typed: Mapping[str, str] | None = None,
) -> Response:
    entry = await get_agent(current_gateway(), session.caller, email)
    agent = agent_view(entry)
    return await page(
        "agent.html",
        session,
        status=status,
        error=error,
        agent=agent,
        settings=settings_shown(agent, typed),
    )


@blueprint.get("/agents/<email>")
@requires_session
async def agent(session: Session, email: str) -> Response:
    """One agent's settings: mode, webhook, human approval."""
    return await _agent_page(session, email)


def whole_number(text: str) -> int | str:
    """A number typed into a form as an int (one of thousands of digits as just past the
    largest a request may hold, for the range check to refuse); anything else as typed, for the
    request model's checks to refuse with their own message (requests do not convert strings)."""
    text = text.strip()
    return bounded_int(text) if text.isascii() and text.isdigit() else text


@blueprint.post("/agents/<email>")
@requires_session
async def update_agent(session: Session, email: str) -> Response:
    """Save an agent's settings."""
    form = await request.form
    values = {
        "name": form.get("name", "").strip(),
        "webhook_url": form.get("webhook_url", "").strip(),
        "agent_mode": form.get("agent_mode", ""),
        "hitl_enabled": "hitl_enabled" in form,
        "hitl_ttl_seconds": whole_number(form.get("hitl_ttl_seconds", "")),
        "hitl_expiration_action": form.get("hitl_expiration_action", ""),
        "approval_notifications": "approval_notifications" in form,
    }
    try:
        changes = form_body(UpdateAgent, values)
        changed = await change_agent(current_gateway(), session.caller, email, changes)
    except NotFound:
        raise
    except OperationError as refused:
        return await _agent_page(session, email, status_of(refused), refused.message, form)
    return done("dashboard.agent", "agent_saved", email=changed.agent.email)


@blueprint.post("/agents/<email>/delete")
@requires_session
async def delete_agent(session: Session, email: str) -> Response:
    """Delete an agent and its messages."""
    await remove_agent(current_gateway(), session.caller, email)
    return done("dashboard.agents", "agent_deleted")


# -- inbox -----------------------------------------------------------------------------------


@blueprint.get("/agents/<email>/inbox")
@requires_session
async def inbox(session: Session, email: str) -> Response:
    """An agent's inbound mail, oldest first, a page at a time; live on the last page."""
    gateway = current_gateway()
    shown = request.args.get("status", "all")
    status = INBOX_FILTERS.get(shown)
    if status is None:
        raise Invalid("invalid_request", "status must be one of all, unread, read")
    token = request.args.get("page")
    entry = await get_agent(gateway, session.caller, email)
    found = await messages.inbox_page(
        gateway,
        session.caller,
        entry.agent.email,
        status,
        INBOX_PAGE_SIZE,
        decode_page_token(token) if token else None,
    )
    last_seq = found.messages[-1].seq if found.messages else None
    if last_seq is None and token:
        last_seq = decode_page_token(token)
    return await page(
        "inbox.html",
        session,
        agent=agent_view(entry),
        shown=shown,
        messages=[
            {**message_summary_view(message), "delivery_status": message.delivery_status}
            for message in found.messages
        ],
        next_page=encode_page_token(found.next_after) if found.next_after is not None else None,
        live_after=encode_page_token(last_seq) if last_seq is not None else "",
    )


@blueprint.get("/agents/<email>/events")
@requires_session
async def inbox_stream(session: Session, email: str) -> Response:
    """Server-sent events: mail arriving for the agent after the last event the browser
    received (`Last-Event-ID`, sent when it reconnects), else after the page's last message."""
    agent = await owned_agent(current_gateway(), session.caller, email)
    shown = LIVE_FILTERS.get(request.args.get("status", "all"))
    if shown is None:
        raise Invalid("invalid_request", "status must be all or unread")
    after = request.headers.get("Last-Event-ID") or request.args.get("after")
    events = stream_with_context(inbox_events)  # the stream outlives the handler
    response = Response(
        events(session, agent, shown, decode_page_token(after) if after else None),
        content_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
    response.timeout = None
    return response


@blueprint.get("/agents/<email>/inbox/<message_id>")
@requires_session
async def message(session: Session, email: str, message_id: str) -> Response:
    """One inbound message (marked read): sender checks, body, and webhook attempts."""
    gateway = current_gateway()
    found = await messages.read_message(
        gateway, session.caller, email, message_id, mark_read=request.method != "HEAD"
    )
    entry = await get_agent(gateway, session.caller, found.agent_email)
    attempts = (
        await messages.webhook_attempts(gateway, found) if entry.agent.agent_mode == "cloud" else []
    )
    return await page(
        "message.html",
        session,
        agent=agent_view(entry),
        message=message_full_view(found, await parsed_body(found.raw_message)),
        attempts=attempts,
    )


@blueprint.get("/agents/<email>/inbox/<message_id>/raw")
@requires_session
async def raw_message(session: Session, email: str, message_id: str) -> Response:
    """The message's exact bytes as delivered, as a download (marked read, but not by HEAD)."""
    found = await messages.read_message(
        current_gateway(),
        session.caller,
        email,
        message_id,
        mark_read=request.method != "HEAD",
    )
    return Response(
        found.raw_message,
        content_type="message/rfc822",
        headers={
            **PAGE_HEADERS,
            "Content-Disposition": f'attachment; filename="{found.id}.eml"',
        },
    )
