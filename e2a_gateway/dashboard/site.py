"""The dashboard's blueprint: how its pages are rendered and answered, and signing in and out.

Every page needs a session (see `e2a_gateway.dashboard.auth`); every form POSTs with the session's
CSRF token and then redirects (post/redirect/get), or shows the page again with the error. Actions
call the same operations as the REST routes (`e2a_gateway.operations`), so rules and ownership
checks (made inside the storage queries) are the same; nothing here talks to storage.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from flask.sansio.blueprints import BlueprintSetupState
from markupsafe import Markup
from quart import (
    Blueprint,
    Response,
    abort,
    current_app,
    render_template,
    request,
    send_from_directory,
    url_for,
)
from werkzeug.exceptions import HTTPException

from e2a_gateway.bidi import in_real_order
from e2a_gateway.dashboard.auth import (
    CSRF_FIELD,
    SESSION_COOKIE,
    SIGNIN_COOKIE,
    SIGNIN_SECONDS,
    Session,
    check_signin_token,
    clear_cookie,
    current_session,
    end_session,
    local_path,
    requires_session,
    session_cookie_seconds,
    set_cookie,
    signin_token,
    start_session,
)
from e2a_gateway.operations.errors import Forbidden, Invalid, OperationError, Unauthorized
from e2a_gateway.operations.requests import RequestBody, parse_request
from e2a_gateway.storage.base import StorageUnavailable
from e2a_gateway.web.errors import headers_of, status_of
from e2a_gateway.web.request_text import refuse_nul_in_form

log = logging.getLogger("e2a.dashboard")

blueprint = Blueprint("dashboard", __name__, template_folder="templates")
blueprint.before_request(refuse_nul_in_form)

ASSETS_FOLDER = Path(__file__).resolve().parent / "static"
ASSETS = frozenset(entry.name for entry in ASSETS_FOLDER.iterdir() if entry.is_file())
"""The dashboard's own files (stylesheet, script, icon): the only names `/assets/` serves."""

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
    "redelivered": "Queued for delivery again: the webhook gets it signed afresh.",
}

Body = TypeVar("Body", bound=RequestBody)


@blueprint.app_template_filter("dashboard_time")
def minute_utc(value: str | None) -> str:
    """An RFC 3339 UTC timestamp as people read it: `2026-02-01 12:00 UTC`."""
    if not value or len(value) < 16 or value[10] != "T":
        return value or "—"
    return f"{value[:10]} {value[11:16]} UTC"


class FormValue(str):
    """What a form field holds: sent back exactly as shown, so shown exactly (`verbatim`)."""


@blueprint.app_template_filter("verbatim")
def verbatim(value: str | None) -> FormValue:
    """`value` for a form field's value, which the browser sends back: shown as it is, with
    any bidirectional control, so that submitting the form unchanged changes nothing."""
    return FormValue(value or "")


def in_order(value: object) -> object:
    """Every value a template shows (Jinja's `finalize`), before it is escaped: text with its
    bidirectional embeddings, overrides and isolates shown as U+FFFD, so that what a sender or
    an agent wrote cannot make an address or a file name read as another; a form field's
    value (`verbatim`) as it is."""
    if isinstance(value, FormValue):
        return value
    if isinstance(value, Markup):
        return Markup(in_real_order(value))
    if isinstance(value, str):
        return in_real_order(value)
    return value


@blueprint.record_once
def _show_in_order(state: BlueprintSetupState) -> None:
    state.app.jinja_env.finalize = in_order


@blueprint.app_template_filter("clip")
def clip(text: str | None, limit: int) -> tuple[str, int]:
    """The first `limit` characters of `text` and how many more it holds: pages show a long
    body in part, so that megabytes of mail do not stall the browser."""
    text = text or ""
    return text[:limit], max(0, len(text) - limit)


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
        **context,
    )
    return Response(
        html, status=status, content_type="text/html; charset=utf-8", headers=PAGE_HEADERS
    )


def see_other(location: str) -> Response:
    """A 303 redirect: after a POST the browser GETs `location`."""
    return Response("", status=303, headers={"Location": location})


def page_position(token: str) -> tuple[str, str]:
    """The position (a creation time and an id) a list's `page` token names (`position_token`);
    Invalid when it names none: one edited into JSON nested thousands deep, or naming a NUL
    (which no row holds, and PostgreSQL refuses in a query's text), is refused too, not a
    crash."""
    try:
        created_at, key = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        texts = isinstance(created_at, str) and isinstance(key, str)
        if texts and "\x00" not in created_at + key:
            return created_at, key
    except (ValueError, TypeError, binascii.Error, RecursionError):
        pass
    raise Invalid("invalid_request", "invalid page token; start again from the first page")


def position_token(created_at: str, key: str) -> str:
    """The `page` token of a newest-first list's page after the row created at `created_at`
    with the id `key` (an agent's address, an API key's id)."""
    position = json.dumps([created_at, key]).encode()
    return base64.urlsafe_b64encode(position).decode().rstrip("=")


def done(endpoint: str, notice: str, **values: str) -> Response:
    """Redirect after a successful action, with a notice for the next page."""
    arguments: dict[str, Any] = {"done": notice, **values}
    return see_other(url_for(endpoint, **arguments))


def form_body(model: type[Body], values: Mapping[str, object]) -> Body:
    """An operation's request built from form values; blank fields count as not given."""
    data = {name: value for name, value in values.items() if value not in ("", None)}
    return parse_request(model, data)


@blueprint.errorhandler(OperationError)
async def on_refused(exc: OperationError) -> Response:
    """An action the rules refuse, on a page of its own (forms show errors in place)."""
    response = await page(
        "error.html", await current_session(), status=status_of(exc), message=exc.message
    )
    response.headers.update(headers_of(exc))
    return response


HTTP_ERRORS = {
    404: "There is no such page. Follow the dashboard's links rather than typing addresses.",
    405: "This page does not take that kind of request; use the dashboard's links and buttons.",
    413: "What was sent is too large for the gateway (http.max_request_bytes).",
}


async def _http_error_page(exc: HTTPException) -> Response:
    status = exc.code or 500
    message = HTTP_ERRORS.get(status, exc.description or exc.name)
    response = await page("error.html", None, status=status, message=message)
    response.headers.update({name: value for name, value in exc.get_headers() if name == "Allow"})
    return response


@blueprint.errorhandler(HTTPException)
async def on_http_exception(exc: HTTPException) -> Response:
    """An HTTP error raised by a dashboard route (a missing asset, a body too large)."""
    return await _http_error_page(exc)


@blueprint.errorhandler(Exception)
async def on_unexpected(exc: Exception) -> Response:
    """A bug: logged with its traceback; the page says only that the log has details."""
    log.exception("unhandled error in a dashboard request handler")
    return await page(
        "error.html", None, status=500, message="Internal error; the gateway log has details."
    )


def _dashboard_path(path: str) -> bool:
    """Whether `path` is among the dashboard's: its first segment begins one of its routes."""
    first = path.split("/", 2)[1] if path.startswith("/") else None
    return any(
        rule.rule.split("/", 2)[1] == first
        for rule in current_app.url_map.iter_rules()
        if rule.endpoint.startswith(f"{blueprint.name}.")
    )


@blueprint.before_app_request
async def refuse_unrouted() -> Response | None:
    """A request for a dashboard path that no route takes (a mistyped address, a GET of a
    form's action) gets the dashboard's error page, not the REST API's JSON."""
    exc = request.routing_exception
    if isinstance(exc, HTTPException) and _dashboard_path(request.path):
        return await _http_error_page(exc)
    return None


@blueprint.after_app_request
async def guard(response: Response) -> Response:
    """Give every dashboard answer — pages, redirects, errors, its files, the event stream —
    the security headers (those a route set itself are kept)."""
    if request.blueprint == blueprint.name or (
        request.url_rule is None and _dashboard_path(request.path)
    ):
        for name, value in PAGE_HEADERS.items():
            response.headers.setdefault(name, value)
    return response


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


@blueprint.get("/assets/<path:filename>", endpoint="static")
async def asset(filename: str) -> Response:
    """One of the dashboard's own files; any other name is 404 without touching the disk (a
    name too long for the filesystem was an error 500)."""
    if filename not in ASSETS:
        abort(404)
    response = await send_from_directory(ASSETS_FOLDER, filename)
    response.headers["Cache-Control"] = "no-cache"  # kept, but checked again (ETag)
    return response


@blueprint.get("/signin")
async def signin() -> Response:
    """The sign-in form (already signed-in visitors go on to the page they asked for)."""
    if await current_session() is not None:
        return see_other(local_path(request.args.get("next")))
    return await _signin_page()


@blueprint.post("/signin")
async def signin_submit() -> Response:
    """Check the API key as the REST API does and start a session."""
    await check_signin_token()
    form = await request.form
    try:
        _, cookie = await start_session(form.get("api_key", "").strip())
    except Unauthorized:
        return await _signin_page(401, "That API key is not valid. Check it and try again.")
    except Forbidden:
        return await _signin_page(
            403, "That API key is bound to one agent. Sign in with an account key."
        )
    response = see_other(local_path(request.args.get("next")))
    set_cookie(response, SESSION_COOKIE, cookie, session_cookie_seconds())
    clear_cookie(response, SIGNIN_COOKIE)
    return response


@blueprint.post("/signout")
@requires_session
async def signout(session: Session) -> Response:
    """End the session on the server, for every copy of its cookie, and forget it in this
    browser."""
    await end_session(session)
    response = see_other(url_for("dashboard.signin"))
    clear_cookie(response, SESSION_COOKIE)
    return response
