"""Mail to internationalised addresses (RFC 6531, RFC 6532) over a relay on 127.0.0.1 that does
or does not offer SMTPUTF8, sent over `/api/v1` and `/v1`: a local part beyond ASCII goes out
with `MAIL FROM:<…> SMTPUTF8` and UTF-8 header fields where the relay offers it, and fails for
good (553 5.6.7), never downgraded, where it does not; a domain beyond ASCII goes out as its
A-labels and needs no SMTPUTF8."""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from e2a_gateway.app import RunningGateway
from e2a_gateway.config import Settings
from tests.conftest import Account, make_settings
from tests.delivery_support import create_agent, wait_until
from tests.relay_support import Sink, relay_on_loopback, sink
from tests.test_dkim_signing import write_rsa_key
from tests.test_outbound_wire import verifies

pytestmark = pytest.mark.slow

__all__ = ["sink"]  # fixtures

JOSE = "josé@example.com"
BOB = "bob@example.org"


@pytest.fixture
def offers_smtputf8() -> bool:
    """Whether the relay's EHLO offers SMTPUTF8 (a test parametrizes it to True)."""
    return False


@pytest.fixture
def relay_port(sink: Sink, offers_smtputf8: bool) -> Iterator[int]:
    """`sink` served on 127.0.0.1, offering SMTPUTF8 when `offers_smtputf8`."""
    with relay_on_loopback(sink, smtputf8=offers_smtputf8) as port:
        yield port


@pytest.fixture
def key_record(tmp_path: Path) -> bytes:
    return write_rsa_key(tmp_path / "dkim.pem")


@pytest.fixture
def settings(tmp_path: Path, relay_port: int, key_record: bytes) -> Settings:
    relay = {"host": "127.0.0.1", "port": relay_port, "tls": "none", "timeout_seconds": 10}
    dkim_key = {"selector": "e2a", "private_key_path": str(tmp_path / "dkim.pem")}
    return make_settings(tmp_path, outbound_smtp=relay, dkim=dkim_key)


async def send(alice: Account, face: str, to: list[str], cc: list[str] | None = None) -> Any:
    """Send from bot@agents.test over `face` (`api/v1` or `v1`); the HTTP answer."""
    if face == "v1":
        return await alice.http.post(
            f"/v1/agents/{quote('bot@agents.test', safe='')}/messages",
            json={"to": to, "cc": cc or [], "subject": "Grüße", "text": "Hallo"},
        )
    return await alice.http.post(
        "/api/v1/send", json={"to": to, "cc": cc or [], "subject": "Grüße", "body": "Hallo"}
    )


async def settled(alice: Account, message_id: str) -> dict[str, Any]:
    """The `/api/v1` view of the message once it is sent or failed."""
    view: dict[str, Any] = {}

    async def done() -> bool:
        nonlocal view
        view = (await alice.http.get(f"/api/v1/messages/{message_id}")).json()
        return view["status"] in ("sent", "failed")

    await wait_until(done)
    return view


@pytest.mark.parametrize("offers_smtputf8", [True])
@pytest.mark.parametrize("face", ["api/v1", "v1"])
async def test_mail_to_an_internationalised_address_goes_out_with_smtputf8(
    running: RunningGateway, make_account: Any, sink: Sink, key_record: bytes, face: str
) -> None:
    """Each copy goes with SMTPUTF8 and BODY=8BITMIME (the relay offers both), names José in
    its To field in UTF-8, and its DKIM signature, over those UTF-8 fields, verifies."""
    alice: Account = await make_account("alice@example.com")
    await create_agent(alice, "bot")
    answer = await send(alice, face, [JOSE], [BOB])
    assert answer.status_code in (200, 202), answer.text
    view = await settled(alice, answer.json()["message_id"])
    assert view["status"] == "sent" and not view.get("error"), view
    assert view["to"] == [JOSE] and view["cc"] == [BOB]

    assert sorted(rcpt for _, rcpts, _ in sink.received for rcpt in rcpts) == [BOB, JOSE]
    for (return_path, _, raw), options in zip(sink.received, sink.mail_options, strict=True):
        assert return_path.startswith("bounces+") and return_path.endswith("@agents.test")
        assert "SMTPUTF8" in options and "BODY=8BITMIME" in options, options
        copy = email.message_from_string(raw.decode("utf-8"), policy=email.policy.default)
        assert f"To: {JOSE}\r\n".encode() in raw  # UTF-8 as it is (RFC 6532), no encoded word
        assert [a.addr_spec for a in copy["To"].addresses] == [JOSE]
        assert str(copy["Subject"]) == "Grüße"
        assert verifies(raw, key_record)


@pytest.mark.parametrize("face", ["api/v1", "v1"])
async def test_a_relay_without_smtputf8_gets_nothing_and_each_recipient_fails_for_good(
    running: RunningGateway, make_account: Any, sink: Sink, face: str
) -> None:
    """RFC 6531 section 3.2: a message naming an address beyond ASCII is never sent to a
    server that does not offer SMTPUTF8, nor downgraded: every recipient (an ASCII one too: the
    To field names José) fails for good, told of as a bounce saying why, suppressing no one."""
    alice: Account = await make_account("alice@example.com")
    await create_agent(alice, "bot")
    answer = await send(alice, face, [JOSE], [BOB])
    if face == "v1":
        assert answer.status_code == 202, answer.text
        message_id = answer.json()["message_id"]
    else:  # `/api/v1/send` waits for the hand-off, and says it failed
        assert answer.json()["error"]["code"] == "send_failed", answer.text
        assert "does not support internationalised mail" in answer.json()["error"]["message"]
        message_id = re.findall(r"msg_[0-9a-f]+", answer.json()["error"]["message"])[0]
    view = await settled(alice, message_id)
    assert view["status"] == "failed", view
    assert sink.received == []
    for address in (JOSE, BOB):
        assert f"{address}: refused: SMTPUTF8: 553 5.6.7" in view["error"], view["error"]
    assert "does not support internationalised mail" in view["error"]

    events = await alice.http.get(
        "/v1/events", params={"message_id": message_id, "type": "email.bounced"}
    )
    bounced = {item["data"]["delivered_to"]: item["data"] for item in events.json()["items"]}
    assert sorted(bounced) == sorted([BOB, JOSE]), bounced
    for data in bounced.values():
        assert "553 5.6.7" in data["smtp_detail"] and data["bounce_type"] == "undetermined"
    suppressed = (await alice.http.get("/v1/account/suppressions")).json()["items"]
    assert suppressed == []


@pytest.mark.parametrize("offers_smtputf8", [False, True])
async def test_an_internationalised_domain_goes_out_as_its_a_labels_without_smtputf8(
    running: RunningGateway, make_account: Any, sink: Sink
) -> None:
    alice: Account = await make_account("alice@example.com")
    await create_agent(alice, "bot")
    answer = await send(alice, "v1", ["Bob@Bücher.example"])
    assert answer.status_code in (200, 202), answer.text
    view = await settled(alice, answer.json()["message_id"])
    assert view["status"] == "sent", view
    ((_, rcpts, raw),) = sink.received
    assert rcpts == ["bob@xn--bcher-kva.example"]
    assert "SMTPUTF8" not in sink.mail_options[0]
    assert raw.isascii() and b"To: bob@xn--bcher-kva.example\r\n" in raw


@pytest.mark.parametrize("face", ["api/v1", "v1"])
@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("\u212aate@example.org", "not in Unicode NFC"),  # KELVIN SIGN: never sent to kate@
        ("jos\u0065\u0301@example.com", "not in Unicode NFC"),
        ("jos\x85é@example.com", "U+0085"),
        ("jo sé@example.com", "U+0020"),
        ("josé@☃.example", "not a valid internationalised domain name"),
        ("josé@-bücher.example", "not a valid internationalised domain name"),
        ("jo..sé@example.com", "not a valid email address"),
        ("é" * 33 + "@example.com", "over 64 octets"),
    ],
)
async def test_an_invalid_internationalised_address_is_refused_saying_why(
    running: RunningGateway, make_account: Any, sink: Sink, face: str, address: str, reason: str
) -> None:
    alice: Account = await make_account("alice@example.com")
    await create_agent(alice, "bot")
    answer = await send(alice, face, [address])
    assert answer.status_code in (400, 422), answer.text
    assert reason in answer.json()["error"]["message"], answer.text
    assert sink.received == []


async def test_an_internationalised_address_can_be_suppressed_and_a_send_to_it_is_refused(
    running: RunningGateway, make_account: Any, sink: Sink
) -> None:
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    path = f"/v1/agents/{quote(bot, safe='')}/suppressions"
    added = await alice.http.post(path, json={"address": "José@Bücher.example"})
    assert added.status_code in (200, 201), added.text
    assert added.json()["address"] == "josé@xn--bcher-kva.example"
    refused = await send(alice, "v1", ["josé@bücher.example"])
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["code"] == "recipient_suppressed"
    assert sink.received == []
