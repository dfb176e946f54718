"""The dashboard's pages: server-rendered HTML over the same actions as the REST API.

Every page needs a session (see `e2a.dashboard.auth`); every form POSTs with the session's
CSRF token and then redirects (post/redirect/get), or shows the page again with the error.
Actions call the functions behind the REST routes, so rules and ownership checks (made
inside the storage queries) are the same; nothing here talks to storage on its own terms.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any, TypeVar
from urllib.parse import quote

from pydantic import ValidationError
from quart import Blueprint, Response, render_template, request, stream_with_context, url_for

from e2a.accounts import issue_api_key
from e2a.api.account import new_signing_secret, remove_signing_secret, revoke_key
from e2a.api.agents import (
    change_agent,
    owned_agent,
    register_agent,
    remove_agent,
    render_agent,
)
from e2a.api.auth import gateway
from e2a.api.domains import register_domain, remove_domain, render_domain, verify_domain_of
from e2a.api.errors import ApiError
from e2a.api.messages import decode_page_token, encode_page_token, inbox_page, read_message
from e2a.api.outbound import (
    OUTBOUND_STATUSES,
    ApproveBody,
    approval_edits,
    outbound_message,
    outbound_messages,
    outbound_view,
    review_message,
)
from e2a.api.requests import (
    CreateAgent,
    RequestBody,
    UpdateAgent,
    describe_validation_error,
)
from e2a.api.views import api_key_view, message_full_view, message_summary_view
from e2a.api.views import signing_secret_view as secret_view
from e2a.dashboard.auth import (
    CSRF_FIELD,
    SESSION_COOKIE,
    SIGNIN_COOKIE,
    SIGNIN_SECONDS,
    Session,
    check_signin_token,
    clear_cookie,
    current_session,
    local_path,
    requires_session,
    session_cookie_seconds,
    set_cookie,
    signin_token,
    start_session,
)
from e2a.dashboard.live import inbox_events
from e2a.storage.base import StatusFilter, StorageUnavailable

log = logging.getLogger("e2a.dashboard")

blueprint = Blueprint(
    "dashboard",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/assets",
)

PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
}
INBOX_PAGE_SIZE = 50
HISTORY_LIMIT = 200
INBOX_FILTERS: dict[str, StatusFilter] = {"all": "all", "unread": "unread", "read": "read"}
NOTICES = {
    "agent_created": "Agent created.",
    "agent_saved": "Settings saved.",
    "agent_deleted": "Agent deleted, with its messages.",
    "approved": "Approved: the message is queued for sending.",
    "rejected": "Rejected: the message will not be sent.",
    "secret_deleted": "Signing secret deleted.",
    "key_revoked": "API key revoked.",
    "domain_added": "Domain added: publish the DNS records below, then verify.",
    "domain_verified": "Domain verified.",
    "domain_deleted": "Domain deleted.",
}
_ADDRESS_SPLIT = re.compile(r"[,\s;]+")

Body = TypeVar("Body", bound=RequestBody)


@blueprint.app_template_filter("dashboard_time")
def minute_utc(value: str | None) -> str:
    """An RFC 3339 UTC timestamp as people read it: `2026-02-01 12:00 UTC`."""
    if not value or len(value) < 16 or value[10] != "T":
        return value or "—"
    return f"{value[:10]} {value[11:16]} UTC"


async def page(
    template: str, session: Session | None, *, status: int = 200, **context: Any
) -> Response:
    """Render `template` with the layout's context and the dashboard's security headers."""
    notice = NOTICES.get(request.args.get("done", ""))
    html = await render_template(
        f"dashboard/{template}",
        session=session,
        csrf_field=CSRF_FIELD,
        notice=notice,
        quote=quote,
        **context,
    )
    return Response(
        html, status=status, content_type="text/html; charset=utf-8", headers=PAGE_HEADERS
    )


def see_other(location: str) -> Response:
    """A 303 redirect: after a POST the browser GETs `location`."""
    return Response("", status=303, headers={"Location": location})


def done(endpoint: str, notice: str, **values: str) -> Response:
    """Redirect after a successful action, with a notice for the next page."""
    arguments: dict[str, Any] = {"done": notice, **values}
    return see_other(url_for(endpoint, **arguments))


def form_body(model: type[Body], values: Mapping[str, object]) -> Body:
    """A REST request body built from form values; blank fields count as not given."""
    data = {name: value for name, value in values.items() if value not in ("", None)}
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ApiError(400, "invalid_request", describe_validation_error(exc)) from None


def address_list(text: str) -> list[str]:
    """Addresses typed into one field, separated by commas, semicolons or spaces."""
    return [part for part in _ADDRESS_SPLIT.split(text.strip()) if part]


@blueprint.errorhandler(ApiError)
async def on_api_error(exc: ApiError) -> Response:
    """An action the rules refuse, on a page of its own (forms show errors in place)."""
    return await page("error.html", await current_session(), status=exc.status, message=exc.message)


@blueprint.errorhandler(StorageUnavailable)
async def on_storage_unavailable(exc: StorageUnavailable) -> Response:
    """The database does not answer: say so, without details."""
    log.error("storage unavailable: %s", exc)
    response = await page(
        "error.html",
        None,
        status=503,
        message="The database is not answering; try again shortly.",
    )
    response.headers["Retry-After"] = "5"
    return response


# -- sign-in ---------------------------------------------------------------------------------


async def _signin_page(status: int = 200, error: str | None = None) -> Response:
    token = signin_token()
    response = await page(
        "signin.html",
        None,
        status=status,
        error=error,
        signin_token=token,
        next=local_path(request.args.get("next")),
    )
    set_cookie(response, SIGNIN_COOKIE, token, SIGNIN_SECONDS)
    return response


@blueprint.get("/signin")
async def signin() -> Response:
    """The sign-in form (already signed-in visitors go home)."""
    if await current_session() is not None:
        return see_other(url_for("dashboard.agents"))
    return await _signin_page()


@blueprint.post("/signin")
async def signin_submit() -> Response:
    """Check the API key as the REST API does and start a session."""
    await check_signin_token()
    form = await request.form
    try:
        _, cookie = await start_session(form.get("api_key", "").strip())
    except ApiError:
        return await _signin_page(401, "That API key is not valid. Check it and try again.")
    response = see_other(local_path(request.args.get("next")))
    set_cookie(response, SESSION_COOKIE, cookie, session_cookie_seconds())
    clear_cookie(response, SIGNIN_COOKIE)
    return response


@blueprint.post("/signout")
@requires_session
async def signout(session: Session) -> Response:
    """End the session in this browser."""
    response = see_other(url_for("dashboard.signin"))
    clear_cookie(response, SESSION_COOKIE)
    return response


# -- agents ----------------------------------------------------------------------------------


@blueprint.get("/")
@requires_session
async def home(session: Session) -> Response:
    """The dashboard's home is the agent list."""
    return see_other(url_for("dashboard.agents"))


async def _agents_page(session: Session, status: int = 200, error: str | None = None) -> Response:
    agents = await gateway().storage.list_agents(session.user.id)
    return await page(
        "agents.html",
        session,
        status=status,
        error=error,
        agents=[await render_agent(agent) for agent in agents],
        shared_domain=gateway().settings.shared_domain,
        form=await request.form if request.method == "POST" else {},
    )


@blueprint.get("/agents")
@requires_session
async def agents(session: Session) -> Response:
    """Every agent of the user, and the form to create one."""
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
        agent = await register_agent(session.user, body, request.remote_addr)
    except ApiError as exc:
        return await _agents_page(session, exc.status, exc.message)
    return done("dashboard.agent", "agent_created", email=agent.email)


async def _agent_page(
    session: Session, email: str, status: int = 200, error: str | None = None
) -> Response:
    agent = await owned_agent(session.user, email)
    return await page(
        "agent.html", session, status=status, error=error, agent=await render_agent(agent)
    )


@blueprint.get("/agents/<email>")
@requires_session
async def agent(session: Session, email: str) -> Response:
    """One agent's settings: mode, webhook, human approval."""
    return await _agent_page(session, email)


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
        "hitl_ttl_seconds": form.get("hitl_ttl_seconds", "").strip(),
        "hitl_expiration_action": form.get("hitl_expiration_action", ""),
    }
    try:
        changed = await change_agent(session.user, email, form_body(UpdateAgent, values))
    except ApiError as exc:
        if exc.status == 404:
            raise
        return await _agent_page(session, email, exc.status, exc.message)
    return done("dashboard.agent", "agent_saved", email=changed.email)


@blueprint.post("/agents/<email>/delete")
@requires_session
async def delete_agent(session: Session, email: str) -> Response:
    """Delete an agent and its messages."""
    await remove_agent(session.user, email)
    return done("dashboard.agents", "agent_deleted")


# -- inbox -----------------------------------------------------------------------------------


@blueprint.get("/agents/<email>/inbox")
@requires_session
async def inbox(session: Session, email: str) -> Response:
    """An agent's inbound mail, oldest first, a page at a time; live on the last page."""
    shown = request.args.get("status", "all")
    status = INBOX_FILTERS.get(shown)
    if status is None:
        raise ApiError(400, "invalid_request", "status must be one of all, unread, read")
    token = request.args.get("page")
    agent = await owned_agent(session.user, email)
    messages = await inbox_page(
        session.user,
        agent.email,
        status,
        INBOX_PAGE_SIZE,
        decode_page_token(token) if token else None,
    )
    last_seq = messages.messages[-1].seq if messages.messages else None
    if last_seq is None and token:
        last_seq = decode_page_token(token)
    return await page(
        "inbox.html",
        session,
        agent=await render_agent(agent),
        shown=shown,
        messages=[
            {**message_summary_view(message), "delivery_status": message.delivery_status}
            for message in messages.messages
        ],
        next_page=(
            encode_page_token(messages.next_after) if messages.next_after is not None else None
        ),
        live_after=encode_page_token(last_seq) if last_seq is not None else "",
    )


@blueprint.get("/agents/<email>/events")
@requires_session
async def inbox_stream(session: Session, email: str) -> Response:
    """Server-sent events: mail arriving for the agent after the page's last message."""
    agent = await owned_agent(session.user, email)
    after = request.args.get("after")
    events = stream_with_context(inbox_events)  # the stream outlives the handler
    response = Response(
        events(session.user, agent, decode_page_token(after) if after else None),
        content_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
    response.timeout = None
    return response


@blueprint.get("/agents/<email>/inbox/<message_id>")
@requires_session
async def message(session: Session, email: str, message_id: str) -> Response:
    """One inbound message (marked read): sender checks, body, and webhook attempts."""
    found = await read_message(session.user, email, message_id)
    agent = await owned_agent(session.user, found.agent_email)
    attempts = (
        await gateway().storage.webhook_attempts(found.id) if agent.agent_mode == "cloud" else []
    )
    return await page(
        "message.html",
        session,
        agent=await render_agent(agent),
        message=message_full_view(found),
        attempts=attempts,
    )


@blueprint.get("/agents/<email>/inbox/<message_id>/raw")
@requires_session
async def raw_message(session: Session, email: str, message_id: str) -> Response:
    """The message's exact bytes as delivered, as a download."""
    found = await read_message(session.user, email, message_id)
    return Response(
        found.raw_message,
        content_type="message/rfc822",
        headers={
            **PAGE_HEADERS,
            "Content-Disposition": f'attachment; filename="{found.id}.eml"',
        },
    )


# -- review and outbound history -------------------------------------------------------------


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


# -- credentials -----------------------------------------------------------------------------


async def _credentials_page(
    session: Session,
    status: int = 200,
    error: str | None = None,
    created: dict[str, str] | None = None,
) -> Response:
    storage = gateway().storage
    return await page(
        "credentials.html",
        session,
        status=status,
        error=error,
        created=created,
        secrets=[
            secret_view(secret) for secret in await storage.list_signing_secrets(session.user.id)
        ],
        keys=[api_key_view(key) for key in await storage.list_api_keys(session.user.id)],
    )


@blueprint.get("/credentials")
@requires_session
async def credentials(session: Session) -> Response:
    """Signing secrets (for verifying deliveries) and API keys."""
    return await _credentials_page(session)


def _name(form: Mapping[str, str]) -> str | None:
    return form.get("name", "").strip()[:100] or None


@blueprint.post("/credentials/signing-secrets")
@requires_session
async def create_signing_secret(session: Session) -> Response:
    """Create a signing secret and show it, once."""
    try:
        issued = await new_signing_secret(session.user, _name(await request.form))
    except ApiError as exc:
        return await _credentials_page(session, exc.status, exc.message)
    created = {"kind": "signing secret", "name": issued.secret.name, "value": issued.plaintext}
    return await _credentials_page(session, 201, created=created)


@blueprint.post("/credentials/signing-secrets/<secret_id>/delete")
@requires_session
async def delete_signing_secret(session: Session, secret_id: str) -> Response:
    """Delete a signing secret (never the last one)."""
    try:
        await remove_signing_secret(session.user, secret_id)
    except ApiError as exc:
        if exc.status == 404:
            raise
        return await _credentials_page(session, exc.status, exc.message)
    return done("dashboard.credentials", "secret_deleted")


@blueprint.post("/credentials/api-keys")
@requires_session
async def create_api_key(session: Session) -> Response:
    """Create an API key and show it, once."""
    issued = await issue_api_key(
        gateway().storage, session.user.id, _name(await request.form) or "unnamed"
    )
    created = {"kind": "API key", "name": issued.key.name, "value": issued.plaintext}
    return await _credentials_page(session, 201, created=created)


@blueprint.post("/credentials/api-keys/<key_id>/revoke")
@requires_session
async def revoke_api_key(session: Session, key_id: str) -> Response:
    """Revoke an API key (revoking the one signed in with ends this session too)."""
    await revoke_key(session.user, key_id)
    return done("dashboard.credentials", "key_revoked")


# -- domains ---------------------------------------------------------------------------------


async def _domains_page(session: Session, status: int = 200, error: str | None = None) -> Response:
    domains = await gateway().storage.list_domains(session.user.id)
    return await page(
        "domains.html",
        session,
        status=status,
        error=error,
        domains=[render_domain(domain) for domain in domains],
    )


@blueprint.get("/domains")
@requires_session
async def domains(session: Session) -> Response:
    """Custom domains with the DNS records to publish."""
    return await _domains_page(session)


@blueprint.post("/domains")
@requires_session
async def create_domain(session: Session) -> Response:
    """Register a domain."""
    try:
        await register_domain(session.user, (await request.form).get("domain", "").strip())
    except ApiError as exc:
        return await _domains_page(session, exc.status, exc.message)
    return done("dashboard.domains", "domain_added")


@blueprint.post("/domains/<name>/verify")
@requires_session
async def verify_domain(session: Session, name: str) -> Response:
    """Check a domain's TXT record."""
    try:
        await verify_domain_of(session.user, name)
    except ApiError as exc:
        if exc.status == 404:
            raise
        return await _domains_page(session, exc.status, exc.message)
    return done("dashboard.domains", "domain_verified")


@blueprint.post("/domains/<name>/delete")
@requires_session
async def delete_domain(session: Session, name: str) -> Response:
    """Delete a domain no agent uses."""
    try:
        await remove_domain(session.user, name)
    except ApiError as exc:
        if exc.status == 404:
            raise
        return await _domains_page(session, exc.status, exc.message)
    return done("dashboard.domains", "domain_deleted")
