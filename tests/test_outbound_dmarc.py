"""Every kind of mail e2a sends passes DMARC at the receiver on DKIM alone: an agent's mail, the
approval notice and e2a's answer to a reply it could not act on, each captured as the relay
(aiosmtpd on 127.0.0.1) got it, is checked by dkimpy, by a verifier written here from RFC 6376
alone, and by the gateway's own DMARC evaluation against DNS fixtures holding the key record
the gateway lists and `p=reject; adkim=s` — no SPF record, as at a receiver where the relay's
SPF does not align. The envelope sender is on the
From's domain too, so SPF aligns wherever it authorizes the relay."""

from __future__ import annotations

import base64
import hashlib
import re
import time
from pathlib import Path

import dkim
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from e2a_gateway.app import RunningGateway
from e2a_gateway.config import Settings
from e2a_gateway.gateway import Gateway
from e2a_gateway.mailauth.authenticate import authenticate_message
from e2a_gateway.mailauth.dmarc import author_of
from e2a_gateway.mailauth.resolver import FixtureResolver
from tests.conftest import SHARED_DOMAIN, make_settings
from tests.delivery_support import wait_until
from tests.relay_support import Sink, relay_port, sink
from tests.test_approval_replies import ZONE, notice_for, reply, send_reply
from tests.test_approvals import OWNER, MakeAccount, add_pending, hitl_owner
from tests.test_dkim_signing import write_rsa_key

__all__ = ["relay_port", "sink"]  # fixtures

HOSTNAME = "mx.gateway.test"


@pytest.fixture
def resolver() -> FixtureResolver:
    """The gateway's DNS: the reviewer's domain passes SPF and DMARC, so replies are read."""
    return FixtureResolver.from_zone(ZONE)  # type: ignore[arg-type]


@pytest.fixture(params=[SHARED_DOMAIN, None], ids=["from_domain", "no_from_domain"])
def settings(tmp_path: Path, relay_port: int, request: pytest.FixtureRequest) -> Settings:
    """A signing gateway relaying to the sink, with or without `outbound_smtp.from_domain`
    (notices then come from `smtp.hostname`)."""
    write_rsa_key(tmp_path / "dkim.pem")
    relay = {"host": "127.0.0.1", "port": relay_port, "tls": "none", "timeout_seconds": 10}
    return make_settings(
        tmp_path,
        smtp={"listen": "127.0.0.1:0", "hostname": HOSTNAME},
        http={"listen": "127.0.0.1:0", "public_url": "http://e2a.example"},
        outbound_smtp=relay | ({"from_domain": request.param} if request.param else {}),
        dkim={"selector": "e2a", "private_key_path": str(tmp_path / "dkim.pem")},
    )


def receiver_dns(gateway: Gateway, domain: str) -> FixtureResolver:
    """A receiver's view of `domain`: the DKIM record the gateway lists for it and a strict
    DMARC policy; no SPF record."""
    record = gateway.dkim_record(domain)
    assert record is not None
    return FixtureResolver(
        {record.name: [record.value], f"_dmarc.{domain}": ["v=DMARC1; p=reject; adkim=s"]}
    )


def _relaxed(field: bytes) -> bytes:
    """RFC 6376 section 3.4.2: a header field in relaxed canonical form, without its CRLF."""
    name, _, value = field.partition(b":")
    value = re.sub(rb"[ \t]+", b" ", value.replace(b"\r\n", b"")).strip(b" ")
    return name.strip().lower() + b":" + value


def verifies_by_the_rfc(raw: bytes, record: str) -> bool:
    """A DKIM check of our own, independent of dkimpy (RFC 6376 sections 3.4, 3.5, 3.7; the
    relaxed/simple rsa-sha256 e2a signs with): the first signature against `record`."""
    head, _, body = raw.partition(b"\r\n\r\n")
    fields = re.split(rb"\r\n(?![ \t])", head)
    signature = fields[0]
    tags = dict(
        (key.strip(), re.sub(rb"\s+", b"", value))
        for key, _, value in (
            tag.partition(b"=") for tag in signature.partition(b":")[2].split(b";")
        )
        if key.strip()
    )
    assert (tags[b"c"], tags[b"a"], b"l" in tags) == (b"relaxed/simple", b"rsa-sha256", False)
    canonical_body = body.rstrip(b"\r\n") + b"\r\n" if body.strip(b"\r\n") else b"\r\n"
    if base64.b64decode(tags[b"bh"]) != hashlib.sha256(canonical_body).digest():
        return False
    unused = fields[1:]
    signed = b""
    for name in tags[b"h"].lower().split(b":"):
        found = [f for f in unused if f.partition(b":")[0].strip().lower() == name]
        if found:  # the last instance not yet used; none: an empty string (section 5.4.2)
            unused.remove(found[-1])
            signed += _relaxed(found[-1]) + b"\r\n"
    signed += re.sub(rb"(\bb=)[^;]*", rb"\1", _relaxed(signature), count=1)
    key_der = base64.b64decode(dict(t.strip().split("=", 1) for t in record.split(";"))["p"])
    key = serialization.load_der_public_key(key_der)
    assert isinstance(key, rsa.RSAPublicKey)
    try:
        key.verify(base64.b64decode(tags[b"b"]), signed, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def assert_passes_dmarc(gateway: Gateway, mail_from: str, raw: bytes) -> None:
    """`raw`, sent with envelope sender `mail_from`, verifies for its From domain (dkimpy and
    the gateway's DMARC check), and its envelope sender is on that domain."""
    domain = author_of(raw).domain
    assert domain is not None
    assert mail_from.rpartition("@")[2] == domain  # SPF, where it passes, aligns
    dns = receiver_dns(gateway, domain)

    def lookup(name: bytes, timeout: int = 5) -> bytes:
        return "".join(dns.txt(name.decode())).encode()

    assert dkim.verify(raw, dnsfunc=lookup)
    listed = gateway.dkim_record(domain)
    assert listed is not None
    assert verifies_by_the_rfc(raw, listed.value)
    assert not verifies_by_the_rfc(raw.replace(b"\r\n\r\n", b"\r\n\r\nx", 1), listed.value)
    assert not verifies_by_the_rfc(
        raw.replace(b"\r\nSubject: ", b"\r\nSubject: x", 1), listed.value
    )
    results = authenticate_message(
        dns, client_ip="192.0.2.1", helo="relay.example", mail_from=mail_from, message=raw
    )
    assert (results.dkim, results.dmarc, results.dkim_domains) == ("pass", "pass", (domain,))
    assert results.verified


async def test_every_mail_the_gateway_sends_passes_dmarc_by_dkim_for_its_from_domain(
    running: RunningGateway,
    make_account: MakeAccount,
    sink: Sink,
) -> None:
    gateway = running.gateway
    owner = await hitl_owner(gateway, await make_account(OWNER))
    message = await add_pending(gateway, owner, time.time() + 3600)
    notice = await notice_for(sink, message.id)
    [(notice_from, _, notice_raw)] = [m for m in sink.received if b"Approval needed" in m[2]]
    sender = gateway.settings.outbound_smtp.from_domain or HOSTNAME
    assert author_of(notice_raw).domain == sender
    assert_passes_dmarc(gateway, notice_from, notice_raw)

    await send_reply(running, notice, reply(notice, "Looks fine to me, thanks"))
    await wait_until(lambda: any(b"Not done:" in m[2] for m in sink.received))
    [(answer_from, _, answer_raw)] = [m for m in sink.received if b"Not done:" in m[2]]
    assert_passes_dmarc(gateway, answer_from, answer_raw)

    await send_reply(running, notice, reply(notice, "approve"))
    await wait_until(lambda: len([m for m in sink.received if "alice@example.org" in m[1]]) == 1)
    [(agent_from, _, agent_raw)] = [m for m in sink.received if "alice@example.org" in m[1]]
    assert author_of(agent_raw).domain == SHARED_DOMAIN
    assert agent_from.startswith("bounces+")
    assert_passes_dmarc(gateway, agent_from, agent_raw)
