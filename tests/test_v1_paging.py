"""Cursor pages on `/v1` hold still while the listing changes, over real HTTP and SMTP: paging
through a listing while mail arrives, events and deliveries are logged and rows are created and
deleted between pages gives no row twice, skips no row that was there at the first page and is
still there, and keeps the documented order."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest

from e2a_gateway.app import RunningGateway
from tests.conftest import Account
from tests.delivery_support import mail, smtp_send

LIMIT = 2
START = 5
"""Rows before the first page: three pages of LIMIT, the last one short."""
DEAD_HOOK = "https://hooks.example.com/paged"
"""A webhook target with no address (the test DNS has none): its deliveries stay pending, each
one a row."""


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
    detail = await scene.account.http.get(scene.agent_path(f"/conversations/{row['id']}"))
    assert detail.status_code == 200, detail.text
    for message in detail.json()["messages"]:
        await scene.delete(scene.agent_path(f"/messages/{message['id']}"))


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
