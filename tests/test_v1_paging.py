"""Cursor pages on `/v1` hold still while the listing changes, over real HTTP and SMTP: paging
through a listing while mail arrives, events and deliveries are logged and rows are created and
deleted between pages gives no row twice, skips no row that was there at the first page and is
still there, and keeps the documented order. A message's lifecycle likewise, paged while its
delivery progresses (a relay on loopback defers then takes it, bounce reports come back)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import trio

from e2a_gateway.app import RunningGateway
from e2a_gateway.config import Settings
from e2a_gateway.workers.outbound import OutboundWorker
from tests.conftest import Account, make_settings
from tests.delivery_support import create_agent, mail, smtp_send, wait_until
from tests.relay_support import Sink, relay_port, sink
from tests.test_v1_delivery_rollup import report_bounce

__all__ = ["relay_port", "sink"]  # fixtures

LIMIT = 2
START = 5
"""Rows before the first page: three pages of LIMIT, the last one short."""
DEAD_HOOK = "https://hooks.example.com/paged"
"""A webhook target with no address (the test DNS has none): its deliveries stay pending, each
one a row."""


@pytest.fixture
def settings(tmp_path: Path, relay_port: int) -> Settings:
    """Mail sent goes to the relay on loopback."""
    relay = {"host": "127.0.0.1", "port": relay_port, "tls": "none", "timeout_seconds": 10}
    return make_settings(tmp_path, outbound_smtp=relay)


@dataclass
class Scene:
    """The account paged through, its agent, the gateway's SMTP port and a running count that
    makes each new row's name its own."""

    account: Account
    agent: str
    smtp_port: int
    hook: str
    made: int = 0

    def fresh(self) -> int:
        self.made += 1
        return self.made

    async def post(self, path: str, body: dict[str, Any]) -> None:
        answer = await self.account.http.post(path, json=body)
        assert answer.status_code in (200, 201, 202), answer.text

    async def delete(self, path: str) -> None:
        answer = await self.account.http.delete(path, params={"confirm": "DELETE"})
        assert answer.status_code == 200, answer.text

    async def mail_arrives(self) -> None:
        subject = f"Paged {self.fresh()}"
        message_id = f"Message-ID: <{subject.replace(' ', '.')}@example.org>\r\n"
        await smtp_send(self.smtp_port, [self.agent], mail(subject, message_id))

    async def thread_starts(self) -> None:
        """The agent writes to someone new: a conversation of its own (mail received starts
        none)."""
        body = {"to": [f"peer{self.fresh()}@example.net"], "subject": "Hi", "text": "Hello"}
        await self.post(self.agent_path("/messages"), body)

    def agent_path(self, suffix: str = "") -> str:
        return f"/v1/agents/{quote(self.agent, safe='')}{suffix}"


@dataclass(frozen=True)
class Listing:
    """A cursor-paged listing: where it is, how a row is added and removed (None: rows of
    this listing are never removed by a client), the field naming a row and which rows the
    test may remove (not the key it pages with)."""

    name: str
    path: Callable[[Scene], str]
    add: Callable[[Scene], Awaitable[None]]
    remove: Callable[[Scene, dict[str, Any]], Awaitable[None]] | None
    key: str = "id"
    removable: Callable[[dict[str, Any]], bool] = lambda row: True


async def _remove_conversation(scene: Scene, row: dict[str, Any]) -> None:
    """Delete each message of the conversation; one the send worker is still handing to the
    relay answers `409 send_in_progress` until it is sent, so that one is deleted once it is."""
    detail = await scene.account.http.get(scene.agent_path(f"/conversations/{row['id']}"))
    assert detail.status_code == 200, detail.text
    for message in detail.json()["messages"]:
        path = scene.agent_path(f"/messages/{message['id']}")

        async def deleted(path: str = path) -> bool:
            answer = await scene.account.http.delete(path, params={"confirm": "DELETE"})
            if answer.status_code == 409 and answer.json()["error"]["code"] == "send_in_progress":
                return False
            assert answer.status_code == 200, answer.text
            return True

        await wait_until(deleted)


LISTINGS = [
    Listing(
        "messages",
        lambda scene: scene.agent_path("/messages"),
        Scene.mail_arrives,
        lambda scene, row: scene.delete(scene.agent_path(f"/messages/{row['id']}")),
    ),
    Listing(
        "conversations",
        lambda scene: scene.agent_path("/conversations"),
        Scene.thread_starts,
        _remove_conversation,
    ),
    Listing("events", lambda scene: "/v1/events", Scene.mail_arrives, None),
    Listing(
        "webhook deliveries",
        lambda scene: f"/v1/webhooks/{scene.hook}/deliveries",
        Scene.mail_arrives,
        None,
    ),
    Listing(
        "agents",
        lambda scene: "/v1/agents",
        lambda scene: scene.post("/v1/agents", {"email": f"paged{scene.fresh()}@agents.test"}),
        lambda scene, row: scene.delete(f"/v1/agents/{quote(row['email'], safe='')}"),
        key="email",
    ),
    Listing(
        "api keys",
        lambda scene: "/v1/account/api-keys",
        lambda scene: scene.post("/v1/account/api-keys", {"name": f"key {scene.fresh()}"}),
        lambda scene, row: scene.delete(f"/v1/account/api-keys/{row['id']}"),
        removable=lambda row: str(row["name"]).startswith("key "),
    ),
    Listing(
        "templates",
        lambda scene: "/v1/templates",
        lambda scene: scene.post(
            "/v1/templates", {"name": f"t{scene.fresh()}", "subject": "Hi", "text": "Hello"}
        ),
        lambda scene, row: scene.delete(f"/v1/templates/{row['id']}"),
    ),
    Listing(
        "domains",
        lambda scene: "/v1/domains",
        lambda scene: scene.post("/v1/domains", {"domain": f"d{scene.fresh()}.example"}),
        lambda scene, row: scene.delete(f"/v1/domains/{row['domain']}"),
        key="domain",
    ),
    Listing(
        "webhooks",
        lambda scene: "/v1/webhooks",
        lambda scene: scene.post(
            "/v1/webhooks", {"url": f"{DEAD_HOOK}/{scene.fresh()}", "events": ["email.sent"]}
        ),
        lambda scene, row: scene.delete(f"/v1/webhooks/{row['id']}"),
    ),
    Listing(
        "agent suppressions",
        lambda scene: scene.agent_path("/suppressions"),
        lambda scene: scene.post(
            scene.agent_path("/suppressions"), {"address": f"gone{scene.fresh()}@example.net"}
        ),
        lambda scene, row: scene.delete(
            scene.agent_path(f"/suppressions/{quote(row['address'], safe='')}")
        ),
        key="address",
    ),
]


async def _rows(scene: Scene, listing: Listing) -> list[dict[str, Any]]:
    """The whole listing, one page of up to 100 rows."""
    answer = await scene.account.http.get(listing.path(scene), params={"limit": 100})
    assert answer.status_code == 200, answer.text
    assert answer.json()["next_cursor"] is None
    rows: list[dict[str, Any]] = answer.json()["items"]
    return rows


async def _everything(scene: Scene, listing: Listing) -> list[str]:
    return [row[listing.key] for row in await _rows(scene, listing)]


@pytest.mark.parametrize("listing", LISTINGS, ids=[listing.name for listing in LISTINGS])
async def test_pages_hold_still_while_rows_come_and_go(
    running: RunningGateway, make_account: Any, listing: Listing
) -> None:
    account: Account = await make_account("pager@example.com")
    agent = "pager@agents.test"
    created = await account.http.post("/v1/agents", json={"email": agent})
    assert created.status_code == 201, created.text
    hook = await account.http.post(
        "/v1/webhooks", json={"url": DEAD_HOOK, "events": ["email.received"]}
    )
    assert hook.status_code == 201, hook.text
    scene = Scene(account, agent, running.addresses.smtp_port, hook.json()["id"])
    for _ in range(START):
        await listing.add(scene)
    before = await _everything(scene, listing)
    assert len(before) >= START, before

    seen: list[str] = []
    removed: set[str] = set()
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": LIMIT} | ({"cursor": cursor} if cursor else {})
        page = await account.http.get(listing.path(scene), params=params)
        assert page.status_code == 200, page.text
        rows = page.json()["items"]
        seen.extend(row[listing.key] for row in rows)
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
        await listing.add(scene)  # a new row, ahead of or behind the cursor
        if listing.remove is None:
            continue
        if listing.removable(rows[-1]):
            await listing.remove(scene, rows[-1])  # the row the cursor stands on
            removed.add(rows[-1][listing.key])
        unseen = [
            row
            for row in await _rows(scene, listing)
            if row[listing.key] in before and row[listing.key] not in seen
        ]
        if unseen and listing.removable(unseen[-1]):  # one still to come
            await listing.remove(scene, unseen[-1])
            removed.add(unseen[-1][listing.key])

    assert len(seen) == len(set(seen)), f"{listing.name}: a row given twice: {seen}"
    kept = [key for key in before if key not in removed or key in seen]
    assert [key for key in seen if key in before] == kept, (
        f"{listing.name}: rows of the first page's listing skipped or out of order"
    )


def _step_key(step: dict[str, Any]) -> tuple[str, str]:
    """Where a lifecycle step stands: e2a orders and pages them by `(occurred_at, id)`."""
    return (step["occurred_at"], step["id"])


async def test_a_lifecycle_paged_while_delivery_progresses_gives_each_step_once_in_order(
    running: RunningGateway, make_account: Any, sink: Sink
) -> None:
    """The relay defers a message, then takes it (its `deferred` hand-off gives way to
    `accepted`); bounce reports come back for two recipients a second apart, each adding a
    bounce dated at the hand-off and a suppression dated when it was applied. Paged one step
    at a time meanwhile, the lifecycle gives no step twice, keeps `(occurred_at, id)` order,
    and skips no step that stood ahead of the cursor; a step keeps its id from page to page."""
    account: Account = await make_account("pager@example.com")
    agent = await create_agent(account, "bot")
    sink.answer = "451 4.3.0 try again later"
    recipients = ["carol@example.org", "dave@example.org", "erin@example.org"]
    sent = await account.http.post(
        f"/v1/agents/{quote(agent, safe='')}/messages",
        json={"to": recipients, "subject": "Hi", "text": "Hello"},
    )
    assert sent.status_code in (200, 202), sent.text
    path = f"/v1/agents/{quote(agent, safe='')}/messages/{sent.json()['message_id']}/lifecycle"

    async def everything() -> list[dict[str, Any]]:
        answer = await account.http.get(path, params={"limit": 100})
        assert answer.status_code == 200, answer.text
        assert answer.json()["next_cursor"] is None
        steps: list[dict[str, Any]] = answer.json()["items"]
        assert steps == sorted(steps, key=_step_key), "not in (occurred_at, id) order"
        return steps

    async def deferred() -> bool:
        return any(step["outcome"] == "deferred" for step in await everything())

    await wait_until(deferred)

    async def taken() -> None:
        sink.answer = "250 OK"
        assert await OutboundWorker(running.gateway).deliver_due(time.time() + 3600) == 1

    async def bounced(recipient: str) -> None:
        await trio.sleep(1.0)  # a second later than what came before: its suppression too
        await report_bounce(running, sink, recipient)

    progress = [taken, lambda: bounced(recipients[0]), lambda: bounced(recipients[1])]
    first = await everything()
    owed = {step["id"] for step in first}  # there when paging began, or added ahead of it
    known = {step["id"]: step for step in first}
    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 1} | ({"cursor": cursor} if cursor else {})
        page = await account.http.get(path, params=params)
        assert page.status_code == 200, page.text
        seen.extend(page.json()["items"])
        cursor = page.json()["next_cursor"]
        if not progress:
            if cursor is None:
                break
            continue
        assert cursor is not None, "the steps ran out before the delivery progressed"
        await progress.pop(0)()
        for step in await everything():
            if step["id"] not in known and _step_key(step) > _step_key(seen[-1]):
                owed.add(step["id"])  # a new step ahead of the cursor
            known.setdefault(step["id"], step)

    final = await everything()
    keys = [_step_key(step) for step in seen]
    assert keys == sorted(set(keys)), f"a step given twice or out of order: {keys}"
    missed = {step["id"] for step in final} & owed - {step["id"] for step in seen}
    assert not missed, f"steps ahead of the cursor skipped: {missed}"
    by_id = {step["id"]: step for step in final}
    for step in seen:  # the same step under the same id, unless it gave way (deferred)
        assert by_id.get(step["id"], step) == step, step
    outcomes = [(step["stage"], step["outcome"], step.get("recipient")) for step in final]
    assert ("submission", "deferred", None) not in outcomes, outcomes
    for recipient in recipients[:2]:
        assert ("delivery", "bounced", recipient) in outcomes, outcomes
        assert ("suppression", "applied", recipient) in outcomes, outcomes


async def test_a_conversation_whose_latest_message_is_trashed_is_not_given_again(
    running: RunningGateway, make_account: Any
) -> None:
    """Conversation x holds the newest message, then y; paging one at a time, x comes first.
    Its newest message then goes to the trash: x keeps its place behind the cursor, so the
    next pages give y alone, never x a second time, while x stays listed (its older message is
    live) with the counts and preview of its live mail."""
    account: Account = await make_account("pager@example.com")
    agent = await create_agent(account, "bot")
    messages = f"/v1/agents/{quote(agent, safe='')}/messages"
    conversations = f"/v1/agents/{quote(agent, safe='')}/conversations"

    async def send(subject: str, conversation_id: str | None = None) -> str:
        body = {"to": ["peer@example.net"], "subject": subject, "text": "Hello"}
        body |= {"conversation_id": conversation_id} if conversation_id else {}
        answer = await account.http.post(messages, json=body)
        assert answer.status_code in (200, 202), answer.text
        message_id: str = answer.json()["message_id"]
        return message_id

    first = await send("x first")
    shown = await account.http.get(f"{messages}/{first}")
    assert shown.status_code == 200, shown.text
    x = shown.json()["conversation_id"]
    await send("y only")
    latest = await send("x latest", x)

    page = await account.http.get(conversations, params={"limit": 1})
    assert page.status_code == 200, page.text
    assert [row["id"] for row in page.json()["items"]] == [x]
    seen = [x]

    async def trashed() -> bool:
        answer = await account.http.delete(f"{messages}/{latest}")
        if answer.status_code == 409 and answer.json()["error"]["code"] == "send_in_progress":
            return False
        assert answer.status_code == 200, answer.text
        return True

    await wait_until(trashed)

    cursor = page.json()["next_cursor"]
    for _ in range(5):  # bounded: two conversations, a page each at most
        if cursor is None:
            break
        page = await account.http.get(conversations, params={"limit": 1, "cursor": cursor})
        assert page.status_code == 200, page.text
        seen.extend(row["id"] for row in page.json()["items"])
        cursor = page.json()["next_cursor"]
    assert cursor is None
    assert len(seen) == 2 and seen[0] == x and seen[1] != x, f"x given twice: {seen}"

    listed = await account.http.get(conversations, params={"limit": 100})
    assert listed.status_code == 200, listed.text
    rows = {row["id"]: row for row in listed.json()["items"]}
    assert set(rows) == set(seen)
    assert rows[x]["message_count"] == 1
    assert rows[x]["latest_subject"] == "x first"
