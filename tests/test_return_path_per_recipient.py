"""A return path per recipient, end to end: mail an agent sends to several people goes to a relay
sink on loopback in one transaction per recipient, each with a return path naming that
recipient, so a report any one of them sends back to the return path their copy shows (its
Return-Path) can bounce, complain about or suppress that recipient only, never the others."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from e2a_gateway.app import RunningGateway
from e2a_gateway.config import Settings
from e2a_gateway.outbound.return_path import parse_return_path, return_path_key
from tests.conftest import Account, make_settings
from tests.delivery_support import create_agent, smtp_send, wait_until
from tests.relay_support import Sink, relay_port, sink
from tests.test_complaints import feedback_report
from tests.test_v1_bounces import bounce_events, notice_naming_nobody, report_about

pytestmark = pytest.mark.slow

__all__ = ["relay_port", "sink"]  # fixtures

CAROL = "carol@example.org"
DAVE = "dave@example.org"
ERIN = "erin@example.net"


@pytest.fixture
def settings(tmp_path: Path, relay_port: int) -> Settings:
    relay = {"host": "127.0.0.1", "port": relay_port, "tls": "none", "timeout_seconds": 10}
    return make_settings(tmp_path, outbound_smtp=relay)


async def send_to_three(alice: Account, bot: str, sink: Sink) -> tuple[str, dict[str, Any]]:
    """Send to Carol and Dave (To) and Erin (Bcc); the message id and, per recipient, the
    (return path, copy) the relay got."""
    sent = await alice.http.post(
        "/api/v1/send",
        json={"from": bot, "to": [CAROL, DAVE], "bcc": [ERIN], "subject": "Hi", "body": "Hi"},
    )
    assert sent.status_code == 200, sent.text
    await wait_until(lambda: sum(len(rcpts) for _, rcpts, _ in sink.received) == 3)
    copies = {
        recipient: (return_path, raw)
        for return_path, recipients, raw in sink.received
        for recipient in recipients
    }
    return str(sent.json()["message_id"]), copies


async def suppressed(alice: Account) -> list[str]:
    listed = (await alice.http.get("/v1/account/suppressions")).json()["items"]
    return sorted(item["address"] for item in listed)


async def test_each_recipient_gets_a_return_path_of_its_own(
    running: RunningGateway, make_account: Any, sink: Sink
) -> None:
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    message_id, copies = await send_to_three(alice, bot, sink)

    assert sorted(copies) == [CAROL, DAVE, ERIN]
    assert [len(recipients) for _, recipients, _ in sink.received] == [1, 1, 1]
    key = return_path_key(running.gateway.server_key)
    everyone = [CAROL, DAVE, ERIN]
    for recipient, (return_path, raw) in copies.items():
        path = parse_return_path(return_path, key)
        assert path is not None and path.message_id == message_id
        assert path.recipient_among(everyone) == recipient
        assert b"erin" not in raw.lower()  # the Bcc is in no copy, not even its own
    assert len({return_path for return_path, _ in copies.values()}) == 3


async def test_a_recipient_cannot_bounce_another_through_their_own_return_path(
    running: RunningGateway, make_account: Any, sink: Sink
) -> None:
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    _, copies = await send_to_three(alice, bot, sink)
    carols_path, carols_copy = copies[CAROL]
    port = running.addresses.smtp_port

    # Carol forges reports about Dave and Erin and sends them to the return path she was shown.
    forged = report_about(carols_path, [(DAVE, "failed", "5.1.1"), (ERIN, "failed", "5.1.1")])
    await smtp_send(port, [carols_path], forged, sender="")
    await smtp_send(port, [carols_path], feedback_report(carols_path, carols_copy, DAVE), sender="")

    assert await bounce_events(alice) == []
    assert await bounce_events(alice, "email.complained") == []
    assert await suppressed(alice) == []
    again = await alice.http.post(
        "/api/v1/send", json={"from": bot, "to": [DAVE, ERIN], "subject": "Hi", "body": "Hi"}
    )
    assert again.status_code == 200, again.text


async def test_a_report_at_a_recipients_return_path_is_about_that_recipient(
    running: RunningGateway, make_account: Any, sink: Sink
) -> None:
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    message_id, copies = await send_to_three(alice, bot, sink)
    port = running.addresses.smtp_port

    # A report naming Dave and Carol at Dave's return path records Dave's failure only.
    daves_path, _ = copies[DAVE]
    both = report_about(daves_path, [(DAVE, "failed", "5.1.1"), (CAROL, "failed", "5.1.1")])
    await smtp_send(port, [daves_path], both, sender="")
    (bounced,) = await bounce_events(alice)
    assert (bounced["message_id"], bounced["data"]["delivered_to"]) == (message_id, DAVE)
    assert await suppressed(alice) == [DAVE]

    # A notice naming nobody at Erin's (the Bcc's) return path, returning a copy addressed to
    # Carol and Dave, is not about either of them.
    erins_path, erins_copy = copies[ERIN]
    await smtp_send(port, [erins_path], notice_naming_nobody(erins_path, erins_copy), sender="")
    assert [event["data"]["delivered_to"] for event in await bounce_events(alice)] == [DAVE]

    # A redacted feedback report at Carol's return path is Carol's complaint.
    carols_path, carols_copy = copies[CAROL]
    redacted = feedback_report(carols_path, carols_copy, None)
    await smtp_send(port, [carols_path], redacted, sender="")
    (complained,) = await bounce_events(alice, "email.complained")
    assert complained["data"]["delivered_to"] == CAROL
    assert await suppressed(alice) == [CAROL, DAVE]
