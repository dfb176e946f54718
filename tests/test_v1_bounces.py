"""Bounces end to end: mail an agent sends goes to a relay sink on loopback with a return path
naming the message; a delivery status notification sent back over real SMTP to that return
path (or the relay's synchronous 550) makes the message `bounced`, logs `email.bounced`,
suppresses the address for the account, and the next send to it is refused clearly."""

from __future__ import annotations

import base64
import smtplib
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from e2a_gateway.app import RunningGateway
from e2a_gateway.config import Settings
from e2a_gateway.outbound.return_path import return_path_for, return_path_key
from tests.conftest import Account, make_settings
from tests.delivery_support import create_agent, smtp_send, wait_until
from tests.relay_support import Sink, relay_port, sink
from tests.sdk_v1 import run_sdk, sdk5_python, value
from tests.test_bounces import exim_delay_warning

pytestmark = pytest.mark.slow

__all__ = ["relay_port", "sdk5_python", "sink"]  # fixtures

CAROL = "carol@example.org"


@pytest.fixture
def settings(tmp_path: Path, relay_port: int) -> Settings:
    relay = {"host": "127.0.0.1", "port": relay_port, "tls": "none", "timeout_seconds": 10}
    return make_settings(tmp_path, outbound_smtp=relay)


def delivery_status_notification(return_path: str, recipient: str) -> bytes:
    """An RFC 3464 report of a permanent failure, as a remote MTA sends it."""
    return (
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.org>\r\n"
        f"To: {return_path}\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b1"\r\n'
        "\r\n"
        "--b1\r\n"
        "Content-Type: text/plain\r\n"
        "\r\n"
        "Your message could not be delivered.\r\n"
        "--b1\r\n"
        "Content-Type: message/delivery-status\r\n"
        "\r\n"
        "Reporting-MTA: dns; mx.example.org\r\n"
        "\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\n"
        "Action: failed\r\n"
        "Status: 5.1.1\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 no such user\r\n"
        "--b1--\r\n"
    ).encode()


async def send(alice: Account, sender: str, to: str) -> Any:
    return await alice.http.post(
        "/api/v1/send", json={"from": sender, "to": [to], "subject": "Hi", "body": "Hello"}
    )


async def status_of(alice: Account, message_id: str) -> str:
    response = await alice.http.get(f"/api/v1/messages/{message_id}")
    assert response.status_code == 200, response.text
    return str(response.json()["status"])


async def assert_bounced_and_suppressed(
    running: RunningGateway, alice: Account, sender: str, message_id: str, python: Path
) -> None:
    steps = await run_sdk(
        python,
        running.addresses.http_url,
        {"default": alice.key},
        [
            {"do": "events.list", "kwargs": {"type": "email.bounced"}},
            {"do": "account.suppressions.list"},
            {"do": "events.list", "kwargs": {"type": "domain.suppression_added"}},
        ],
    )
    (bounced,) = value(steps[0], ["EventView"])
    assert bounced["message_id"] == message_id
    assert bounced["data"]["bounce_type"] == "permanent"
    assert bounced["data"]["delivered_to"] == CAROL
    (suppressed,) = value(steps[1], ["SuppressionView"])
    assert (suppressed["address"], suppressed["source"]) == (CAROL, "bounce")
    assert suppressed["source_message_id"] == message_id
    (added,) = value(steps[2], ["EventView"])
    assert added["data"]["address"] == CAROL
    viewed = await alice.http.get(f"/v1/agents/{sender}/messages/{message_id}")
    assert viewed.status_code == 200, viewed.text
    assert viewed.json()["delivery_status"] == "bounced"  # not "sent": the rollup's worst
    lifecycle = await alice.http.get(f"/v1/agents/{sender}/messages/{message_id}/lifecycle")
    assert lifecycle.status_code == 200, lifecycle.text
    steps = [(step["stage"], step["outcome"]) for step in lifecycle.json()["items"]]
    assert steps[-2:] == [("delivery", "bounced"), ("suppression", "applied")]
    assert ("queued", "enqueued") in steps

    refused = await send(alice, sender, CAROL)
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["code"] == "recipient_suppressed"
    assert CAROL in error["message"] and "suppression list" in error["message"]
    v1_refused = await alice.http.post(
        "/v1/account/suppressions/nobody@example.org", params={"confirm": "DELETE"}
    )
    assert v1_refused.status_code == 405  # deletes only; nothing else on that path


async def return_path_to_carol(alice: Account, sink: Sink) -> str:
    """The return path of a message Alice's new agent `bot` sent Carol, as the relay got it."""
    bot = await create_agent(alice, "bot")
    assert (await send(alice, bot, CAROL)).status_code == 200
    await wait_until(lambda: len(sink.received) == 1)
    ((return_path, _, _),) = sink.received
    return str(return_path)


async def test_a_delivery_status_notification_bounces_the_message(
    running: RunningGateway, make_account: Any, sink: Sink, sdk5_python: Path
) -> None:
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    sent = await send(alice, bot, CAROL)
    assert sent.status_code == 200, sent.text
    message_id = sent.json()["message_id"]
    await wait_until(lambda: len(sink.received) == 1)
    ((return_path, recipients, _),) = sink.received
    assert recipients == [CAROL] and return_path.startswith("bounces+")
    assert await status_of(alice, message_id) == "sent"

    report = delivery_status_notification(return_path, CAROL)
    # named twice in one transaction, its bounce is still recorded once
    await smtp_send(running.addresses.smtp_port, [return_path, return_path], report, sender="")

    # stored as bounced; /api/v1, whose states (hitl.md) have no such word, says failed
    assert await status_of(alice, message_id) == "failed"
    await assert_bounced_and_suppressed(running, alice, bot, message_id, sdk5_python)
    lifted = await run_sdk(
        sdk5_python,
        running.addresses.http_url,
        {"default": alice.key},
        [
            {"do": "account.suppressions.delete", "args": [CAROL]},
            {"do": "account.suppressions.list"},
        ],
    )
    assert value(lifted[0]) == {"deleted": True, "address": CAROL}
    assert value(lifted[1]) == []
    again = await send(alice, bot, CAROL)
    assert again.status_code == 200, again.text  # allowed again once lifted


async def test_a_forged_return_path_is_refused_at_rcpt(
    running: RunningGateway, make_account: Any
) -> None:
    alice: Account = await make_account("alice@example.com")
    await create_agent(alice, "bot")
    forged = "bounces+aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@agents.test"
    with pytest.raises(smtplib.SMTPRecipientsRefused, match="550"):
        await smtp_send(running.addresses.smtp_port, [forged], b"Subject: x\r\n\r\nx\r\n", "")


async def test_a_synchronous_550_is_a_bounce(
    running: RunningGateway, make_account: Any, sink: Sink, sdk5_python: Path
) -> None:
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    sink.rcpt_answers[CAROL] = "550 5.1.1 no such user"
    started = time.time()
    sent = await send(alice, bot, CAROL)
    assert sent.status_code == 422, sent.text  # nothing was sent: said at once
    assert sent.json()["error"]["code"] == "send_failed"
    assert "550 5.1.1 no such user" in sent.json()["error"]["message"]
    assert "(kept as failed: GET /api/v1/messages/" in sent.json()["error"]["message"]
    listed = await alice.http.get("/api/v1/messages", params={"status": "failed"})
    assert listed.status_code == 200, listed.text
    (message,) = listed.json()["messages"]  # bounced: failed, as /api/v1 says it
    assert message["status"] == "failed"
    assert time.time() - started < 10
    viewed = await alice.http.get(f"/v1/agents/{bot}/messages/{message['id']}")
    assert "550 5.1.1 no such user" in viewed.json()["delivery_detail"]
    await assert_bounced_and_suppressed(running, alice, bot, message["id"], sdk5_python)


def report_about(return_path: str, blocks: list[tuple[str, str, str]]) -> bytes:
    """An RFC 3464 report, as Postfix writes it, with one block per (Final-Recipient, Action,
    Status) and no Original-Recipient (the relay was given no ORCPT)."""
    per_recipient = "".join(
        f"\r\nFinal-Recipient: rfc822; {recipient}\r\nAction: {action}\r\nStatus: {status}\r\n"
        f"Diagnostic-Code: smtp; {status[0]}50 {status} {action} for {recipient}\r\n"
        for recipient, action, status in blocks
    )
    return (
        "From: MAILER-DAEMON@mx.example.org (Mail Delivery System)\r\n"
        f"To: {return_path}\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b2"\r\n'
        "\r\n--b2\r\nContent-Type: text/plain\r\n\r\nThis is the mail system.\r\n"
        "--b2\r\nContent-Type: message/delivery-status\r\n\r\n"
        f"Reporting-MTA: dns; mx.example.org\r\n{per_recipient}"
        "--b2--\r\n"
    ).encode()


async def bounce_events(alice: Account, event_type: str = "email.bounced") -> list[Any]:
    listed = await alice.http.get("/v1/events", params={"type": event_type})
    assert listed.status_code == 200, listed.text
    return sorted(listed.json()["items"], key=lambda item: item["data"].get("delivered_to", ""))


async def test_a_report_in_another_case_names_the_recipient_as_it_was_sent(
    running: RunningGateway, make_account: Any, sink: Sink
) -> None:
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    dave = "dave@example.org"
    sent = await alice.http.post(
        "/api/v1/send", json={"from": bot, "to": [CAROL, dave], "subject": "Hi", "body": "x"}
    )
    assert sent.status_code == 200, sent.text
    await wait_until(lambda: len(sink.received) == 2)
    return_path, _ = sink.copy_to(CAROL)
    report = report_about(
        return_path, [("Carol@Example.ORG", "failed", "5.1.1"), (dave, "delayed", "4.2.2")]
    )
    await smtp_send(running.addresses.smtp_port, [return_path], report, sender="")

    (carol,) = await bounce_events(alice)  # dave's is delayed: still being tried, no bounce
    assert (carol["data"]["delivered_to"], carol["data"]["bounce_type"]) == (CAROL, "permanent")
    listed = (await alice.http.get("/v1/account/suppressions")).json()["items"]
    assert [item["address"] for item in listed] == [CAROL]  # the delayed one is not suppressed


async def test_a_report_delivered_again_is_recorded_once(
    running: RunningGateway, make_account: Any, sink: Sink
) -> None:
    alice: Account = await make_account("alice@example.com")
    return_path = await return_path_to_carol(alice, sink)
    expired = report_about(return_path, [(CAROL, "failed", "4.4.7")])
    failed = report_about(return_path, [(CAROL, "failed", "5.1.1")])
    port = running.addresses.smtp_port
    for report in (expired, expired, failed, failed):  # each sent again, as a sender retries
        await smtp_send(port, [return_path], report, sender="")

    events = [event["data"]["bounce_type"] for event in await bounce_events(alice)]
    assert sorted(events) == ["permanent", "transient"]
    assert len(await bounce_events(alice, "domain.suppression_added")) == 1


async def test_a_report_naming_the_recipient_twice_is_recorded_once(
    running: RunningGateway, make_account: Any, sink: Sink
) -> None:
    """A failure notice that names the recipient in two spellings (the address as sent, and as
    the remote server echoed it, in lower case) is one bounce: the sender hears 250, not 451
    again and again."""
    alice: Account = await make_account("alice@example.com")
    return_path = await return_path_to_carol(alice, sink)
    notice = (
        "From: MAILER-DAEMON@mx.example.org\r\n"
        f"To: {return_path}\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "\r\n"
        "I'm sorry to have to inform you that your message could not\r\n"
        "be delivered to one or more recipients.\r\n"
        "\r\n"
        "<Carol@example.org>: host mx.example.org said: 550 5.1.1 <carol@example.org>:\r\n"
        "    Recipient address rejected: User unknown in local recipient table\r\n"
    ).encode()
    await smtp_send(running.addresses.smtp_port, [return_path], notice, sender="")

    (bounced,) = await bounce_events(alice)
    assert (bounced["data"]["delivered_to"], bounced["data"]["bounce_type"]) == (
        CAROL,
        "permanent",
    )
    assert len(await bounce_events(alice, "domain.suppression_added")) == 1


async def test_a_delay_report_is_no_bounce(
    running: RunningGateway, make_account: Any, sink: Sink
) -> None:
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    sent = await send(alice, bot, CAROL)
    assert sent.status_code == 200, sent.text
    await wait_until(lambda: len(sink.received) == 1)
    ((return_path, _, _),) = sink.received
    for status in ("4.4.1", "4.2.2", "5.2.2"):  # a Postfix, Exim or Exchange delay warning
        report = report_about(return_path, [(CAROL, "delayed", status)])
        await smtp_send(running.addresses.smtp_port, [return_path], report, sender="")

    assert await bounce_events(alice) == []  # it may yet be delivered
    assert (await alice.http.get("/v1/account/suppressions")).json()["items"] == []
    assert await status_of(alice, sent.json()["message_id"]) == "sent"
    again = await send(alice, bot, CAROL)
    assert again.status_code == 200, again.text


def notice_naming_nobody(return_path: str, original: bytes) -> bytes:
    """A failure notice that names no recipient, with the message it returns inline."""
    headers = original.split(b"\r\n\r\n", 1)[0].decode()
    return (
        "From: MAILER-DAEMON@mx.example.org\r\n"
        f"To: {return_path}\r\n"
        "Subject: Undeliverable mail\r\n"
        "\r\n"
        "Your message could not be delivered.\r\n"
        "\r\n"
        "550 5.1.1 Requested action not taken: mailbox unavailable\r\n"
        "\r\n"
        "----- Original message -----\r\n"
        f"{headers}\r\n"
        "\r\n"
        "Hello\r\n"
    ).encode()


def message_wide_path(running: RunningGateway, message_id: str, agent: str) -> str:
    """The return path naming the whole message that hand-offs used before each recipient had
    one of their own: reports to it, about mail sent then, are still recorded."""
    key = return_path_key(running.gateway.server_key)
    return return_path_for(message_id, None, key, agent.rpartition("@")[2])


async def test_a_notice_naming_nobody_is_about_a_sole_recipient_only(
    running: RunningGateway, make_account: Any, sink: Sink
) -> None:
    """Its returned copy shows the To and Cc, never the Bcc: with a Bcc recipient as well, the
    one addressee it shows may not be the one who failed, unless the return path it came back
    to says whose copy it was."""
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    dave = "dave@example.org"
    both = await alice.http.post(
        "/api/v1/send",
        json={"from": bot, "to": [dave], "bcc": [CAROL], "subject": "Hi", "body": "Hello"},
    )
    assert both.status_code == 200, both.text
    await wait_until(lambda: len(sink.received) == 2)
    _, original = sink.copy_to(CAROL)
    assert b"carol" not in original.lower()
    port = running.addresses.smtp_port
    return_path = message_wide_path(running, both.json()["message_id"], bot)
    await smtp_send(port, [return_path], notice_naming_nobody(return_path, original), sender="")
    assert await bounce_events(alice) == []  # Dave, or Carol? It does not say
    assert (await alice.http.get("/v1/account/suppressions")).json()["items"] == []

    # Carol's own return path says: her copy, though it shows Dave's address only.
    return_path, original = sink.copy_to(CAROL)
    await smtp_send(port, [return_path], notice_naming_nobody(return_path, original), sender="")
    (bounced,) = await bounce_events(alice)
    assert (bounced["data"]["delivered_to"], bounced["data"]["bounce_type"]) == (
        CAROL,
        "permanent",
    )

    one = await send(alice, bot, dave)
    assert one.status_code == 200, one.text
    await wait_until(lambda: len(sink.received) == 3)
    _, _, original = sink.received[2]
    return_path = message_wide_path(running, one.json()["message_id"], bot)
    await smtp_send(port, [return_path], notice_naming_nobody(return_path, original), sender="")
    _, bounced = await bounce_events(alice)  # Carol's, then Dave's
    assert bounced["message_id"] == one.json()["message_id"]
    assert (bounced["data"]["delivered_to"], bounced["data"]["bounce_type"]) == (dave, "permanent")


async def test_a_notice_with_an_unreadable_charset_is_still_read(
    running: RunningGateway, make_account: Any, sink: Sink
) -> None:
    """A charset that names no charset (a NUL in it) is read as UTF-8, not answered 451 for the
    sender to retry for days."""
    alice: Account = await make_account("alice@example.com")
    return_path = await return_path_to_carol(alice, sink)
    notice = (
        "From: MAILER-DAEMON@mx.example.org\r\n"
        f"To: {return_path}\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: text/plain; charset="utf\x008"\r\n'
        "\r\n"
        f"<{CAROL}>: host mx.example.org[192.0.2.5] said: 550 5.1.1 unknown user \u00e9\r\n"
    ).encode()
    await smtp_send(running.addresses.smtp_port, [return_path], notice, sender="")
    (bounced,) = await bounce_events(alice)
    assert (bounced["data"]["delivered_to"], bounced["data"]["bounce_type"]) == (CAROL, "permanent")


def encoded_notice(return_path: str, subject: str, subtype: str, text: str) -> bytes:
    """A failure notice of one base64 text part (`subtype` plain or html), as a mail system
    without delivery status reports writes it."""
    return (
        "From: MAILER-DAEMON@mx.example.org\r\n"
        f"To: {return_path}\r\n"
        f"Subject: {subject}\r\n"
        "MIME-Version: 1.0\r\n"
        f"Content-Type: text/{subtype}; charset=us-ascii\r\n"
        "Content-Transfer-Encoding: base64\r\n"
        "\r\n"
    ).encode() + base64.encodebytes(text.encode()).replace(b"\n", b"\r\n")


async def assert_read_at_once(
    running: RunningGateway, alice: Account, return_path: str, notice: bytes
) -> None:
    """`notice`, sent to `return_path`, is answered within seconds and bounces Carol for good."""
    with trio.fail_after(20):
        await smtp_send(running.addresses.smtp_port, [return_path], notice, sender="")
    (bounced,) = await bounce_events(alice)
    assert (bounced["data"]["delivered_to"], bounced["data"]["bounce_type"]) == (CAROL, "permanent")


async def test_a_notice_with_long_runs_of_text_is_read_at_once(
    running: RunningGateway, make_account: Any, sink: Sink
) -> None:
    """The return path is in every copy sent, so anyone may mail it: a notice whose text
    decodes to a long line of dashes or of address characters is read in a moment (it took
    minutes of CPU)."""
    alice: Account = await make_account("alice@example.com")
    return_path = await return_path_to_carol(alice, sink)
    text = (
        f"<{CAROL}>: host mx.example.org[192.0.2.5] said: 550 5.1.1 unknown user\r\n"
        f"\r\n550 {'x' * 100_000}\r\n\r\n{'-' * 100_000}\r\n"
    )
    notice = encoded_notice(return_path, "Undelivered Mail Returned to Sender", "plain", text)
    await assert_read_at_once(running, alice, return_path, notice)


async def test_an_html_notice_with_a_run_of_brackets_is_read_at_once(
    running: RunningGateway, make_account: Any, sink: Sink
) -> None:
    alice: Account = await make_account("alice@example.com")
    return_path = await return_path_to_carol(alice, sink)
    markup = f"<p>{CAROL}: 550 5.1.1 unknown user</p>\r\n\r\n{'<' * 200_000}\r\n"
    notice = encoded_notice(return_path, "Undeliverable: Hi", "html", markup)
    await assert_read_at_once(running, alice, return_path, notice)


async def test_a_refusal_of_our_sender_suppresses_no_recipient(
    running: RunningGateway, make_account: Any, sink: Sink
) -> None:
    """Postfix checks the sender's domain at RCPT TO: `550 5.1.8 … Sender address rejected:
    Domain not found` is about the agent's domain, not the recipient, in a report as from the
    relay itself."""
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    dave = "dave@example.org"
    assert (await send(alice, bot, CAROL)).status_code == 200
    await wait_until(lambda: len(sink.received) == 1)
    ((return_path, _, _),) = sink.received
    report = report_about(return_path, [(CAROL, "failed", "5.1.8")])
    await smtp_send(running.addresses.smtp_port, [return_path], report, sender="")
    sink.rcpt_answers[dave] = (
        "550 5.1.8 <bot@agents.test>: Sender address rejected: Domain not found"
    )
    refused = await send(alice, bot, dave)
    assert refused.status_code == 422, refused.text  # nothing was sent

    events = [
        (e["data"]["delivered_to"], e["data"]["bounce_type"]) for e in await bounce_events(alice)
    ]
    assert events == [(CAROL, "transient"), (dave, "transient")]
    assert (await alice.http.get("/v1/account/suppressions")).json()["items"] == []


async def test_gmails_refusal_of_unauthenticated_mail_suppresses_no_recipient(
    running: RunningGateway, make_account: Any, sink: Sink
) -> None:
    """Gmail refuses mail its DMARC check fails with 5.7.26: the agent's domain is at fault
    (its SPF or DKIM), and every Gmail recipient would otherwise be suppressed for good."""
    alice: Account = await make_account("alice@example.com")
    return_path = await return_path_to_carol(alice, sink)
    report = report_about(return_path, [(CAROL, "failed", "5.7.26")])
    await smtp_send(running.addresses.smtp_port, [return_path], report, sender="")

    (bounced,) = await bounce_events(alice)
    assert (bounced["data"]["delivered_to"], bounced["data"]["bounce_type"]) == (CAROL, "transient")
    assert (await alice.http.get("/v1/account/suppressions")).json()["items"] == []


async def test_a_plain_delay_warning_is_no_bounce(
    running: RunningGateway, make_account: Any, sink: Sink
) -> None:
    alice: Account = await make_account("alice@example.com")
    return_path = await return_path_to_carol(alice, sink)
    warning = exim_delay_warning(return_path, CAROL)
    await smtp_send(running.addresses.smtp_port, [return_path], warning, sender="")
    assert await bounce_events(alice) == []


async def test_a_diagnostic_holding_nul_is_recorded_with_a_replacement_character(
    running: RunningGateway, make_account: Any, sink: Sink
) -> None:
    """A report whose Diagnostic-Code holds NUL (as a recipient's own server may write it) is
    recorded, its NUL read as U+FFFD, on PostgreSQL (whose text cannot hold NUL) as on SQLite:
    the message bounces and the address is suppressed, with the diagnostic as its reason."""
    alice: Account = await make_account("alice@example.com")
    return_path = await return_path_to_carol(alice, sink)
    report = delivery_status_notification(return_path, CAROL).replace(
        b"no such user", b"no such\x00user"
    )
    await smtp_send(running.addresses.smtp_port, [return_path], report, sender="")
    listed = await alice.http.get("/v1/account/suppressions")
    assert listed.status_code == 200, listed.text
    (suppressed,) = listed.json()["items"]
    assert suppressed["address"] == CAROL
    assert suppressed["reason"] == "smtp; 550 5.1.1 no such\ufffduser"


async def test_a_relay_refusal_holding_nul_is_recorded_with_a_replacement_character(
    running: RunningGateway, make_account: Any, sink: Sink
) -> None:
    """A relay's reply holding NUL is read with U+FFFD in its place: the refused send fails at
    once and its bounce is recorded, on PostgreSQL (whose text cannot hold NUL) as on
    SQLite."""
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    sink.rcpt_answers[CAROL] = "550 5.1.1 no such\x00user"
    sent = await send(alice, bot, CAROL)
    assert sent.status_code == 422, sent.text
    assert "550 5.1.1 no such\ufffduser" in sent.json()["error"]["message"]
    listed = await alice.http.get("/v1/account/suppressions")
    assert listed.status_code == 200, listed.text
    (suppressed,) = listed.json()["items"]
    assert suppressed["reason"] == "RCPT TO: 550 5.1.1 no such\ufffduser"
