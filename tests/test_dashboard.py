"""The dashboard over HTTP against a live gateway: sign-in, cookie flags, CSRF, ownership,
the live inbox stream, and that the REST API around it is untouched."""

from __future__ import annotations

import base64
import dataclasses
import html.parser
import json
import logging
import re
import smtplib
import time
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import nacl.secret
import pytest
import trio

from e2a_gateway.accounts import bootstrap_user, issue_api_key
from e2a_gateway.app import RunningGateway, run_gateway
from e2a_gateway.clock import format_timestamp, parse_timestamp
from e2a_gateway.dashboard.auth import local_path
from e2a_gateway.dashboard.sessions import (
    SessionClaims,
    SessionInvalid,
    seal,
    session_key,
    unnamed_session_id,
    unseal,
)
from e2a_gateway.ids import new_id
from e2a_gateway.mailauth.resolver import FixtureResolver
from e2a_gateway.signing.credentials import hash_api_key
from e2a_gateway.storage.base import OutboundMessage
from tests.conftest import Account, agent_path, make_settings

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_token(html: str) -> str:
    """The CSRF token a dashboard page's forms carry."""
    found = CSRF.search(html)
    assert found is not None, html[:500]
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, key: str) -> httpx.Response:
    """Fill in the sign-in form with `key` as a browser would."""
    form = await client.get("/signin")
    assert form.status_code == 200
    return await client.post("/signin", data={"api_key": key, "csrf_token": csrf_token(form.text)})


async def session_csrf(client: httpx.AsyncClient) -> str:
    """The CSRF token of the client's session (from any signed-in page)."""
    page = await client.get("/agents")
    assert page.status_code == 200, page.text[:300]
    return csrf_token(page.text)


@pytest.fixture
async def browser(running: RunningGateway) -> object:
    """Factory of cookie-keeping HTTP clients, like separate browsers."""
    clients: list[httpx.AsyncClient] = []

    def open_browser() -> httpx.AsyncClient:
        client = httpx.AsyncClient(base_url=running.addresses.http_url, timeout=10)
        clients.append(client)
        return client

    yield open_browser
    for client in clients:
        await client.aclose()


async def local_agent(account: Account, slug: str) -> str:
    response = await account.http.post("/api/v1/agents", json={"slug": slug, "agent_mode": "local"})
    assert response.status_code == 201, response.text
    return str(response.json()["email"])


def set_cookie_header(response: httpx.Response, name: str) -> str:
    headers = [value for value in response.headers.get_list("set-cookie") if value.startswith(name)]
    assert len(headers) == 1, response.headers
    return headers[0]


def assert_host_only(cookie: str) -> None:
    """`cookie` (a Set-Cookie value) is one browsers take from this host over https alone:
    Secure, Path=/ and no Domain, as the `__Host-` prefix requires."""
    flags = [part.strip().lower() for part in cookie.split(";")[1:]]
    assert cookie.startswith("__Host-"), cookie
    assert "secure" in flags and "path=/" in flags, cookie
    assert not any(flag.startswith("domain") for flag in flags), cookie
    assert "httponly" in flags and "samesite=strict" in flags, cookie


async def test_pages_need_a_session(browser, running: RunningGateway) -> None:
    client = browser()
    response = await client.get("/agents/bot%40agents.test/inbox")
    assert response.status_code == 303
    assert response.headers["location"] == "/signin?next=/agents/bot%2540agents.test/inbox" or (
        response.headers["location"].startswith("/signin?next=")
    )
    assert (await client.get("/approvals")).status_code == 303


async def test_sign_in_with_a_bad_key_is_refused(browser, make_account) -> None:
    await make_account("alice@example.com")
    client = browser()
    for key in ("e2a_" + "0" * 64, "not-a-key", ""):
        response = await sign_in(client, key)
        assert response.status_code == 401
        assert "not valid" in response.text
        assert "e2a_session" not in response.headers.get("set-cookie", "")
    assert (await client.get("/agents")).status_code == 303


async def test_session_cookie_is_sealed_httponly_and_strict(browser, make_account) -> None:
    alice = await make_account("alice@example.com")
    client = browser()
    response = await sign_in(client, alice.key)
    assert response.status_code == 303
    assert response.headers["location"] == "/"
    cookie = set_cookie_header(response, "e2a_session=")
    flags = [part.strip().lower() for part in cookie.split(";")]
    assert "httponly" in flags
    assert "samesite=strict" in flags
    assert "path=/" in flags
    assert "secure" not in flags  # plain http on loopback
    value = cookie.split(";")[0].split("=", 1)[1]
    assert alice.key not in value and alice.key[4:] not in value
    assert hash_api_key(alice.key) not in value
    home = await client.get("/agents")
    assert home.status_code == 200
    assert "alice@example.com" in home.text
    assert home.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in home.headers["content-security-policy"]


async def test_cookie_is_secure_behind_https(tmp_path: Path, nursery: trio.Nursery) -> None:
    settings = make_settings(
        tmp_path, http={"listen": "127.0.0.1:0", "public_url": "https://e2a.example"}
    )
    running: RunningGateway = await nursery.start(
        partial(run_gateway, settings, resolver=FixtureResolver())
    )
    async with httpx.AsyncClient(base_url=running.addresses.http_url) as client:
        response = await client.get("/signin")
    assert_host_only(set_cookie_header(response, "__Host-e2a_signin="))


async def test_cookie_is_secure_when_a_trusted_proxy_says_https(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """Behind a TLS-terminating proxy listed in `http.trusted_proxies`, the proxy's
    `X-Forwarded-Proto: https` makes the cookies Secure (and `__Host-`) even when
    `http.public_url` is left at http; the same header from a peer that is not a trusted proxy
    is ignored."""
    for trusted in (["127.0.0.1"], []):
        (tmp_path / str(len(trusted))).mkdir()
        settings = make_settings(
            tmp_path / str(len(trusted)),
            http={"listen": "127.0.0.1:0", "trusted_proxies": trusted},
        )
        running: RunningGateway = await nursery.start(
            partial(run_gateway, settings, resolver=FixtureResolver())
        )
        async with httpx.AsyncClient(base_url=running.addresses.http_url) as client:
            said_https = await client.get("/signin", headers={"X-Forwarded-Proto": "https"})
            said_http = await client.get("/signin", headers={"X-Forwarded-Proto": "http"})
        if trusted:
            assert_host_only(set_cookie_header(said_https, "__Host-e2a_signin="))
            plain = [set_cookie_header(said_http, "e2a_signin=")]
        else:
            plain = [set_cookie_header(answer, "e2a_signin=") for answer in (said_https, said_http)]
        for cookie in plain:
            assert "secure" not in [part.strip().lower() for part in cookie.split(";")]


async def test_over_https_the_cookies_are_host_only(tmp_path: Path, nursery: trio.Nursery) -> None:
    """Over https (here: a trusted proxy says so) the cookies are named `__Host-…`, which a
    sibling subdomain cannot set for this host (cookie tossing) nor can plain http; a cookie
    under the plain name, as a sibling can plant for the parent domain, is not read then, nor
    a `__Host-` one on a plain http request. Signing out clears the `__Host-` cookie."""
    settings = make_settings(
        tmp_path, http={"listen": "127.0.0.1:0", "trusted_proxies": ["127.0.0.1"]}
    )
    running: RunningGateway = await nursery.start(
        partial(run_gateway, settings, resolver=FixtureResolver())
    )
    _, issued, _ = await bootstrap_user(
        running.gateway.storage, running.gateway.server_key, "alice@example.com"
    )
    https = {"X-Forwarded-Proto": "https"}
    # The cookies are Secure: sent by hand, as the test talks plain http to the gateway.
    async with httpx.AsyncClient(
        base_url=running.addresses.http_url, headers=https, timeout=10
    ) as client:
        form = await client.get("/signin")
        token = csrf_token(form.text)
        signin_cookie = set_cookie_header(form, "__Host-e2a_signin=")
        assert_host_only(signin_cookie)
        assert signin_cookie.split(";")[0] == f"__Host-e2a_signin={token}"
        fields = {"api_key": issued.plaintext, "csrf_token": token}
        planted = await client.post(
            "/signin", data=fields, headers={"Cookie": f"e2a_signin={token}"}
        )
        assert planted.status_code == 403
        signed_in = await client.post(
            "/signin", data=fields, headers={"Cookie": f"__Host-e2a_signin={token}"}
        )
        assert signed_in.status_code == 303, signed_in.text
        session_cookie = set_cookie_header(signed_in, "__Host-e2a_session=")
        assert_host_only(session_cookie)
        assert not any(
            value.startswith("e2a_") for value in signed_in.headers.get_list("set-cookie")
        )
        session = session_cookie.split(";")[0].split("=", 1)[1]

        home = await client.get("/agents", headers={"Cookie": f"__Host-e2a_session={session}"})
        assert home.status_code == 200
        plain = await client.get("/agents", headers={"Cookie": f"e2a_session={session}"})
        assert plain.status_code == 303
        over_http = await client.get(
            "/agents",
            headers={"X-Forwarded-Proto": "http", "Cookie": f"__Host-e2a_session={session}"},
        )
        assert over_http.status_code == 303

        signed_out = await client.post(
            "/signout",
            data={"csrf_token": csrf_token(home.text)},
            headers={"Cookie": f"__Host-e2a_session={session}"},
        )
        assert signed_out.status_code == 303
        cleared = set_cookie_header(signed_out, "__Host-e2a_session=")
        assert_host_only(cleared)
        assert "max-age=0" in cleared.lower()


async def test_forms_without_the_csrf_token_are_refused(browser, make_account) -> None:
    alice = await make_account("alice@example.com")
    client = browser()
    assert (await sign_in(client, alice.key)).status_code == 303
    token = await session_csrf(client)
    for data in ({"address": "forged"}, {"address": "forged", "csrf_token": "0" * 32}):
        response = await client.post("/agents", data=data)
        assert response.status_code == 403
        assert "reload the page" in response.text
    assert (await alice.http.get("/api/v1/agents")).json()["agents"] == []
    # The token of another session does not do either.
    other = browser()
    assert (await sign_in(other, alice.key)).status_code == 303
    assert token != await session_csrf(other)
    response = await client.post(
        "/agents", data={"address": "forged", "csrf_token": await session_csrf(other)}
    )
    assert response.status_code == 403
    response = await client.post(
        "/agents", data={"address": "real", "agent_mode": "local", "csrf_token": token}
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/agents/real@agents.test?done=agent_created"
    # Sign-in itself needs the token its own cookie holds.
    fresh = browser()
    response = await fresh.post("/signin", data={"api_key": alice.key})
    assert response.status_code == 403


async def test_forms_from_another_origin_are_refused(
    browser, make_account, running: RunningGateway
) -> None:
    """A form POSTed from another site is refused even with the right token (a sibling
    subdomain can plant the sign-in cookie its token is checked against); the dashboard's own
    origin, or no Origin header at all, is accepted."""
    alice = await make_account("alice@example.com")
    own = running.addresses.http_url.rstrip("/")
    client = browser()
    form = await client.get("/signin")
    for origin in ("https://evil.example", "null", own.replace("http://", "https://")):
        refused = await client.post(
            "/signin",
            data={"api_key": alice.key, "csrf_token": csrf_token(form.text)},
            headers={"Origin": origin},
        )
        assert refused.status_code == 403, origin
        assert "e2a_session=" not in refused.headers.get("set-cookie", ""), origin
    signed_in = await client.post(
        "/signin",
        data={"api_key": alice.key, "csrf_token": csrf_token(form.text)},
        headers={"Origin": own},
    )
    assert signed_in.status_code == 303
    token = await session_csrf(client)
    for origin in ("https://evil.example", "null"):
        response = await client.post(
            "/credentials/api-keys",
            data={"name": "forged", "csrf_token": token},
            headers={"Origin": origin},
        )
        assert response.status_code == 403, origin
        assert "another site" in response.text
    keys = (await alice.http.get("/api/v1/users/me/api-keys")).json()["api_keys"]
    assert [key["name"] for key in keys] == [keys[0]["name"]]
    made = await client.post(
        "/credentials/api-keys", data={"name": "mine", "csrf_token": token}, headers={"Origin": own}
    )
    assert made.status_code == 201


async def test_the_public_url_is_an_origin_of_the_dashboard(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """Behind a proxy that gives the gateway a Host of its own, the browser's Origin is
    `http.public_url`'s: accepted."""
    settings = make_settings(
        tmp_path, http={"listen": "127.0.0.1:0", "public_url": "https://e2a.example/base"}
    )
    running: RunningGateway = await nursery.start(
        partial(run_gateway, settings, resolver=FixtureResolver())
    )
    _, issued, _ = await bootstrap_user(
        running.gateway.storage, running.gateway.server_key, "alice@example.com"
    )
    async with httpx.AsyncClient(base_url=running.addresses.http_url) as client:
        token = csrf_token((await client.get("/signin")).text)
        for origin, status in (("https://e2a.example", 303), ("https://evil.example", 403)):
            answer = await client.post(
                "/signin",
                data={"api_key": issued.plaintext, "csrf_token": token},
                # The sign-in cookie is Secure (https public URL): sent by hand over http.
                headers={"Origin": origin, "Cookie": f"__Host-e2a_signin={token}"},
            )
            assert answer.status_code == status, origin


async def test_forged_or_revoked_sessions_do_not_count(
    browser, make_account, running: RunningGateway
) -> None:
    alice = await make_account("alice@example.com")
    client = browser()
    client.cookies.set("e2a_session", "garbage")
    assert (await client.get("/agents")).status_code == 303
    # Sealed under another server key: refused.
    claims = SessionClaims(
        hash_api_key(alice.key), "usr_x", int(time.time()) + 60, "t" * 32, "s" * 32
    )
    client.cookies.set("e2a_session", seal(session_key("another server key"), claims))
    assert (await client.get("/agents")).status_code == 303
    # Expired: refused.
    server_key = running.gateway.server_key
    user = await running.gateway.storage.user_for_key_hash(hash_api_key(alice.key))
    assert user is not None
    expired = SessionClaims(
        hash_api_key(alice.key), user.id, int(time.time()) - 1, "t" * 32, "s" * 32
    )
    client.cookies.set("e2a_session", seal(session_key(server_key), expired))
    assert (await client.get("/agents")).status_code == 303
    # A genuine session ends when its key is revoked.
    signed_in = browser()
    assert (await sign_in(signed_in, alice.key)).status_code == 303
    assert (await signed_in.get("/agents")).status_code == 200
    keys = (await alice.http.get("/api/v1/users/me/api-keys")).json()["api_keys"]
    second = await alice.http.post("/api/v1/users/me/api-keys", json={"name": "spare"})
    spare = httpx.Headers({"Authorization": f"Bearer {second.json()['key']}"})
    revoked = await alice.http.delete(f"/api/v1/users/me/api-keys/{keys[0]['id']}", headers=spare)
    assert revoked.status_code == 204
    assert (await signed_in.get("/agents")).status_code == 303


async def test_sign_out(browser, make_account) -> None:
    alice = await make_account("alice@example.com")
    client = browser()
    assert (await sign_in(client, alice.key)).status_code == 303
    token = await session_csrf(client)
    assert (await client.post("/signout", data={})).status_code == 403
    response = await client.post("/signout", data={"csrf_token": token})
    assert response.status_code == 303
    assert response.headers["location"] == "/signin"
    assert "max-age=0" in set_cookie_header(response, "e2a_session=").lower()
    assert (await client.get("/agents")).status_code == 303


async def test_a_copy_of_a_signed_out_session_is_refused(browser, make_account) -> None:
    """Signing out ends the session on the server: its cookie, replayed from elsewhere, opens
    no page or stream and makes no key; the user's other sessions stay signed in."""
    alice = await make_account("alice@example.com")
    address = await local_agent(alice, "watched")
    client = browser()
    assert (await sign_in(client, alice.key)).status_code == 303
    token = await session_csrf(client)
    stream_url = await open_stream(client, address)
    copied = client.cookies["e2a_session"]
    elsewhere = browser()
    assert (await sign_in(elsewhere, alice.key)).status_code == 303
    assert (await client.post("/signout", data={"csrf_token": token})).status_code == 303

    replayed = browser()
    replayed.cookies.set("e2a_session", copied)
    for method, path, form in [
        ("GET", "/agents", None),
        ("GET", stream_url, None),
        ("POST", "/credentials/api-keys", {"name": "kept", "csrf_token": token}),
        ("POST", "/signout", {"csrf_token": token}),
    ]:
        response = await replayed.request(method, path, data=form)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/signin")
    keys = (await alice.http.get("/api/v1/users/me/api-keys")).json()["api_keys"]
    assert len(keys) == 1
    created = await elsewhere.post(
        "/credentials/api-keys", data={"name": "mine", "csrf_token": await session_csrf(elsewhere)}
    )
    assert created.status_code == 201


async def test_a_sign_out_outlives_a_restart(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    copied = ""
    for run in ("signs out", "restarted"):
        async with trio.open_nursery() as nursery:
            running: RunningGateway = await nursery.start(
                partial(run_gateway, settings, resolver=FixtureResolver())
            )
            async with httpx.AsyncClient(base_url=running.addresses.http_url) as client:
                if run == "signs out":
                    gateway = running.gateway
                    _, issued, _ = await bootstrap_user(
                        gateway.storage, gateway.server_key, "alice@example.com"
                    )
                    assert (await sign_in(client, issued.plaintext)).status_code == 303
                    copied = client.cookies["e2a_session"]
                    token = await session_csrf(client)
                    signed_out = await client.post("/signout", data={"csrf_token": token})
                    assert signed_out.status_code == 303
                else:
                    client.cookies.set("e2a_session", copied)
                    assert (await client.get("/agents")).status_code == 303
            nursery.cancel_scope.cancel()


async def test_another_users_agent_is_not_reachable(browser, make_account) -> None:
    alice = await make_account("alice@example.com")
    bob = await make_account("bob@example.com")
    address = await local_agent(alice, "alices-bot")
    held = await alice.http.put(agent_path(address), json={"hitl_enabled": True})
    assert held.status_code == 200
    sent = await alice.http.post(
        "/api/v1/send", json={"to": ["x@example.org"], "subject": "Hi", "body": "secret words"}
    )
    assert sent.status_code == 202
    message_id = sent.json()["message_id"]
    client = browser()
    assert (await sign_in(client, bob.key)).status_code == 303
    token = await session_csrf(client)
    encoded = quote(address, safe="")
    for path in (
        f"/agents/{encoded}",
        f"/agents/{encoded}/inbox",
        f"/agents/{encoded}/events",
        f"/approvals/{message_id}",
    ):
        response = await client.get(path)
        assert response.status_code == 404, path
        assert "not found" in response.text
    for path in (
        f"/agents/{encoded}/delete",
        f"/approvals/{message_id}/approve",
        f"/approvals/{message_id}/reject",
    ):
        response = await client.post(path, data={"csrf_token": token})
        assert response.status_code == 404, path
    approvals = await client.get("/approvals")
    assert "secret words" not in approvals.text
    assert (await alice.http.get(agent_path(address))).status_code == 200
    pending = await alice.http.get(f"/api/v1/messages/{message_id}")
    assert pending.json()["status"] == "pending_approval"


async def test_agent_settings_and_review_go_through_the_api_rules(browser, make_account) -> None:
    alice = await make_account("alice@example.com")
    client = browser()
    assert (await sign_in(client, alice.key)).status_code == 303
    token = await session_csrf(client)
    refused = await client.post(
        "/agents", data={"address": "admin", "agent_mode": "local", "csrf_token": token}
    )
    assert refused.status_code == 400
    assert "reserved" in refused.text
    cloud = await client.post(
        "/agents", data={"address": "web", "agent_mode": "cloud", "csrf_token": token}
    )
    assert cloud.status_code == 400 and "webhook_url" in cloud.text
    created = await client.post(
        "/agents", data={"address": "desk", "agent_mode": "local", "csrf_token": token}
    )
    assert created.status_code == 303
    saved = await client.post(
        "/agents/desk@agents.test",
        data={
            "name": "Front desk",
            "agent_mode": "local",
            "hitl_enabled": "on",
            "hitl_ttl_seconds": "3600",
            "hitl_expiration_action": "approve",
            "csrf_token": token,
        },
    )
    assert saved.status_code == 303
    agent = (await alice.http.get(agent_path("desk@agents.test"))).json()
    assert agent["name"] == "Front desk"
    assert agent["hitl_enabled"] is True
    assert agent["hitl_ttl_seconds"] == 3600
    assert agent["hitl_expiration_action"] == "approve"
    ids = []
    for subject in ("First", "Second"):
        sent = await alice.http.post(
            "/api/v1/send",
            json={"to": ["x@example.org"], "subject": subject, "body": "Hello"},
        )
        assert sent.status_code == 202
        ids.append(sent.json()["message_id"])
    page = await client.get("/approvals")
    assert "First" in page.text and "Second" in page.text
    # Edit-then-approve: only what changed counts as an edit.
    approved = await client.post(
        f"/approvals/{ids[0]}/approve",
        data={
            "to": "x@example.org",
            "cc": "",
            "bcc": "",
            "subject": "First, edited",
            "body_text": "Hello",
            "csrf_token": token,
        },
    )
    assert approved.status_code == 303
    assert approved.headers["location"] == "/approvals?done=approved"
    first = (await alice.http.get(f"/api/v1/messages/{ids[0]}")).json()
    assert first["status"] in ("queued", "failed")  # no relay configured in this test
    assert first["edited"] is True and first["subject"] == "First, edited"
    rejected = await client.post(
        f"/approvals/{ids[1]}/reject", data={"reason": "wrong tone", "csrf_token": token}
    )
    assert rejected.status_code == 303
    second = (await alice.http.get(f"/api/v1/messages/{ids[1]}")).json()
    assert second["status"] == "rejected" and second["rejection_reason"] == "wrong tone"
    again = await client.post(f"/approvals/{ids[1]}/approve", data={"csrf_token": token})
    assert again.status_code == 409
    assert "not pending_approval" in again.text
    history = await client.get("/outbound")
    assert "First, edited" in history.text and "wrong tone" in history.text


async def test_api_key_is_shown_once_and_works(browser, make_account, running) -> None:
    alice = await make_account("alice@example.com")
    client = browser()
    assert (await sign_in(client, alice.key)).status_code == 303
    token = await session_csrf(client)
    created = await client.post("/credentials/api-keys", data={"name": "ci", "csrf_token": token})
    assert created.status_code == 201
    key = re.search(r'value="(e2a_[0-9a-f]{64})"', created.text)
    assert key is not None
    async with httpx.AsyncClient(base_url=running.addresses.http_url) as api:
        me = await api.get("/api/v1/agents", headers={"Authorization": f"Bearer {key.group(1)}"})
    assert me.status_code == 200
    listing = await client.get("/credentials")
    assert key.group(1) not in listing.text and key.group(1)[:12] in listing.text


async def test_the_keys_page_tells_expired_and_agent_keys_from_active_ones(
    browser, make_account, running: RunningGateway
) -> None:
    """A key past its `expires_at` is refused (401) like a revoked one, so the Keys page must
    not call it active; a key bound to one agent says which agent, and until when a key works."""
    alice = await make_account("alice@example.com")
    bot = await local_agent(alice, "bot")
    made = await alice.http.post(
        "/v1/account/api-keys",
        json={
            "name": "bot-key",
            "scope": "agent",
            "agent_email": bot,
            "expires_at": "2999-01-01T00:00:00Z",
        },
    )
    assert made.status_code == 201, made.text
    storage = running.gateway.storage
    holder = await storage.key_holder(hash_api_key(alice.key))
    assert holder is not None
    expired = await issue_api_key(
        storage, holder.user.id, "old-ci", expires_at="2001-01-01T00:00:00Z"
    )
    async with httpx.AsyncClient(base_url=running.addresses.http_url) as api:
        refused = await api.get(
            "/api/v1/agents", headers={"Authorization": f"Bearer {expired.plaintext}"}
        )
    assert refused.status_code == 401
    client = browser()
    assert (await sign_in(client, alice.key)).status_code == 303
    page = await client.get("/credentials")
    assert page.status_code == 200
    rows = {
        name: row
        for row in re.findall(r"<tr><th scope=\"row\">.*?</tr>", page.text, re.S)
        for name in ("old-ci", "bot-key", "bootstrap")
        if f">{name}<" in row
    }
    assert "expired" in rows["old-ci"] and "active" not in rows["old-ci"]
    assert "2001-01-01 00:00 UTC" in rows["old-ci"]
    assert "active" in rows["bot-key"] and bot in rows["bot-key"]
    assert "2999-01-01 00:00 UTC" in rows["bot-key"]
    assert "active" in rows["bootstrap"] and "whole account" in rows["bootstrap"]
    assert bot not in rows["bootstrap"]


async def test_inbox_streams_new_mail(browser, make_account, running: RunningGateway) -> None:
    alice = await make_account("alice@example.com")
    address = await local_agent(alice, "live")
    client = browser()
    assert (await sign_in(client, alice.key)).status_code == 303
    inbox = await client.get(f"/agents/{quote(address, safe='')}/inbox")
    assert inbox.status_code == 200
    events_url = re.search(r'data-events="([^"]+)"', inbox.text)
    assert events_url is not None

    def send_mail() -> None:
        with smtplib.SMTP(running.addresses.smtp_host, running.addresses.smtp_port) as smtp:
            smtp.sendmail(
                "carol@example.org",
                [address],
                b"From: carol@example.org\r\nTo: live@agents.test\r\n"
                b"Subject: Live one\r\n\r\nHi\r\n",
            )

    frames = []
    with trio.fail_after(10):
        async with client.stream("GET", events_url.group(1).replace("&amp;", "&")) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            await trio.to_thread.run_sync(send_mail)
            async for line in stream.aiter_lines():
                if line.startswith("data: "):
                    frames.append(json.loads(line[len("data: ") :]))
                    break
    assert frames[0]["subject"] == "Live one"
    assert frames[0]["recipient"] == address
    page = await client.get(f"/agents/{quote(address, safe='')}/inbox")
    assert "Live one" in page.text


async def test_the_rest_api_keeps_its_json_answers(browser, anonymous) -> None:
    health = await anonymous.get("/api/health")
    assert health.json()["status"] == "ok"
    missing = await anonymous.get("/api/v1/nothing-here")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    css = await anonymous.get("/assets/dashboard.css")
    assert css.status_code == 200 and "--accent" in css.text


async def test_the_stream_catches_up_and_covers_cloud_agents(
    browser, make_account, running: RunningGateway
) -> None:
    alice = await make_account("alice@example.com")
    created = await alice.http.post(
        "/api/v1/agents",
        json={"slug": "hooked", "agent_mode": "cloud", "webhook_url": "https://hooks.example/in"},
    )
    assert created.status_code == 201, created.text
    address = created.json()["email"]
    client = browser()
    assert (await sign_in(client, alice.key)).status_code == 303
    inbox = await client.get(f"/agents/{quote(address, safe='')}/inbox")
    events_url = re.search(r'data-events="([^"]+)"', inbox.text)
    assert events_url is not None

    def send(subject: str) -> None:
        with smtplib.SMTP(running.addresses.smtp_host, running.addresses.smtp_port) as smtp:
            smtp.sendmail(
                "carol@example.org",
                [address],
                f"From: carol@example.org\r\nSubject: {subject}\r\n\r\nHi\r\n".encode(),
            )

    # Mail that arrives after the page was rendered but before the stream opens is sent
    # first; then live mail follows, for a cloud agent as for a local one.
    await trio.to_thread.run_sync(send, "Before the stream")
    subjects = []
    with trio.fail_after(10):
        async with client.stream("GET", events_url.group(1).replace("&amp;", "&")) as stream:
            async for line in stream.aiter_lines():
                if not line.startswith("data: "):
                    continue
                subjects.append(json.loads(line[len("data: ") :])["subject"])
                if len(subjects) == 1:
                    await trio.to_thread.run_sync(send, "While streaming")
                else:
                    break
    assert subjects == ["Before the stream", "While streaming"]


def send_many(running: RunningGateway, address: str, subjects: list[str]) -> None:
    """Send one message per subject to `address` over one SMTP connection."""
    with smtplib.SMTP(running.addresses.smtp_host, running.addresses.smtp_port) as smtp:
        for subject in subjects:
            smtp.sendmail(
                "carol@example.org",
                [address],
                f"From: carol@example.org\r\nSubject: {subject}\r\n\r\nHi\r\n".encode(),
            )


async def read_events(
    client: httpx.AsyncClient, url: str, count: int, last_event_id: str | None = None
) -> list[dict[str, str]]:
    """The first `count` events (fields by name) of the stream at `url`, opened as an
    EventSource reconnecting after `last_event_id` would; fewer when the stream ends first."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id is not None else {}
    events: list[dict[str, str]] = []
    fields: dict[str, str] = {}
    with trio.fail_after(10):
        async with client.stream("GET", url, headers=headers) as stream:
            async for line in stream.aiter_lines():
                if line:
                    name, _, value = line.partition(": ")
                    fields[name] = value
                    continue
                if "event" in fields:
                    events.append(fields)
                    if len(events) == count:
                        break
                fields = {}
    return events


def subjects_of(events: list[dict[str, str]]) -> list[str]:
    """The subjects of the messages among `events`."""
    return [json.loads(e["data"])["subject"] for e in events if e["event"] == "message"]


async def test_a_reconnecting_stream_resumes_after_its_last_event(
    browser, make_account, running: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    # More mail than one read of the catch-up holds arrived since the page was rendered: it
    # all comes, each message with its position as the event's id; reconnecting with the last
    # id (as EventSource does) sends what arrived after it, and nothing already sent.
    monkeypatch.setattr("e2a_gateway.dashboard.live.CATCH_UP_PAGE_SIZE", 2)
    alice = await make_account("alice@example.com")
    address = await local_agent(alice, "resumed")
    client = browser()
    assert (await sign_in(client, alice.key)).status_code == 303
    url = await open_stream(client, address)
    await trio.to_thread.run_sync(send_many, running, address, [f"Early {n}" for n in range(5)])
    first = await read_events(client, url, 5)
    assert subjects_of(first) == [f"Early {n}" for n in range(5)]
    assert all(e["event"] == "message" and e.get("id") for e in first)
    await trio.to_thread.run_sync(send_many, running, address, ["In the gap"])
    again = await read_events(client, url, 1, last_event_id=first[-1]["id"])
    assert subjects_of(again) == ["In the gap"]
    bad = await client.get(url, headers={"Last-Event-ID": "not-ours"})
    assert bad.status_code == 400


async def test_live_mail_moves_the_streams_position_once_quiet(
    browser, make_account, running: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Live mail comes without a position; once the stream is quiet it says where the browser
    # now stands, so a reconnection does not send that mail again.
    monkeypatch.setattr("e2a_gateway.dashboard.live.KEEPALIVE_SECONDS", 0.3)
    alice = await make_account("alice@example.com")
    address = await local_agent(alice, "placed")
    client = browser()
    assert (await sign_in(client, alice.key)).status_code == 303
    url = await open_stream(client, address)
    events: list[dict[str, str]] = []
    fields: dict[str, str] = {}
    with trio.fail_after(10):
        async with client.stream("GET", url) as stream:
            await trio.to_thread.run_sync(send_many, running, address, ["Live one", "Live two"])
            async for line in stream.aiter_lines():
                if line:
                    name, _, value = line.partition(": ")
                    fields[name] = value
                    continue
                if fields.get("event"):
                    events.append(fields)
                    if fields.get("id") and len(subjects_of(events)) == 2:
                        break
                fields = {}
    assert subjects_of(events) == ["Live one", "Live two"]
    position = events[-1]["id"]
    await trio.to_thread.run_sync(send_many, running, address, ["After"])
    again = await read_events(client, url, 1, last_event_id=position)
    assert subjects_of(again) == ["After"]


async def test_too_much_waiting_mail_asks_the_page_to_reload(
    browser, make_account, running: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("e2a_gateway.dashboard.live.CATCH_UP_PAGE_SIZE", 2)
    monkeypatch.setattr("e2a_gateway.dashboard.live.MAX_CATCH_UP", 3)
    alice = await make_account("alice@example.com")
    address = await local_agent(alice, "flooded")
    client = browser()
    assert (await sign_in(client, alice.key)).status_code == 303
    url = await open_stream(client, address)
    await trio.to_thread.run_sync(send_many, running, address, [f"Many {n}" for n in range(4)])
    events = await read_events(client, url, 5)
    assert [e["event"] for e in events] == ["reload"]


async def open_stream(client: httpx.AsyncClient, address: str) -> str:
    """The event-stream URL of `address`'s inbox page, as the page gives it."""
    inbox = await client.get(f"/agents/{quote(address, safe='')}/inbox")
    assert inbox.status_code == 200
    events_url = re.search(r'data-events="([^"]+)"', inbox.text)
    assert events_url is not None
    return events_url.group(1).replace("&amp;", "&")


async def stream_until_closed(client: httpx.AsyncClient, url: str, end_access: Any) -> float:
    """Open the stream at `url`, call `end_access()` once it is flowing, and return how long
    the server then took to end the stream (failing after 5 s: a stream otherwise lasts 5
    minutes)."""
    async with client.stream("GET", url) as stream:
        lines = stream.aiter_lines()
        assert (await lines.__anext__()).startswith("retry:")
        ended_at = trio.current_time()
        await end_access()
        with trio.fail_after(5):
            async for line in lines:
                assert not line.startswith("data:"), line
        return trio.current_time() - ended_at


async def test_revoking_the_key_ends_its_open_live_streams(browser, make_account) -> None:
    alice = await make_account("alice@example.com")
    address = await local_agent(alice, "streamed")
    spare = await alice.http.post("/api/v1/users/me/api-keys", json={"name": "browser"})
    browser_key, browser_key_id = spare.json()["key"], spare.json()["id"]
    client = browser()
    assert (await sign_in(client, browser_key)).status_code == 303
    url = await open_stream(client, address)

    async def revoke() -> None:
        revoked = await alice.http.delete(f"/api/v1/users/me/api-keys/{browser_key_id}")
        assert revoked.status_code == 204

    assert await stream_until_closed(client, url, revoke) < 1.0
    assert (await client.get(url)).status_code == 303  # the browser's reconnection is refused


async def test_the_keys_expiry_ends_its_open_live_streams(browser, make_account) -> None:
    alice = await make_account("alice@example.com")
    address = await local_agent(alice, "brief")
    expires = format_timestamp(time.time() + 3)
    spare = await alice.http.post(
        "/v1/account/api-keys", json={"name": "browser", "expires_at": expires}
    )
    assert spare.status_code == 201, spare.text
    client = browser()
    assert (await sign_in(client, spare.json()["key"])).status_code == 303
    url = await open_stream(client, address)

    async def nothing() -> None:
        pass

    remaining = parse_timestamp(expires).timestamp() - time.time()
    took = await stream_until_closed(client, url, nothing)  # ends by itself, at the expiry
    assert took < remaining + 1.0
    assert (await client.get(url)).status_code == 303


async def test_signing_out_ends_the_sessions_open_live_streams(browser, make_account) -> None:
    """A stream opened by a session that signs out (in another tab, say, or a copy of its cookie
    left on a shared machine) is cut at once; another session of the same user streams on."""
    alice = await make_account("alice@example.com")
    address = await local_agent(alice, "tabs")
    client = browser()
    assert (await sign_in(client, alice.key)).status_code == 303
    url = await open_stream(client, address)
    token = await session_csrf(client)
    elsewhere = browser()
    assert (await sign_in(elsewhere, alice.key)).status_code == 303
    other_url = await open_stream(elsewhere, address)

    async with elsewhere.stream("GET", other_url) as other_stream:
        other_lines = other_stream.aiter_lines()
        assert (await other_lines.__anext__()).startswith("retry:")

        async def sign_out() -> None:
            signed_out = await client.post("/signout", data={"csrf_token": token})
            assert signed_out.status_code == 303

        assert await stream_until_closed(client, url, sign_out) < 1.0
        with trio.move_on_after(0.5) as waited:
            async for _ in other_lines:  # the other session's stream is not ended
                pass
        assert waited.cancelled_caught
    assert (await client.get(url)).status_code == 303


async def test_the_sessions_expiry_ends_its_open_live_streams(
    browser, make_account, running: RunningGateway
) -> None:
    """A stream lasts no longer than the session that opened it (not up to its own 5 minutes
    past the session's end)."""
    alice = await make_account("alice@example.com")
    address = await local_agent(alice, "ending")
    user = await running.gateway.storage.user_for_key_hash(hash_api_key(alice.key))
    assert user is not None
    ends_at = int(time.time()) + 3
    claims = SessionClaims(hash_api_key(alice.key), user.id, ends_at, "t" * 32, "s" * 32)
    client = browser()
    client.cookies.set("e2a_session", seal(session_key(running.gateway.server_key), claims))
    url = await open_stream(client, address)

    async def nothing() -> None:
        pass

    remaining = ends_at - time.time()
    took = await stream_until_closed(client, url, nothing)  # ends by itself, with the session
    assert took < remaining + 1.0
    assert (await client.get(url)).status_code == 303


async def test_deleting_the_agent_ends_its_open_live_streams(browser, make_account) -> None:
    alice = await make_account("alice@example.com")
    address = await local_agent(alice, "doomed")
    client = browser()
    assert (await sign_in(client, alice.key)).status_code == 303
    url = await open_stream(client, address)

    async def delete_agent() -> None:
        assert (await alice.http.delete(agent_path(address))).status_code == 200

    assert await stream_until_closed(client, url, delete_agent) < 1.0


def test_session_tokens_are_sealed() -> None:
    key = session_key("server key")
    claims = SessionClaims("ab" * 32, "usr_1", int(time.time()) + 60, "c" * 32, "d" * 32)
    token = seal(key, claims)
    assert unseal(key, token, time.time()) == claims
    assert "usr_1" not in token and "ab" * 32 not in token
    tampered = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    for bad in (tampered, token[:20], "", "x" * 2000, seal(session_key("other"), claims)):
        with pytest.raises(SessionInvalid):
            unseal(key, bad, time.time())
    with pytest.raises(SessionInvalid):
        unseal(key, token, claims.expires_at)


def test_sessions_sealed_before_they_had_an_id_get_one() -> None:
    """A token sealed before sessions carried an id (a gateway just upgraded) still counts, and
    has an id of its own, stable and not its CSRF token, so that it too can be signed out."""
    key = session_key("server key")
    payload = {"v": 1, "k": "ab" * 32, "u": "usr_1", "exp": int(time.time()) + 60, "csrf": "c" * 32}
    sealed = bytes(nacl.secret.SecretBox(key).encrypt(json.dumps(payload).encode()))
    token = base64.urlsafe_b64encode(sealed).decode().rstrip("=")
    claims = unseal(key, token, time.time())
    assert claims.session_id == unnamed_session_id("c" * 32) != "c" * 32
    assert unnamed_session_id("d" * 32) != claims.session_id


async def test_domains_and_signing_secrets(browser, make_account) -> None:
    alice = await make_account("alice@example.com")
    client = browser()
    assert (await sign_in(client, alice.key)).status_code == 303
    token = await session_csrf(client)
    added = await client.post("/domains", data={"domain": "Mail.Example.COM", "csrf_token": token})
    assert added.status_code == 303
    page = await client.get(added.headers["location"])
    domain = (await alice.http.get("/api/v1/domains")).json()["domains"][0]
    assert domain["domain"] == "mail.example.com"
    assert domain["verification_token"] in page.text
    assert "mx.agents.test" in page.text  # the MX record to publish
    reserved = await client.post("/domains", data={"domain": "agents.test", "csrf_token": token})
    assert reserved.status_code == 400 and "shared domain" in reserved.text
    # Development mode verifies without DNS, as the API does.
    verified = await client.post("/domains/mail.example.com/verify", data={"csrf_token": token})
    assert verified.status_code == 303
    assert (await alice.http.get("/api/v1/domains")).json()["domains"][0]["verified"] is True
    deleted = await client.post("/domains/mail.example.com/delete", data={"csrf_token": token})
    assert deleted.status_code == 303
    assert (await alice.http.get("/api/v1/domains")).json()["domains"] == []

    only = (await alice.http.get("/api/v1/users/me/signing-secrets")).json()["secrets"]
    last = await client.post(
        f"/credentials/signing-secrets/{only[0]['id']}/delete", data={"csrf_token": token}
    )
    assert last.status_code == 400 and "only signing secret" in last.text
    created = await client.post(
        "/credentials/signing-secrets", data={"name": "rotation", "csrf_token": token}
    )
    assert created.status_code == 201
    secret = re.search(r'value="([0-9a-f]{64})"', created.text)
    assert secret is not None
    secrets_now = (await alice.http.get("/api/v1/users/me/signing-secrets")).json()["secrets"]
    assert secrets_now[0]["name"] == "rotation"
    assert secret.group(1).startswith(secrets_now[0]["secret_prefix"])
    assert secret.group(1) not in (await client.get("/credentials")).text


async def test_the_unread_page_catches_up_on_unread_mail_only(
    browser, make_account, running: RunningGateway
) -> None:
    alice = await make_account("alice@example.com")
    address = await local_agent(alice, "sorter")
    encoded = quote(address, safe="")

    def send(subject: str) -> None:
        with smtplib.SMTP(running.addresses.smtp_host, running.addresses.smtp_port) as smtp:
            smtp.sendmail(
                "carol@example.org",
                [address],
                f"From: carol@example.org\r\nSubject: {subject}\r\n\r\nHi\r\n".encode(),
            )

    await trio.to_thread.run_sync(send, "Shown")
    client = browser()
    assert (await sign_in(client, alice.key)).status_code == 303
    inbox = await client.get(f"/agents/{encoded}/inbox?status=unread")
    assert "Shown" in inbox.text
    events_url = re.search(r'data-events="([^"]+)"', inbox.text)
    assert events_url is not None and "status=unread" in events_url.group(1)
    await trio.to_thread.run_sync(send, "Read elsewhere")
    listed = await alice.http.get(agent_path(address, "/messages"))
    read_id = next(m["message_id"] for m in listed.json()["messages"] if m["subject"] != "Shown")
    assert (await alice.http.get(agent_path(address, f"/messages/{read_id}"))).status_code == 200
    await trio.to_thread.run_sync(send, "Still unread")
    with trio.fail_after(10):
        async with client.stream("GET", events_url.group(1).replace("&amp;", "&")) as stream:
            async for line in stream.aiter_lines():
                if line.startswith("data: "):
                    assert json.loads(line[len("data: ") :])["subject"] == "Still unread"
                    break
    assert (await client.get(f"/agents/{encoded}/events?status=read")).status_code == 400


def test_only_local_paths_are_followed_after_sign_in() -> None:
    for safe in ("/", "/agents", "/agents/bot%40agents.test/inbox?status=unread"):
        assert local_path(safe) == safe
    for unsafe in (
        None,
        "",
        "https://evil.example/",
        "//evil.example/",
        "/\\evil.example/",
        "/\t/evil.example/",
        "/agents\n",
        "/agents\r\nSet-Cookie: x=1",
        "agents",
    ):
        assert local_path(unsafe) == "/", unsafe


class _FormFields(html.parser.HTMLParser):
    """The values a browser submits for a page's text inputs and text areas (a text area
    loses one line feed just after its start tag, and sends its lines ended by CRLF)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.values: dict[str, str] = {}
        self._area: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        if tag == "textarea":
            self._area = named.get("name")
            self.values[self._area or ""] = ""
        elif tag == "input" and named.get("name"):
            self.values[str(named["name"])] = named.get("value") or ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "textarea" and self._area is not None:
            text = self.values[self._area].removeprefix("\n")
            self.values[self._area] = text.replace("\r\n", "\n").replace("\n", "\r\n")
            self._area = None

    def handle_data(self, data: str) -> None:
        if self._area is not None:
            self.values[self._area] += data


async def test_approving_the_review_form_unchanged_is_no_edit(browser, make_account) -> None:
    """A body opening with a line feed, or with CRLF line ends, goes through the review form
    as it was held: approving without touching it edits nothing."""
    alice = await make_account("alice@example.com")
    await local_agent(alice, "careful")
    made = await alice.http.put(agent_path("careful@agents.test"), json={"hitl_enabled": True})
    assert made.status_code == 200, made.text
    body = "\nHello,\r\nCRLF line endings\r\n"
    sent = await alice.http.post(
        "/api/v1/send",
        json={"from": "careful@agents.test", "to": ["x@example.org"], "subject": "S", "body": body},
    )
    assert sent.status_code == 202, sent.text
    message_id = sent.json()["message_id"]
    client = browser()
    assert (await sign_in(client, alice.key)).status_code == 303
    page = await client.get(f"/approvals/{message_id}")
    fields = _FormFields()
    fields.feed(page.text)
    assert fields.values["body_text"].replace("\r\n", "\n") == body.replace("\r\n", "\n")
    approved = await client.post(f"/approvals/{message_id}/approve", data=fields.values)
    assert approved.status_code == 303, approved.text
    message = (await alice.http.get(f"/api/v1/messages/{message_id}")).json()
    assert message["edited"] is False


async def test_a_refused_review_form_keeps_the_reviewers_edits(browser, make_account) -> None:
    """An approval the rules refuse (here a mistyped address) shows the review form again with
    what the reviewer typed, so fixing the mistake does not mean rewriting every edit."""
    alice = await make_account("alice@example.com")
    await local_agent(alice, "drafter")
    made = await alice.http.put(agent_path("drafter@agents.test"), json={"hitl_enabled": True})
    assert made.status_code == 200, made.text
    sent = await alice.http.post(
        "/api/v1/send",
        json={
            "from": "drafter@agents.test",
            "to": ["x@example.org"],
            "subject": "Offer",
            "body": "We can go as low as 9,000 USD.",
        },
    )
    assert sent.status_code == 202, sent.text
    message_id = sent.json()["message_id"]
    client = browser()
    assert (await sign_in(client, alice.key)).status_code == 303
    fields = _FormFields()
    fields.feed((await client.get(f"/approvals/{message_id}")).text)
    typed = {
        "to": "x@example.org, bob@",
        "cc": "carol@example.org",
        "subject": "Our offer",
        "body_text": "Our price is 12,000 USD.\r\nBest regards\r\n",
    }
    refused = await client.post(f"/approvals/{message_id}/approve", data={**fields.values, **typed})
    assert refused.status_code == 400, refused.text
    assert "to: " in refused.text
    shown = _FormFields()
    shown.feed(refused.text)
    assert {name: shown.values[name] for name in typed} == typed
    message = (await alice.http.get(f"/api/v1/messages/{message_id}")).json()
    assert message["status"] == "pending_approval" and message["subject"] == "Offer"
    fixed = await client.post(
        f"/approvals/{message_id}/approve", data={**shown.values, "to": "x@example.org"}
    )
    assert fixed.status_code == 303, fixed.text
    message = (await alice.http.get(f"/api/v1/messages/{message_id}")).json()
    assert (message["subject"], message["cc"], message["edited"]) == (
        "Our offer",
        ["carol@example.org"],
        True,
    )


async def test_a_bad_approval_time_is_refused_with_the_api_message(browser, make_account) -> None:
    alice = await make_account("alice@example.com")
    address = await local_agent(alice, "timer")
    client = browser()
    assert (await sign_in(client, alice.key)).status_code == 303
    token = await session_csrf(client)
    for typed, says in (
        ("soon", "valid integer"),
        ("0", "greater than or equal to 1"),
        ("9" * 5000, "less than or equal to 604800"),  # past Python's 4300-digit int() limit
    ):
        response = await client.post(
            f"/agents/{quote(address, safe='')}",
            data={"agent_mode": "local", "hitl_ttl_seconds": typed, "csrf_token": token},
        )
        assert response.status_code == 400
        assert says in response.text and "hitl_ttl_seconds" in response.text


class _Checked(html.parser.HTMLParser):
    """The names of a page's checked check boxes."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.names: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        if tag == "input" and named.get("type") == "checkbox" and "checked" in named:
            self.names.add(str(named.get("name")))


async def test_refused_agent_settings_come_back_as_typed(browser, make_account) -> None:
    """Settings the rules refuse come back in the form as they were typed: turning approval on
    with a mistyped time must not show the box unchecked again, or correcting the time and
    saving would leave the agent sending unreviewed."""
    alice = await make_account("alice@example.com")
    address = await local_agent(alice, "guarded")
    client = browser()
    assert (await sign_in(client, alice.key)).status_code == 303
    typed = {
        "name": "Guarded bot",
        "agent_mode": "local",
        "hitl_enabled": "on",
        "hitl_ttl_seconds": "1h",
        "hitl_expiration_action": "approve",
        "csrf_token": await session_csrf(client),
    }
    refused = await client.post(f"/agents/{quote(address, safe='')}", data=typed)
    assert refused.status_code == 400 and "hitl_ttl_seconds" in refused.text
    fields, checked = _FormFields(), _Checked()
    fields.feed(refused.text)
    checked.feed(refused.text)
    assert (fields.values["name"], fields.values["hitl_ttl_seconds"]) == ("Guarded bot", "1h")
    assert "hitl_enabled" in checked.names and "approval_notifications" not in checked.names
    assert 'value="approve" selected' in refused.text
    agent = (await alice.http.get(agent_path(address))).json()
    assert (agent["hitl_enabled"], agent["name"]) == (False, "guarded")


async def test_the_approval_list_says_what_its_preview_leaves_out(browser, make_account) -> None:
    """The reviewer's screen previews the text part only, beside a one-click Approve: a held
    message's HTML part (what most mail programs show) and attachments must not go out
    unmentioned."""
    alice = await make_account("alice@example.com")
    address = await local_agent(alice, "invoicer")
    held = await alice.http.put(agent_path(address), json={"hitl_enabled": True})
    assert held.status_code == 200, held.text
    sent = await alice.http.post(
        "/api/v1/send",
        json={
            "to": ["x@example.org"],
            "subject": "Lunch",
            "body": "",
            "html_body": "<p>Wire 9,000 USD today</p>",
            "attachments": [
                {"filename": "invoice.pdf", "content_type": "application/pdf", "data": "aGk="}
            ],
        },
    )
    assert sent.status_code == 202, sent.text
    message_id = sent.json()["message_id"]
    client = browser()
    assert (await sign_in(client, alice.key)).status_code == 303
    page = await client.get("/approvals")
    assert page.status_code == 200
    card = page.text[page.text.index(f'id="subject-{message_id}"') :]
    assert "no text part" in card
    assert "HTML part" in card and f'href="/approvals/{message_id}"' in card
    assert "invoice.pdf" in card


def outbound_row(
    user_id: str, agent_email: str, subject: str, status: str, epoch: float, **fields: Any
) -> OutboundMessage:
    """An outbound message of `agent_email`, as storage keeps it, made at `epoch`, with
    `fields` as given."""
    message_id = new_id("msg")
    message = OutboundMessage(
        id=message_id,
        user_id=user_id,
        agent_email=agent_email,
        kind="send",
        to=["x@example.org"],
        cc=[],
        bcc=[],
        subject=subject,
        body_text=None,
        body_html=None,
        attachments=None,
        conversation_id=None,
        in_reply_to=None,
        references=[],
        email_message_id=f"<{message_id}@agents.test>",
        status=status,  # type: ignore[arg-type]
        approval_expires_at=None,
        created_at=format_timestamp(epoch),
        created_epoch=epoch,
    )
    return dataclasses.replace(message, **fields)


def watch_outbound_reads(
    storage: Any, monkeypatch: pytest.MonkeyPatch, most: int = 4_000, page: int = 201
) -> list[str]:
    """Record what `storage` is asked for a user's outbound mail from now on (the workers'
    reads, by no user, aside): the name of each whole message read, and a note of each summary
    page read (failing on one of more than `page` summaries, or with a summary larger than
    `most` characters)."""
    reads: list[str] = []

    def whole(name: str) -> Any:
        method = getattr(storage, name)

        async def read(user_id: str | None, *args: Any, **kwargs: Any) -> Any:
            if user_id is not None:
                reads.append(name)
            return await method(user_id, *args, **kwargs)

        return read

    summaries = storage.outbound_summaries

    async def summary_page(*args: Any, **kwargs: Any) -> Any:
        found = await summaries(*args, **kwargs)
        limit = args[3] if len(args) > 3 else kwargs["limit"]
        assert len(found) <= limit <= page  # a page, and one more to know whether one follows
        for summary in found:
            assert len(repr(summary)) < most, repr(summary)[:300]
        reads.append(f"summaries of {len(found)}")
        return found

    for name in ("list_outbound", "get_outbound"):
        monkeypatch.setattr(storage, name, whole(name))
    monkeypatch.setattr(storage, "outbound_summaries", summary_page)
    return reads


def page_link(html: str, path: str) -> str | None:
    """The address of the page `html` links to at `path` with a `page` token, if any."""
    found = re.search(rf'href="({re.escape(path)}\?[^"]*page=[^"]+)"', html)
    return found.group(1).replace("&amp;", "&") if found else None


async def test_the_outbound_page_shows_the_latest_mail_a_page_at_a_time(
    browser, make_account, running: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """However much mail was sent, the page shows the newest 200, read as summaries (never
    whole messages), and links to the older ones, its filter kept."""
    alice = await make_account("alice@example.com")
    address = await local_agent(alice, "busy")
    storage = running.gateway.storage
    user = await storage.user_for_key_hash(hash_api_key(alice.key))
    assert user is not None
    start = time.time() - 10_000
    for number in range(501):
        row = outbound_row(user.id, address, f"number {number:03d}", "sent", start + number)
        await storage.add_outbound(row)
    client = browser()
    assert (await sign_in(client, alice.key)).status_code == 303
    reads = watch_outbound_reads(storage, monkeypatch)
    page = await client.get("/outbound")
    assert page.status_code == 200
    assert "number 500" in page.text and "number 301" in page.text
    assert "number 300" not in page.text and "number 000" not in page.text
    assert page.text.index("number 500") < page.text.index("number 499")
    assert reads == ["summaries of 201"]
    filtered = await client.get("/outbound", params={"status": "sent", "agent": address})
    older = page_link(filtered.text, "/outbound")
    assert older is not None and "status=sent" in older and "agent=" in older
    second = await client.get(older)
    assert "number 300" in second.text and "number 101" in second.text
    assert "number 301" not in second.text and "number 100" not in second.text
    last = page_link(second.text, "/outbound")
    assert last is not None
    third = await client.get(last)
    assert "number 100" in third.text and "number 000" in third.text
    assert page_link(third.text, "/outbound") is None
    assert not [read for read in reads if not read.startswith("summaries")]


async def test_the_approval_list_reads_a_page_of_summaries(
    browser, make_account, running: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many large held messages: the reviewer's screen reads one page of them, soonest
    deadline first, without their bodies or attachments' contents (only a preview of the text
    and the attachments' names), and links to the next page."""
    alice = await make_account("alice@example.com")
    address = await local_agent(alice, "careful")
    storage = running.gateway.storage
    user = await storage.user_for_key_hash(hash_api_key(alice.key))
    assert user is not None
    now = time.time()
    for number in range(30):
        attachment = {
            "filename": f"file{number:02d}.pdf",
            "content_type": "application/pdf",
            "data": "QUJD" * 50_000,
        }
        row = outbound_row(
            user.id,
            address,
            f"held {number:02d}",
            "pending_approval",
            now - number,
            approval_expires_at=now + 3_600 + number,
            body_text=f"TEXT {number:02d} " + "long words " * 20_000,
            body_html="<p>" + "html " * 20_000 + "</p>",
            attachments=[attachment],
        )
        await storage.add_outbound(row)
    client = browser()
    assert (await sign_in(client, alice.key)).status_code == 303
    reads = watch_outbound_reads(storage, monkeypatch)
    page = await client.get("/approvals")
    assert page.status_code == 200
    assert reads == ["summaries of 26"]
    assert "held 00" in page.text and "held 24" in page.text and "held 25" not in page.text
    assert page.text.index("held 00") < page.text.index("held 01")
    card = page.text[page.text.index("held 00") :]
    assert "TEXT 00 long words" in card and "more characters" in card
    assert "HTML part" in card and "file00.pdf" in card and "QUJD" not in page.text
    later = page_link(page.text, "/approvals")
    assert later is not None
    second = await client.get(later)
    assert "held 25" in second.text and "held 29" in second.text
    assert "held 24" not in second.text
    assert page_link(second.text, "/approvals") is None
    assert not [read for read in reads if not read.startswith("summaries")]


async def test_a_form_holding_nul_is_refused(browser, make_account) -> None:
    """NUL (U+0000) is what no store keeps (PostgreSQL text cannot hold it): a form field
    holding one is refused with 400 before anything is made or changed, as a JSON body is."""
    alice = await make_account("alice@example.com")
    address = await local_agent(alice, "nul")
    client = browser()
    assert (await sign_in(client, alice.key)).status_code == 303
    token = await session_csrf(client)
    keys_before = (await alice.http.get("/api/v1/users/me/api-keys")).json()
    for path, data in (
        (f"/agents/{quote(address, safe='')}", {"name": "a\x00b", "agent_mode": "local"}),
        ("/credentials/api-keys", {"name": "ci\x00"}),
        ("/credentials/signing-secrets", {"name": "\x00"}),
        ("/agents", {"address": "fresh", "name": "x", "agent_mode": "local", "n\x00": "1"}),
    ):
        response = await client.post(path, data={**data, "csrf_token": token})
        assert response.status_code == 400, (path, response.text[:300])
        assert response.headers["content-type"].startswith("text/html")
        assert "NUL" in response.text
    agent = (await alice.http.get(agent_path(address))).json()
    assert agent["name"] != "a\x00b"
    assert (await alice.http.get("/api/v1/users/me/api-keys")).json() == keys_before
    assert (await alice.http.get(agent_path("fresh@agents.test"))).status_code == 404


async def test_only_a_refused_session_cookie_is_deleted(browser, make_account) -> None:
    """A request without the session cookie (a link followed from another site, which the
    SameSite=Strict cookie does not accompany) must not delete the browser's session; a cookie
    that was sent and refused is deleted. Signed in, the sign-in page leads on to `next`."""
    alice = await make_account("alice@example.com")
    client = browser()
    bare = await client.get("/approvals")
    assert bare.status_code == 303 and bare.headers["location"] == "/signin?next=/approvals"
    assert "e2a_session" not in " ".join(bare.headers.get_list("set-cookie"))
    client.cookies.set("e2a_session", "garbage")
    refused = await client.get("/approvals")
    assert refused.status_code == 303
    assert "Max-Age=0" in set_cookie_header(refused, "e2a_session")
    client.cookies.clear()
    assert (await sign_in(client, alice.key)).status_code == 303
    onward = await client.get("/signin", params={"next": "/approvals"})
    assert onward.status_code == 303 and onward.headers["location"] == "/approvals"


def assert_guarded(response: httpx.Response) -> None:
    """The dashboard's security headers are on `response`."""
    where = f"{response.request.method} {response.request.url.path} ({response.status_code})"
    policy = [
        part.strip() for part in response.headers.get("content-security-policy", "").split(";")
    ]
    for directive in ("frame-ancestors 'none'", "base-uri 'none'", "form-action 'self'"):
        assert directive in policy, (where, policy)
    assert response.headers.get("x-frame-options") == "DENY", where
    assert response.headers.get("x-content-type-options") == "nosniff", where
    assert response.headers.get("referrer-policy") == "same-origin", where


async def test_every_dashboard_answer_carries_the_security_headers(
    browser, make_account, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Redirects (sign-in's, which sets the session cookie, above all), the event stream, the
    dashboard's own files and its error pages are dashboard answers too: each carries the
    security headers, and an error is a page saying what went wrong, never JSON for a program
    nor a stack trace."""
    alice = await make_account("alice@example.com")
    address = quote(await local_agent(alice, "guarded"), safe="")
    client = browser()
    assert_guarded(await client.get("/agents"))  # 303 to the sign-in page
    signed_in = await sign_in(client, alice.key)
    assert signed_in.status_code == 303 and "e2a_session=" in signed_in.headers["set-cookie"]
    assert_guarded(signed_in)
    assert signed_in.headers["cache-control"] == "no-store"  # a cookie-setting redirect
    assert_guarded(await client.get("/"))
    assert_guarded(await client.get("/assets/dashboard.js"))
    async with client.stream("GET", f"/agents/{address}/events") as stream:
        assert stream.status_code == 200
        assert_guarded(stream)
    for path, status in (
        ("/assets/missing.css", 404),  # a dashboard route that found nothing
        ("/signout", 405),  # a dashboard path, wrong method
        ("/agents/guarded%40agents.test/nothing-here", 404),  # a dashboard path, no route
    ):
        response = await client.get(path)
        assert response.status_code == status, path
        assert response.headers["content-type"].startswith("text/html"), path
        assert "That did not work" in response.text, path
        assert_guarded(response)
    assert (await client.get("/signout")).headers["allow"]  # still says which methods do

    def broken(*args: object, **kwargs: object) -> object:
        raise RuntimeError("a bug in the agent list")

    monkeypatch.setattr("e2a_gateway.dashboard.agents.agent_page", broken)
    with caplog.at_level(logging.ERROR, logger="e2a"):
        crashed = await client.get("/agents")
    assert crashed.status_code == 500
    assert crashed.headers["content-type"].startswith("text/html")
    assert "gateway log has details" in crashed.text and "RuntimeError" not in crashed.text
    assert_guarded(crashed)
    assert "a bug in the agent list" in caplog.text  # the log has them
    # The API's own answers stay JSON.
    missing = await alice.http.get("/api/v1/nothing-here")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


async def test_a_huge_text_body_is_shown_in_part(
    browser, make_account, running: RunningGateway
) -> None:
    """A message with megabytes of text would stall the browser that renders it: the message
    page shows its beginning and says how much more the raw source holds; the reviewer's list
    previews a held message's beginning and says the rest is on its review page."""
    alice = await make_account("alice@example.com")
    address = await local_agent(alice, "bulky")
    line = "the quick brown fox jumps over the lazy dog " * 2 + "\r\n"
    text = "FIRST LINE\r\n" + line * (3_000_000 // len(line)) + "LAST LINE\r\n"
    raw = f"From: carol@example.org\r\nTo: {address}\r\nSubject: Bulky\r\n\r\n{text}".encode()

    def send_mail() -> None:
        with smtplib.SMTP(running.addresses.smtp_host, running.addresses.smtp_port) as smtp:
            smtp.sendmail("carol@example.org", [address], raw)

    await trio.to_thread.run_sync(send_mail)
    client = browser()
    assert (await sign_in(client, alice.key)).status_code == 303
    inbox = await client.get(f"/agents/{quote(address, safe='')}/inbox")
    message_id = re.search(r'data-id="([^"]+)"', inbox.text)
    assert message_id is not None
    page = await client.get(f"/agents/{quote(address, safe='')}/inbox/{message_id.group(1)}")
    assert page.status_code == 200
    assert len(page.content) < 300_000
    assert "FIRST LINE" in page.text and "LAST LINE" not in page.text
    assert "more characters" in page.text and "raw source" in page.text

    held = await alice.http.put(agent_path(address), json={"hitl_enabled": True})
    assert held.status_code == 200, held.text
    sent = await alice.http.post(
        "/api/v1/send",
        json={"to": ["x@example.org"], "subject": "Long", "body": "OPENING\n" + "words " * 200_000},
    )
    assert sent.status_code == 202, sent.text
    approvals = await client.get("/approvals")
    assert approvals.status_code == 200
    assert len(approvals.content) < 50_000
    card = approvals.text[approvals.text.index(f'id="subject-{sent.json()["message_id"]}"') :]
    assert "OPENING" in card and "more characters" in card
    assert f'href="/approvals/{sent.json()["message_id"]}"' in card
    review = await client.get(f"/approvals/{sent.json()['message_id']}")
    assert review.text.count("words ") == 200_000  # the review form edits all of it


async def test_a_head_request_marks_no_message_read(
    browser, make_account, running: RunningGateway
) -> None:
    """HEAD asks what a GET would answer and changes nothing: neither the message page nor
    its raw download marks the message read that way; a GET of either does."""
    alice = await make_account("alice@example.com")
    address = await local_agent(alice, "peeked")

    def send_mail() -> None:
        with smtplib.SMTP(running.addresses.smtp_host, running.addresses.smtp_port) as smtp:
            smtp.sendmail(
                "carol@example.org",
                [address],
                f"From: carol@example.org\r\nTo: {address}\r\nSubject: Peek\r\n\r\nHi\r\n",
            )

    await trio.to_thread.run_sync(send_mail)
    client = browser()
    assert (await sign_in(client, alice.key)).status_code == 303
    inbox = f"/agents/{quote(address, safe='')}/inbox"
    found = re.search(r'data-id="([^"]+)"', (await client.get(inbox)).text)
    assert found is not None
    message = f"{inbox}/{found.group(1)}"

    async def unread() -> bool:
        listed = await client.get(inbox, params={"status": "unread"})
        return f'data-id="{found.group(1)}"' in listed.text

    for path in (message, f"{message}/raw"):
        looked = await client.head(path)
        assert looked.status_code == 200
        assert await unread(), path
    raw = await client.get(f"{message}/raw")
    assert raw.status_code == 200 and b"Subject: Peek" in raw.content
    assert not await unread()


HOSTILE = "<img src=x onerror=alert(1)><script>alert(2)</script>\"'"
"""Markup a sender or an agent puts where the dashboard shows text."""


class _Markup(html.parser.HTMLParser):
    """The elements and event-handler attributes a page's markup holds."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text += data


def assert_inert(page: httpx.Response) -> str:
    """`page` (200) holds no markup but the dashboard's own: its one script, from the
    dashboard, no image, no event handler; the text it shows is returned."""
    assert page.status_code == 200, page.text[:300]
    markup = _Markup()
    markup.feed(page.text)
    scripts = [attrs.get("src") for tag, attrs in markup.tags if tag == "script"]
    assert scripts == ["/assets/dashboard.js"], scripts
    assert not [tag for tag, _ in markup.tags if tag in ("img", "iframe", "object", "embed")]
    handlers = [name for _, attrs in markup.tags for name in attrs if name.startswith("on")]
    assert not handlers, handlers
    return markup.text


async def test_mail_and_names_are_shown_as_text_never_as_markup(
    browser, make_account, running: RunningGateway
) -> None:
    """What senders and agents write — a subject, a sender's name, a body, an attachment's
    name, an HTML part, an agent's name, a held message's subject — shows as the text it is,
    on every page that shows it, never as markup the browser would run."""
    alice = await make_account("alice@example.com")
    address = await local_agent(alice, "shown")
    named = await alice.http.put(agent_path(address), json={"name": HOSTILE, "hitl_enabled": True})
    assert named.status_code == 200, named.text
    raw = (
        f'From: "{HOSTILE[:40]}" <carol@example.org>\r\nTo: {address}\r\nSubject: {HOSTILE}\r\n'
        'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
        f"--b\r\nContent-Type: text/plain\r\n\r\n{HOSTILE}\r\n"
        f"--b\r\nContent-Type: text/html\r\n\r\n<p>{HOSTILE}</p>\r\n"
        "--b\r\nContent-Type: application/octet-stream\r\n"
        f'Content-Disposition: attachment; filename="<img src=x onerror=alert(3)>.txt"\r\n\r\n'
        "data\r\n--b--\r\n"
    )

    def send() -> None:
        with smtplib.SMTP(running.addresses.smtp_host, running.addresses.smtp_port) as smtp:
            smtp.sendmail("carol@example.org", [address], raw.encode())

    await trio.to_thread.run_sync(send)
    listed = (await alice.http.get(agent_path(address, "/messages"))).json()
    message_id = listed["messages"][0]["message_id"]
    held = await alice.http.post(
        "/api/v1/send",
        json={"from": address, "to": ["x@example.org"], "subject": HOSTILE, "body": HOSTILE},
    )
    assert held.status_code == 202, held.text
    client = browser()
    assert (await sign_in(client, alice.key)).status_code == 303
    mailbox = quote(address, safe="")
    assert HOSTILE in assert_inert(await client.get("/agents"))
    settings = await client.get(f"/agents/{mailbox}")
    assert_inert(settings)
    fields = _FormFields()
    fields.feed(settings.text)
    assert fields.values["name"] == HOSTILE
    assert HOSTILE in assert_inert(await client.get(f"/agents/{mailbox}/inbox"))
    shown = assert_inert(await client.get(f"/agents/{mailbox}/inbox/{message_id}"))
    assert HOSTILE in shown and "<img src=x onerror=alert(3)>.txt" in shown
    assert HOSTILE in assert_inert(await client.get("/approvals"))
    assert HOSTILE in assert_inert(await client.get(f"/approvals/{held.json()['message_id']}"))
    assert HOSTILE in assert_inert(await client.get("/outbound"))


REORDERED = "\u202emoc.knab@"
"""A right-to-left override in what a sender writes: `"‮moc.knab@"@evil.example`, shown as
it is, reads as `"elpmaxe.live@"@bank.com`, and `Invoice ‮fdp.exe` as `Invoice exe.pdf`."""
_REORDERING = re.compile("[\u202a-\u202e\u2066-\u2069]")


async def test_text_that_would_reorder_itself_is_shown_in_its_real_order(
    browser, make_account, running: RunningGateway
) -> None:
    """A sender's address, a subject and a body holding bidirectional embeddings, overrides or
    isolates show them as U+FFFD on every page and in the live inbox's events, so they cannot
    make an address or a file name read as another; the review form keeps a held message's
    subject exactly, so approving it unchanged edits nothing."""
    alice = await make_account("alice@example.com")
    address = await local_agent(alice, "bidi")
    made = await alice.http.put(agent_path(address), json={"hitl_enabled": True})
    assert made.status_code == 200, made.text
    raw = (
        f'From: "Bank" <"{REORDERED}"@evil.example>\r\nTo: {address}\r\n'
        "Subject: Invoice \u2067fdp.exe\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\nPay \u202dnow\r\n"
    ).encode()

    def send() -> None:
        with smtplib.SMTP(running.addresses.smtp_host, running.addresses.smtp_port) as smtp:
            smtp.ehlo()
            smtp.sendmail("carol@example.org", [address], raw, mail_options=["SMTPUTF8"])

    await trio.to_thread.run_sync(send)
    listed = (await alice.http.get(agent_path(address, "/messages"))).json()
    [message] = listed["messages"]
    assert message["from"] == f'"{REORDERED}"@evil.example'  # the API keeps it as received
    held = await alice.http.post(
        "/api/v1/send",
        json={"from": address, "to": ["x@example.org"], "subject": "Re \u202efdp.exe", "body": "x"},
    )
    assert held.status_code == 202, held.text
    held_id = held.json()["message_id"]
    client = browser()
    assert (await sign_in(client, alice.key)).status_code == 303
    mailbox = quote(address, safe="")
    for path in (
        f"/agents/{mailbox}/inbox",
        f"/agents/{mailbox}/inbox/{message['message_id']}",
        "/approvals",
        "/outbound",
    ):
        shown = assert_inert(await client.get(path))
        assert not _REORDERING.search(shown), (path, ascii(shown))
        assert "\ufffd" in shown, path
    review = await client.get(f"/approvals/{held_id}")
    assert not _REORDERING.search(assert_inert(review))
    fields = _FormFields()
    fields.feed(review.text)
    assert fields.values["subject"] == "Re \u202efdp.exe"
    approved = await client.post(f"/approvals/{held_id}/approve", data=fields.values)
    assert approved.status_code == 303, approved.text
    assert (await alice.http.get(f"/api/v1/messages/{held_id}")).json()["edited"] is False

    with trio.fail_after(10):
        async with client.stream("GET", f"/agents/{mailbox}/events?status=all") as stream:
            async for line in stream.aiter_lines():
                if line.startswith("data: {"):
                    frame = json.loads(line[len("data: ") :])
                    break
    assert frame["message_id"] == message["message_id"]
    assert frame["from"] == '"\ufffdmoc.knab@"@evil.example'
    assert frame["subject"] == "Invoice \ufffdfdp.exe"


async def test_the_message_page_says_where_answers_go(
    browser, make_account, running: RunningGateway
) -> None:
    """A message whose Reply-To names another address than its From shows that address: the
    agent's replies go there, not to the sender the page names."""
    alice = await make_account("alice@example.com")
    address = await local_agent(alice, "answers")
    raw = (
        f"From: Bank <support@bank.example>\r\nReply-To: Bank <collect@evil.example>\r\n"
        f"To: {address}\r\nSubject: Your account\r\n\r\nPlease confirm.\r\n"
    ).encode()

    def send() -> None:
        with smtplib.SMTP(running.addresses.smtp_host, running.addresses.smtp_port) as smtp:
            smtp.sendmail("support@bank.example", [address], raw)

    await trio.to_thread.run_sync(send)
    [message] = (await alice.http.get(agent_path(address, "/messages"))).json()["messages"]
    client = browser()
    assert (await sign_in(client, alice.key)).status_code == 303
    page = await client.get(f"/agents/{quote(address, safe='')}/inbox/{message['message_id']}")
    shown = " ".join(assert_inert(page).split())
    assert "Reply-Tocollect@evil.example (where replies go)" in shown, shown
