"""Cross-tenant isolation, route by route, over real HTTP: account B naming one of account A's
records is answered exactly as when it names one never made. A's id in the path (`/api/v1`,
`/v1`, the dashboard) is 404 `not_found` in the JSON error shape, never 403, which would tell B
it exists; A's id inside a body or query (a template, a webhook's filters, `from`, an event's
webhook, a conversation) gets the same answer as an unknown one; listings filtered by A's ids,
or continued from A's cursors, show none of A's records; an Idempotency-Key A used is B's to
use afresh; every MCP tool taking an id answers alike; and after all of it A's records are as
they were. An agent key of A reaches its own agent's records only, not A's other agent's by id
under its own agent's path (naming the other agent itself is 403 `forbidden`, within the one
account: tests/test_key_scopes.py). A key A revoked reaches none of A's records (401), and no
socket of A's agents opens for B. Every route of the URL map with a path parameter is among
the cases (or says why it names no account's record), so a new route cannot go untried; and
every MCP tool with an argument naming a record is called."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from functools import cache
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import trio
from trio_websocket import ConnectionRejected, open_websocket_url

from e2a_gateway.ids import new_id
from e2a_gateway.signing.credentials import hash_api_key
from tests.conftest import Account, make_settings
from tests.delivery_support import (
    QuietGateway,
    agent_scoped_client,
    create_agent,
    open_account,
    quiet_gateway,
    store_with_conversation,
)
from tests.mcp_support import mcp_client
from tests.test_dashboard import session_csrf, sign_in
from tests.webhook_support import store_received

HOOK_URL = "http://127.0.0.1:9/hook"
"""A webhook target nothing listens on (no worker runs: nothing is delivered)."""
SUPPRESSED = "gone@example.org"
TEMPLATE = {"name": "Shipped", "alias": "shipped", "subject": "Order {{id}}", "text": "Hi {{id}}"}


@pytest.fixture
def settings(tmp_path: Any) -> Any:
    """Webhook targets on loopback are allowed (the webhooks here are never delivered to)."""
    return make_settings(tmp_path, webhooks={"allow_private": True})


@pytest.fixture
async def quiet(settings: Any, resolver: Any) -> AsyncIterator[QuietGateway]:
    """A gateway running no worker: what is queued stays as it is."""
    async with quiet_gateway(settings, resolver) as opened:
        yield opened


def agent_v1(address: str, suffix: str = "") -> str:
    return f"/v1/agents/{quote(address, safe='')}{suffix}"


def agent_api(address: str, suffix: str = "") -> str:
    return f"/api/v1/agents/{quote(address, safe='')}{suffix}"


def created(answer: httpx.Response) -> dict[str, Any]:
    assert answer.status_code in (200, 201, 202), answer.text
    body: dict[str, Any] = answer.json()
    return body


@dataclass
class Tenant:
    """Account A with one of everything: two agents (`bot` with mail received, sent and held,
    in conversation `conversation`; `other` with mail of its own), a webhook, a domain, a
    template, a second key, a signing secret, events, a suppression of `bot`'s and one of the
    account's (`suppressed`)."""

    account: Account
    bot: str
    other: str
    received: str
    other_received: str
    held_inbound: str
    sent: str
    held: str
    conversation: str
    webhook: str
    domain: str
    template: str
    key_id: str
    secret_id: str
    event: str
    cloud: str
    suppressed: str


async def furnished(quiet: QuietGateway, email: str, prefix: str) -> Tenant:
    account = await open_account(quiet.gateway, quiet.http_url, email)
    http = account.http
    bot = await create_agent(account, f"{prefix}-bot")
    other = await create_agent(account, f"{prefix}-other")
    conversation = f"conv-{prefix}"
    received = await store_with_conversation(
        quiet.gateway, bot, conversation, rfc_message_id=f"<{prefix}-1@example.org>"
    )
    other_received = await store_with_conversation(quiet.gateway, other, None)
    held_inbound = await store_received(
        quiet, bot, time.time(), "Held in", hold_expires_at=time.time() + 3600
    )
    body = {"to": ["dave@example.org"], "subject": "Out", "text": "Hello"}
    sent = created(await http.post(agent_v1(bot, "/messages"), json=body))["message_id"]
    created(await http.put(agent_api(other), json={"hitl_enabled": True}))
    held = created(await http.post(agent_v1(other, "/messages"), json=body))
    assert held["status"] == "pending_review", held
    webhook = created(
        await http.post("/v1/webhooks", json={"url": HOOK_URL, "events": ["email.received"]})
    )["id"]
    domain = f"{prefix}-corp.example"
    created(await http.post("/v1/domains", json={"domain": domain}))
    template = created(await http.post("/v1/templates", json=TEMPLATE))["id"]
    key_id = created(await http.post("/v1/account/api-keys", json={"name": "spare"}))["id"]
    secret = await http.post("/api/v1/users/me/signing-secrets", json={"name": "s"})
    secret_id = created(secret)["id"]
    created(await http.post(agent_v1(bot, "/suppressions"), json={"address": SUPPRESSED}))
    events = created(await http.get("/v1/events"))["items"]
    assert events, "A's mail logged no event"
    return Tenant(
        account,
        bot,
        other,
        received,
        other_received,
        held_inbound,
        sent,
        held["message_id"],
        conversation,
        webhook,
        domain,
        template,
        key_id,
        secret_id,
        events[0]["id"],
        await create_agent(account, f"{prefix}-cloud", webhook_url=HOOK_URL),
        await suppressed_for_the_account(quiet, account, f"{prefix}-gone@example.org"),
    )


async def suppressed_for_the_account(quiet: QuietGateway, account: Account, address: str) -> str:
    """Suppress `address` for all of `account`'s agents (as a hard bounce would); return it."""
    holder = await quiet.gateway.storage.key_holder(hash_api_key(account.key))
    assert holder is not None
    await quiet.gateway.storage.add_suppression(holder.user.id, None, address, None, time.time())
    return address


@dataclass
class Pair:
    a: Tenant
    b: Tenant
    quiet: QuietGateway


@pytest.fixture
async def pair(quiet: QuietGateway) -> AsyncIterator[Pair]:
    a = await furnished(quiet, "alice@example.com", "alice")
    b = await furnished(quiet, "bob@example.com", "bob")
    try:
        yield Pair(a, b, quiet)
    finally:
        await a.account.http.aclose()
        await b.account.http.aclose()


def by_a_stranger(
    a: Tenant, b: Tenant, protection: dict[str, Any]
) -> list[tuple[str, str, dict[str, Any] | None]]:
    """Every route naming one of A's ids, as B would send it: A's agent in the path, or B's own
    agent with A's message, conversation or address."""
    send = {"to": ["dave@example.org"], "subject": "s", "text": "t"}
    requests: list[tuple[str, str, dict[str, Any] | None]] = []
    # /api/v1, A's agent in the path
    for method, suffix, body in [
        ("GET", "", None),
        ("PUT", "", {"name": "mine"}),
        ("DELETE", "", None),
        ("GET", "/messages", None),
        ("GET", f"/messages/{a.received}", None),
        ("POST", f"/messages/{a.received}/reply", {"body": "hi"}),
        ("POST", "/test", None),
        ("GET", "/dead-letters", None),
        ("POST", "/dead-letters/redeliver", None),
        ("POST", f"/dead-letters/{a.received}/redeliver", None),
        ("GET", "/ws", None),
    ]:
        requests.append((method, agent_api(a.bot, suffix), body))
    # /api/v1, B's agent with A's message
    for method, suffix, body in [
        ("GET", f"/messages/{a.received}", None),
        ("GET", f"/messages/{a.held_inbound}", None),
        ("POST", f"/messages/{a.received}/reply", {"body": "hi"}),
    ]:
        requests.append((method, agent_api(b.bot, suffix), body))
    requests.append(("POST", agent_api(b.cloud, f"/dead-letters/{a.received}/redeliver"), None))
    # /api/v1, account-wide ids
    for message in (a.sent, a.held, a.held_inbound):
        requests += [
            ("GET", f"/api/v1/messages/{message}", None),
            ("POST", f"/api/v1/messages/{message}/approve", None),
            ("POST", f"/api/v1/messages/{message}/reject", None),
        ]
    requests += [
        ("DELETE", f"/api/v1/domains/{a.domain}", None),
        ("POST", f"/api/v1/domains/{a.domain}/verify", None),
        ("DELETE", f"/api/v1/users/me/api-keys/{a.key_id}", None),
        ("DELETE", f"/api/v1/users/me/signing-secrets/{a.secret_id}", None),
        (
            "POST",
            "/api/v1/send",
            {"from": a.bot, "to": ["d@example.org"], "subject": "s", "body": "t"},
        ),
    ]
    # /v1, A's agent in the path
    for method, suffix, body in [
        ("GET", "", None),
        ("PATCH", "", {"name": "mine"}),
        ("DELETE", "?confirm=DELETE", None),
        ("POST", "/restore", None),
        ("POST", "/test", None),
        ("GET", "/conversations", None),
        ("GET", f"/conversations/{a.conversation}", None),
        ("GET", "/messages", None),
        ("POST", "/messages", send),
        ("GET", f"/messages/{a.received}", None),
        ("PATCH", f"/messages/{a.received}", {"add_labels": ["x"]}),
        ("DELETE", f"/messages/{a.received}", None),
        ("POST", f"/messages/{a.received}/restore", None),
        ("GET", f"/messages/{a.received}/attachments/0", None),
        ("GET", f"/messages/{a.received}/lifecycle", None),
        ("POST", f"/messages/{a.received}/reply", {"text": "hi"}),
        ("POST", f"/messages/{a.received}/forward", {"text": "fw", "to": ["e@example.org"]}),
        ("GET", "/protection", None),
        ("PUT", "/protection", protection),
        ("GET", "/suppressions", None),
        ("POST", "/suppressions", {"address": "new@example.org"}),
        ("DELETE", f"/suppressions/{SUPPRESSED}?confirm=DELETE", None),
        ("GET", "/ws", None),
    ]:
        requests.append((method, agent_v1(a.bot, suffix), body))
    # /v1, B's agent with A's message or conversation
    for message in (a.received, a.sent, a.held, a.held_inbound):
        for method, suffix, body in [
            ("GET", f"/messages/{message}", None),
            ("PATCH", f"/messages/{message}", {"add_labels": ["x"]}),
            ("DELETE", f"/messages/{message}", None),
            ("POST", f"/messages/{message}/restore", None),
            ("GET", f"/messages/{message}/attachments/0", None),
            ("GET", f"/messages/{message}/lifecycle", None),
            ("POST", f"/messages/{message}/reply", {"text": "hi"}),
            ("POST", f"/messages/{message}/forward", {"text": "f", "to": ["e@example.org"]}),
        ]:
            requests.append((method, agent_v1(b.bot, suffix), body))
    requests.append(("GET", agent_v1(b.bot, f"/conversations/{a.conversation}"), None))
    # /v1, account-wide ids
    for message in (a.sent, a.held, a.held_inbound, a.received):
        requests += [
            ("GET", f"/v1/reviews/{message}", None),
            ("POST", f"/v1/reviews/{message}/approve", None),
            ("POST", f"/v1/reviews/{message}/reject", {"reason": "no"}),
        ]
    requests += [
        ("GET", f"/v1/webhooks/{a.webhook}", None),
        ("PATCH", f"/v1/webhooks/{a.webhook}", {"url": "http://127.0.0.1:9/b"}),
        ("DELETE", f"/v1/webhooks/{a.webhook}?confirm=DELETE", None),
        ("GET", f"/v1/webhooks/{a.webhook}/deliveries", None),
        ("POST", f"/v1/webhooks/{a.webhook}/rotate-secret", None),
        ("POST", f"/v1/webhooks/{a.webhook}/test", {"type": "email.received"}),
        ("GET", f"/v1/templates/{a.template}", None),
        ("PATCH", f"/v1/templates/{a.template}", {"name": "mine"}),
        ("DELETE", f"/v1/templates/{a.template}?confirm=DELETE", None),
        ("GET", f"/v1/domains/{a.domain}", None),
        ("DELETE", f"/v1/domains/{a.domain}?confirm=DELETE", None),
        ("POST", f"/v1/domains/{a.domain}/verify", None),
        ("GET", f"/v1/events/{a.event}", None),
        ("POST", f"/v1/events/{a.event}/redeliver", {}),
        ("POST", f"/v1/events/{a.event}/redeliver", {"webhook_id": b.webhook}),
        ("POST", f"/v1/events/{b.event}/redeliver", {"webhook_id": a.webhook}),
        ("DELETE", f"/v1/account/api-keys/{a.key_id}?confirm=DELETE", None),
        ("DELETE", f"/v1/account/suppressions/{a.suppressed}?confirm=DELETE", None),
        ("POST", "/v1/account/api-keys", {"name": "x", "scope": "agent", "agent_email": a.bot}),
        (
            "POST",
            agent_v1(b.bot, "/messages"),
            {"to": ["dave@example.org"], "template_id": a.template, "template_data": {"id": 1}},
        ),
    ]
    return requests


def ghost_of(a: Tenant) -> Tenant:
    """A's record with every id replaced by one of the same form that names nothing."""
    fresh = {
        name: new_id(str(value).split("_", 1)[0])
        for name, value in vars(a).items()
        if isinstance(value, str) and "_" in value and "@" not in value and name != "conversation"
    }
    return replace(
        a,
        **fresh,
        bot="ghost-bot@agents.test",
        other="ghost-other@agents.test",
        cloud="ghost-cloud@agents.test",
        conversation="conv-ghost",
        domain="ghost-corp.example",
        suppressed="ghost-gone@example.org",
    )


def said(answer: httpx.Response, a: Tenant, ghost: Tenant) -> tuple[int, Any]:
    """The status and JSON body of `answer`, each of A's ids in it read as the ghost's, and
    without the request's own id."""
    text = answer.text
    for name, value in vars(a).items():
        if isinstance(value, str):
            text = text.replace(value, str(getattr(ghost, name)))
            text = text.replace(quote(value, safe=""), quote(str(getattr(ghost, name)), safe=""))
    try:
        body = json.loads(text)
    except ValueError:
        return answer.status_code, text
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body["error"].pop("request_id", None)
    return answer.status_code, body


def said_alike(answers: list[tuple[int, Any]]) -> bool:
    """Whether the answers naming A's ids and ids never made are the same."""
    first, second = answers
    return first == second or (first[0] == second[0] == 201)


def named_in(path: str, a: Tenant) -> bool:
    """Whether `path` names one of A's records (else A's id is in the body only)."""
    return any(
        isinstance(value, str) and (value in path or quote(value, safe="") in path)
        for name, value in vars(a).items()
        if name != "account"
    )


async def test_another_account_names_none_of_the_first_accounts_ids(pair: Pair) -> None:
    a, b = pair.a, pair.b
    ghost = ghost_of(a)
    protection = created(await b.account.http.get(agent_v1(b.bot, "/protection")))
    wrong = []
    named = by_a_stranger(a, b, protection)
    unknown = by_a_stranger(ghost, b, protection)
    for (method, path, body), (_, ghost_path, ghost_body) in zip(named, unknown, strict=True):
        answer = await b.account.http.request(method, path, json=body)
        status, shown = said(answer, a, ghost)
        if named_in(path, a) and (
            status != 404
            or not isinstance(shown, dict)
            or not str(shown.get("error", {}).get("code")).endswith("not_found")
        ):
            wrong.append(f"{method} {path} {body}: {answer.status_code} {answer.text[:300]}")
            continue
        never = await b.account.http.request(method, ghost_path, json=ghost_body)
        if (status, shown) != said(never, a, ghost):
            wrong.append(
                f"{method} {path} {body}: {answer.status_code} {answer.text[:300]}, "
                f"but of ids never made: {never.status_code} {never.text[:300]}"
            )
    assert wrong == [], "\n".join(wrong)


def unchanging(body: Any) -> Any:
    """`body` without what A's own reading changes: when a key was last used."""
    if isinstance(body, dict):
        return {k: unchanging(v) for k, v in body.items() if k != "last_used_at"}
    if isinstance(body, list):
        return [unchanging(item) for item in body]
    return body


async def what_a_sees(a: Tenant) -> dict[str, Any]:
    """Every listing and record of A's, read by A without marking anything read."""
    paths = [
        "/v1/agents",
        "/v1/agents?deleted=true",
        "/v1/reviews",
        "/v1/webhooks",
        f"/v1/webhooks/{a.webhook}/deliveries",
        "/v1/templates",
        f"/v1/templates/{a.template}",
        "/v1/domains",
        "/v1/account/api-keys",
        "/api/v1/users/me/signing-secrets",
        "/v1/account/suppressions",
        "/v1/events",
        "/api/v1/messages?status=pending_approval",
        "/api/v1/messages?status=queued",
    ]
    for agent in (a.bot, a.other, a.cloud):
        paths += [
            agent_v1(agent, "/messages?direction=all&read_status=all&deleted=true"),
            agent_v1(agent, "/messages?direction=all&read_status=all"),
            agent_v1(agent, "/conversations"),
            agent_v1(agent, "/protection"),
            agent_v1(agent, "/suppressions"),
        ]
    seen = {}
    for path in paths:
        answer = await a.account.http.get(path)
        assert answer.status_code == 200, (path, answer.text)
        seen[path] = unchanging(answer.json())
    return seen


async def test_another_account_changes_and_learns_nothing_of_the_first(pair: Pair) -> None:
    a, b = pair.a, pair.b
    before = await what_a_sees(a)
    protection = created(await b.account.http.get(agent_v1(b.bot, "/protection")))
    for method, path, body in by_a_stranger(a, b, protection):
        await b.account.http.request(method, path, json=body)
    # B's own mail and webhooks naming A's conversation and agents: B's alone
    ghost = ghost_of(a)
    for conversation in (a.conversation, ghost.conversation):
        sent = await b.account.http.post(
            agent_v1(b.bot, "/messages"),
            json={
                "to": ["d@example.org"],
                "subject": "s",
                "text": "t",
                "conversation_id": conversation,
            },
        )
        assert sent.status_code == 202, sent.text
    thread = created(await b.account.http.get(agent_v1(b.bot, f"/conversations/{a.conversation}")))
    assert {m["id"] for m in thread["messages"]}.isdisjoint({a.received, a.sent}), thread
    for filters, unknown in (
        ({"agent_emails": [a.bot]}, {"agent_emails": [ghost.bot]}),
        ({"conversation_ids": [a.conversation]}, {"conversation_ids": [ghost.conversation]}),
    ):
        answers = []
        for named in (filters, unknown):
            hook = {"url": HOOK_URL, "events": ["email.received"], "filters": named}
            answer = await b.account.http.post("/v1/webhooks", json=hook)
            status, shown = said(answer, a, ghost)
            answers.append((status, shown.get("error") or sorted(shown["filters"].items())))
        assert said_alike(answers), (filters, answers)
    assert await what_a_sees(a) == before
    # A's key and agents still work; B's own records are B's alone
    assert (await a.account.http.get(agent_v1(a.bot))).status_code == 200
    mine = created(await b.account.http.get(agent_v1(b.bot, "/messages?direction=all")))
    assert all(m["id"] not in (a.received, a.sent) for m in mine["items"])


async def test_filters_and_cursors_naming_the_first_account_show_nothing_of_it(
    pair: Pair,
) -> None:
    a, b = pair.a, pair.b
    http = b.account.http
    # query parameters naming A's agent, conversation and messages
    for params in (
        {"agent_email": a.bot},
        {"conversation_id": a.conversation},
        {"message_id": a.received},
        {"message_id": a.sent},
    ):
        listed = created(await http.get("/v1/events", params=params))
        assert listed["items"] == [], (params, listed)
    answer = created(
        await http.get(
            agent_v1(b.bot, "/messages"),
            params={"conversation_id": a.conversation, "direction": "all"},
        )
    )
    assert answer["items"] == [], answer
    for path, params in (("/api/v1/messages", {"agent": a.other, "status": "pending_approval"}),):
        answer = await http.get(path, params=params)
        assert answer.status_code == 404, (path, answer.text)
        assert a.held not in answer.text
    reviews = created(await http.get("/v1/reviews"))
    assert {a.held, a.held_inbound}.isdisjoint(item["id"] for item in reviews["items"])
    # A's cursors, on B's listings, show B's records only (a cursor is a place, never access)
    for listing in (
        "/v1/events",
        "/v1/webhooks",
        "/v1/templates",
        "/v1/account/api-keys",
        "/v1/reviews",
        "/v1/agents",
        agent_v1(a.bot, "/messages?direction=all"),
    ):
        first = created(await a.account.http.get(listing, params={"limit": 1}))
        cursor = first.get("next_cursor")
        if not cursor:
            continue
        own_listing = listing.replace(quote(a.bot, safe=""), quote(b.bot, safe=""))
        answer = await http.get(own_listing, params={"limit": 100, "cursor": cursor})
        assert answer.status_code in (200, 400), answer.text
        for value in vars(a).values():
            if isinstance(value, str) and value != a.account.email:
                assert value not in answer.text, (listing, value, answer.text)


async def test_an_idempotency_key_of_one_account_is_nothing_to_another(pair: Pair) -> None:
    a, b = pair.a, pair.b
    key = {"Idempotency-Key": "shared-key-1"}
    body = {"to": ["dave@example.org"], "subject": "A's", "text": "A's own words"}
    first = created(await a.account.http.post(agent_v1(a.bot, "/messages"), json=body, headers=key))
    # the same key and body from B: B's own new message, never A's answer replayed
    same = await b.account.http.post(agent_v1(b.bot, "/messages"), json=body, headers=key)
    assert same.status_code == 202, same.text
    assert same.json()["message_id"] != first["message_id"]
    # the same key with another body from B: B's message, not a 422 about A's request
    other = {**body, "subject": "B's"}
    again = await b.account.http.post(agent_v1(b.cloud, "/messages"), json=other, headers=key)
    assert again.status_code == 422 and "idempotency" in again.text, again.text  # B's own reuse
    webhook = {"url": HOOK_URL, "events": ["email.received"]}
    made = created(
        await a.account.http.post("/v1/webhooks", json=webhook, headers={"Idempotency-Key": "wh-1"})
    )
    theirs = await b.account.http.post(
        "/v1/webhooks", json=webhook, headers={"Idempotency-Key": "wh-1"}
    )
    assert theirs.status_code == 201, theirs.text
    assert (
        theirs.json()["id"] != made["id"]
        and theirs.json()["signing_secret"] != made["signing_secret"]
    )


def siblings(a: Tenant, conversation: str) -> tuple[Tenant, Tenant]:
    """A's records as `by_a_stranger` lays them out for an agent key of `bot`: the records it
    must not reach are `other`'s (its mail, its held draft, `conversation`) and the account's
    own (webhook, domain, keys: an account key's to manage); its own agent is `bot`."""
    theirs = replace(
        a,
        bot=a.other,
        received=a.other_received,
        sent=a.held,
        held_inbound=a.held,
        conversation=conversation,
    )
    return theirs, replace(a, cloud=a.bot)


async def test_an_agent_key_reaches_none_of_its_accounts_other_agents_records(
    pair: Pair,
) -> None:
    """Every route of `by_a_stranger`, taken with an agent key of `bot` naming its sibling
    agent's records (or the account's, which are an account key's to manage): 403 `forbidden`
    where the sibling agent or an account record is named, 404 `not_found` for the sibling's
    mail named under `bot`'s own path; and nothing of A's changes."""
    a = pair.a
    conversation = "conv-other-agent"
    assert await store_with_conversation(pair.quiet.gateway, a.other, conversation)
    theirs, own = siblings(a, conversation)
    protection = created(await a.account.http.get(agent_v1(a.bot, "/protection")))
    wrong = []
    async with agent_scoped_client(a.account, a.bot) as http:
        before = await what_a_sees(a)
        for method, path, body in by_a_stranger(theirs, own, protection):
            if body and body.get("template_id"):
                continue  # the account's template is its agents' to send with
            answer = await http.request(method, path, json=body)
            under_own = path.startswith((agent_v1(a.bot), agent_api(a.bot)))
            expected = (404, "not_found") if under_own else (403, "forbidden")
            if "/dead-letters/" in path and under_own:
                expected = (400, "not_cloud_agent")  # `bot` is local: no dead letters at all
            code = answer.json()["error"]["code"] if answer.status_code >= 400 else None
            if (answer.status_code, code) != expected:
                wrong.append(f"{method} {path}: {answer.status_code} {answer.text[:200]}")
        assert wrong == [], "\n".join(wrong)
        # filters naming the other agent show nothing of it
        listed = created(await http.get(agent_v1(a.bot, "/messages"), params={"direction": "all"}))
        assert not {m["id"] for m in listed["items"]} & {a.other_received, a.held}, listed
        events = await http.get("/v1/events", params={"agent_email": a.other})
        assert events.status_code in (200, 403), events.text
        if events.status_code == 200:
            assert events.json()["items"] == []
    assert await what_a_sees(a) == before


ARGUMENT_IDS = {
    "email": "bot",
    "agent": "bot",
    "agent_email": "bot",
    "message_id": "received",
    "conversation_id": "conversation",
    "webhook_id": "webhook",
    "template_id": "template",
    "event_id": "event",
    "key_id": "key_id",
    "secret_id": "secret_id",
    "domain": "domain",
}
"""A tool's arguments that name a record, and which of A's records each names."""
AGENT_ARGUMENTS = ("email", "agent_email", "agent")
"""The arguments naming the agent a tool acts as."""
OTHER_ARGUMENTS = {
    "to": ["d@example.org"],
    "text": "t",
    "subject": "s",
    "body": "t",
    "url": HOOK_URL,
    "events": ["email.received"],
    "address": SUPPRESSED,
    "index": 0,
    "confirm": True,
    "name": "n",
    "timeout_seconds": 1,
}
"""What a tool's other arguments are given."""
MAKERS = {"create_agent", "register_domain"}
"""The tools that would make the record an id names when it does not exist yet (a new agent
or domain of B's): naming A's address there is not naming A's record."""


ID_OF_TOOL = {
    "webhook": "webhook",
    "template": "template",
    "api_key": "key_id",
    "secret": "secret_id",
}
"""What a tool's `id` argument names, by a word of the tool's name."""


def tool_arguments(
    tool: str, schema: dict[str, Any], a: Tenant, message: str, agent: str | None
) -> dict[str, Any] | None:
    """Arguments for a tool with input `schema` naming A's records (`message` for a message),
    as `agent` when given (B's own), or None when it names none of them."""
    properties = schema.get("properties", {})
    arguments: dict[str, Any] = {}
    for word, record in ID_OF_TOOL.items():
        if word in tool and "id" in properties:
            arguments["id"] = getattr(a, record)
    for name in properties:
        if name in ARGUMENT_IDS:
            record = ARGUMENT_IDS[name]
            if name in AGENT_ARGUMENTS and agent is not None:
                arguments[name] = agent
            else:
                arguments[name] = message if name == "message_id" else getattr(a, record)
    if not set(arguments.values()) - {agent}:
        return None
    for name in properties:
        if name not in arguments and name in OTHER_ARGUMENTS:
            arguments[name] = OTHER_ARGUMENTS[name]
    return arguments


def outcome(result: Any, a: Tenant, ghost: Tenant) -> Any:
    """A tool call's outcome, each of A's ids in it read as the ghost's."""
    text = json.dumps(
        {"error": result.is_error, "answer": result.structured_content}, sort_keys=True
    )
    for name, value in vars(a).items():
        if isinstance(value, str) and name != "account":
            text = text.replace(value, str(getattr(ghost, name)))
    return json.loads(text)


async def test_another_accounts_mcp_tools_name_none_of_the_first_accounts_ids(
    pair: Pair,
) -> None:
    """Every MCP tool with an argument naming a record, called by B with A's ids (A's agent,
    or B's own agent with A's message), answers as it does to ids never made."""
    a, b = pair.a, pair.b
    ghost = ghost_of(a)
    running = SimpleNamespace(addresses=SimpleNamespace(http_url=pair.quiet.http_url))
    wrong = []
    tried = set()
    async with mcp_client(running, b.account.key) as client:  # type: ignore[arg-type]
        for tool in (await client.list_tools()).tools:
            if tool.name in MAKERS:
                continue
            takes_message = "message_id" in tool.input_schema.get("properties", {})
            for message in (a.received, a.sent, a.held, a.held_inbound)[
                : 4 if takes_message else 1
            ]:
                for agent in (None, b.bot):
                    named = tool_arguments(tool.name, tool.input_schema, a, message, agent)
                    if named is None:
                        continue
                    unknown = tool_arguments(
                        tool.name, tool.input_schema, ghost, ghost_message(ghost, a, message), agent
                    )
                    tried.add(tool.name)
                    answer = await client.call_tool(tool.name, named)
                    never = await client.call_tool(tool.name, unknown)
                    if answer.is_error or never.is_error:
                        alike = outcome(answer, a, ghost) == outcome(never, a, ghost)
                    else:  # B's own records made or read: none of A's beyond the arguments
                        shown = json.dumps(answer.structured_content)
                        alike = not any(
                            value in shown
                            for name, value in vars(a).items()
                            if isinstance(value, str)
                            and name != "account"
                            and value not in named.values()
                        )
                    if not alike:
                        wrong.append(
                            f"{tool.name} {named}: {answer.structured_content} but of ids "
                            f"never made: {never.structured_content}"
                        )
        naming = {
            tool.name
            for tool in (await client.list_tools()).tools
            if {*ARGUMENT_IDS, "id"} & set(tool.input_schema.get("properties", {}))
        }
    assert naming - MAKERS - tried == set(), "tools naming a record that were never tried"
    assert wrong == [], "\n".join(wrong)


def ghost_message(ghost: Tenant, a: Tenant, message: str) -> str:
    """The ghost's id for A's message `message`."""
    for name, value in vars(a).items():
        if value == message:
            return str(getattr(ghost, name))
    raise AssertionError(message)


def dashboard_pages(t: Tenant, b: Tenant) -> list[tuple[str, str]]:
    """Every dashboard page or form naming one of `t`'s records, as B would ask for it."""
    agent = f"/agents/{quote(t.bot, safe='')}"
    own = f"/agents/{quote(b.bot, safe='')}"
    cloud = f"/agents/{quote(b.cloud, safe='')}"
    return [
        ("GET", agent),
        ("POST", agent),
        ("GET", f"{agent}/inbox"),
        ("GET", f"{agent}/inbox/{t.received}"),
        ("GET", f"{agent}/inbox/{t.received}/raw"),
        ("GET", f"{agent}/events"),
        ("GET", f"{agent}/dead-letters"),
        ("POST", f"{agent}/dead-letters/redeliver"),
        ("POST", f"{agent}/dead-letters/{t.received}/redeliver"),
        ("POST", f"{agent}/delete"),
        ("GET", f"{own}/inbox/{t.received}"),
        ("GET", f"{own}/inbox/{t.received}/raw"),
        ("GET", f"{own}/inbox/{t.held_inbound}"),
        ("POST", f"{cloud}/dead-letters/{t.received}/redeliver"),
        *[
            (method, f"/approvals/{message}{action}")
            for message in (t.held, t.held_inbound, t.sent)
            for method, action in (("GET", ""), ("POST", "/approve"), ("POST", "/reject"))
        ],
        ("POST", f"/domains/{t.domain}/delete"),
        ("POST", f"/domains/{t.domain}/verify"),
        ("POST", f"/credentials/api-keys/{t.key_id}/revoke"),
        ("POST", f"/credentials/signing-secrets/{t.secret_id}/delete"),
    ]


async def test_the_dashboard_shows_and_changes_nothing_of_another_account(pair: Pair) -> None:
    """B signed in to the dashboard naming A's agent, messages, domain, key and secret: each
    page or form answers 404 as for ids never made, and A's records stand."""
    a, b = pair.a, pair.b
    ghost = ghost_of(a)
    before = await what_a_sees(a)
    async with httpx.AsyncClient(base_url=pair.quiet.http_url, timeout=10) as browser:
        assert (await sign_in(browser, b.account.key)).status_code == 303
        token = await session_csrf(browser)

        wrong = []
        for (method, path), (_, ghost_path) in zip(
            dashboard_pages(a, b), dashboard_pages(ghost, b), strict=True
        ):
            form = {"csrf_token": token, "name": "mine"} if method == "POST" else None
            answer = await browser.request(method, path, data=form)
            never = await browser.request(method, ghost_path, data=form)
            if answer.status_code != 404 or never.status_code != 404:
                wrong.append(
                    f"{method} {path}: {answer.status_code}, never made {never.status_code}"
                )
            elif said(answer, a, ghost)[1] != said(never, a, ghost)[1]:
                wrong.append(f"{method} {path}: says other than of ids never made")
        assert wrong == [], "\n".join(wrong)
    assert await what_a_sees(a) == before


def sockets(t: Tenant) -> list[str]:
    """The WebSocket paths of `t`'s agent, on both faces."""
    return [agent_api(t.bot, "/ws"), agent_v1(t.bot, "/ws")]


NOT_AN_ACCOUNTS_RECORD = {
    "static": "the gateway's own files",
    "dashboard.static": "the dashboard's own files",
    "v1.v1_templates.get_starter_template": "the gateway's starter templates, alike for all",
    "v1.v1_messages.download_attachment": "a signed link, for whoever holds it; it dies with "
    "its message (tests/test_attachment_downloads.py)",
    "unsubscribe_links.confirmation": "a signed link, for whoever holds it",
    "unsubscribe_links.unsubscribe_by_link": "a signed link, for whoever holds it",
}
"""Routes with a path parameter that names no account's record, and why."""


def sample(prefix: str) -> Tenant:
    """A tenant with made-up ids of the right form, to lay the cases out without a gateway."""
    return Tenant(
        Account(f"{prefix}@example.com", "e2a_" + "0" * 64, None),  # type: ignore[arg-type]
        f"{prefix}-bot@agents.test",
        f"{prefix}-other@agents.test",
        *(new_id("msg") for _ in range(5)),
        f"conv-{prefix}",
        new_id("wh"),
        f"{prefix}-corp.example",
        new_id("tpl"),
        new_id("apk"),
        new_id("wsec"),
        new_id("evt"),
        f"{prefix}-cloud@agents.test",
        f"{prefix}-gone@example.org",
    )


@cache
def routes_tried() -> set[tuple[str, str]]:
    """The (endpoint, method) of every route the cases above send B's requests to."""
    from tests.test_docs import ServedRoutes

    served = ServedRoutes()
    a, b = sample("alice"), sample("bob")
    requests = [(m, p) for m, p, _ in by_a_stranger(a, b, {})] + dashboard_pages(a, b)
    tried = set()
    for method, path in requests:
        endpoint = served.endpoint(method, path.partition("?")[0])
        assert endpoint is not None, (method, path)
        tried.add((endpoint, method))
    for path in sockets(a):
        endpoint, _ = served.adapter.match(path, method="GET", websocket=True)
        tried.add((f"{endpoint} (WebSocket)", "GET"))
    return tried


def routes_naming_records() -> list[tuple[str, str]]:
    """The (endpoint, method) of every route of the URL map with a path parameter."""
    from tests.test_docs import ServedRoutes

    return sorted(
        (f"{rule.endpoint}{' (WebSocket)' if rule.websocket else ''}", method)
        for rule in ServedRoutes().app.url_map.iter_rules()
        if rule.arguments and rule.endpoint not in NOT_AN_ACCOUNTS_RECORD
        for method in rule.methods - {"HEAD", "OPTIONS"}
    )


@pytest.mark.parametrize("route", routes_naming_records(), ids=" ".join)
def test_every_route_naming_a_record_is_tried_by_another_account(route: tuple[str, str]) -> None:
    """A route added with a path parameter fails here until the cases above name one of A's
    records through it (or it is listed in NOT_AN_ACCOUNTS_RECORD with the reason)."""
    assert route in routes_tried()


async def refused_upgrade(url: str, key: str) -> tuple[int, Any]:
    """The status and JSON body with which the gateway refuses to open the socket at `url`."""
    headers = [("Authorization", f"Bearer {key}")]
    with trio.fail_after(10), pytest.raises(ConnectionRejected) as refused:
        async with open_websocket_url(url, extra_headers=headers):
            pass
    body = json.loads(refused.value.body or b"")
    body["error"].pop("request_id", None)
    return refused.value.status_code, body


async def test_another_accounts_socket_opens_on_none_of_the_first_accounts_agents(
    pair: Pair,
) -> None:
    """B's key, upgrading to a socket of A's agent on either face, is refused before the
    upgrade as for an agent never made (no socket of A's opens, so no mail of A's is heard)."""
    a, b = pair.a, pair.b
    ghost = ghost_of(a)
    base = pair.quiet.http_url.replace("http://", "ws://")
    for path, ghost_path in zip(sockets(a), sockets(ghost), strict=True):
        status, body = await refused_upgrade(base + path, b.account.key)
        never = await refused_upgrade(base + ghost_path, b.account.key)
        assert status == 404 and body["error"]["code"] == "not_found", (path, body)
        text = json.dumps(body).replace(a.bot, ghost.bot)
        text = text.replace(quote(a.bot, safe=""), quote(ghost.bot, safe=""))
        assert (status, json.loads(text)) == never, (path, body, never)


async def test_a_revoked_key_reaches_none_of_its_own_accounts_records(pair: Pair) -> None:
    """A key A revoked, naming A's own records through every route of `by_a_stranger` and
    every socket: 401 `unauthorized` each time, and nothing of A's changes."""
    a = pair.a
    made = created(await a.account.http.post("/v1/account/api-keys", json={"name": "old"}))
    revoked = await a.account.http.delete(f"/v1/account/api-keys/{made['id']}?confirm=DELETE")
    assert revoked.status_code == 200, revoked.text
    before = await what_a_sees(a)
    protection = created(await a.account.http.get(agent_v1(a.bot, "/protection")))
    wrong = []
    async with httpx.AsyncClient(
        base_url=pair.quiet.http_url, headers={"Authorization": f"Bearer {made['key']}"}
    ) as http:
        for method, path, body in by_a_stranger(a, a, protection):
            answer = await http.request(method, path, json=body)
            if answer.status_code != 401 or answer.json()["error"]["code"] != "unauthorized":
                wrong.append(f"{method} {path}: {answer.status_code} {answer.text[:200]}")
    base = pair.quiet.http_url.replace("http://", "ws://")
    for path in sockets(a):
        status, body = await refused_upgrade(base + path, made["key"])
        if (status, body["error"]["code"]) != (401, "unauthorized"):
            wrong.append(f"socket {path}: {status} {body}")
    assert wrong == [], "\n".join(wrong)
    assert await what_a_sees(a) == before
