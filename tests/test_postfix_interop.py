"""e2a next to a real Postfix, the MTA operators most often put beside it: the Debian package
unpacked with `dpkg -x` (bench/_postfix_peer.py), run as root with a private config on
127.0.0.1, skipped with a note on how to get it where it cannot run.

Outbound: e2a's relay (`outbound_smtp`) is Postfix's smtpd, plain and with STARTTLS, which
relays to an aiosmtpd sink on another loopback port; what arrives there went through Postfix's
queue, and its DKIM signature must still verify. Postfix refuses one recipient (550), defers
another (451), closes the session (421) and takes no message over its `message_size_limit`
(552): e2a records each recipient's outcome as Postfix gave it.

Inbound: Postfix's smtp client delivers a domain to e2a's SMTP port (a transport map); mail
injected with Postfix's `sendmail` lands once in the agent's inbox and Postfix logs
`status=sent`; a 4xx from e2a makes Postfix defer and deliver later, a 5xx bounces."""

from __future__ import annotations

import os
import re
import smtplib
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import trio
import trustme

from bench._postfix_peer import PostfixInstance, PostfixUnavailable, postfix_instance
from e2a_gateway.app import RunningGateway
from e2a_gateway.config import Settings
from e2a_gateway.inbound.pipeline import InboundMailSink
from e2a_gateway.smtp.server import MessageNotStored
from tests.conftest import Account, make_settings
from tests.delivery_support import create_agent
from tests.relay_support import Sink, free_port, relay_on_loopback
from tests.test_dkim_signing import write_rsa_key
from tests.test_outbound_wire import verifies
from tests.test_outbound_worker import NOW, Setup, open_setup, parsed, queue, stored, views

pytestmark = pytest.mark.slow

WAIT_SECONDS = 20.0
SMTP_CLIENT = "smtp      unix  - - n -   - smtp\n"
"""Postfix's smtp client, which its benchmark config has no use for."""
TLS_MANAGER = "tlsmgr    unix  - - n 1000? 1 tlsmgr\n"
"""Postfix's TLS session cache and entropy, without which smtpd offers STARTTLS and fails it."""
ANN = "ann@example.org"
JOSE = "josé@example.com"
GONE = "gone@example.net"
BUSY = "busy@example.net"
REFUSE = "550 5.1.1 no such user"
REFUSED = "550 5.1.1 <gone@example.net>: Recipient address rejected: no such user"
DEFER = "451 4.3.0 try again later"
LATER = "451 4.3.0 <busy@example.net>: Recipient address rejected: try again later"
UTF8_BODY = "Grüße aus Köln — 5 € pro Stück.\n"


def postfix(port: int, recipient: str, **config: str) -> Iterator[PostfixInstance]:
    """`postfix_instance`, or the test skipped saying how to get Postfix."""
    try:
        with postfix_instance(port, recipient, **config) as instance:
            yield instance
    except PostfixUnavailable as why:
        pytest.skip(f"Postfix cannot run here: {why}")


def wait_for(condition: Any, what: str) -> None:
    """Poll `condition` for WAIT_SECONDS at most; fail naming `what`."""
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


# -- e2a hands its mail to Postfix ------------------------------------------------------------


@dataclass
class Relay:
    """Postfix as e2a's relay, the sink it relays to, and what e2a needs to reach it."""

    postfix: PostfixInstance
    sink: Sink
    access: Path
    outbound_smtp: dict[str, Any]
    dkim: dict[str, str]
    key_record: bytes


def relay_config(sink_port: int, access: Path, tls: str) -> str:
    """main.cf lines: relay everything from 127.0.0.1 to the sink, refuse as `access` says."""
    return (
        "mydestination =\nlocal_recipient_maps =\n"
        f"default_transport = smtp:[127.0.0.1]:{sink_port}\n"
        f"relay_transport = smtp:[127.0.0.1]:{sink_port}\n"
        "smtpd_relay_restrictions = permit_mynetworks, reject\n"
        f"smtpd_recipient_restrictions = check_recipient_access texthash:{access}\n"
        "message_size_limit = 200000\nsmtputf8_enable = yes\n"
        "smtp_tls_security_level = none\n" + tls
    )


@pytest.fixture
def shared_path() -> Iterator[Path]:
    """A folder Postfix's processes (the `postfix` user) can read."""
    with tempfile.TemporaryDirectory(prefix="e2a-postfix-maps-") as folder:
        os.chmod(folder, 0o755)
        yield Path(folder)


@pytest.fixture(params=["none", "starttls"])
def relay(request: pytest.FixtureRequest, tmp_path: Path, shared_path: Path) -> Iterator[Relay]:
    """Postfix on 127.0.0.1, spoken to in clear or with STARTTLS (a certificate for
    `localhost` from a CA of the test's, given to e2a as `ca_file`)."""
    tls_mode: str = request.param
    access = shared_path / "access"
    access.write_text(f"{GONE} {REFUSE}\n{BUSY} {DEFER}\n")
    tls = ""
    relay_tls: dict[str, Any] = {"host": "127.0.0.1", "tls": "none"}
    if tls_mode == "starttls":
        ca = trustme.CA()
        issued = ca.issue_cert("localhost")
        cert = shared_path / "cert.pem"
        cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
        issued.private_key_pem.write_to_path(str(shared_path / "key.pem"))
        os.chmod(shared_path / "key.pem", 0o644)  # a test key, read by the postfix user
        ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
        tls = (
            "smtpd_tls_security_level = may\nsmtpd_tls_loglevel = 1\n"
            f"smtpd_tls_cert_file = {cert}\nsmtpd_tls_key_file = {shared_path / 'key.pem'}\n"
        )
        relay_tls = {"host": "localhost", "tls": "starttls", "ca_file": str(tmp_path / "ca.pem")}
    key_record = write_rsa_key(tmp_path / "dkim.pem")
    sink = Sink()
    with relay_on_loopback(sink, smtputf8=True) as sink_port:
        config = relay_config(sink_port, access, tls)
        for instance in postfix(free_port(), "postmaster@relay.test", main_cf=config,
                                master_cf=SMTP_CLIENT + TLS_MANAGER):  # fmt: skip
            yield Relay(
                instance,
                sink,
                access,
                {**relay_tls, "port": instance.port, "timeout_seconds": 10},
                {"selector": "e2a", "private_key_path": str(tmp_path / "dkim.pem")},
                key_record,
            )


@pytest.fixture
async def setup(tmp_path: Path, relay: Relay) -> AsyncIterator[Setup]:
    settings = make_settings(tmp_path, outbound_smtp=relay.outbound_smtp, dkim=relay.dkim)
    async with open_setup(settings) as value:
        yield value


def relayed_to(relay: Relay, recipient: str) -> tuple[list[str], bytes]:
    """What Postfix passed on to the sink for `recipient`: its MAIL FROM parameters and
    bytes (waited for)."""
    wait_for(
        lambda: any(recipient in rcpts for _, rcpts, _ in relay.sink.received),
        f"Postfix to relay the copy for {recipient}",
    )
    for (_, rcpts, raw), options in zip(relay.sink.received, relay.sink.mail_options, strict=True):
        if recipient in rcpts:
            return options, raw
    raise AssertionError(recipient)


async def test_postfix_takes_each_recipient_as_it_answers_and_the_signature_survives_the_hop(
    setup: Setup, relay: Relay
) -> None:
    """To four people through Postfix: Ann and José (SMTPUTF8) are accepted and relayed, with
    the UTF-8 body as it was and a DKIM signature that still verifies; Gone is refused (550,
    a bounce of Gone alone, Postfix's text kept); Busy is deferred (451) and handed off 30 s
    later once Postfix takes it. Postfix sees no improper pipelining."""
    message = await queue(setup, to=[ANN, JOSE, GONE, BUSY], subject="Grüße", body_text=UTF8_BODY)
    await setup.worker.deliver_due(NOW)
    assert "STARTTLS" not in ((await stored(setup, message.id)).send_error or ""), (
        relay.postfix.maillog[-3000:]
    )

    waiting = await stored(setup, message.id)
    assert waiting.status == "queued"
    results = await setup.gateway.storage.recipient_results(message.id)
    assert results[GONE] == f"refused: RCPT TO: {REFUSED}", results
    assert f"{BUSY}: RCPT TO: {LATER}" in (waiting.send_error or "")
    for recipient in (ANN, JOSE):
        _, raw = relayed_to(relay, recipient)
        first, rest = raw.split(b"\r\n", 1)
        assert first.startswith(b"Received: from "), first  # Postfix's, on top of e2a's bytes
        assert b"\r\nDKIM-Signature:" in b"\r\n" + rest.split(b"\r\n\r\n")[0]
        assert parsed(raw).get_content().replace("\r\n", "\n") == UTF8_BODY
        assert verifies(raw, relay.key_record), raw[:2000]
    assert "SMTPUTF8" in relayed_to(relay, JOSE)[0]
    assert "improper command pipelining" not in relay.postfix.maillog
    tls_used = "TLS connection established from" in relay.postfix.maillog
    assert tls_used == (relay.outbound_smtp["tls"] == "starttls")

    relay.access.write_text(f"{GONE} {REFUSE}\n")
    relay.postfix.change("")
    assert await setup.worker.deliver_due(NOW + 29) == 0
    assert await setup.worker.deliver_due(NOW + 30) == 1
    relayed_to(relay, BUSY)
    after = await stored(setup, message.id)
    assert after.status == "sent", after.send_error
    assert await views(setup, message.id) == ("sent", "sent", "bounced")
    copies = sorted(rcpt for _, rcpts, _ in relay.sink.received for rcpt in rcpts)
    assert copies == sorted([ANN, JOSE, BUSY])  # nobody twice


async def test_a_message_over_postfix_size_limit_fails_for_good_with_postfix_text(
    setup: Setup, relay: Relay
) -> None:
    """Postfix offers SIZE 200000: the message is refused before it is sent, naming the
    limit. Where Postfix keeps its SIZE to itself, it refuses the data with 552 5.3.4 and e2a
    fails the recipient for good with Postfix's text. Neither is tried again."""
    big = "0123456789abcdef\n" * 20000
    offered = await queue(setup, to=[ANN], body_text=big)
    await setup.worker.deliver_due(NOW)
    after = await stored(setup, offered.id)
    assert after.status in ("bounced", "failed"), (after.status, after.send_error)
    assert "the relay takes at most 200000" in (after.send_error or "")

    relay.postfix.change("smtpd_discard_ehlo_keywords = size")
    unannounced = await queue(setup, to=[ANN], body_text=big)
    await setup.worker.deliver_due(NOW)
    after = await stored(setup, unannounced.id)
    assert after.status in ("bounced", "failed"), (after.status, after.send_error)
    assert "end of DATA: 552 5.3.4 Error: message file too big" in (after.send_error or "")

    assert await setup.worker.deliver_due(NOW + 86400) == 0  # neither is retried
    assert relay.sink.received == []


async def test_postfix_closing_the_session_with_421_defers(setup: Setup, relay: Relay) -> None:
    relay.access.write_text(f"{ANN} 421 4.7.0 closing, try again later\n")
    relay.postfix.change("")
    message = await queue(setup, to=[ANN])
    await setup.worker.deliver_due(NOW)

    waiting = await stored(setup, message.id)
    assert waiting.status == "queued"
    assert "421 4.7.0" in (waiting.send_error or ""), waiting.send_error
    assert "closing, try again later" in (waiting.send_error or "")
    relay.access.write_text("")
    relay.postfix.change("")
    assert await setup.worker.deliver_due(NOW + 30) == 1
    relayed_to(relay, ANN)
    assert (await stored(setup, message.id)).status == "sent"


# -- Postfix hands mail to e2a ------------------------------------------------------------------


@pytest.fixture
def e2a_port() -> int:
    return free_port()


@pytest.fixture
def settings(tmp_path: Path, e2a_port: int) -> Settings:
    return make_settings(tmp_path, smtp={"listen": f"127.0.0.1:{e2a_port}"})


@pytest.fixture
def sender(e2a_port: int) -> Iterator[PostfixInstance]:
    """Postfix sending mail for agents.test to e2a's SMTP port, retrying deferred mail at
    once when flushed."""
    config = (
        "mydestination =\nlocal_recipient_maps =\nrelay_domains = agents.test\n"
        f"transport_maps = inline:{{ agents.test=smtp:[127.0.0.1]:{e2a_port} }}\n"
        "smtp_tls_security_level = none\n"
        "minimal_backoff_time = 1s\nmaximal_backoff_time = 2s\nqueue_run_delay = 1s\n"
    )
    master = SMTP_CLIENT + "pickup    fifo  n - n 60  1 pickup\n"
    yield from postfix(free_port(), "postmaster@sender.test", main_cf=config, master_cf=master)


def inject(sender: PostfixInstance, recipient: str, subject: str) -> None:
    """Give Postfix a message for `recipient` over SMTP (its smtpd on 127.0.0.1)."""
    message = (
        f"From: Alice <alice@example.org>\r\nTo: {recipient}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject}@example.org>\r\n\r\nHello from Postfix.\r\n"
    )
    with smtplib.SMTP("127.0.0.1", sender.port, timeout=WAIT_SECONDS) as client:
        client.sendmail("alice@example.org", [recipient], message.encode())


async def inbox(account: Account, agent: str) -> list[dict[str, Any]]:
    listed = await account.http.get(f"/v1/agents/{quote(agent, safe='')}/messages")
    assert listed.status_code == 200, listed.text
    items: list[dict[str, Any]] = listed.json()["items"]
    return items


async def logged(sender: PostfixInstance, pattern: str) -> str:
    """The first maillog line matching `pattern`, waited for."""
    deadline = trio.current_time() + WAIT_SECONDS
    while (found := re.search(pattern, sender.maillog, re.MULTILINE)) is None:
        if trio.current_time() > deadline:
            pytest.fail(f"Postfix logged no {pattern!r}:\n{sender.maillog[-3000:]}")
        await trio.sleep(0.1)
    return found.group(0)


async def test_postfix_delivers_to_the_agent_once(
    running: RunningGateway, make_account: Any, sender: PostfixInstance
) -> None:
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    await trio.to_thread.run_sync(inject, sender, bot, "hello-1")
    line = await logged(sender, rf"^.*to=<{re.escape(bot)}>.*status=sent.*$")
    assert f"relay=127.0.0.1[127.0.0.1]:{running.addresses.smtp_port}" in line
    items = await inbox(alice, bot)
    assert [item["subject"] for item in items] == ["hello-1"]
    assert sender.command("postqueue", "-p").strip() == "Mail queue is empty"


async def test_a_4xx_from_e2a_makes_postfix_retry_and_a_5xx_bounces(
    running: RunningGateway,
    make_account: Any,
    sender: PostfixInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    accept = InboundMailSink.accept_message
    failures = [MessageNotStored("the database is away")]

    async def fail_once(self: InboundMailSink, envelope: Any, peer: str) -> str:
        if failures:
            raise failures.pop()
        return await accept(self, envelope, peer)

    monkeypatch.setattr(InboundMailSink, "accept_message", fail_once)
    await trio.to_thread.run_sync(inject, sender, bot, "retried")
    await logged(sender, rf"to=<{re.escape(bot)}>.*status=deferred.*451 4\.3\.0")
    await logged(sender, rf"to=<{re.escape(bot)}>.*status=sent")
    assert [item["subject"] for item in await inbox(alice, bot)] == ["retried"]

    await trio.to_thread.run_sync(inject, sender, "nobody@agents.test", "unknown")
    await logged(sender, r"to=<nobody@agents\.test>.*status=bounced.*550 5\.1\.1")
    assert [item["subject"] for item in await inbox(alice, bot)] == ["retried"]


async def test_postfix_deferring_the_data_defers_and_the_retry_delivers_once(
    setup: Setup, relay: Relay
) -> None:
    """Postfix answers the end of DATA with 451 (an end-of-data restriction, as a milter or a
    full queue would): nothing was taken, the message waits and is handed off, once, on the
    retry."""
    client_access = relay.access.parent / "client_access"
    client_access.write_text("127.0.0.1 451 4.3.0 queue file write error, try later\n")
    relay.postfix.change(
        f"smtpd_end_of_data_restrictions = check_client_access texthash:{client_access}"
    )
    message = await queue(setup, to=[ANN])
    await setup.worker.deliver_due(NOW)

    waiting = await stored(setup, message.id)
    assert waiting.status == "queued"
    assert "451 4.3.0" in (waiting.send_error or "") and "try later" in waiting.send_error, (
        waiting.send_error
    )
    relay.postfix.change("smtpd_end_of_data_restrictions =")
    assert await setup.worker.deliver_due(NOW + 30) == 1
    relayed_to(relay, ANN)
    assert (await stored(setup, message.id)).status == "sent"
    assert [rcpts for _, rcpts, _ in relay.sink.received] == [[ANN]]
