"""Returned mail end to end, one fixture of tests/data/returned/ at a time: an agent sends one
message to Carol, Dave and Erin through the relay sink (each copy with its own return path), the
fixture is filled in with what was really sent (return path, Message-ID, the returned copy) and
sent back over real SMTP, and the test checks what e2a recorded: which recipient bounced and
how, who is suppressed, who complained, and the message's `/v1` delivery state."""

from __future__ import annotations

import smtplib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

from e2a_gateway.app import RunningGateway
from e2a_gateway.config import Settings
from e2a_gateway.outbound.return_path import return_path_for, return_path_key
from tests.conftest import Account, make_settings
from tests.delivery_support import create_agent, smtp_send, wait_until
from tests.relay_support import Sink, relay_port, sink

pytestmark = pytest.mark.slow

__all__ = ["relay_port", "sink"]  # fixtures

FIXTURES = Path(__file__).parent / "data" / "returned"
CAROL, DAVE, ERIN = "carol@example.org", "dave@example.org", "erin@example.org"

Target = Literal["carol", "dave", "message", "forged"]
"""Where a fixture is sent back: Carol's own return path, Dave's, the return path naming the
whole message (mail sent before each recipient had one), or Carol's with its token altered."""


@dataclass(frozen=True)
class Expected:
    """What e2a records of a fixture."""

    bounced: list[tuple[str, str]] = field(default_factory=list)
    """`email.bounced` events: (delivered_to, bounce_type)."""
    detail: str | None = None
    """Text the first bounce's `smtp_detail` holds."""
    suppressed: list[tuple[str, str]] = field(default_factory=list)
    """The account's suppressions: (address, source)."""
    complained: list[str] = field(default_factory=list)
    delivery_status: str = "sent"


HARD_BOUNCE = Expected([(CAROL, "permanent")], "5.1.1", [(CAROL, "bounce")], [], "bounced")
NOTHING = Expected()


def undetermined(detail: str) -> Expected:
    """A failure of Carol's that says nothing against her address: nobody suppressed."""
    return Expected([(CAROL, "undetermined")], detail, [], [], "bounced")


CASES: list[tuple[str, Target, Expected]] = [
    ("postfix_user_unknown.eml", "carol", HARD_BOUNCE),
    ("exim_dsn.eml", "carol", HARD_BOUNCE),  # Status 5.0.0 refined by its Diagnostic-Code
    (
        "office365_ndr.eml",  # Final-Recipient:   RFC822 ;   Carol@Example.ORG
        "carol",
        Expected([(CAROL, "permanent")], "5.1.10", [(CAROL, "bounce")], [], "bounced"),
    ),
    ("gmail_address_not_found.eml", "carol", HARD_BOUNCE),
    # Dave's is delayed (still tried), Erin's relayed (a success): Carol alone bounced
    ("several_recipients_mixed.eml", "message", HARD_BOUNCE),
    ("several_recipients_mixed.eml", "carol", HARD_BOUNCE),
    ("several_recipients_mixed.eml", "dave", NOTHING),  # Dave's report says he is still tried
    ("delayed_only.eml", "carol", NOTHING),
    (
        "postfix_alias_final_recipient.eml",  # Final-Recipient an alias of the address sent to
        "carol",
        Expected([(CAROL, "permanent")], "5.2.1", [(CAROL, "bounce")], [], "bounced"),
    ),
    ("qmail_plain.eml", "carol", HARD_BOUNCE),
    ("out_of_office_exchange.eml", "carol", NOTHING),
    ("out_of_office_unmarked.eml", "carol", NOTHING),
    (
        "arf_abuse.eml",
        "carol",
        Expected([], None, [(CAROL, "complaint")], [CAROL], "complained"),
    ),
    ("forged_token.eml", "forged", NOTHING),  # refused at RCPT TO
    ("forged_token.eml", "dave", NOTHING),  # Dave's own path, a report about Carol
    # A Status that is no RFC 3463 code: no guess at the address, and the event says why; Carol
    # did not get it all the same (Action: failed)
    ("malformed_status_5_1.eml", "carol", undetermined("Status: 5.1")),
    ("malformed_status_5_1_1_1.eml", "carol", undetermined("Status: 5.1.1.1")),
    ("malformed_status_abc.eml", "carol", undetermined("Status: abc")),
    ("malformed_status_with_diagnostic.eml", "carol", HARD_BOUNCE),  # its code is the diagnostic's
    # Refusals that say nothing against the address (nobody suppressed), but Carol did not get it
    (
        "gmail_dmarc_blocked.eml",  # 5.7.26: the agent's domain failed DMARC
        "carol",
        Expected([(CAROL, "transient")], "5.7.26", [], [], "bounced"),
    ),
    (
        "postfix_gave_up.eml",  # Action: failed, Status: 4.4.1: the remote MTA stopped trying
        "carol",
        Expected([(CAROL, "transient")], "Connection timed out", [], [], "bounced"),
    ),
]


@pytest.fixture
def settings(tmp_path: Path, relay_port: int) -> Settings:
    relay = {"host": "127.0.0.1", "port": relay_port, "tls": "none", "timeout_seconds": 10}
    return make_settings(tmp_path, outbound_smtp=relay)


@dataclass(frozen=True)
class Sent:
    """The message the agent sent, as the relay got it."""

    agent: str
    message_id: str
    carol_path: str
    dave_path: str
    carol_copy: bytes


async def send_to_three(alice: Account, sink: Sink) -> Sent:
    bot = await create_agent(alice, "bot")
    sent = await alice.http.post(
        "/api/v1/send",
        json={"from": bot, "to": [CAROL, DAVE, ERIN], "subject": "Hi", "body": "Hello"},
    )
    assert sent.status_code == 200, sent.text
    await wait_until(lambda: len(sink.received) == 3)
    carol_path, carol_copy = sink.copy_to(CAROL)
    dave_path, _ = sink.copy_to(DAVE)
    return Sent(bot, sent.json()["message_id"], carol_path, dave_path, carol_copy)


def filled_in(name: str, return_path: str, sent: Sent) -> bytes:
    """The fixture `name` as it comes back to `return_path`, returning Carol's copy."""
    copy = sent.carol_copy.replace(b"\r\n", b"\n").decode()
    headers = copy.split("\n\n", 1)[0]
    (message_id,) = [
        line.split(":", 1)[1].strip()
        for line in headers.split("\n")
        if line.lower().startswith("message-id:")
    ]
    text = (
        (FIXTURES / name)
        .read_text()
        .replace("@@RETURN_PATH@@", return_path)
        .replace("@@AGENT@@", sent.agent)
        .replace("@@MESSAGE_ID@@", message_id)
        .replace("@@RETURNED_HEADERS@@", headers)
        .replace("@@RETURNED_MESSAGE@@", copy)
    )
    return text.replace("\n", "\r\n").encode()


def forged(return_path: str) -> str:
    """`return_path` with one character of its token changed."""
    local, _, domain = return_path.partition("@")
    last = "b" if local[-1] != "b" else "c"
    return f"{local[:-1]}{last}@{domain}"


def return_path_of(running: RunningGateway, sent: Sent, target: Target) -> str:
    if target == "carol":
        return sent.carol_path
    if target == "dave":
        return sent.dave_path
    if target == "forged":
        return forged(sent.carol_path)
    key = return_path_key(running.gateway.server_key)
    return return_path_for(sent.message_id, None, key, sent.agent.rpartition("@")[2])


async def events_of(alice: Account, event_type: str) -> list[Any]:
    listed = await alice.http.get("/v1/events", params={"type": event_type})
    assert listed.status_code == 200, listed.text
    return list(listed.json()["items"])


@pytest.mark.parametrize(
    ("name", "target", "expected"), CASES, ids=[f"{n[:-4]}-{t}" for n, t, _ in CASES]
)
async def test_returned_mail_is_recorded_as_its_report_says(
    running: RunningGateway,
    make_account: Any,
    sink: Sink,
    name: str,
    target: Target,
    expected: Expected,
) -> None:
    alice: Account = await make_account("alice@example.com")
    sent = await send_to_three(alice, sink)
    return_path = return_path_of(running, sent, target)
    report = filled_in(name, return_path, sent)
    port = running.addresses.smtp_port
    if target == "forged":
        with pytest.raises(smtplib.SMTPRecipientsRefused, match="550"):
            await smtp_send(port, [return_path], report, sender="")
    else:
        await smtp_send(port, [return_path], report, sender="")

    bounced = await events_of(alice, "email.bounced")
    assert sorted((e["data"]["delivered_to"], e["data"]["bounce_type"]) for e in bounced) == (
        expected.bounced
    )
    for event in bounced:
        assert event["message_id"] == sent.message_id
        assert event["data"]["message_id"] == sent.message_id
        assert event["data"]["direction"] == "outbound"
        assert event["data"]["agent_email"] == sent.agent
    if expected.detail is not None:
        assert expected.detail in bounced[0]["data"].get("smtp_detail", ""), bounced[0]
    listed = await alice.http.get("/v1/account/suppressions")
    assert listed.status_code == 200, listed.text
    suppressed = [(item["address"], item["source"]) for item in listed.json()["items"]]
    assert suppressed == expected.suppressed
    complained = await events_of(alice, "email.complained")
    assert [event["data"]["delivered_to"] for event in complained] == expected.complained
    viewed = await alice.http.get(f"/v1/agents/{sent.agent}/messages/{sent.message_id}")
    assert viewed.status_code == 200, viewed.text
    assert viewed.json()["delivery_status"] == expected.delivery_status


async def test_a_reported_failure_that_suppresses_nobody_still_says_who_did_not_get_it(
    running: RunningGateway, make_account: Any, sink: Sink
) -> None:
    """Gmail refusing Carol's copy for the agent's DMARC (5.7.26) after the relay took it: the
    owner sees the message bounced for Carol, and why, on /v1 (delivery state, detail and
    lifecycle) and on /api/v1 (its `error`), not `sent`; Carol is not suppressed."""
    alice: Account = await make_account("alice@example.com")
    sent = await send_to_three(alice, sink)
    report = filled_in("gmail_dmarc_blocked.eml", sent.carol_path, sent)
    await smtp_send(running.addresses.smtp_port, [sent.carol_path], report, sender="")

    viewed = await alice.http.get(f"/v1/agents/{sent.agent}/messages/{sent.message_id}")
    assert viewed.status_code == 200, viewed.text
    assert viewed.json()["delivery_status"] == "bounced"
    detail = viewed.json()["delivery_detail"]
    assert detail.startswith(f"{CAROL}: bounced: ") and "5.7.26" in detail, detail
    assert DAVE not in detail and ERIN not in detail
    lifecycle = await alice.http.get(
        f"/v1/agents/{sent.agent}/messages/{sent.message_id}/lifecycle"
    )
    assert lifecycle.status_code == 200, lifecycle.text
    steps = [
        (step["stage"], step["outcome"], step["reason_code"], step.get("recipient"))
        for step in lifecycle.json()["items"]
    ]
    assert ("delivery", "bounced", "delivery.transient_bounce", CAROL) in steps, steps
    assert not [step for step in steps if step[0] == "suppression"], steps
    legacy = await alice.http.get(f"/api/v1/messages/{sent.message_id}")
    assert legacy.status_code == 200, legacy.text
    assert legacy.json()["status"] == "sent"  # Dave and Erin got it
    assert "5.7.26" in legacy.json()["error"], legacy.json()
    listed = await alice.http.get("/v1/account/suppressions")
    assert listed.json()["items"] == []
