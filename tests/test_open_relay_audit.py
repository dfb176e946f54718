"""The gateway is never an open relay (docs/smtp.md, "Addresses and routing"): over real SMTP,
with the outbound relay configured to an aiosmtpd sink on 127.0.0.1 that records everything
handed onward, every form of RCPT TO an attacker might route elsewhere with — other domains,
source routes, the `%` hack, quoted local parts, bang paths, address literals, look-alike and
internationalised forms of the shared domain, domains that hold it as a suffix or prefix,
over-long local parts, control characters — is either taken for a registered agent (and stored,
never handed on) or refused with the code docs/smtp.md promises; and the sink gets nothing, nor
is anything queued to go out."""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio
import trustme

from e2a_gateway.accounts import bootstrap_user
from e2a_gateway.app import RunningGateway, run_gateway
from e2a_gateway.config import Settings
from e2a_gateway.mailauth.resolver import FixtureResolver
from tests.conftest import Account, make_settings
from tests.databases import query
from tests.delivery_support import create_agent, wait_until
from tests.dns_server import serve_dns
from tests.relay_support import Sink, line_reader, relay_port, sink

__all__ = ["relay_port", "sink"]  # fixtures

BOT = "bot@agents.test"
POSTMASTER_INBOX = "postmaster@agents.test"
ATTACKER = "attacker@evil.example"
WAIT_SECONDS = 10


@pytest.fixture
def settings(tmp_path: Path, relay_port: int) -> Settings:
    """Outbound mail goes to the sink, so anything the gateway hands onward is seen."""
    return make_settings(
        tmp_path,
        outbound_smtp={"host": "127.0.0.1", "port": relay_port, "tls": "none"},
    )


@dataclass(frozen=True)
class Case:
    """One RCPT TO path (the bytes between `RCPT TO:` and CRLF), the reply it must get (code
    and enhanced status), and the agent that stores the message when it is accepted."""

    path: bytes
    code: int
    enhanced: str
    stored_for: str | None = None
    smtputf8: bool = False


RELAY_DENIED = (550, "5.7.1")
NO_SUCH_AGENT = (550, "5.1.1")
BAD_SYNTAX = (501, "5.1.3")
BAD_COMMAND_LINE = (500, "5.5.2")

CASES = {
    # elsewhere, plainly
    "other domain": Case(b"<user@other.example>", *RELAY_DENIED),
    "other domain, an agent's local part": Case(b"<bot@other.example>", *RELAY_DENIED),
    "postmaster elsewhere": Case(b"<postmaster@other.example>", *RELAY_DENIED),
    "abuse elsewhere": Case(b"<abuse@other.example>", *RELAY_DENIED),
    "localhost": Case(b"<bot@localhost>", *RELAY_DENIED),
    "dotted quad without brackets": Case(b"<bot@127.0.0.1>", *RELAY_DENIED),
    # source routes: only the final mailbox counts (RFC 5321 section 3.3)
    "source route via us to elsewhere": Case(b"<@agents.test:user@other.example>", *RELAY_DENIED),
    "source route, two hops via us": Case(
        b"<@agents.test,@mx.agents.test:user@other.example>", *RELAY_DENIED
    ),
    "source route via elsewhere to an agent": Case(
        b"<@other.example:bot@agents.test>", 250, "2.1.5", BOT
    ),
    "malformed source route": Case(b"<@agents.test,other.example:user@x.example>", *BAD_SYNTAX),
    # routing tricks in the local part of our own domain
    "percent hack": Case(b"<user%other.example@agents.test>", *NO_SUCH_AGENT),
    "percent hack naming an agent": Case(b"<bot%other.example@agents.test>", *NO_SUCH_AGENT),
    "percent hack at the host name": Case(b"<user%other.example@mx.agents.test>", *NO_SUCH_AGENT),
    "quoted address": Case(b'<"user@other.example"@agents.test>', *NO_SUCH_AGENT),
    "quoted postmaster elsewhere": Case(
        b'<"postmaster@other.example"@agents.test>', *NO_SUCH_AGENT
    ),
    "quoted agent's local part": Case(b'<"bot"@agents.test>', 250, "2.1.5", BOT),
    "bang path": Case(b"<other.example!user@agents.test>", *NO_SUCH_AGENT),
    "bang path at the host name": Case(b"<other.example!user@mx.agents.test>", *NO_SUCH_AGENT),
    "two at-signs": Case(b"<bot@agents.test@other.example>", *BAD_SYNTAX),
    "a list in one path": Case(b"<bot@agents.test,user@other.example>", *BAD_SYNTAX),
    # spellings of our own domain
    "trailing dot": Case(b"<bot@agents.test.>", 250, "2.1.5", BOT),
    "mixed case": Case(b"<BoT@AgEnTs.TeSt>", 250, "2.1.5", BOT),
    "no such agent": Case(b"<nobody@agents.test>", *NO_SUCH_AGENT),
    "a local part beyond ASCII": Case(
        "<b\u00f6t@agents.test>".encode(), *NO_SUCH_AGENT, smtputf8=True
    ),
    "fullwidth local part": Case(
        "<\uff42\uff4f\uff54@agents.test>".encode(), *NO_SUCH_AGENT, smtputf8=True
    ),
    "two trailing dots": Case(b"<bot@agents.test..>", *BAD_SYNTAX),
    "empty label": Case(b"<bot@agents..test>", *BAD_SYNTAX),
    "host name, not postmaster": Case(b"<bot@mx.agents.test>", *NO_SUCH_AGENT),
    "approval reply address, no such token": Case(
        b"<approvals+AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA@mx.agents.test>", *NO_SUCH_AGENT
    ),
    "forged return path": Case(b"<bounces+forged@agents.test>", *NO_SUCH_AGENT),
    # subaddresses (RFC 5233): a tag reaches the agent at the address without it, here only
    "an agent's address with a tag": Case(b"<bot+github@agents.test>", 250, "2.1.5", BOT),
    "a tag, mixed case": Case(b"<Bot+GitHub@Agents.Test>", 250, "2.1.5", BOT),
    "a tag on no agent's address": Case(b"<nobody+github@agents.test>", *NO_SUCH_AGENT),
    "an empty tag": Case(b"<bot+@agents.test>", 250, "2.1.5", BOT),
    "a tag with no local part before it": Case(b"<+bot@agents.test>", *NO_SUCH_AGENT),
    "a tag elsewhere": Case(b"<bot+github@other.example>", *RELAY_DENIED),
    "a tag at the host name": Case(b"<bot+github@mx.agents.test>", *NO_SUCH_AGENT),
    "a tag and a source route elsewhere": Case(
        b"<@agents.test:bot+x@other.example>", *RELAY_DENIED
    ),
    "a tag holding the percent hack": Case(b"<bot+x%other.example@agents.test>", *NO_SUCH_AGENT),
    "postmaster with a tag": Case(b"<postmaster+x@agents.test>", *NO_SUCH_AGENT),
    "abuse with a tag at the host name": Case(b"<abuse+x@mx.agents.test>", *NO_SUCH_AGENT),
    # address literals are never ours
    "IPv4 literal": Case(b"<user@[127.0.0.1]>", *RELAY_DENIED),
    "IPv4 literal, an agent's local part": Case(b"<bot@[127.0.0.1]>", *RELAY_DENIED),
    "IPv6 literal": Case(b"<user@[IPv6:::1]>", *RELAY_DENIED),
    "postmaster at a literal": Case(b"<postmaster@[127.0.0.1]>", *RELAY_DENIED),
    "malformed literal": Case(b"<user@[127.0.0.300]>", *BAD_SYNTAX),
    "scoped IPv6 literal": Case(b"<user@[IPv6:fe80::1%eth0]>", *BAD_SYNTAX),
    # internationalised look-alikes: IDNA 2003 mappings are never applied, so none is ours
    "Cyrillic a in the domain": Case(
        "<bot@\u0430gents.test>".encode(), *RELAY_DENIED, smtputf8=True
    ),
    "fullwidth domain": Case(
        "<bot@\uff41\uff47\uff45\uff4e\uff54\uff53.test>".encode(), *RELAY_DENIED, smtputf8=True
    ),
    "ideographic full stop": Case("<bot@agents\u3002test>".encode(), *RELAY_DENIED, smtputf8=True),
    "the Cyrillic look-alike as A-labels": Case(b"<bot@xn--gents-3ve.test>", *RELAY_DENIED),
    "non-ASCII without SMTPUTF8": Case("<bot@\u0430gents.test>".encode(), 553, "5.6.7"),
    "Kelvin sign folding to ASCII": Case(
        "<bot@agents.tes\u212a>".encode(), *BAD_SYNTAX, smtputf8=True
    ),
    # the shared domain as part of another name
    "suffix of another domain": Case(b"<user@evilagents.test>", *RELAY_DENIED),
    "prefix of another domain": Case(b"<user@agents.test.evil.com>", *RELAY_DENIED),
    "subdomain": Case(b"<bot@sub.agents.test>", *RELAY_DENIED),
    "subdomain of the host name": Case(b"<bot@sub.mx.agents.test>", *RELAY_DENIED),
    # postmaster and abuse (always taken, stored in the postmaster inbox)
    "postmaster without a domain": Case(b"<postmaster>", 250, "2.1.5", POSTMASTER_INBOX),
    "Postmaster without a domain, any case": Case(b"<POSTMASTER>", 250, "2.1.5", POSTMASTER_INBOX),
    "abuse without a domain": Case(b"<abuse>", *BAD_SYNTAX),
    "user without a domain": Case(b"<user>", *BAD_SYNTAX),
    "postmaster at the shared domain": Case(
        b"<postmaster@agents.test>", 250, "2.1.5", POSTMASTER_INBOX
    ),
    "abuse at the host name": Case(b"<abuse@mx.agents.test>", 250, "2.1.5", POSTMASTER_INBOX),
    # lengths and characters no address holds
    "local part of 65 octets": Case(b"<" + b"a" * 65 + b"@agents.test>", *NO_SUCH_AGENT),
    "local part past the command line limit": Case(
        b"<" + b"a" * 600 + b"@agents.test>", *BAD_COMMAND_LINE
    ),
    "domain of 300 octets": Case(b"<bot@" + b"a." * 150 + b"test>", *BAD_SYNTAX),
    "NUL in the local part": Case(b"<bot\x00@agents.test>", *BAD_COMMAND_LINE),
    "NUL after the domain": Case(b"<bot@agents.test\x00.other.example>", *BAD_COMMAND_LINE),
    "bare CR in the address": Case(b"<bot\r@agents.test>", *BAD_COMMAND_LINE),
    "tab in the address": Case(b"<bot\t@agents.test>", *BAD_COMMAND_LINE),
    "space in the address": Case(b"<bot @agents.test>", *BAD_SYNTAX),
    "empty path": Case(b"<>", *BAD_SYNTAX),
    "no angle brackets": Case(b"user@other.example", 501, "5.5.4"),
    "a parameter": Case(b"<user@other.example> NOTIFY=NEVER", 555, "5.5.4"),
}


MESSAGE = (
    b"From: attacker@evil.example\r\nTo: someone@other.example\r\nSubject: relay probe\r\n"
    b"Message-ID: <probe@evil.example>\r\n\r\nPlease pass this on.\r\n"
)


async def converse(port: int, case: Case) -> tuple[bytes, bytes | None]:
    """One session: EHLO, MAIL, RCPT with `case.path` and, when it is accepted, DATA; the RCPT
    reply and the reply to the end of DATA (None when there was none)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        read = line_reader(stream)

        async def reply() -> bytes:
            lines = [await read()]
            while lines[-1][3:4] == b"-":
                lines.append(await read())
            return b"".join(lines)

        async def command(line: bytes) -> bytes:
            await stream.send_all(line + b"\r\n")
            return await reply()

        assert (await reply()).startswith(b"220")
        assert (await command(b"EHLO client.evil.example")).startswith(b"250")
        utf8 = b" SMTPUTF8" if case.smtputf8 else b""
        assert (await command(b"MAIL FROM:<" + ATTACKER.encode() + b">" + utf8)).startswith(b"250")
        answer = await command(b"RCPT TO:" + case.path)
        if not answer.startswith(b"250"):
            assert (await command(b"DATA")).startswith(b"554")  # no valid recipients
            return answer, None
        assert (await command(b"DATA")).startswith(b"354")
        return answer, await command(MESSAGE + b".")


def stored_for(settings: Settings) -> list[str]:
    """The agents holding an inbound message, one entry per copy."""
    rows = query(
        settings.database.url, "SELECT agent_email FROM messages WHERE direction = 'inbound'"
    )
    return sorted(row[0] for row in rows)


def nothing_goes_out(settings: Settings, sink: Sink) -> None:
    """The relay received nothing, and nothing waits to go out: no outbound message, no
    approval answer."""
    url = settings.database.url
    assert sink.received == []
    assert query(url, "SELECT id FROM messages WHERE direction = 'outbound'") == []
    assert query(url, "SELECT * FROM approval_answers") == []


@pytest.fixture
async def bot(running: RunningGateway, make_account: object) -> str:
    """The one agent, `bot@agents.test`, of the first user (who owns the postmaster inbox)."""
    account: Account = await make_account("owner@example.com")  # type: ignore[operator]
    return await create_agent(account, "bot")


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
async def test_a_recipient_is_an_agent_here_or_refused_and_nothing_is_relayed(
    running: RunningGateway, settings: Settings, sink: Sink, bot: str, case: Case
) -> None:
    answer, end_of_data = await converse(running.addresses.smtp_port, case)

    code, enhanced = answer[:3], answer[4:].split(b" ", 1)[0]
    assert (int(code), enhanced.decode()) == (case.code, case.enhanced), answer
    if case.stored_for is None:
        assert end_of_data is None
        assert stored_for(settings) == []
    else:
        assert end_of_data is not None and end_of_data.startswith(b"250"), end_of_data
        assert stored_for(settings) == [case.stored_for]
    nothing_goes_out(settings, sink)


async def test_the_sink_sees_what_the_gateway_sends(
    running: RunningGateway, settings: Settings, sink: Sink, make_account: object
) -> None:
    """The other tests' `sink.received == []` means something: an agent's own mail out (over
    the API, authenticated) reaches this sink."""
    account: Account = await make_account("owner@example.com")  # type: ignore[operator]
    await create_agent(account, "sender")
    sent = await account.http.post(
        "/api/v1/send", json={"to": ["someone@other.example"], "subject": "hi", "body": "hello"}
    )
    assert sent.status_code == 200, sent.text
    await wait_until(lambda: bool(sink.received), WAIT_SECONDS)
    ((_, recipients, _),) = sink.received
    assert recipients == ["someone@other.example"]


async def start_gateway(nursery: trio.Nursery, settings: Settings) -> RunningGateway:
    """A gateway on `settings` in the test's nursery, with an empty DNS."""
    started: RunningGateway = await nursery.start(
        partial(run_gateway, settings, resolver=FixtureResolver())
    )
    return started


async def agent_of_first_user(running: RunningGateway, slug: str) -> str:
    """Register `slug` on the shared domain for a first user; its address."""
    gateway = running.gateway
    _, issued, _ = await bootstrap_user(gateway.storage, gateway.server_key, "owner@example.com")
    async with httpx.AsyncClient(
        base_url=running.addresses.http_url,
        headers={"Authorization": f"Bearer {issued.plaintext}"},
        timeout=10,
    ) as http:
        account = Account("owner@example.com", issued.plaintext, http)
        return await create_agent(account, slug)


IDN_SHARED = "xn--bcher-kva.test"
"""The shared domain `bücher.test`, as e2a stores it."""

IDN_CASES = {
    "U-labels": Case("<bot@bücher.test>".encode(), 250, "2.1.5", f"bot@{IDN_SHARED}", True),
    "U-labels, uppercase": Case(
        "<BOT@BÜCHER.TEST>".encode(), 250, "2.1.5", f"bot@{IDN_SHARED}", True
    ),
    "A-labels": Case(b"<bot@xn--bcher-kva.test>", 250, "2.1.5", f"bot@{IDN_SHARED}"),
    "A-labels, uppercase, trailing dot": Case(
        b"<Bot@XN--BCHER-KVA.TEST.>", 250, "2.1.5", f"bot@{IDN_SHARED}"
    ),
    "ASCII folding (IDNA 2003 would not)": Case(b"<bot@bucher.test>", *RELAY_DENIED),
    "decomposed u-umlaut is the same name (NFC)": Case(
        "<bot@bu\u0308cher.test>".encode(), 250, "2.1.5", f"bot@{IDN_SHARED}", True
    ),
    "another U-label": Case(
        "<bot@bücher.test.evil.example>".encode(), *RELAY_DENIED, smtputf8=True
    ),
    "unknown agent in U-labels": Case(
        "<nobody@bücher.test>".encode(), *NO_SUCH_AGENT, smtputf8=True
    ),
}


@pytest.mark.parametrize("case", IDN_CASES.values(), ids=IDN_CASES.keys())
async def test_an_internationalised_shared_domain_is_ours_in_every_spelling_and_only_it(
    tmp_path: Path, relay_port: int, sink: Sink, nursery: trio.Nursery, case: Case
) -> None:
    settings = make_settings(
        tmp_path,
        shared_domain="bücher.test",
        outbound_smtp={"host": "127.0.0.1", "port": relay_port, "tls": "none"},
    )
    running = await start_gateway(nursery, settings)
    assert await agent_of_first_user(running, "bot") == f"bot@{IDN_SHARED}"

    answer, end_of_data = await converse(running.addresses.smtp_port, case)

    assert (int(answer[:3]), answer[4:].split(b" ", 1)[0].decode()) == (
        case.code,
        case.enhanced,
    ), answer
    expected = [] if case.stored_for is None else [case.stored_for]
    assert stored_for(settings) == expected
    assert (end_of_data is not None) == bool(expected)
    nothing_goes_out(settings, sink)


def submit_over_tls(port: int, context: ssl.SSLContext) -> dict[str, object]:
    """What an unauthenticated client meets trying to submit mail for a stranger: the
    extensions offered before and after STARTTLS, the answers to AUTH, and the RCPT reply."""
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.evil.example", timeout=10) as c:
        c.ehlo()
        before = dict(c.esmtp_features)
        plain_auth = c.docmd("AUTH", "PLAIN AGF0dGFja2VyAHNlY3JldA==")
        c.starttls(context=context)
        c.ehlo()
        after = dict(c.esmtp_features)
        tls_auth = c.docmd("AUTH", "LOGIN")
        c.mail(ATTACKER)
        rcpt = c.rcpt("someone@other.example")
        return {"before": before, "after": after, "auth": [plain_auth, tls_auth], "rcpt": rcpt}


async def test_no_authentication_is_offered_and_tls_opens_no_way_out(
    tmp_path: Path, relay_port: int, sink: Sink, nursery: trio.Nursery
) -> None:
    """The MX port takes no AUTH, with or without TLS (agents send through the API), so no
    client can submit mail for anyone beyond the gateway over SMTP."""
    ca = trustme.CA()
    issued = ca.issue_cert("mx.agents.test", "127.0.0.1")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(key))
    settings = make_settings(
        tmp_path,
        smtp={
            "listen": "127.0.0.1:0",
            "hostname": "mx.agents.test",
            "tls_cert": str(cert),
            "tls_key": str(key),
        },
        outbound_smtp={"host": "127.0.0.1", "port": relay_port, "tls": "none"},
    )
    running = await start_gateway(nursery, settings)
    await agent_of_first_user(running, "bot")
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)

    met = await trio.to_thread.run_sync(submit_over_tls, running.addresses.smtp_port, client_tls)

    assert "starttls" in met["before"]  # type: ignore[operator]
    assert "auth" not in met["before"] and "auth" not in met["after"]  # type: ignore[operator]
    assert [code for code, _ in met["auth"]] == [502, 502]  # type: ignore[attr-defined]
    code, text = met["rcpt"]  # type: ignore[misc]
    assert (code, text.split()[0]) == (550, b"5.7.1")
    nothing_goes_out(settings, sink)


async def test_acceptor_processes_route_every_form_alike(
    tmp_path: Path, relay_port: int, sink: Sink, nursery: trio.Nursery
) -> None:
    """With `smtp.processes = 2` an acceptor process checks recipients through the main
    process's storage (and remembers what it found): every case above, its sessions all at
    once so that whichever process is free takes each, gets the same reply, and still nothing
    goes out."""
    dns_port: int = await nursery.start(serve_dns, {})
    settings = make_settings(
        tmp_path,
        dns={"nameservers": [f"127.0.0.1:{dns_port}"], "timeout_seconds": 2},
        smtp={"listen": "127.0.0.1:0", "hostname": "mx.agents.test", "processes": 2},
        outbound_smtp={"host": "127.0.0.1", "port": relay_port, "tls": "none"},
    )
    running: RunningGateway = await nursery.start(partial(run_gateway, settings))
    assert await agent_of_first_user(running, "bot") == BOT
    replies: dict[str, tuple[bytes, bytes | None]] = {}

    async def probe(name: str, case: Case) -> None:
        replies[name] = await converse(running.addresses.smtp_port, case)

    with trio.fail_after(60):
        async with trio.open_nursery() as clients:
            for name, case in CASES.items():
                clients.start_soon(probe, name, case)

    for name, case in CASES.items():
        answer, end_of_data = replies[name]
        got = (int(answer[:3]), answer[4:].split(b" ", 1)[0].decode())
        assert got == (case.code, case.enhanced), (name, answer)
        assert (end_of_data is not None) == (case.stored_for is not None), name
        assert end_of_data is None or end_of_data.startswith(b"250"), (name, end_of_data)
    accepted = [case.stored_for for case in CASES.values() if case.stored_for is not None]
    assert stored_for(settings) == sorted(accepted)
    nothing_goes_out(settings, sink)


async def test_postmaster_deliver_to_elsewhere_never_forwards(
    tmp_path: Path, relay_port: int, sink: Sink, nursery: trio.Nursery
) -> None:
    """`postmaster.deliver_to` naming an address beyond the gateway is no forwarding rule: it
    names no agent here, so postmaster mail goes to the postmaster inbox, stored."""
    settings = make_settings(
        tmp_path,
        postmaster={"deliver_to": "operator@other.example"},
        outbound_smtp={"host": "127.0.0.1", "port": relay_port, "tls": "none"},
    )
    running = await start_gateway(nursery, settings)
    await agent_of_first_user(running, "bot")

    case = CASES["postmaster without a domain"]
    answer, end_of_data = await converse(running.addresses.smtp_port, case)

    assert answer.startswith(b"250") and end_of_data is not None and end_of_data.startswith(b"250")
    assert stored_for(settings) == [POSTMASTER_INBOX]
    nothing_goes_out(settings, sink)
