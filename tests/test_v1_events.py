"""The `/v1` events log as e2a shows it, over real HTTP, WebSocket and SMTP: the list carries
the fan-out's status and the delivery counts as getEvent does; one `email.received` has one id
and one `data` on the WebSocket, in the log and in a webhook's body; a redelivery goes only to
a webhook the event matched, once a day; `type` matches one type exactly; `until` is exclusive;
a loopback `email.sent` names no provider message id."""

from __future__ import annotations

import base64
import json
import smtplib
import time
from email.message import EmailMessage
from typing import Any
from urllib.parse import quote

import pytest
import trio
from trio_websocket import open_websocket_url

from e2a_gateway.app import RunningGateway
from e2a_gateway.clock import format_timestamp
from e2a_gateway.ids import new_id
from e2a_gateway.mailauth.resolver import FixtureResolver
from e2a_gateway.workers.outbound import OutboundWorker
from e2a_gateway.workers.subscribers import SubscriberWorker
from e2a_gateway.workers.webhook_connections import WebhookConnections
from tests.conftest import Account
from tests.delivery_support import QuietGateway, agent_scoped_client, create_agent
from tests.http_receiver import HttpReceiver
from tests.webhook_support import FakeClock, alice, quiet, receiver, settings, store_received

__all__ = ["alice", "quiet", "receiver", "settings"]  # fixtures

WAIT = 10
DEAD_HOOK = "http://127.0.0.1:9/hook"
"""A webhook target nobody listens on: every attempt is refused, and retried."""
ZONE = {
    "example.org": ["v=spf1 ip4:127.0.0.1 -all"],
    "_dmarc.example.org": ["v=DMARC1; p=reject"],
}
"""Mail from 127.0.0.1 in example.org's name passes SPF and DMARC (policy reject)."""


@pytest.fixture
def resolver() -> FixtureResolver:
    return FixtureResolver(ZONE)


async def send_local(
    quiet: QuietGateway, account: Account, sender: str, recipient: str, subject: str
) -> None:
    """Send from one of the account's agents to another, delivered locally by the send worker."""
    sent = await account.http.post(
        "/api/v1/send",
        json={"from": sender, "to": [recipient], "subject": subject, "body": "Hello"},
    )
    assert sent.status_code == 200, sent.text
    assert await OutboundWorker(quiet.gateway).deliver_due(time.time()) == 1


async def make_hook(account: Account, url: str, events: list[str]) -> str:
    made = await account.http.post("/v1/webhooks", json={"url": url, "events": events})
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


async def listed(account: Account, **params: str) -> list[dict[str, Any]]:
    answer = await account.http.get("/v1/events", params=params)
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


async def one_event(account: Account, event_id: str) -> dict[str, Any]:
    answer = await account.http.get(f"/v1/events/{event_id}")
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


def ws_url(http_url: str, agent: str) -> str:
    return http_url.replace("http://", "ws://") + f"/v1/agents/{quote(agent, safe='')}/ws"


def bearer(key: str) -> list[tuple[bytes, bytes]]:
    return [(b"Authorization", f"Bearer {key}".encode())]


def envelope_of(event: dict[str, Any]) -> dict[str, Any]:
    """The envelope fields of an EventView (what every channel pushes)."""
    return {name: event[name] for name in ("type", "id", "schema_version", "created_at", "data")}


async def test_the_list_shows_the_fan_out_status_and_counts_as_get_does(
    quiet: QuietGateway, alice: Account
) -> None:
    writer = await create_agent(alice, "writer")
    reader = await create_agent(alice, "reader")
    await make_hook(alice, DEAD_HOOK, ["email.received"])
    await send_local(quiet, alice, writer, reader, "Counted")

    def by_type(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return {item["type"]: item for item in items}

    queued = {"matched_webhooks": 1, "delivered": 0, "pending": 1, "failed": 0}
    nothing = {"matched_webhooks": 0, "delivered": 0, "pending": 0, "failed": 0}
    first = by_type(await listed(alice))
    assert set(first) == {"email.received", "email.sent", "email.delivered"}
    received = first["email.received"]
    assert (received["status"], received["delivery_status"]) == ("processed", queued)
    assert (first["email.sent"]["status"], first["email.sent"]["delivery_status"]) == (
        "no_match",
        nothing,
    )

    clock = FakeClock(time.time())
    async with WebhookConnections() as connections:  # refused: retried later, still pending
        worker = SubscriberWorker(quiet.gateway, connections, clock=clock, attempt_timeout=2.0)
        assert await worker.deliver_due(clock.now) == 1
    retrying = by_type(await listed(alice))["email.received"]
    assert (retrying["status"], retrying["delivery_status"]) == ("processed", queued)
    for item in (await listed(alice)) + (await listed(alice, limit="1")):
        assert item == await one_event(alice, item["id"])  # the list and getEvent agree


async def test_a_websocket_frame_is_the_logged_event_and_the_webhook_body(
    quiet: QuietGateway, alice: Account, receiver: HttpReceiver
) -> None:
    writer = await create_agent(alice, "writer")
    reader = await create_agent(alice, "reader")
    await make_hook(alice, receiver.url, ["email.received"])
    url = ws_url(quiet.http_url, reader)
    async with open_websocket_url(url, extra_headers=bearer(alice.key)) as socket:
        await trio.sleep(0.2)  # connected, nothing unread yet
        await send_local(quiet, alice, writer, reader, "Same everywhere")
        with trio.fail_after(WAIT):
            frame = json.loads(await socket.get_message())
    assert frame["type"] == "email.received" and frame["data"]["subject"] == "Same everywhere"
    message_id = frame["data"]["message_id"]
    assert frame["id"][4:16] == message_id[4:16]  # begins with the message's time: in order

    clock = FakeClock(time.time())
    async with WebhookConnections() as connections:
        worker = SubscriberWorker(quiet.gateway, connections, clock=clock, attempt_timeout=5.0)
        assert await worker.deliver_due(clock.now) == 1
    (pushed,) = await receiver.wait_for(1)
    assert json.loads(pushed.body) == frame
    assert envelope_of(await one_event(alice, frame["id"])) == frame
    (logged,) = await listed(alice, type="email.received")
    assert envelope_of(logged) == frame

    async with open_websocket_url(url, extra_headers=bearer(alice.key)) as again:
        with trio.fail_after(WAIT):  # still unread: drained on connect, named alike
            assert json.loads(await again.get_message()) == frame


async def test_mail_another_agent_delivered_here_has_no_authentication_in_its_events(
    quiet: QuietGateway, alice: Account
) -> None:
    """Mail one agent of this gateway sends another is delivered without SMTP: no peer was
    authenticated, so `authentication` is null in its `email.received` event (WebSocket and
    log), in the `email.review_requested` event and the review of a copy the inbound gate
    held, as getMessage shows it and as e2a's EmailReceivedData has it for providerless
    loopback delivery. An object whose DMARC `status` is `none` would say that DMARC was
    evaluated and the domain publishes no policy: `e2a listen` (the npm CLI) printed
    `DMARC: none` instead of `DMARC: not evaluated (providerless delivery)`."""
    writer = await create_agent(alice, "writer")
    reader = await create_agent(alice, "reader")
    wary = await create_agent(alice, "wary")
    held_gate = {"policy": "allowlist", "allowlist": [], "action": "review"}
    protected = await alice.http.put(
        f"/v1/agents/{quote(wary, safe='')}/protection",
        json={
            "inbound": {"gate": held_gate, "scan": {}},
            "outbound": {"gate": {}, "scan": {}},
            "holds": {},
        },
    )
    assert protected.status_code == 200, protected.text

    url = ws_url(quiet.http_url, reader)
    async with open_websocket_url(url, extra_headers=bearer(alice.key)) as socket:
        await trio.sleep(0.2)  # connected, nothing unread yet
        await send_local(quiet, alice, writer, reader, "Next door")
        with trio.fail_after(WAIT):
            frame = json.loads(await socket.get_message())
    data = frame["data"]
    assert (data["header_from"], data["authentication"], data["verified_domain"]) == (
        writer,
        None,
        None,
    )
    assert envelope_of(await one_event(alice, frame["id"])) == frame
    shown = await alice.http.get(
        f"/v1/agents/{quote(reader, safe='')}/messages/{data['message_id']}"
    )
    assert shown.status_code == 200, shown.text
    assert shown.json()["authentication"] is None

    await send_local(quiet, alice, writer, wary, "Held next door")
    (requested,) = await listed(alice, type="email.review_requested")
    assert requested["data"]["authentication"] is None
    review = await alice.http.get(f"/v1/reviews/{requested['data']['message_id']}")
    assert review.status_code == 200, review.text
    assert review.json()["authentication"] is None


def smtp_send_bytes(port: int, recipients: list[str], data: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=WAIT) as client:
        client.ehlo("mail.example.org")
        client.sendmail("alice@example.org", recipients, data)


def smtp_send(port: int, recipients: list[str], subject: str) -> None:
    letter = (
        f"From: alice@example.org\r\nTo: {', '.join(recipients)}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{new_id('m')}@example.org>\r\n\r\nHello agent.\r\n"
    ).encode()
    smtp_send_bytes(port, recipients, letter)


async def test_mail_over_smtp_is_one_event_on_the_websocket_and_in_the_log(
    running: RunningGateway, make_account: Any
) -> None:
    owner: Account = await make_account("owner@example.com")
    bot = await create_agent(owner, "bot")
    url = ws_url(running.addresses.http_url, bot)
    async with open_websocket_url(url, extra_headers=bearer(owner.key)) as socket:
        await trio.sleep(0.2)
        port = running.addresses.smtp_port
        await trio.to_thread.run_sync(smtp_send, port, [bot], "Authenticated")
        with trio.fail_after(WAIT):
            frame = json.loads(await socket.get_message())
    data = frame["data"]
    assert data["verified_domain"] == "example.org"
    assert data["authentication"]["dmarc"] == {
        "status": "pass",
        "domain": "example.org",
        "policy": "reject",
        "aligned_by": [],
    }
    assert envelope_of(await one_event(owner, frame["id"])) == frame
    assert [item["id"] for item in await listed(owner, message_id=data["message_id"])] == [
        frame["id"]
    ]


async def test_each_copy_of_mail_to_many_agents_is_its_own_event(
    running: RunningGateway, make_account: Any
) -> None:
    owner: Account = await make_account("owner@example.com")
    bots = [await create_agent(owner, f"bot{number}") for number in range(3)]
    url = ws_url(running.addresses.http_url, bots[2])
    async with open_websocket_url(url, extra_headers=bearer(owner.key)) as socket:
        await trio.sleep(0.2)
        port = running.addresses.smtp_port
        await trio.to_thread.run_sync(smtp_send, port, bots, "To all three")
        with trio.fail_after(WAIT):
            frame = json.loads(await socket.get_message())
    assert frame["data"]["agent_email"] == frame["data"]["delivered_to"] == bots[2]
    assert envelope_of(await one_event(owner, frame["id"])) == frame  # a further copy's
    events = {item["data"]["agent_email"]: item for item in await listed(owner)}
    assert sorted(events) == sorted(bots) and envelope_of(events[bots[2]]) == frame
    for bot, item in events.items():
        data = item["data"]
        assert data["delivered_to"] == bot and item["message_id"] == data["message_id"]
        assert {**data, "message_id": "", "agent_email": "", "delivered_to": ""} == {
            **frame["data"],
            "message_id": "",
            "agent_email": "",
            "delivered_to": "",
        }
    assert len({item["id"] for item in events.values()}) == 3
    # one row of the log holds the three: a page of one gives each in turn, by its cursor
    paged: list[str] = []
    cursor: str | None = None
    for _ in range(5):
        answer = await owner.http.get(
            "/v1/events", params={"limit": "1", **({"cursor": cursor} if cursor else {})}
        )
        assert answer.status_code == 200, answer.text
        paged += [item["id"] for item in answer.json()["items"]]
        cursor = answer.json()["next_cursor"]
        if cursor is None:
            break
    assert paged == [item["id"] for item in await listed(owner)]
    by_agent = await listed(owner, agent_email=bots[1])
    assert [item["data"]["agent_email"] for item in by_agent] == [bots[1]]


async def redeliver(account: Account, event_id: str, body: dict[str, Any]) -> Any:
    return await account.http.post(f"/v1/events/{event_id}/redeliver", json=body)


async def deliveries_of(account: Account, webhook_id: str) -> list[str]:
    answer = await account.http.get(f"/v1/webhooks/{webhook_id}/deliveries")
    assert answer.status_code == 200, answer.text
    return [item["id"] for item in answer.json()["items"]]


async def test_a_redelivery_goes_to_a_matched_webhook_and_once_a_day(
    quiet: QuietGateway, alice: Account
) -> None:
    writer = await create_agent(alice, "writer")
    reader = await create_agent(alice, "reader")
    matched = await make_hook(alice, DEAD_HOOK, ["email.received"])
    elsewhere = await make_hook(alice, DEAD_HOOK, ["email.bounced"])
    await send_local(quiet, alice, writer, reader, "Again")
    (event,) = await listed(alice, type="email.received")

    for stranger in (elsewhere, "wh_nope"):
        refused = await redeliver(alice, event["id"], {"webhook_id": stranger})
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"]["code"] == "conflict"
        assert refused.json()["error"]["message"] == (
            "webhook was not among the originally-matched subscribers"
        )
    assert await deliveries_of(alice, elsewhere) == []

    first = await redeliver(alice, event["id"], {"webhook_id": matched})
    assert first.status_code == 202, first.text
    assert first.json()["status"] == "pending" and first.json()["webhook_id"] == matched
    repeat = await redeliver(alice, event["id"], {"webhook_id": matched})
    assert (repeat.status_code, repeat.json()) == (202, first.json())
    assert len(await deliveries_of(alice, matched)) == 2  # the fan-out's and one replay

    # an empty webhook_id names none, as e2a's (omitempty) reads it: to every matched webhook
    every = await redeliver(alice, event["id"], {"webhook_id": ""})
    assert every.status_code == 202, every.text
    (scheduled,) = every.json()["deliveries"]
    assert every.json()["status"] == "scheduled" and scheduled["webhook_id"] == matched
    assert scheduled["delivery_id"] != first.json()["delivery_id"]  # a key of its own
    assert (await redeliver(alice, event["id"], {})).json() == every.json()
    assert len(await deliveries_of(alice, matched)) == 3
    counts = (await one_event(alice, event["id"]))["delivery_status"]
    assert counts == {"matched_webhooks": 3, "delivered": 0, "pending": 3, "failed": 0}

    # an agent key is refused before any answer kept for the account could replay to it
    async with agent_scoped_client(alice, reader) as agent:
        refused = await agent.post(f"/v1/events/{event['id']}/redeliver", json={})
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["code"] == "forbidden"
    assert len(await deliveries_of(alice, matched)) == 3


async def test_an_address_registered_again_sees_nothing_of_the_agent_before_it(
    quiet: QuietGateway, alice: Account
) -> None:
    """An agent deleted for good, its address registered again: the earlier agent's own
    suppressions are gone, while the account keeps its events."""
    first = await create_agent(alice, "again")
    await store_received(quiet, first, time.time() - 60, "For the first agent")
    (earlier,) = await listed(alice, type="email.received", agent_email=first)
    suppressions = f"/v1/agents/{quote(first, safe='')}/suppressions"
    added = await alice.http.post(suppressions, json={"address": "spam@example.net"})
    assert added.status_code == 200, added.text
    deleted = await alice.http.delete(f"/api/v1/agents/{quote(first, safe='')}")
    assert deleted.status_code == 200, deleted.text
    # an agent's creation is kept to the second: its events (agent.suppression_added above)
    # are told apart from the next agent's only in an earlier second
    await trio.sleep(1 - time.time() % 1)

    second = await create_agent(alice, "again")
    assert second == first
    # the account keeps its log: the earlier agent's events are still its own to read
    kept = await listed(alice, agent_email=first)
    assert [item["type"] for item in kept] == ["agent.suppression_added", "email.received"]
    assert kept[1]["id"] == earlier["id"]
    listed_suppressions = await alice.http.get(suppressions)
    assert listed_suppressions.status_code == 200, listed_suppressions.text
    assert listed_suppressions.json()["items"] == []


async def test_until_is_exclusive_and_since_inclusive(quiet: QuietGateway, alice: Account) -> None:
    reader = await create_agent(alice, "reader")
    at = float(int(time.time()) - 3600)  # a whole second, an hour ago
    message_id = await store_received(quiet, reader, at, "At a second")

    async def found(**bounds: float) -> list[str]:
        params = {name: format_timestamp(value) for name, value in bounds.items()}
        return [item["message_id"] for item in await listed(alice, message_id=message_id, **params)]

    assert await found(until=at) == []  # created_at < until, as e2a's
    assert await found(until=at + 1) == [message_id]
    assert await found(since=at) == [message_id]
    assert await found(since=at, until=at) == []


async def test_the_type_filter_matches_one_type_exactly_as_e2as(
    quiet: QuietGateway, alice: Account
) -> None:
    """e2a's listEvents compares `type` with each event's type and nothing more: a type it never
    sends, or several joined by commas, is no error (400 `invalid_event_type` is
    createWebhook's and testWebhook's), just a filter nothing matches."""
    writer = await create_agent(alice, "writer")
    reader = await create_agent(alice, "reader")
    await send_local(quiet, alice, writer, reader, "Filtered")
    assert {item["type"] for item in await listed(alice)} == {
        "email.received",
        "email.sent",
        "email.delivered",
    }
    assert [item["type"] for item in await listed(alice, type="email.sent")] == ["email.sent"]
    assert await listed(alice, type="nope") == []
    assert await listed(alice, type="email.sent,email.received") == []
    assert await listed(alice, type="Email.Sent") == []


async def test_a_loopback_send_names_no_provider_message_id(
    quiet: QuietGateway, alice: Account
) -> None:
    writer = await create_agent(alice, "writer")
    reader = await create_agent(alice, "reader")
    await send_local(quiet, alice, writer, reader, "Local")
    (sent,) = await listed(alice, type="email.sent")
    assert sent["data"]["method"] == "loopback"
    assert "provider_message_id" not in sent["data"]


def letter_with_attachments(recipient: str, subject: str) -> tuple[bytes, bytes, bytes]:
    """A multipart letter (text, HTML, a PDF and an inline image), the PDF and the image."""
    pdf, png = b"%PDF-1.4 quote " * 300, b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
    letter = EmailMessage()
    letter["From"], letter["To"], letter["Subject"] = "alice@example.org", recipient, subject
    letter["Message-ID"] = f"<{new_id('m')}@example.org>"
    letter.set_content("The quote is attached.")
    letter.add_alternative('<p>The quote.</p><img src="cid:logo@example.org">', subtype="html")
    letter.add_attachment(pdf, maintype="application", subtype="pdf", filename="quote.pdf")
    letter.add_attachment(
        png,
        maintype="image",
        subtype="png",
        filename="logo.png",
        cid="<logo@example.org>",
        disposition="inline",
    )
    return letter.as_bytes(policy=letter.policy.clone(linesep="\r\n")), pdf, png


async def test_email_received_lists_the_attachments_as_the_message_view_does(
    running: RunningGateway, make_account: Any
) -> None:
    owner: Account = await make_account("owner@example.com")
    bot = await create_agent(owner, "bot")
    guarded = await create_agent(owner, "guarded")
    gate = {"policy": "allowlist", "allowlist": ["friend@example.org"], "action": "review"}
    protection = {"inbound": {"gate": gate, "scan": {}}, "outbound": {"gate": {}, "scan": {}}}
    changed = await owner.http.put(
        f"/v1/agents/{quote(guarded, safe='')}/protection", json={**protection, "holds": {}}
    )
    assert changed.status_code == 200, changed.text
    port = running.addresses.smtp_port
    data, pdf, png = letter_with_attachments(bot, "Quote")
    async with open_websocket_url(
        ws_url(running.addresses.http_url, bot), extra_headers=bearer(owner.key)
    ) as socket:
        await trio.sleep(0.2)
        await trio.to_thread.run_sync(smtp_send_bytes, port, [bot], data)
        with trio.fail_after(WAIT):
            frame = json.loads(await socket.get_message())
        await trio.to_thread.run_sync(smtp_send, port, [bot], "Plain")
        with trio.fail_after(WAIT):
            plain = json.loads(await socket.get_message())
    expected = [
        {
            "index": 0,
            "size_bytes": len(pdf),
            "filename": "quote.pdf",
            "content_type": "application/pdf",
        },
        {
            "index": 1,
            "size_bytes": len(png),
            "filename": "logo.png",
            "content_type": "image/png",
            "content_id": "logo@example.org",
        },
    ]
    assert frame["data"]["attachments"] == expected
    message_id = frame["data"]["message_id"]
    viewed = await owner.http.get(f"/v1/agents/{quote(bot, safe='')}/messages/{message_id}")
    assert viewed.status_code == 200, viewed.text
    assert viewed.json()["attachments"] == expected  # the event and the resource agree
    assert envelope_of(await one_event(owner, frame["id"])) == frame
    assert "attachments" not in plain["data"]  # none: left out, as e2a leaves it out

    await trio.to_thread.run_sync(
        smtp_send_bytes, port, [guarded], letter_with_attachments(guarded, "Held")[0]
    )
    (held,) = (await owner.http.get("/v1/reviews")).json()["items"]
    approved = await owner.http.post(f"/v1/reviews/{held['id']}/approve", json={})
    assert approved.status_code == 200, approved.text
    (released,) = await listed(owner, type="email.received", message_id=held["id"])
    assert released["data"]["attachments"] == expected


async def test_a_loopback_send_lists_its_attachments_in_email_received(
    quiet: QuietGateway, alice: Account
) -> None:
    writer = await create_agent(alice, "writer")
    reader = await create_agent(alice, "reader")
    report = b"quarterly figures\n" * 100
    sent = await alice.http.post(
        "/api/v1/send",
        json={
            "from": writer,
            "to": [reader],
            "subject": "Report",
            "body": "Attached.",
            "attachments": [
                {
                    "filename": "report.txt",
                    "content_type": "text/plain",
                    "data": base64.b64encode(report).decode(),
                }
            ],
        },
    )
    assert sent.status_code == 200, sent.text
    assert await OutboundWorker(quiet.gateway).deliver_due(time.time()) == 1
    (received,) = await listed(alice, type="email.received")
    expected = [
        {
            "index": 0,
            "size_bytes": len(report),
            "filename": "report.txt",
            "content_type": "text/plain",
        }
    ]
    assert received["data"]["attachments"] == expected
    message_id = received["data"]["message_id"]
    viewed = await alice.http.get(f"/v1/agents/{quote(reader, safe='')}/messages/{message_id}")
    assert viewed.json()["attachments"] == expected


@pytest.mark.parametrize(
    "params",
    [
        {"since": "2026-01-01"},  # a date without its time
        {"until": "2026-01-01T12:00:00"},  # a time without its offset
        {"since": "yesterday"},
        {"until": "2026-01-01T12:00:00-01:60"},  # an offset's minutes run to 59
    ],
)
async def test_a_filter_time_that_is_no_rfc_3339_time_is_invalid_filter(
    alice: Account, params: dict[str, str]
) -> None:
    """As e2a's listEvents answers it (and listMessages here): 400 `invalid_filter` naming the
    filter, never the generic code."""
    answer = await alice.http.get("/v1/events", params=params)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] == "invalid_filter", error
    assert next(iter(params)) in error["message"]


async def test_an_offset_whose_plus_the_query_string_turned_into_a_space_is_explained(
    alice: Account,
) -> None:
    """`?since=2026-01-01T12:00:00+02:00` typed into a URL as it is reads `+` as a space: the
    answer says so, and how to write it (`%2B`), not only that an offset is wanted — the
    caller gave one. Written `%2B`, the same time is taken."""
    answer = await alice.http.get("/v1/events?since=2026-01-01T12:00:00+02:00")
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] == "invalid_filter", error
    assert "since" in error["message"] and "%2B" in error["message"], error
    taken = await alice.http.get("/v1/events?since=2026-01-01T12:00:00%2B02:00")
    assert taken.status_code == 200, taken.text


async def test_redeliveries_of_one_event_at_once_queue_it_once(
    quiet: QuietGateway, alice: Account
) -> None:
    """The same redelivery asked several times at once, as a retrying client does: it is
    queued once, and every answer is that one's (202, the same delivery id); never a 500."""
    writer = await create_agent(alice, "racer")
    reader = await create_agent(alice, "watcher")
    hook = await make_hook(alice, DEAD_HOOK, ["email.received"])
    await send_local(quiet, alice, writer, reader, "Twice")
    (event,) = await listed(alice, type="email.received")
    for body in ({"webhook_id": hook}, {}):
        with trio.fail_after(20):
            answers: list[Any] = []
            async with trio.open_nursery() as nursery:
                for _ in range(4):
                    nursery.start_soon(_append, answers, redeliver(alice, event["id"], body))
        assert [answer.status_code for answer in answers] == [202] * 4, [
            answer.text for answer in answers
        ]
        assert len({answer.text for answer in answers}) == 1, [a.text for a in answers]
    assert len(await deliveries_of(alice, hook)) == 3  # the fan-out's and one per replay


async def _append(answers: list[Any], call: Any) -> None:
    answers.append(await call)
