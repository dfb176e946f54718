"""Scheduled sending (e2a's beta `send_at`) over real HTTP, delivered by loopback to another
agent of the gateway: a future send_at is accepted at once as `scheduled` and handed on no
sooner than that instant; a past one sends at once; too far ahead, or only to the sender
itself, is refused; the trash stops it, and a restore before its time re-arms it while one
after fails it as canceled — for a message and for its agent alike."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import trio

from e2a_gateway.app import RunningGateway
from tests.conftest import Account
from tests.delivery_support import create_agent

WAIT = 2.0
"""How far ahead the tests schedule: long enough to see the message wait, short to run."""


def v1(agent: str, suffix: str = "") -> str:
    return f"/v1/agents/{quote(agent, safe='')}{suffix}"


def ahead(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


async def send(account: Account, agent: str, to: str, subject: str, send_at: str) -> Any:
    body = {"to": [to], "subject": subject, "text": "Later.", "send_at": send_at}
    return await account.http.post(v1(agent, "/messages"), json=body)


async def received(account: Account, agent: str, subject: str) -> bool:
    listed = await account.http.get(v1(agent, "/messages"), params={"read_status": "all"})
    assert listed.status_code == 200, listed.text
    return any(item["subject"] == subject for item in listed.json()["items"])


async def arrival(account: Account, agent: str, subject: str, bound: float = 10.0) -> float:
    """When `subject` reached `agent` (polled every 0.1 s, at most `bound` seconds)."""
    with trio.fail_after(bound):
        while not await received(account, agent, subject):  # noqa: ASYNC110 (over HTTP)
            await trio.sleep(0.1)
    return time.time()


async def outbound(account: Account, agent: str, message_id: str) -> dict[str, Any]:
    shown = await account.http.get(v1(agent, f"/messages/{message_id}"))
    assert shown.status_code == 200, shown.text
    return dict(shown.json())


async def two_agents(make_account: Any) -> tuple[Account, str, str]:
    alice: Account = await make_account("alice@example.com")
    return alice, await create_agent(alice, "bot"), await create_agent(alice, "pal")


async def test_a_future_send_at_is_scheduled_and_handed_on_at_its_time(
    running: RunningGateway, make_account: Any
) -> None:
    alice, bot, pal = await two_agents(make_account)
    send_at = datetime.now(UTC) + timedelta(seconds=WAIT)
    answer = await send(alice, bot, pal, "Scheduled", send_at.isoformat())
    assert answer.status_code == 202, answer.text
    result = answer.json()
    assert result["status"] == "scheduled"
    assert datetime.fromisoformat(result["scheduled_at"]) == send_at.replace(microsecond=0) or (
        abs(datetime.fromisoformat(result["scheduled_at"]) - send_at) < timedelta(seconds=1)
    )
    shown = await outbound(alice, bot, result["message_id"])
    assert shown["delivery_status"] == "accepted" and shown["scheduled_at"]
    (listed,) = (
        await alice.http.get(v1(bot, "/messages"), params={"direction": "outbound"})
    ).json()["items"]
    assert listed["scheduled_at"] == shown["scheduled_at"]
    assert not await received(alice, pal, "Scheduled")
    arrived = await arrival(alice, pal, "Scheduled")
    assert arrived >= send_at.timestamp()
    after = await outbound(alice, bot, result["message_id"])
    assert after["scheduled_at"] == shown["scheduled_at"]  # kept once sent
    assert after["delivery_status"] != "accepted"


async def test_a_past_send_at_sends_at_once_without_a_schedule(
    running: RunningGateway, make_account: Any
) -> None:
    alice, bot, pal = await two_agents(make_account)
    answer = await send(alice, bot, pal, "Past", ahead(-60))
    assert answer.status_code in (200, 202), answer.text
    assert answer.json()["status"] in ("accepted", "sent")
    assert "scheduled_at" not in answer.json()
    await arrival(alice, pal, "Past", bound=5)
    assert "scheduled_at" not in await outbound(alice, bot, answer.json()["message_id"])


async def test_too_far_ahead_or_only_to_itself_is_refused(
    running: RunningGateway, make_account: Any
) -> None:
    alice, bot, pal = await two_agents(make_account)
    for to, send_at in ((pal, ahead(91 * 86400)), (bot, ahead(60)), (pal, "tomorrow")):
        answer = await send(alice, bot, to, "No", send_at)
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["code"] == "invalid_request"
    naive = await send(alice, bot, pal, "No", "2030-01-01T00:00:00")  # no UTC offset
    assert naive.status_code == 400, naive.text
    listed = await alice.http.get(v1(bot, "/messages"), params={"direction": "outbound"})
    assert listed.json()["items"] == []


async def test_send_at_is_read_as_rfc_3339_and_nothing_else(
    running: RunningGateway, make_account: Any
) -> None:
    """send_at is RFC 3339 as the listing's since/until read it: `t` and `z` in lower case are
    RFC 3339 and schedule; ISO 8601's other forms (a week date, the compact form, minutes
    without seconds, an offset without its colon) and an offset whose minutes pass 59 are
    refused, never read as some other instant."""
    alice, bot, pal = await two_agents(make_account)
    moment = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)
    lower = await send(alice, bot, pal, "Lower", moment.strftime("%Y-%m-%dt%H:%M:%Sz"))
    assert lower.status_code == 202, lower.text
    assert datetime.fromisoformat(lower.json()["scheduled_at"]) == moment
    for loose in (
        moment.strftime("%G-W%V-%uT%H:%M:%SZ"),
        moment.strftime("%Y%m%dT%H%M%SZ"),
        moment.strftime("%Y-%m-%dT%H:%MZ"),
        moment.strftime("%Y-%m-%dT%H:%M:%S+0000"),
        moment.strftime("%Y-%m-%dT%H:%M:%S+00:75"),  # no such offset: not read as +01:15
    ):
        refused = await send(alice, bot, pal, "No", loose)
        assert refused.status_code == 400, (loose, refused.text)
        assert refused.json()["error"]["code"] == "invalid_request"
    listed = await alice.http.get(v1(bot, "/messages"), params={"direction": "outbound"})
    assert [item["subject"] for item in listed.json()["items"]] == ["Lower"]


async def test_the_trash_stops_a_scheduled_send_and_a_restore_rearms_or_cancels_it(
    running: RunningGateway, make_account: Any
) -> None:
    alice, bot, pal = await two_agents(make_account)
    never = (await send(alice, bot, pal, "Never", ahead(WAIT))).json()["message_id"]
    rearmed = (await send(alice, bot, pal, "Rearmed", ahead(WAIT))).json()["message_id"]
    late = (await send(alice, bot, pal, "Late", ahead(WAIT))).json()["message_id"]
    for message_id in (never, rearmed, late):
        deleted = await alice.http.delete(v1(bot, f"/messages/{message_id}"))
        assert deleted.status_code == 200, deleted.text
    restored = await alice.http.post(v1(bot, f"/messages/{rearmed}/restore"))
    assert restored.status_code == 200, restored.text
    assert restored.json()["delivery_status"] == "accepted"
    await arrival(alice, pal, "Rearmed")
    await trio.sleep(1.5)  # the send worker's poll, past each schedule
    assert not await received(alice, pal, "Never")
    assert not await received(alice, pal, "Late")
    restored = await alice.http.post(v1(bot, f"/messages/{late}/restore"))
    assert restored.status_code == 200, restored.text
    shown = restored.json()
    assert shown["delivery_status"] == "failed" and "cancel" in shown["delivery_detail"]
    assert shown["scheduled_at"]
    await trio.sleep(1.5)
    assert not await received(alice, pal, "Late")


async def test_an_agent_trashed_holds_its_scheduled_mail_until_restored(
    running: RunningGateway, make_account: Any
) -> None:
    alice, bot, pal = await two_agents(make_account)
    early = (await send(alice, bot, pal, "Early", ahead(WAIT))).json()["message_id"]
    assert (await alice.http.delete(v1(bot), params={"confirm": "DELETE"})).status_code == 200
    assert (await alice.http.post(v1(bot, "/restore"))).status_code == 200
    await arrival(alice, pal, "Early")
    assert (await outbound(alice, bot, early))["scheduled_at"]

    late = (await send(alice, bot, pal, "Too late", ahead(WAIT))).json()["message_id"]
    assert (await alice.http.delete(v1(bot), params={"confirm": "DELETE"})).status_code == 200
    await trio.sleep(WAIT + 1.5)
    assert (await alice.http.post(v1(bot, "/restore"))).status_code == 200
    shown = await outbound(alice, bot, late)
    assert shown["delivery_status"] == "failed" and "cancel" in shown["delivery_detail"]
    await trio.sleep(1.5)
    assert not await received(alice, pal, "Too late")


async def test_a_held_scheduled_send_shows_its_time_in_the_queue_and_its_approval(
    running: RunningGateway, make_account: Any
) -> None:
    """A send its agent's outbound gate holds keeps its send_at: the review queue lists it with
    `scheduled_at`, and approving it answers `scheduled` (due then), not `accepted`."""
    alice, bot, pal = await two_agents(make_account)
    holds_all = {
        "inbound": {"gate": {}, "scan": {"sensitivity": "off"}},
        "outbound": {
            "gate": {"policy": "allowlist", "allowlist": [], "action": "review"},
            "scan": {},
        },
        "holds": {},
    }
    protected = await alice.http.put(v1(bot, "/protection"), json=holds_all)
    assert protected.status_code == 200, protected.text
    answer = await send(alice, bot, pal, "Held and scheduled", ahead(3600))
    assert answer.status_code == 202, answer.text
    held = answer.json()
    assert held["status"] == "pending_review" and held["scheduled_at"]
    (item,) = (await alice.http.get("/v1/reviews")).json()["items"]
    assert item["id"] == held["message_id"] and item["scheduled_at"] == held["scheduled_at"]
    approved = await alice.http.post(f"/v1/reviews/{held['message_id']}/approve", json={})
    assert approved.status_code == 202, approved.text
    assert approved.json()["status"] == "scheduled"
    assert approved.json()["scheduled_at"] == held["scheduled_at"]
    assert not await received(alice, pal, "Held and scheduled")
