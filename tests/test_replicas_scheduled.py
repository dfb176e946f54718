"""Scheduled sending and managed unsubscribe across two `e2a serve` replicas on one
PostgreSQL database, handing outbound mail to one aiosmtpd relay on 127.0.0.1.

Sends scheduled on replica A are handed on exactly once when due, whichever replica's worker
takes each; one moved to the trash on replica B before its time is sent by neither, and one
trashed on B and restored on A before its time is sent once. A managed
message sent by A's worker carries its link, and a one-click POST of it to B suppresses the
address for the sending agent, so a later send on A is refused. Skipped (with a message)
unless E2A_TEST_POSTGRES_URL names a test cluster.
"""

from __future__ import annotations

import email
import email.policy
import re
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest
import trio

from tests.dns_server import serve_dns
from tests.relay_support import Sink, relay_on_loopback
from tests.test_replicas import Replica, bootstrap, create_agent, database, replica

pytestmark = [pytest.mark.slow, pytest.mark.backend_independent]

__all__ = ["database"]  # fixture

AHEAD_SECONDS = 3.0
"""How far ahead the sends are scheduled: long enough to act before, short to run."""
DELIVERY_SECONDS = 10.0
SETTLE_SECONDS = 2.5
"""Past a send's time: a hand-off by either replica (each polls every second) has come."""
SENDS = 12
RECIPIENT = "someone@example.org"
ONE_CLICK = "List-Unsubscribe=One-Click"


def outbound(relay_port: int) -> str:
    return f'[outbound_smtp]\nhost = "127.0.0.1"\nport = {relay_port}\ntls = "none"\n'


def messages(replica: Replica, agent: str, suffix: str = "") -> str:
    return f"{replica.http_url}/v1/agents/{quote(agent, safe='')}/messages{suffix}"


def subjects(sink: Sink) -> Counter[str]:
    """How often the relay took each subject."""
    parsed = (
        email.message_from_bytes(raw, policy=email.policy.default) for _, _, raw in sink.received
    )
    return Counter(str(message["Subject"]) for message in parsed)


async def wait_for(condition: Any, seconds: float) -> bool:
    with trio.move_on_after(seconds):
        while not condition():  # noqa: ASYNC110 (the relay's thread fills it)
            await trio.sleep(0.05)
    return bool(condition())


@asynccontextmanager
async def with_relay(sink: Sink) -> AsyncIterator[tuple[int, int]]:
    """The relay serving `sink` and a loopback DNS with an empty zone: their ports."""
    with relay_on_loopback(sink) as relay_port:
        async with trio.open_nursery() as nursery:
            dns_port = await nursery.start(serve_dns, {})
            yield relay_port, dns_port
            nursery.cancel_scope.cancel()


async def send(
    http: httpx.AsyncClient, replica: Replica, agent: str, subject: str, **extra: Any
) -> dict[str, Any]:
    body = {"to": [RECIPIENT], "subject": subject, "text": "Hello.", **extra}
    answer = await http.post(messages(replica, agent), json=body)
    assert answer.status_code == 202, answer.text
    return dict(answer.json())


async def test_sends_scheduled_on_a_go_once_when_due_and_the_trash_on_b_stops_one(
    tmp_path: Path, database: str
) -> None:
    sink = Sink()
    async with with_relay(sink) as (relay_port, dns_port):
        extra = outbound(relay_port)
        async with (
            replica(tmp_path, "a", database, dns_port, extra=extra) as a,
            replica(tmp_path, "b", database, dns_port, extra=extra) as b,
        ):
            key = await bootstrap(a)
            agent = await create_agent(a, key, {"slug": "bot", "agent_mode": "local"})
            headers = {"Authorization": f"Bearer {key}"}
            async with httpx.AsyncClient(headers=headers, timeout=10) as http:
                send_at = (datetime.now(UTC) + timedelta(seconds=AHEAD_SECONDS)).isoformat()
                scheduled = [
                    await send(http, a, agent, f"due {n}", send_at=send_at) for n in range(SENDS)
                ]
                stopped = await send(http, a, agent, "stopped", send_at=send_at)
                rearmed = await send(http, a, agent, "rearmed", send_at=send_at)
                answers = [*scheduled, stopped, rearmed]
                assert {answer["status"] for answer in answers} == {"scheduled"}
                due = datetime.fromisoformat(stopped["scheduled_at"]).timestamp()
                for trashed_id in (stopped["message_id"], rearmed["message_id"]):
                    trashed = await http.delete(messages(b, agent, f"/{trashed_id}"))
                    assert trashed.status_code == 200, trashed.text
                restored = await http.post(messages(a, agent, f"/{rearmed['message_id']}/restore"))
                assert restored.status_code == 200, restored.text
                assert time.time() < due, "the trash was not before the send's time"
                assert sink.received == []
                assert await wait_for(
                    lambda: len(sink.received) >= SENDS + 1, due - time.time() + DELIVERY_SECONDS
                )
                await trio.sleep(SETTLE_SECONDS)
                for replica_ in (a, b):
                    shown = await http.get(messages(replica_, agent, f"/{stopped['message_id']}"))
                    assert shown.status_code == 200, shown.text
                    assert shown.json()["delivery_status"] == "accepted"
    assert subjects(sink) == Counter({"rearmed": 1, **{f"due {n}": 1 for n in range(SENDS)}})


def unsubscribe_path(raw: bytes) -> str:
    """The path of the message's one-click link (`List-Unsubscribe`), its footer naming it."""
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message["List-Unsubscribe-Post"] == ONE_CLICK
    found = re.fullmatch(r"<(https?://[^>]+/u/[A-Za-z0-9_-]+)>", str(message["List-Unsubscribe"]))
    assert found is not None, message["List-Unsubscribe"]
    body = message.get_body(("plain",))
    assert body is not None and found.group(1) in body.get_content()
    return urlsplit(found.group(1)).path


async def test_a_managed_link_sent_by_a_unsubscribes_through_b_for_sends_on_a(
    tmp_path: Path, database: str
) -> None:
    sink = Sink()
    async with with_relay(sink) as (relay_port, dns_port):
        extra = outbound(relay_port)
        async with replica(tmp_path, "a", database, dns_port, extra=extra) as a:
            key = await bootstrap(a)
            agent = await create_agent(a, key, {"slug": "bot", "agent_mode": "local"})
            sibling = await create_agent(a, key, {"slug": "sibling", "agent_mode": "local"})
            headers = {"Authorization": f"Bearer {key}"}
            async with httpx.AsyncClient(headers=headers, timeout=10) as http:
                # B is not running yet: A's worker sends it
                await send(http, a, agent, "Weekly", unsubscribe={"mode": "managed"})
                assert await wait_for(lambda: sink.received, DELIVERY_SECONDS)
                path = unsubscribe_path(sink.received[0][2])
                async with replica(tmp_path, "b", database, dns_port, extra=extra) as b:
                    async with httpx.AsyncClient(timeout=10) as stranger:  # no key
                        clicked = await stranger.post(
                            b.http_url + path,
                            content=ONE_CLICK,
                            headers={"Content-Type": "application/x-www-form-urlencoded"},
                        )
                    assert clicked.status_code == 200, clicked.text
                    listed = await http.get(
                        f"{b.http_url}/v1/agents/{quote(agent, safe='')}/suppressions"
                    )
                    assert [item["address"] for item in listed.json()["items"]] == [RECIPIENT]
                    refused = await http.post(
                        messages(a, agent),
                        json={"to": [RECIPIENT], "subject": "Again", "text": "Hello."},
                    )
                    assert refused.status_code == 422, refused.text
                    assert refused.json()["error"]["code"] == "recipient_suppressed"
                    other = await send(http, a, sibling, "From the sibling")
                    assert other["status"] in ("accepted", "sent")
                    assert await wait_for(lambda: len(sink.received) >= 2, DELIVERY_SECONDS)
    assert subjects(sink) == Counter({"Weekly": 1, "From the sibling": 1})
