"""Who is signed in to the dashboard: the session cookie, its CSRF token, and sign-in itself.

The cookie is HttpOnly and SameSite=Strict; whenever the dashboard is reached over https it is
also Secure and named with the `__Host-` prefix, which browsers take from this host alone (not
from a sibling subdomain, not over http), and only the name fitting the request is read. Every
request looks the API key up again, so a revoked key ends its sessions at once, and asks storage
whether the session was signed out, so signing out ends it for every copy of the cookie on every
replica. Every POST must carry the session's CSRF token, and, when it says where it comes from
(`Origin`), come from the dashboard.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import wraps
from typing import Concatenate, ParamSpec, TypeVar

from quart import Response, request, url_for

from e2a_gateway.config import web_origin
from e2a_gateway.dashboard.sessions import (
    SESSION_SECONDS,
    SessionInvalid,
    new_claims,
    same_token,
    seal,
    session_key,
    unseal,
)
from e2a_gateway.hub import Revocation
from e2a_gateway.operations.caller import Caller, authenticate, caller_for_key_hash
from e2a_gateway.operations.errors import Forbidden
from e2a_gateway.storage.base import User
from e2a_gateway.web.context import current_gateway

P = ParamSpec("P")
R = TypeVar("R")

SESSION_COOKIE = "e2a_session"
SIGNIN_COOKIE = "e2a_signin"
"""Holds the sign-in form's CSRF token before there is a session (double submit)."""
HOST_ONLY_PREFIX = "__Host-"
"""Over https the cookies' names begin with it: browsers then keep them only when set by this
very host, Secure, with Path=/ and no Domain, so a sibling subdomain cannot plant one."""
SIGNIN_SECONDS = 3600
CSRF_FIELD = "csrf_token"
_LOCAL_PATH = re.compile(r"/(?![/\\])[^\\\s\x00-\x1f\x7f]*\Z")


@dataclass(frozen=True)
class Session:
    """A signed-in dashboard user as the caller of the API key they signed in with (by hash:
    revoking it ends the session and its live streams), the CSRF token their forms must carry,
    and the session's id and expiry (what signing out records)."""

    caller: Caller
    csrf_token: str
    session_id: str
    expires_at: int

    @property
    def user(self) -> User:
        """Who is signed in."""
        return self.caller.user


def _over_https() -> bool:
    """Whether the browser reaches the dashboard over https: the request's scheme is https (a
    trusted proxy's say-so included, `api.proxies`) or the public URL is."""
    public_url = current_gateway().settings.http.public_url
    return request.scheme == "https" or public_url.startswith("https://")


def cookie_name(name: str) -> str:
    """The name a dashboard cookie has on this request: `__Host-` + `name` over https, `name`
    over plain http (where browsers would refuse the prefixed one)."""
    return f"{HOST_ONLY_PREFIX}{name}" if _over_https() else name


def request_cookie(name: str) -> str | None:
    """The dashboard cookie `name` as this request carries it under the name fitting its scheme;
    over https a cookie under the plain name (one a sibling subdomain may have planted) is not
    read."""
    return request.cookies.get(cookie_name(name))


def set_cookie(response: Response, name: str, value: str, max_age: int) -> None:
    """Set a dashboard cookie with the flags every dashboard cookie has (no Domain: this host
    only)."""
    response.set_cookie(
        cookie_name(name),
        value,
        max_age=max_age,
        path="/",
        secure=_over_https(),
        httponly=True,
        samesite="Strict",
    )


def clear_cookie(response: Response, name: str) -> None:
    """Tell the browser to forget a dashboard cookie."""
    response.delete_cookie(
        cookie_name(name), path="/", secure=_over_https(), httponly=True, samesite="Strict"
    )


async def current_session() -> Session | None:
    """The session the request's cookie proves, or None (absent, forged, expired, signed out,
    revoked)."""
    token = request_cookie(SESSION_COOKIE)
    if not token:
        return None
    gateway = current_gateway()
    try:
        claims = unseal(session_key(gateway.server_key), token, time.time())
    except SessionInvalid:
        return None
    if await gateway.storage.session_signed_out(claims.user_id, claims.session_id):
        return None
    caller = await caller_for_key_hash(gateway, claims.key_hash)
    if caller is None or caller.user_id != claims.user_id:
        return None
    return Session(caller, claims.csrf_token, claims.session_id, claims.expires_at)


async def end_session(session: Session) -> None:
    """Sign `session` out on the server: from now on every copy of its cookie is refused, on
    every replica and after a restart (recorded until it would have expired anyway), and the
    live streams it opened are closed (other replicas' when they hear of the commit)."""
    gateway = current_gateway()
    await gateway.storage.sign_out_session(session.user.id, session.session_id, session.expires_at)
    gateway.hub.revoke(Revocation("session", session.session_id))


async def start_session(api_key: str) -> tuple[User, str]:
    """Check `api_key` exactly as the REST API does (Unauthorized otherwise) and return its
    owner with the sealed session cookie value to set; the dashboard is the account's, so an
    agent key is Forbidden."""
    gateway = current_gateway()
    caller = await authenticate(gateway, api_key)
    caller.require_account("sign in to the dashboard")
    claims = new_claims(caller.key_hash, caller.user_id, time.time())
    return caller.user, seal(session_key(gateway.server_key), claims)


def session_cookie_seconds() -> int:
    """How long the browser keeps the session cookie (the session's own lifetime)."""
    return SESSION_SECONDS


def signin_token() -> str:
    """The sign-in form's CSRF token: the one in the sign-in cookie, or a new one."""
    return request_cookie(SIGNIN_COOKIE) or secrets.token_hex(16)


def check_origin() -> None:
    """403 for a POST whose `Origin` is another site's. The token alone is not enough for the
    sign-in form: over plain http a sibling subdomain can plant the cookie its token is checked
    against. The dashboard's origins are the one the browser addressed (the request's scheme and
    `Host`) and `http.public_url`'s (behind a proxy that gives the gateway a `Host` of its own). A
    request without `Origin` (not a browser's, or an old one) is left to the token."""
    origin = request.headers.get("Origin")
    if origin is None:
        return
    public_origin = current_gateway().settings.http.public_origin
    try:
        own = {public_origin, web_origin(f"{request.scheme}://{request.host}")}
        if web_origin(origin) in own:
            return
    except ValueError:  # `null`, or a Host no origin can have
        pass
    raise Forbidden(
        "csrf_failed",
        "this form was sent from another site, not the dashboard; if the dashboard's address is "
        f"not {public_origin}, set http.public_url to it",
    )


async def check_signin_token() -> None:
    """403 unless the sign-in form comes from the dashboard and carries the token its cookie
    holds."""
    check_origin()
    form = await request.form
    cookie = request_cookie(SIGNIN_COOKIE)
    if not cookie or not same_token(cookie, form.get(CSRF_FIELD)):
        raise csrf_refused()


def csrf_refused() -> Forbidden:
    """403 for a form without the right CSRF token."""
    return Forbidden(
        "csrf_failed",
        "this form has expired or did not come from the dashboard; reload the page and retry",
    )


def requires_session(
    handler: Callable[Concatenate[Session, P], Awaitable[R]],
) -> Callable[P, Awaitable[R | Response]]:
    """Decorate a page so it runs only for a signed-in user (others go to the sign-in page),
    receiving the session first; a POST must also come from the dashboard and carry the
    session's CSRF token (403)."""

    @wraps(handler)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | Response:
        session = await current_session()
        if session is None:
            return signin_redirect()
        if request.method == "POST":
            check_origin()
            form = await request.form
            if not same_token(session.csrf_token, form.get(CSRF_FIELD)):
                raise csrf_refused()
        return await handler(session, *args, **kwargs)

    return wrapper


def signin_redirect() -> Response:
    """Send a visitor without a session to the sign-in page, coming back here afterwards. A
    cookie that was sent and refused is deleted; none is deleted when none was sent, as on a
    link followed from another site, which the SameSite=Strict cookie does not accompany: the
    browser's session stays, and the next visit from this site finds it."""
    target = request.full_path if request.method == "GET" else "/"
    location = url_for("dashboard.signin", next=target.rstrip("?"))
    response = Response("", status=303, headers={"Location": location})
    if request_cookie(SESSION_COOKIE) is not None:
        clear_cookie(response, SESSION_COOKIE)
    return response


def local_path(target: str | None) -> str:
    """`target` when it is a path on this site, else the dashboard's home (no open redirect:
    browsers read `//host`, `/\\host` and paths with tabs or newlines as other sites)."""
    if target and _LOCAL_PATH.match(target):
        return target
    return "/"
