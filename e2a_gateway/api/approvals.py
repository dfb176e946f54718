"""Magic-link pages for approving or rejecting an outbound message from the notice email.

`GET` only shows a confirmation page (mail scanners prefetch links); `POST` acts, through the
same once-only transition as the REST review (operations.reviews). Every answer is a small HTML
page that is never cached, framed, referred or sniffed as another type, and can set no
`<base>`; everything interpolated into it is escaped.
"""

from __future__ import annotations

import time
from html import escape

from quart import Blueprint, Response, request

from e2a_gateway.bidi import in_real_order
from e2a_gateway.clock import format_timestamp
from e2a_gateway.operations import lifecycle, reviews
from e2a_gateway.operations.errors import Gone, Invalid, NotFound, OperationError, Unprocessable
from e2a_gateway.operations.reviews import AlreadyResolved
from e2a_gateway.rfc5322 import address_list
from e2a_gateway.signing.magic_links import Action
from e2a_gateway.storage.base import OutboundMessage
from e2a_gateway.web.context import current_gateway
from e2a_gateway.web.errors import status_of

blueprint = Blueprint("approvals", __name__)

MAX_TOKEN_CHARS = 1024
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Robots-Tag": "noindex",
}
_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:36rem;margin:3rem auto;padding:0 1rem;"
    "line-height:1.5}dt{font-weight:600}dd{margin:0 0 .5rem 0}"
    "button{font-size:1rem;padding:.5rem 1.25rem}"
)
_TITLES: dict[type[OperationError], str] = {
    Invalid: "Invalid link",
    Gone: "Link expired",
    NotFound: "Message not found",
    Unprocessable: "Not approved",
}
"""The page title of each way a link is refused."""


def render_page(status: int, title: str, body: str) -> Response:
    """A complete HTML page; `title` is escaped here, `body` must already be safe HTML."""
    html = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        '<meta name=robots content="noindex">'
        f"<title>{escape(title)} — e2a</title><style>{_STYLE}</style></head>"
        f"<body><h1>{escape(title)}</h1>{body}</body></html>"
    )
    return Response(
        html, status=status, content_type="text/html; charset=utf-8", headers=PAGE_HEADERS
    )


@blueprint.errorhandler(Invalid)
@blueprint.errorhandler(NotFound)
async def _refused_before(refused: Invalid | NotFound) -> Response:
    """A request refused before its page ran (a NUL in its query, `refuse_nul`), as a page."""
    return _refused(refused)


def _refused(refused: Invalid | Gone | NotFound | Unprocessable) -> Response:
    return render_page(
        status_of(refused), _TITLES[type(refused)], f"<p>{escape(refused.message)}</p>"
    )


def _summary(message: OutboundMessage) -> str:
    """Recipients, where their answers go (the Reply-To's addresses, without the names the
    agent wrote beside them), subject and expiry of `message` as escaped HTML (never the
    body), bidirectional embeddings, overrides and isolates shown as U+FFFD."""
    rows = [("From", message.agent_email), ("To", ", ".join(message.to) or "(none)")]
    if message.cc:
        rows.append(("Cc", ", ".join(message.cc)))
    if message.bcc:
        rows.append(("Bcc", ", ".join(message.bcc)))
    if message.reply_to:
        rows.append(("Reply-To", ", ".join(address_list(message.reply_to))))
    rows.append(("Subject", message.subject))
    if message.approval_expires_at is not None:
        rows.append(("Expires", format_timestamp(message.approval_expires_at)))
    items = "".join(
        f"<dt>{escape(name)}</dt><dd>{escape(in_real_order(value))}</dd>" for name, value in rows
    )
    return f"<dl>{items}</dl>"


def _presented_token(form_token: str | None = None) -> str:
    """The token from the form or the query (`token`, also `t`), exactly as sent; Invalid if
    none."""
    token = form_token or request.args.get("token") or request.args.get("t") or ""
    if not token or len(token) > MAX_TOKEN_CHARS:
        raise Invalid("invalid_link", "This link is incomplete or malformed.")
    return token


def _already_resolved(message: OutboundMessage) -> Response:
    status = message.status.replace("_", " ")
    return render_page(
        409,
        "Already resolved",
        f"<p>This message is no longer awaiting approval: it is <b>{escape(status)}</b>.</p>"
        + _summary(message),
    )


async def _deadline_passed(message: OutboundMessage) -> Response:
    """409: the review deadline has passed and the sweep has not yet come to the message; the
    agent's expiration action decides it, not a late click."""
    action = await reviews.expiration_action(current_gateway(), message)
    fate = "sent anyway" if action == "approve" else "discarded"
    return render_page(
        409,
        "Review deadline passed",
        "<p>This message's review deadline has passed, so it can no longer be approved or "
        f"rejected: it will be {escape(fate)}, as its agent's expiration action says.</p>"
        + _summary(message),
    )


async def _confirmation_page(action: Action) -> Response:
    """GET: show what the link would do and a form to do it; never act."""
    now = time.time()
    try:
        token = _presented_token()
        message = await reviews.message_for_link(current_gateway(), token, action, now)
    except (Invalid, Gone, NotFound) as refused:
        return _refused(refused)
    if not lifecycle.awaits_review(message.status):
        return _already_resolved(message)
    if reviews.past_deadline(message, now):
        return await _deadline_passed(message)
    verb = "Approve" if action == "approve" else "Reject"
    consequence = "It will be sent as written." if action == "approve" else "It will not be sent."
    # No action: the form posts to the very address the page was opened at, which the router
    # took (also with a trailing slash, where `approve` would resolve to `…/approve/approve`),
    # whatever path a proxy serves the gateway under (which an absolute path would lose).
    form = (
        "<form method=post>"
        f'<input type=hidden name=token value="{escape(token)}">'
        f"<button type=submit>{verb}</button></form>"
    )
    return render_page(
        200,
        f"{verb} this message?",
        f"<p>{escape(consequence)}</p>{_summary(message)}{form}",
    )


async def _act(action: Action) -> Response:
    """POST: perform the action once; 409 when the message was already resolved."""
    gateway = current_gateway()
    now = time.time()
    form = await request.form
    try:
        token = _presented_token(form.get("token"))
        message = await reviews.message_for_link(gateway, token, action, now)
        reviewed = await reviews.act_on_link(gateway, message, action, now)
    except AlreadyResolved as resolved:
        if reviews.past_deadline(resolved.outbound, now):
            return await _deadline_passed(resolved.outbound)
        return _already_resolved(resolved.outbound)
    except (Invalid, Gone, NotFound, Unprocessable) as refused:  # a suppressed recipient
        return _refused(refused)
    if action == "approve":
        title, text = "Approved", "The message is queued for sending."
    else:
        title, text = "Rejected", "The message will not be sent."
    return render_page(200, title, f"<p>{escape(text)}</p>{_summary(reviewed)}")


@blueprint.get("/approve")
async def approve_page() -> Response:
    """GET /approve?token=…: confirmation page for approving."""
    return await _confirmation_page("approve")


@blueprint.post("/approve")
async def approve_message() -> Response:
    """POST /approve (form field or query `token`): approve the message."""
    return await _act("approve")


@blueprint.get("/reject")
async def reject_page() -> Response:
    """GET /reject?token=…: confirmation page for rejecting."""
    return await _confirmation_page("reject")


@blueprint.post("/reject")
async def reject_message() -> Response:
    """POST /reject (form field or query `token`): reject the message."""
    return await _act("reject")
