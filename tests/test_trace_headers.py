"""Trace fields (RFC 5321 section 4.4): every stored message starts with Return-Path and a
Received line for its hop into e2a, and the body hash covers them.

The Received line is checked as built (pure) and as stored after real SMTP sessions: smtplib
with HELO, EHLO, STARTTLS (a trustme certificate) and SMTPUTF8.
"""

from __future__ import annotations

import base64
import email
import email.policy
import hashlib
import smtplib
import ssl
import time
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme

from e2a_gateway.app import RunningGateway
from e2a_gateway.config import Settings
from e2a_gateway.inbound.trace import (
    ClientNames,
    Hop,
    KnownName,
    address_literal,
    confirmed_host_name,
    local_received_field,
    received_field,
    transmission_type,
)
from e2a_gateway.mailauth.dns_answers import DnsTemporaryError
from e2a_gateway.mailauth.resolver import FixtureResolver
from tests.conftest import Account, agent_path, make_settings
from tests.delivery_support import create_agent, new_signing_secret
from tests.test_signing_identity import contract_verify

HOSTNAME = "mx.agents.test"
MESSAGE = b"From: Alice <alice@example.org>\r\nTo: bot@agents.test\r\nSubject: Trace\r\n\r\nHi.\r\n"
NOW = 1_700_000_000.0


def hop(**changes: Any) -> Hop:
    values: dict[str, Any] = {
        "helo": "mail.example.org",
        "client_ip": "192.0.2.25",
        "client_name": None,
        "hostname": HOSTNAME,
        "protocol": "ESMTP",
        "queue_id": "msg_01",
        "recipient": "bot@agents.test",
        "when": NOW,
    }
    values.update(changes)
    return Hop(**values)


@pytest.mark.parametrize(
    ("extended", "tls", "smtputf8", "keyword"),
    [
        (False, False, False, "SMTP"),
        (True, False, False, "ESMTP"),
        (True, True, False, "ESMTPS"),
        (True, False, True, "UTF8SMTP"),
        (True, True, True, "UTF8SMTPS"),
    ],
)
def test_transmission_type(extended: bool, tls: bool, smtputf8: bool, keyword: str) -> None:
    assert transmission_type(extended=extended, tls=tls, smtputf8=smtputf8) == keyword


def test_received_field_layout() -> None:
    assert received_field(hop(client_name="mail.example.org")) == (
        b"Received: from mail.example.org (mail.example.org [192.0.2.25])\r\n"
        b"\tby mx.agents.test (e2a) with ESMTP id msg_01\r\n"
        b"\tfor <bot@agents.test>; Tue, 14 Nov 2023 22:13:20 +0000\r\n"
    )
    assert received_field(hop(recipient=None)) == (
        b"Received: from mail.example.org ([192.0.2.25])\r\n"
        b"\tby mx.agents.test (e2a) with ESMTP id msg_01; Tue, 14 Nov 2023 22:13:20 +0000\r\n"
    )


@pytest.mark.parametrize(
    ("helo", "client_ip", "shown"),
    [
        ("Mail.Example.ORG", "192.0.2.25", "from Mail.Example.ORG ([192.0.2.25])"),
        ("[192.0.2.25]", "192.0.2.25", "from [192.0.2.25] ([192.0.2.25])"),
        ("[IPv6:2001:db8::1]", "2001:db8::1", "from [IPv6:2001:db8::1] ([IPv6:2001:db8::1])"),
        ("mail.exämple.org", "::ffff:192.0.2.25", "from mail.xn--exmple-cua.org ([192.0.2.25])"),
        # A HELO that is no domain is not copied into the header (it stays in the session log).
        ("not a (domain); x", "192.0.2.25", "from [192.0.2.25] ([192.0.2.25])"),
        ("[not an address]", "2001:db8::1", "from [IPv6:2001:db8::1] ([IPv6:2001:db8::1])"),
        ("[IPv6:fe80::1%eth0]", "2001:db8::1", "from [IPv6:2001:db8::1] ([IPv6:2001:db8::1])"),
    ],
)
def test_the_from_clause_names_helo_and_address(helo: str, client_ip: str, shown: str) -> None:
    field = received_field(hop(helo=helo, client_ip=client_ip))
    assert field.startswith(f"Received: {shown}\r\n".encode())


def test_trace_fields_parse_with_the_email_package() -> None:
    fields = received_field(hop(client_name="mail.example.org")) + local_received_field(
        HOSTNAME, "sender@agents.test", "msg_02", None, NOW
    )
    message = email.message_from_bytes(fields + b"\r\n", policy=email.policy.default)
    first, second = message.get_all("Received")
    for received in (first, second):
        assert not received.defects
        date = parsedate_to_datetime(str(received).rpartition(";")[2].strip())
        assert date.timestamp() == NOW
    assert "with ESMTP id msg_01" in str(first)
    assert str(second).startswith("by mx.agents.test (e2a local delivery from sender@agents.test)")


def test_address_literal() -> None:
    assert address_literal("192.0.2.1") == "[192.0.2.1]"
    assert address_literal("2001:DB8:0::1") == "[IPv6:2001:db8::1]"
    assert address_literal("::ffff:192.0.2.1") == "[192.0.2.1]"
    assert address_literal("unknown") == "[unknown]"
    # a link-local client as the socket names it: the zone is this host's own, and RFC 5321's
    # address literal has no room for it
    assert address_literal("fe80::1%eth0") == "[IPv6:fe80::1]"


def test_the_client_name_is_forward_confirmed() -> None:
    resolver = FixtureResolver.from_zone(
        {
            "25.2.0.192.in-addr.arpa": {"PTR": ["Mail.Example.ORG.", "liar.example.net"]},
            "mail.example.org": {"A": ["192.0.2.25"]},
            "liar.example.net": {"A": ["192.0.2.25"]},
            "99.2.0.192.in-addr.arpa": {"PTR": ["spoofed.example.com"]},
            "spoofed.example.com": {"A": ["198.51.100.1"]},
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa": {
                "PTR": ["v6.example.org"]
            },
            "v6.example.org": {"AAAA": ["2001:db8::1"]},
        }
    )
    assert confirmed_host_name(resolver, "192.0.2.25") == "mail.example.org"
    assert confirmed_host_name(resolver, "::ffff:192.0.2.25") == "mail.example.org"
    assert confirmed_host_name(resolver, "2001:db8::1") == "v6.example.org"
    assert confirmed_host_name(resolver, "192.0.2.99") is None  # points at someone else
    assert confirmed_host_name(resolver, "192.0.2.1") is None  # no PTR
    assert confirmed_host_name(resolver, "unknown") is None
    resolver.failing.add("25.2.0.192.in-addr.arpa")
    with pytest.raises(DnsTemporaryError):
        confirmed_host_name(resolver, "192.0.2.25")


def test_client_names_are_kept_for_a_while_and_bounded() -> None:
    now = [0.0]
    names = ClientNames(seconds=60, capacity=2, clock=lambda: now[0])
    names.remember("192.0.2.1", "one.example.org")
    names.remember("192.0.2.2", None)
    assert names.get("192.0.2.1") == KnownName("one.example.org", 60)
    known = names.get("192.0.2.2")
    assert known is not None and known.name is None  # known to have no name
    names.remember("192.0.2.3", "three.example.org")  # evicts the least recently used
    assert names.get("192.0.2.1") is None
    now[0] = 60.0
    assert names.get("192.0.2.3") is None


# Over real SMTP.


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path, trustme.CA]:
    ca = trustme.CA()
    issued = ca.issue_cert(HOSTNAME, "127.0.0.1")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(key))
    return cert, key, ca


@pytest.fixture
def settings(tmp_path: Path, tls_files: tuple[Path, Path, trustme.CA]) -> Settings:
    cert, key, _ = tls_files
    smtp = {"listen": "127.0.0.1:0", "hostname": HOSTNAME, "tls_cert": cert, "tls_key": key}
    return make_settings(tmp_path, smtp=smtp)


@pytest.fixture
def resolver() -> FixtureResolver:
    """Loopback has a forward-confirmed name, as a well-run sender has."""
    return FixtureResolver.from_zone(
        {
            "1.0.0.127.in-addr.arpa": {"PTR": ["client.example.org"]},
            "client.example.org": {"A": ["127.0.0.1"]},
        }
    )


def send(
    port: int,
    recipients: list[str],
    *,
    helo_only: bool = False,
    tls: ssl.SSLContext | None = None,
    smtputf8: bool = False,
) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        if helo_only:
            client.helo("mail.example.org")
        else:
            client.ehlo("mail.example.org")
        if tls is not None:
            client.starttls(context=tls)
            client.ehlo("mail.example.org")
        options = ["SMTPUTF8"] if smtputf8 else []
        refused = client.sendmail("alice@example.org", recipients, MESSAGE, mail_options=options)
    assert refused == {}


async def stored(account: Account, agent: str) -> tuple[dict[str, Any], bytes]:
    """The agent's newest message over REST, and its raw bytes."""
    (summary, *_) = (await account.http.get(agent_path(agent, "/messages"))).json()["messages"]
    full = (await account.http.get(agent_path(agent, f"/messages/{summary['message_id']}"))).json()
    return full, base64.b64decode(full["raw_message"])


@pytest.mark.parametrize(
    ("how", "keyword"),
    [
        ({"helo_only": True}, "SMTP"),
        ({}, "ESMTP"),
        ({"tls": True}, "ESMTPS"),
        ({"smtputf8": True}, "UTF8SMTP"),
        ({"tls": True, "smtputf8": True}, "UTF8SMTPS"),
    ],
)
async def test_stored_messages_start_with_return_path_and_received(
    running: RunningGateway,
    make_account: Any,
    tls_files: tuple[Path, Path, trustme.CA],
    how: dict[str, Any],
    keyword: str,
) -> None:
    account: Account = await make_account("trace@example.com")
    secret = await new_signing_secret(account)
    bot = await create_agent(account, "bot")
    options = dict(how)
    if options.pop("tls", False):
        context = ssl.create_default_context()
        tls_files[2].configure_trust(context)
        options["tls"] = context
    before = time.time()
    await trio.to_thread.run_sync(lambda: send(running.addresses.smtp_port, [bot], **options))

    full, raw = await stored(account, bot)
    assert raw.endswith(MESSAGE)
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert list(message.keys())[:3] == ["Return-Path", "Received", "Authentication-Results"]
    assert str(message["Return-Path"]) == "<alice@example.org>"
    received = message["Received"]
    assert not received.defects
    assert " ".join(str(received).split()).startswith(
        "from mail.example.org (client.example.org [127.0.0.1]) "
        f"by {HOSTNAME} (e2a) with {keyword} id {full['message_id']} for <{bot}>; "
    )
    date = parsedate_to_datetime(str(received).rpartition(";")[2].strip())
    assert before - 1 <= date.timestamp() <= time.time() + 1

    headers = full["auth_headers"]
    assert headers["X-E2A-Auth-Body-Hash"] == hashlib.sha256(raw).hexdigest()
    assert contract_verify(headers, raw, secret)


async def test_several_recipients_share_one_received_line_without_for(
    running: RunningGateway, make_account: Any
) -> None:
    account: Account = await make_account("trace-many@example.com")
    secret = await new_signing_secret(account)
    first = await create_agent(account, "first")
    second = await create_agent(account, "second")
    await trio.to_thread.run_sync(lambda: send(running.addresses.smtp_port, [first, second]))

    (full_first, raw_first), (full_second, raw_second) = [
        await stored(account, agent) for agent in (first, second)
    ]
    assert raw_first == raw_second
    received = str(email.message_from_bytes(raw_first, policy=email.policy.default)["Received"])
    assert " for " not in received
    assert f" id {full_first['message_id']};" in received  # the id the 250 reply names
    for full, raw in ((full_first, raw_first), (full_second, raw_second)):
        assert contract_verify(full["auth_headers"], raw, secret)


async def test_a_client_name_dns_cannot_confirm_is_left_out(
    running: RunningGateway, make_account: Any, resolver: FixtureResolver
) -> None:
    account: Account = await make_account("trace-dns@example.com")
    bot = await create_agent(account, "bot")
    resolver.failing.add("1.0.0.127.in-addr.arpa")
    await trio.to_thread.run_sync(lambda: send(running.addresses.smtp_port, [bot]))
    resolver.failing.clear()
    await trio.to_thread.run_sync(lambda: send(running.addresses.smtp_port, [bot]))

    listing = (await account.http.get(agent_path(bot, "/messages"))).json()["messages"]
    received = []
    for summary in listing:
        full = (
            await account.http.get(agent_path(bot, f"/messages/{summary['message_id']}"))
        ).json()
        message = email.message_from_bytes(base64.b64decode(full["raw_message"]))
        received.append(" ".join(str(message["Received"]).split()))
    # The failure was not remembered: the next message from the client names it.
    assert received[0].startswith("from mail.example.org ([127.0.0.1]) by ")
    assert received[1].startswith("from mail.example.org (client.example.org [127.0.0.1]) by ")


async def test_a_scoped_ipv6_helo_never_writes_into_the_received_line(
    running: RunningGateway, make_account: Any
) -> None:
    """Python reads anything after `%` as an IPv6 scope, but an address literal (RFC 5321
    section 4.1.3) has none: such an EHLO would put the client's own trace clauses into ours."""
    account: Account = await make_account("trace-scope@example.com")
    bot = await create_agent(account, "bot")
    forged = "[IPv6:fe80::1%x) by mx.trusted.example (e2a) with ESMTPS id msg_forged for <ceo@x>]"

    def send_as_forger() -> None:
        with smtplib.SMTP("127.0.0.1", running.addresses.smtp_port, timeout=10) as client:
            client.ehlo(forged)
            assert client.sendmail("alice@example.org", [bot], MESSAGE) == {}

    await trio.to_thread.run_sync(send_as_forger)

    _, raw = await stored(account, bot)
    received = " ".join(str(email.message_from_bytes(raw)["Received"]).split())
    assert received.startswith(f"from [127.0.0.1] (client.example.org [127.0.0.1]) by {HOSTNAME} ")
    assert "trusted" not in received
