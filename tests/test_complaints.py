"""Complaints end to end: mail an agent sends goes to a relay sink on loopback with a return path
naming the message; an RFC 5965 feedback report (ARF) sent back over real SMTP to that return
path logs `email.complained` for the recipient, suppresses the address for the account (source
`complaint`, with `domain.suppression_added`), pushes the event to a webhook subscribed to it,
and the next send to the address is refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio

from e2a_gateway.app import RunningGateway
from e2a_gateway.config import Settings
from tests.conftest import Account, make_settings
from tests.delivery_support import create_agent, smtp_send, wait_until
from tests.http_receiver import HttpReceiver
from tests.relay_support import Sink, relay_port, sink
from tests.test_v1_bounces import message_wide_path

__all__ = ["relay_port", "sink"]  # fixtures

CAROL = "carol@example.org"
DAVE = "dave@example.org"


@pytest.fixture
def settings(tmp_path: Path, relay_port: int) -> Settings:
    relay = {"host": "127.0.0.1", "port": relay_port, "tls": "none", "timeout_seconds": 10}
    return make_settings(tmp_path, outbound_smtp=relay, webhooks={"allow_private": True})


def feedback_report(
    return_path: str,
    original: bytes,
    recipient: str | None,
    feedback_type: str = "abuse",
    *,
    jmrp_recipient: str | None = None,
) -> bytes:
    """An RFC 5965 abuse report about `original`, as a mailbox provider's feedback loop sends
    it (`recipient` None: redacted, as some providers do; `jmrp_recipient`: named only in the
    returned headers, as Microsoft's JMRP does)."""
    headers = original.split(b"\r\n\r\n", 1)[0].decode()
    if jmrp_recipient:
        headers = f"X-HmXmrOriginalRecipient: <{jmrp_recipient}>\r\n{headers}"
    rcpt = f"Original-Rcpt-To: {recipient}\r\n" if recipient else ""
    return (
        "From: Feedback Loop <fbl@mx.example.org>\r\n"
        f"To: {return_path}\r\n"
        "Subject: Abuse report\r\n"
        "MIME-Version: 1.0\r\n"
        "Message-ID: <report-1@mx.example.org>\r\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="arf"\r\n'
        "\r\n"
        "--arf\r\n"
        "Content-Type: text/plain\r\n"
        "\r\n"
        "This is an email abuse report for an email message received from IP 127.0.0.1.\r\n"
        "--arf\r\n"
        "Content-Type: message/feedback-report\r\n"
        "\r\n"
        f"Feedback-Type: {feedback_type}\r\n"
        "User-Agent: ExampleFBL/1.0\r\n"
        "Version: 1\r\n"
        f"{rcpt}"
        "Arrival-Date: Wed, 02 Dec 2026 08:00:00 +0000\r\n"
        "Source-IP: 127.0.0.1\r\n"
        "--arf\r\n"
        "Content-Type: text/rfc822-headers\r\n"
        "\r\n"
        f"{headers}\r\n"
        "--arf--\r\n"
    ).encode()


async def send(alice: Account, sender: str, to: list[str], subject: str = "Hi") -> Any:
    return await alice.http.post(
        "/api/v1/send", json={"from": sender, "to": to, "subject": subject, "body": "Hello"}
    )


async def events(alice: Account, event_type: str) -> list[dict[str, Any]]:
    listed = await alice.http.get("/v1/events", params={"type": event_type})
    assert listed.status_code == 200, listed.text
    items: list[dict[str, Any]] = listed.json()["items"]
    return items


async def test_a_feedback_report_is_a_complaint_that_suppresses_the_recipient(
    running: RunningGateway, make_account: Any, sink: Sink, nursery: trio.Nursery
) -> None:
    receiver = HttpReceiver()
    await nursery.start(receiver.serve)
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    hooked = await alice.http.post(
        "/v1/webhooks", json={"url": receiver.url, "events": ["email.complained"]}
    )
    assert hooked.status_code == 201, hooked.text
    sent = await send(alice, bot, [CAROL, DAVE])
    assert sent.status_code == 200, sent.text
    message_id = sent.json()["message_id"]
    await wait_until(lambda: len(sink.received) == 2)
    return_path, original = sink.copy_to(CAROL)

    report = feedback_report(return_path, original, CAROL)
    await smtp_send(running.addresses.smtp_port, [return_path], report, sender="")
    await smtp_send(running.addresses.smtp_port, [return_path], report, sender="")  # again

    (complained,) = await events(alice, "email.complained")  # once, though reported twice
    assert complained["message_id"] == message_id and complained["agent_email"] == bot
    data = complained["data"]
    assert data["delivered_to"] == CAROL and data["direction"] == "outbound"
    assert data["message_id"] == message_id and data["subject"] == "Hi"
    (added,) = await events(alice, "domain.suppression_added")
    assert added["data"]["address"] == CAROL and added["data"]["source"] == "complaint"
    assert added["data"]["message_id"] == message_id
    suppressions = await alice.http.get("/v1/account/suppressions")
    (suppressed,) = suppressions.json()["items"]
    assert (suppressed["address"], suppressed["source"]) == (CAROL, "complaint")
    assert suppressed["source_message_id"] == message_id
    assert "abuse" in suppressed["reason"]
    viewed = (await alice.http.get(f"/v1/agents/{bot}/messages/{message_id}")).json()
    assert viewed["delivery_status"] == "complained"
    lifecycle = await alice.http.get(f"/v1/agents/{bot}/messages/{message_id}/lifecycle")
    steps = [(step["stage"], step["reason_code"]) for step in lifecycle.json()["items"]]
    assert steps[-2:] == [
        ("complaint", "complaint.recipient_reported"),
        ("suppression", "suppression.complaint_applied"),
    ]
    assert lifecycle.json()["items"][-1]["occurred_at"] == complained["created_at"]

    await wait_until(lambda: len(receiver.requests) == 1)
    pushed = json.loads(receiver.requests[0].body)
    assert pushed["type"] == "email.complained" and pushed["id"] == complained["id"]
    assert pushed["data"]["delivered_to"] == CAROL

    refused = await send(alice, bot, [CAROL])
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "recipient_suppressed"
    assert (await send(alice, bot, [DAVE])).status_code == 200  # the other recipient is not


async def test_a_redacted_report_names_the_sole_recipient_and_no_other(
    running: RunningGateway, make_account: Any, sink: Sink
) -> None:
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    single = await send(alice, bot, [CAROL], "To one")
    both = await send(alice, bot, [CAROL, DAVE], "To two")
    assert single.status_code == both.status_code == 200
    await wait_until(lambda: len(sink.received) == 3)
    by_subject = {
        raw.split(b"Subject: ")[1].split(b"\r\n")[0]: item
        for item in sink.received
        for raw in [item[2]]
    }
    # A redacted report about mail to two people, at the return path naming the whole message
    # (as hand-offs had before each recipient had one), cannot say which of them complained.
    _, _, original = by_subject[b"To two"]
    path = message_wide_path(running, both.json()["message_id"], bot)
    port = running.addresses.smtp_port
    await smtp_send(port, [path], feedback_report(path, original, None), sender="")
    assert await events(alice, "email.complained") == []
    # About mail to one person, it can.
    path, _, original = by_subject[b"To one"]
    await smtp_send(port, [path], feedback_report(path, original, None), sender="")
    (complained,) = await events(alice, "email.complained")
    assert complained["message_id"] == single.json()["message_id"]
    assert complained["data"]["delivered_to"] == CAROL
    # A report naming someone the message was not sent to is not theirs to make.
    await smtp_send(port, [path], feedback_report(path, original, "eve@example.org"), sender="")
    assert len(await events(alice, "email.complained")) == 1
    listed = (await alice.http.get("/v1/account/suppressions")).json()["items"]
    assert [item["address"] for item in listed] == [CAROL]


@pytest.mark.parametrize("feedback_type", ["not-spam", "auth-failure"])
async def test_a_report_that_complains_of_nothing_suppresses_nobody(
    running: RunningGateway, make_account: Any, sink: Sink, feedback_type: str
) -> None:
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    sent = await send(alice, bot, [CAROL])
    assert sent.status_code == 200, sent.text
    await wait_until(lambda: len(sink.received) == 1)
    ((return_path, _, original),) = sink.received

    report = feedback_report(return_path, original, CAROL, feedback_type)
    await smtp_send(running.addresses.smtp_port, [return_path], report, sender="")

    assert await events(alice, "email.complained") == []
    assert (await alice.http.get("/v1/account/suppressions")).json()["items"] == []
    viewed = await alice.http.get(f"/v1/agents/{bot}/messages/{sent.json()['message_id']}")
    assert viewed.json()["delivery_status"] == "sent"
    assert (await send(alice, bot, [CAROL])).status_code == 200


async def test_a_report_names_the_one_who_complained_not_the_to_of_the_copy(
    running: RunningGateway, make_account: Any, sink: Sink
) -> None:
    """A report without Original-Rcpt-To does not say which of the returned copy's addressees
    complained (it may have been a Cc): Microsoft's JMRP names them in its own header."""
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    sent = await alice.http.post(
        "/api/v1/send",
        json={"from": bot, "to": [DAVE], "cc": [CAROL], "subject": "Hi", "body": "Hello"},
    )
    assert sent.status_code == 200, sent.text
    await wait_until(lambda: len(sink.received) == 2)
    # at the return path naming the whole message (as hand-offs had before each recipient had
    # one), which does not say whose copy it was
    _, original = sink.copy_to(DAVE)
    path = message_wide_path(running, sent.json()["message_id"], bot)
    port = running.addresses.smtp_port

    await smtp_send(port, [path], feedback_report(path, original, None), sender="")
    assert await events(alice, "email.complained") == []  # Dave, or Carol? It does not say

    jmrp = feedback_report(path, original, None, jmrp_recipient=CAROL.upper())
    await smtp_send(port, [path], jmrp, sender="")
    (complained,) = await events(alice, "email.complained")
    assert complained["data"]["delivered_to"] == CAROL
    listed = (await alice.http.get("/v1/account/suppressions")).json()["items"]
    assert [item["address"] for item in listed] == [CAROL]
