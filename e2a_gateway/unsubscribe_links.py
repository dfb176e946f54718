"""The public pages of managed-unsubscribe links, `GET|POST /u/{token}`: no key, no session,
no cookie, no CSRF token — the token is the authority, and it can only stop one agent's mail to
one address. GET shows a confirmation form and never changes anything (mail scanners follow
links); a POST of RFC 8058's one-click body, or of that form, unsubscribes. Every answer is
`no-store`, under a CSP allowing nothing but posting the form back, and never redirects.
Each request is counted against the client's address first (`limits.
unsubscribe_requests_per_ip_per_minute`), before its token is looked up: past the limit, a bare
429 with `Retry-After`, whatever the token.
"""

from __future__ import annotations

import email.parser
import email.policy
import logging
from html import escape
from typing import Literal
from urllib.parse import parse_qsl

from quart import Blueprint, Response, request
from werkzeug.exceptions import HTTPException

from e2a_gateway.operations import unsubscribe
from e2a_gateway.operations.errors import NotFound, OperationError, RateLimited
from e2a_gateway.outbound.list_unsubscribe import ONE_CLICK
from e2a_gateway.storage.base import StorageUnavailable
from e2a_gateway.web.context import current_gateway

log = logging.getLogger("e2a.unsubscribe")

blueprint = Blueprint("unsubscribe_links", __name__)

PREFIX = "/u/"
MAX_BODY_BYTES = 1024
"""The most a POST to a link may carry (e2a's bound): the one-click body is 26 bytes."""
HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
CONFIRM_FIELD, CONFIRM_VALUE = "confirm", "unsubscribe"
"""The one field of the confirmation page's form."""
Asked = Literal["one-click", "form"]

_PAGE = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8">'
    '<meta name="viewport" content="width=device-width,initial-scale=1">'
    "<title>{title}</title></head><body><main><h1>{title}</h1>{body}</main></body></html>"
)


def page(title: str, body: str, status: int = 200) -> Response:
    """A small HTML page titled `title` around `body` (HTML, already escaped)."""
    return Response(_PAGE.format(title=title, body=body), status, mimetype="text/html")


def plain(status: int, text: str) -> Response:
    """A one-line text answer: refusals say no more than their status."""
    return Response(text + "\n", status, mimetype="text/plain")


def form_fields(content_type: str, body: bytes) -> list[tuple[str, str]] | None:
    """The fields of a form posted as `content_type` (urlencoded or multipart, parameters such
    as `charset` allowed), or None when it is neither or cannot be read."""
    header = email.policy.HTTP.header_factory("content-type", content_type)
    media = header.content_type.lower()
    try:
        if media == "application/x-www-form-urlencoded":
            return parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=True)
        if media == "multipart/form-data" and header.params.get("boundary"):
            return _multipart_fields(content_type, body)
    except (UnicodeDecodeError, ValueError):
        return None
    return None


def _multipart_fields(content_type: str, body: bytes) -> list[tuple[str, str]] | None:
    """The fields of a multipart/form-data body; None when a part is a file or has no name."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not message.is_multipart() or message.defects:
        return None
    fields = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if part.get_content_disposition() != "form-data" or not name or part.get_filename():
            return None
        payload = part.get_payload(decode=True) or b""
        if not isinstance(payload, bytes):
            return None
        fields.append((str(name), payload.decode("utf-8")))
    return fields


def asked_for(content_type: str, body: bytes) -> Asked | None:
    """What a POST asks: RFC 8058's one click, the confirmation form, or nothing it may."""
    fields = form_fields(content_type, body)
    if fields == [tuple(ONE_CLICK.split("="))]:
        return "one-click"
    if fields == [(CONFIRM_FIELD, CONFIRM_VALUE)]:
        return "form"
    return None


@blueprint.get(PREFIX + "<token>")
async def confirmation(token: str) -> Response:
    """The page asking whether to stop the agent's mail; changes nothing."""
    gateway = current_gateway()
    await unsubscribe.count_link_request(gateway, request.remote_addr)
    scope = await unsubscribe.link_scope(gateway, token)
    form = (
        f"<p>Stop emails sent by {escape(scope.agent_email)}?</p>"
        f'<form method="post"><button type="submit" name="{CONFIRM_FIELD}" '
        f'value="{CONFIRM_VALUE}">Unsubscribe</button></form>'
    )
    return page("Unsubscribe", form)


@blueprint.post(PREFIX + "<token>")
async def unsubscribe_by_link(token: str) -> Response:
    """Stop the agent's mail to the link's address: 200 however often (an empty answer to a
    one-click POST, a page to the form); 400 for a body that asks nothing this route does
    or is over MAX_BODY_BYTES; 404 for a token no link has, checked first (after the
    client's address is counted: 429 past its limit)."""
    gateway = current_gateway()
    await unsubscribe.count_link_request(gateway, request.remote_addr)
    await unsubscribe.link_scope(gateway, token)
    if (request.content_length or 0) > MAX_BODY_BYTES:
        return plain(400, "Bad Request")
    body = await request.get_data(as_text=False)
    assert isinstance(body, bytes)
    asked = None
    if len(body) <= MAX_BODY_BYTES:
        asked = asked_for(request.headers.get("Content-Type", ""), body)
    if asked is None:
        return plain(400, "Bad Request")
    await unsubscribe.unsubscribe(gateway, token)
    if asked == "one-click":
        return Response(b"", 200)
    return page("Unsubscribed", "<p>You will no longer receive emails from this sender.</p>")


@blueprint.errorhandler(NotFound)
async def on_not_found(exc: NotFound) -> Response:
    """The same answer for a token malformed or unknown: nothing about any link."""
    return plain(404, "Not Found")


@blueprint.errorhandler(RateLimited)
async def on_rate_limited(exc: RateLimited) -> Response:
    """Past the client's limit: a bare 429, with the seconds to wait, whatever the token."""
    response = plain(429, "Too Many Requests")
    response.headers["Retry-After"] = str(exc.retry_after or 1)
    return response


@blueprint.errorhandler(OperationError)
async def on_refusal(exc: OperationError) -> Response:
    """Any other refusal of the link's operation: a bare 400, naming nothing."""
    return plain(400, "Bad Request")


@blueprint.errorhandler(StorageUnavailable)
async def on_storage_unavailable(exc: StorageUnavailable) -> Response:
    log.error("unsubscribe link: storage unavailable: %s", exc)  # no token, no address
    return plain(503, "Service Unavailable")


@blueprint.errorhandler(HTTPException)
async def on_http_error(exc: HTTPException) -> Response:
    """Werkzeug's refusals (405, 413, …) as one line of text, the page's own style."""
    status = exc.code or 500
    return plain(status, exc.name)


@blueprint.after_app_request
async def guard(response: Response) -> Response:
    """Every answer under `/u/` — the pages, their refusals, a path no route takes — is
    `no-store`, under the CSP, and sets no cookie."""
    if request.path.startswith(PREFIX):
        for name, value in HEADERS.items():
            response.headers[name] = value
        response.headers.pop("Set-Cookie", None)
    return response
