"""Sender authentication end to end: real SMTP in, a real DNS server on 127.0.0.1, REST out.

The gateway's `dns.nameservers` points at a tiny DNS server started here, so SPF, DKIM and
DMARC run exactly as in production; the signed headers are then checked with a verifier
written from the contract text alone (tests/test_signing_identity.py).
"""

from __future__ import annotations

import base64
import hashlib
import smtplib
import socket
import time
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from e2a_gateway.app import RunningGateway, run_gateway
from e2a_gateway.inbound.pipeline import AUTH_THREADS
from e2a_gateway.mailauth.resolver import Zone
from tests.conftest import Account, agent_path, make_settings
from tests.dns_server import serve_dns
from tests.test_mailauth_dkim import arc_sealed, rsa_key
from tests.test_signing_identity import contract_verify, sdk_verifies

SIGNER = rsa_key("example.org", "mail")
LIST_SEALER = rsa_key("lists.example.net", "arc")
ZONE: Zone = {
    "example.org": {"TXT": ["v=spf1 ip4:127.0.0.1 -all"]},
    "_dmarc.example.org": {"TXT": ["v=DMARC1; p=reject"]},
    "attacker.example": {"TXT": ["v=spf1 ip4:127.0.0.1 -all"]},
    "nospf.example": {"A": ["192.0.2.1"]},
    **SIGNER.zone(),
    **LIST_SEALER.zone(),
}


def mail(sender: str, subject: str, extra: bytes = b"") -> bytes:
    return (
        f"From: {sender}\r\nTo: bot@agents.test\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '-')}@test>\r\n".encode()
        + extra
        + b"\r\nHello agent.\r\n"
    )


@pytest.fixture
async def dns_port(nursery: trio.Nursery) -> int:
    port: int = await nursery.start(serve_dns, ZONE)
    return port


@pytest.fixture
async def gateway(
    tmp_path: Path, dns_port: int, nursery: trio.Nursery
) -> AsyncIterator[RunningGateway]:
    settings = make_settings(tmp_path, dns={"nameservers": [f"127.0.0.1:{dns_port}"]})
    running: RunningGateway = await nursery.start(partial(run_gateway, settings))
    yield running


async def account_with_bot(running: RunningGateway) -> tuple[Account, str]:
    from e2a_gateway.accounts import bootstrap_user

    _, issued, _ = await bootstrap_user(
        running.gateway.storage, running.gateway.server_key, "owner@example.com"
    )
    http = httpx.AsyncClient(
        base_url=running.addresses.http_url,
        headers={"Authorization": f"Bearer {issued.plaintext}"},
        timeout=10,
    )
    created = await http.post("/api/v1/agents", json={"slug": "bot", "agent_mode": "local"})
    assert created.status_code == 201, created.text
    secret = (await http.post("/api/v1/users/me/signing-secrets", json={"name": "e2e"})).json()
    return Account("owner@example.com", issued.plaintext, http), str(secret["secret"])


def send(port: int, envelope_from: str, data: bytes) -> float:
    started = time.monotonic()
    with smtplib.SMTP("127.0.0.1", port, timeout=15) as client:
        client.sendmail(envelope_from, ["bot@agents.test"], data)
    return time.monotonic() - started


async def received(account: Account, subject: str) -> dict[str, Any]:
    listing = (await account.http.get(agent_path("bot@agents.test", "/messages"))).json()
    (summary,) = [m for m in listing["messages"] if m["subject"] == subject]
    response = await account.http.get(
        agent_path("bot@agents.test", f"/messages/{summary['message_id']}")
    )
    return dict(response.json())


CASES = [
    # (name, envelope sender, From:, dkim-sign?, verified, domain check)
    (
        "aligned spf",
        "alice@example.org",
        "alice@example.org",
        False,
        True,
        "spf=pass; dkim=none; dmarc=pass",
    ),
    (
        "forged from",
        "bob@attacker.example",
        "ceo@example.org",
        False,
        False,
        "spf=pass; dkim=none; dmarc=fail",
    ),
    (
        "aligned dkim",
        "bounce@nospf.example",
        "alice@example.org",
        True,
        True,
        "spf=none; dkim=pass; dmarc=pass",
    ),
    (
        "unauthenticated",
        "someone@nospf.example",
        "someone@nospf.example",
        False,
        False,
        "spf=none; dkim=none; dmarc=none",
    ),
]


@pytest.mark.parametrize(("name", "envelope", "sender", "signed", "verified", "check"), CASES)
async def test_signed_identity_headers(
    gateway: RunningGateway,
    name: str,
    envelope: str,
    sender: str,
    signed: bool,
    verified: bool,
    check: str,
) -> None:
    account, secret = await account_with_bot(gateway)
    original = mail(
        sender, name, b"X-E2A-Auth-Verified: true\r\nX-E2A-Auth-Sender: ceo@example.org\r\n"
    )
    if signed:
        original = SIGNER.sign(original)
    await trio.to_thread.run_sync(send, gateway.addresses.smtp_port, envelope, original)
    message = await received(account, name)
    headers = message["auth_headers"]
    raw = base64.b64decode(message["raw_message"])

    assert headers["X-E2A-Auth-Verified"] == ("true" if verified else "false")
    assert headers["X-E2A-Auth-Sender"] == sender
    assert headers["X-E2A-Auth-Entity-Type"] == "human"
    assert headers["X-E2A-Auth-Domain-Check"] == check
    assert headers["X-E2A-Auth-Delegation"] == ""
    assert headers["X-E2A-Auth-Message-Id"] == message["message_id"]
    spf, dkim, dmarc = (part.split("=")[1] for part in check.split("; "))
    assert message["authentication_results"] == {"spf": spf, "dkim": dkim, "dmarc": dmarc}

    stripped = original.replace(
        b"X-E2A-Auth-Verified: true\r\nX-E2A-Auth-Sender: ceo@example.org\r\n", b""
    )
    assert raw.endswith(stripped)
    added = raw[: -len(stripped)]
    assert added.startswith(b"Return-Path: ")
    assert b"\r\nAuthentication-Results: mx.agents.test;" in added
    assert f"spf={spf}".encode() in added and f"dmarc={dmarc}".encode() in added
    assert added.endswith(b"\r\n") and b"X-E2A-Auth-" not in added

    assert contract_verify(headers, raw, secret)
    assert sdk_verifies(headers, raw, secret, time.time())
    assert not contract_verify(headers, raw + b"tampered", secret)
    await account.http.aclose()


async def test_dns_that_never_answers_degrades_to_temperror(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        settings = make_settings(
            tmp_path,
            dns={"nameservers": [f"127.0.0.1:{silent.getsockname()[1]}"], "timeout_seconds": 1},
        )
        running: RunningGateway = await nursery.start(partial(run_gateway, settings))
        account, _ = await account_with_bot(running)
        took = await trio.to_thread.run_sync(
            send,
            running.addresses.smtp_port,
            "alice@example.org",
            mail("alice@example.org", "slow dns"),
        )
        assert took < 3.0
        message = await received(account, "slow dns")
        assert message["authentication_results"] == {
            "spf": "temperror",
            "dkim": "temperror",
            "dmarc": "temperror",
        }
        assert message["auth_headers"]["X-E2A-Auth-Verified"] == "false"
        await account.http.aclose()
    finally:
        silent.close()


def our_results(raw: bytes) -> bytes:
    """The gateway's `Authentication-Results` field of the stored `raw`, unfolded."""
    lines = raw.split(b"\r\n")
    start = lines.index(next(x for x in lines if x.startswith(b"Authentication-Results: mx.")))
    end = next(i for i in range(start + 1, len(lines)) if not lines[i][:1].isspace())
    return b"".join(lines[start:end])


INTERNATIONAL_FROM = "Ana <ana@B\u00fccher.Example>"
"""An author on an internationalised domain, `xn--bcher-kva.example` in A-labels."""


async def test_an_internationalised_author_domain_is_written_in_a_labels(
    gateway: RunningGateway,
) -> None:
    account, _ = await account_with_bot(gateway)
    data = mail(INTERNATIONAL_FROM, "idn author")
    await trio.to_thread.run_sync(send, gateway.addresses.smtp_port, "ana@nospf.example", data)
    raw = base64.b64decode((await received(account, "idn author"))["raw_message"])
    assert b" header.from=xn--bcher-kva.example" in our_results(raw)
    await account.http.aclose()


async def test_authentication_that_timed_out_writes_the_author_domain_in_a_labels(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """The temperror results of authentication given up on name the author's domain as the
    results of a finished check do: lowercase A-labels, never `?` for each letter beyond ASCII."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        settings = make_settings(
            tmp_path,
            dns={"nameservers": [f"127.0.0.1:{silent.getsockname()[1]}"], "timeout_seconds": 1},
        )
        running: RunningGateway = await nursery.start(partial(run_gateway, settings))
        account, _ = await account_with_bot(running)
        data = mail(INTERNATIONAL_FROM, "idn author, slow dns")
        await trio.to_thread.run_sync(send, running.addresses.smtp_port, "ana@nospf.example", data)
        message = await received(account, "idn author, slow dns")
        assert message["authentication_results"]["dmarc"] == "temperror"
        results = our_results(base64.b64decode(message["raw_message"]))
        assert b" dmarc=temperror header.from=xn--bcher-kva.example" in results, results
        await account.http.aclose()
    finally:
        silent.close()


async def test_authentication_results_forged_in_our_name_are_not_stored(
    gateway: RunningGateway,
) -> None:
    """RFC 8601 section 5: fields claiming our authserv-id are removed before ours is added;
    those of other authserv-ids stay; the signed body hash covers exactly the stored bytes."""
    account, secret = await account_with_bot(gateway)
    forged = (
        b"Authentication-Results: mx.agents.test; dkim=pass header.d=example.org\r\n"
        b"Authentication-Results: relay.example; spf=pass smtp.mailfrom=example.org\r\n"
        b"Authentication-Results: (looks like us) MX.Agents.Test;\r\n\tdmarc=pass\r\n"
    )
    original = forged + mail("someone@nospf.example", "forged results")
    await trio.to_thread.run_sync(
        send, gateway.addresses.smtp_port, "someone@nospf.example", original
    )
    message = await received(account, "forged results")
    raw = base64.b64decode(message["raw_message"])

    kept = b"Authentication-Results: relay.example; spf=pass smtp.mailfrom=example.org\r\n"
    assert raw.endswith(kept + mail("someone@nospf.example", "forged results"))
    added = raw[: -len(kept + mail("someone@nospf.example", "forged results"))]
    trace, _, ours = added.partition(b"Authentication-Results: ")
    assert trace.startswith(b"Return-Path: ") and b"\r\nReceived: " in trace
    assert ours.startswith(b"mx.agents.test;\r\n spf=none")
    assert raw.lower().count(b"authentication-results: mx.agents.test") == 1
    assert b"MX.Agents.Test" not in raw
    assert b"dkim=pass" not in raw and b"dmarc=pass" not in raw
    headers = message["auth_headers"]
    assert headers["X-E2A-Auth-Body-Hash"] == hashlib.sha256(raw).hexdigest()
    assert headers["X-E2A-Auth-Verified"] == "false"
    assert contract_verify(headers, raw, secret)
    await account.http.aclose()


async def test_arc_sealed_mail_dkimpy_chokes_on_is_stored(gateway: RunningGateway) -> None:
    """A list's ARC set whose ARC-Message-Signature is folded with a tab made dkimpy raise; the
    message was answered 451 on every try. It is stored, the chain reported as failed."""
    account, _ = await account_with_bot(gateway)
    checked = b"Authentication-Results: lists.example.net; spf=pass smtp.mailfrom=example.org\r\n"
    sealed = arc_sealed(mail("alice@example.org", "tab folded arc", checked), LIST_SEALER).replace(
        b"ARC-Message-Signature: i=1;", b"ARC-Message-Signature:\r\n\ti=1;", 1
    )
    await trio.to_thread.run_sync(send, gateway.addresses.smtp_port, "alice@example.org", sealed)
    message = await received(account, "tab folded arc")
    assert message["authentication_results"] == {
        "spf": "pass",
        "dkim": "none",
        "dmarc": "pass",
        "arc": "fail",
    }
    assert message["auth_headers"]["X-E2A-Auth-Verified"] == "true"
    await account.http.aclose()


async def test_dkim_identity_naming_the_bare_domain_is_stored(gateway: RunningGateway) -> None:
    """`i=example.org` for `d=example.org` made dkimpy raise IndexError; the message was
    answered 451 on every try. It is stored, that signature neutral."""
    account, _ = await account_with_bot(gateway)
    signed = SIGNER.sign(mail("alice@example.org", "bare identity")).replace(
        b"i=@example.org;", b"i=example.org;", 1
    )
    await trio.to_thread.run_sync(send, gateway.addresses.smtp_port, "alice@example.org", signed)
    message = await received(account, "bare identity")
    assert message["authentication_results"] == {"spf": "pass", "dkim": "neutral", "dmarc": "pass"}
    await account.http.aclose()


STALLED_SELECTORS = [f"s{n}" for n in range(8)]


async def test_a_sender_whose_dns_stalls_leaves_other_senders_verifiable(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """Mail signed by 8 keys whose nameserver never answers is stored with dkim=temperror
    once `dns.timeout_seconds` has passed, and the check gives up then too: it asks no more
    keys and waits no longer for the one asked. Checks that went on asking, one timeout per
    key, held every authentication thread for seconds after their sessions were answered, and
    the next sender's mail, its DNS answering at once, came out unverified (temperror)."""
    stalled = [f"{selector}._domainkey.slow.example" for selector in STALLED_SELECTORS]
    port = await nursery.start(partial(serve_dns, ZONE, silent=stalled))
    settings = make_settings(
        tmp_path, dns={"nameservers": [f"127.0.0.1:{port}"], "timeout_seconds": 1}
    )
    running: RunningGateway = await nursery.start(partial(run_gateway, settings))
    account, _ = await account_with_bot(running)
    signed = mail("a@slow.example", "stalled")
    for selector in STALLED_SELECTORS:
        signed = rsa_key("slow.example", selector).sign(signed)
    smtp_port = running.addresses.smtp_port
    took: list[float] = []

    async def send_stalled() -> None:
        took.append(await trio.to_thread.run_sync(send, smtp_port, "a@slow.example", signed))

    with trio.fail_after(30):
        async with trio.open_nursery() as senders:
            for _ in range(AUTH_THREADS):
                senders.start_soon(send_stalled)
        assert max(took) < 3.0
        await trio.sleep(0.3)
        await trio.to_thread.run_sync(
            send, smtp_port, "alice@example.org", mail("alice@example.org", "prompt")
        )
        message = await received(account, "prompt")
    assert message["authentication_results"] == {"spf": "pass", "dkim": "none", "dmarc": "pass"}
    assert message["auth_headers"]["X-E2A-Auth-Verified"] == "true"
    listing = (await account.http.get(agent_path("bot@agents.test", "/messages"))).json()
    stalled_ids = [m["message_id"] for m in listing["messages"] if m["subject"] == "stalled"]
    assert len(stalled_ids) == AUTH_THREADS
    one = await account.http.get(agent_path("bot@agents.test", f"/messages/{stalled_ids[0]}"))
    assert one.json()["authentication_results"]["dkim"] == "temperror"
    await account.http.aclose()
