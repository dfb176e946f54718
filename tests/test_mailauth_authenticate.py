"""authenticate_message end to end over a fixture zone, and the Authentication-Results text."""

from __future__ import annotations

import dataclasses
import email.parser
import email.policy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from e2a_gateway.mailauth.authenticate import authenticate_message
from e2a_gateway.mailauth.resolver import FixtureResolver, Zone
from e2a_gateway.mailauth.results import AuthResults, DkimSignatureResult
from tests.test_mailauth_dkim import MESSAGE, SigningKey, ed25519_key, rsa_key

pytestmark = pytest.mark.backend_independent

SENDER_IP = "192.0.2.25"
ATTACKER_IP = "203.0.113.66"


def zone_with(*keys: SigningKey) -> Zone:
    """example.com with SPF and a p=reject DMARC record, attacker.test with SPF, plus keys."""
    zone: Zone = {
        "example.com": {"TXT": ["v=spf1 ip4:192.0.2.0/24 -all"]},
        "_dmarc.example.com": {"TXT": ["v=DMARC1; p=reject"]},
        "attacker.test": {"TXT": ["v=spf1 ip4:203.0.113.0/24 -all"]},
    }
    for key in keys:
        zone = {**zone, **key.zone()}
    return zone


def authenticate(
    resolver: FixtureResolver, message: bytes, *, client_ip: str, mail_from: str
) -> AuthResults:
    return authenticate_message(
        resolver, client_ip=client_ip, helo="mail.sender.test", mail_from=mail_from, message=message
    )


def test_aligned_spf_and_dkim_verify() -> None:
    key = rsa_key("example.com", "s1")
    results = authenticate(
        FixtureResolver.from_zone(zone_with(key)),
        key.sign(MESSAGE),
        client_ip=SENDER_IP,
        mail_from="bounces@example.com",
    )
    assert results.verified
    assert results.domain_check == "spf=pass; dkim=pass; dmarc=pass"
    assert results.as_dict() == {"spf": "pass", "dkim": "pass", "dmarc": "pass"}
    assert (results.from_domain, results.spf_domain, results.dkim_domains) == (
        "example.com",
        "example.com",
        ("example.com",),
    )
    assert results.dmarc_policy == "reject"
    assert results.arc is None


def test_spf_pass_for_an_unrelated_envelope_does_not_verify_a_forged_from() -> None:
    """The attacker's own domain passes SPF, but From: claims example.com: not verified."""
    results = authenticate(
        FixtureResolver.from_zone(zone_with()),
        MESSAGE,
        client_ip=ATTACKER_IP,
        mail_from="x@attacker.test",
    )
    assert results.spf == "pass"
    assert results.spf_domain == "attacker.test"
    assert results.dmarc == "fail"
    assert not results.verified


def test_dkim_pass_for_the_attackers_domain_does_not_verify_a_forged_from() -> None:
    attacker_key = ed25519_key("attacker.test")
    results = authenticate(
        FixtureResolver.from_zone(zone_with(attacker_key)),
        attacker_key.sign(MESSAGE),
        client_ip=ATTACKER_IP,
        mail_from="x@attacker.test",
    )
    assert (results.spf, results.dkim, results.dmarc) == ("pass", "pass", "fail")
    assert results.dkim_domains == ("attacker.test",)
    assert not results.verified


def test_forwarded_mail_verifies_by_dkim_alone() -> None:
    key = ed25519_key("example.com")
    results = authenticate(
        FixtureResolver.from_zone(zone_with(key)),
        key.sign(MESSAGE),
        client_ip="198.51.100.1",
        mail_from="alice@example.com",
    )
    assert (results.spf, results.dkim, results.dmarc) == ("fail", "pass", "pass")
    assert results.verified


def test_aligned_pass_without_a_dmarc_record_verifies() -> None:
    message = MESSAGE.replace(b"alice@example.com", b"alice@attacker.test")
    results = authenticate(
        FixtureResolver.from_zone(zone_with()),
        message,
        client_ip=ATTACKER_IP,
        mail_from="alice@attacker.test",
    )
    assert (results.spf, results.dmarc, results.verified) == ("pass", "none", True)


def test_several_from_addresses_are_never_verified() -> None:
    key = rsa_key("example.com", "s1")
    message = MESSAGE.replace(b"<alice@example.com>", b"<alice@example.com>, ceo@bank.test")
    results = authenticate(
        FixtureResolver.from_zone(zone_with(key)),
        key.sign(message),
        client_ip=SENDER_IP,
        mail_from="alice@example.com",
    )
    assert (results.spf, results.dkim, results.dmarc) == ("pass", "pass", "permerror")
    assert results.from_domain is None
    assert not results.verified


def test_a_second_from_field_without_an_address_is_never_verified() -> None:
    """RFC 5322 allows one From field. Readers show the first, here a name with no address,
    while the attacker's own aligned address below it would have been the one verified."""
    message = MESSAGE.replace(
        b"From: Alice <alice@example.com>\r\n",
        b'From: "Example Bank, CEO" <>\r\nFrom: mallory@attacker.test\r\n',
    )
    results = authenticate(
        FixtureResolver.from_zone(zone_with()),
        message,
        client_ip=ATTACKER_IP,
        mail_from="mallory@attacker.test",
    )
    assert (results.spf, results.dmarc, results.from_domain) == ("pass", "permerror", None)
    assert not results.verified


def test_message_without_from_is_dmarc_none_and_not_verified() -> None:
    message = MESSAGE.replace(b"From: Alice <alice@example.com>\r\n", b"")
    results = authenticate(
        FixtureResolver.from_zone(zone_with()),
        message,
        client_ip=SENDER_IP,
        mail_from="alice@example.com",
    )
    assert (results.spf, results.dmarc, results.verified) == ("pass", "none", False)


def test_dns_down_degrades_every_result_to_temperror() -> None:
    key = rsa_key("example.com", "s1")
    resolver = FixtureResolver.from_zone(zone_with(key))
    resolver.failing |= {"example.com", "_dmarc.example.com", key.record_name}
    results = authenticate(
        resolver, key.sign(MESSAGE), client_ip=SENDER_IP, mail_from="alice@example.com"
    )
    assert results.domain_check == "spf=temperror; dkim=temperror; dmarc=temperror"
    assert not results.verified


def test_temporary_failure() -> None:
    results = AuthResults.temporary_failure("example.com")
    assert results.domain_check == "spf=temperror; dkim=temperror; dmarc=temperror"
    assert not results.verified
    assert results.header("mx.agents.test") == (
        b"Authentication-Results: mx.agents.test;\r\n"
        b" spf=temperror;\r\n"
        b" dkim=temperror;\r\n"
        b" dmarc=temperror header.from=example.com\r\n"
    )


SAMPLE = AuthResults(
    spf="pass",
    spf_domain="example.com",
    spf_scope="mailfrom",
    dkim="pass",
    dkim_signatures=(
        DkimSignatureResult("pass", "example.com", "s1"),
        DkimSignatureResult("fail", "lists.test", "k", 'body hash "mismatch"'),
    ),
    dmarc="pass",
    dmarc_policy="reject",
    from_domain="example.com",
    verified=True,
    arc="pass",
)


def test_header_text() -> None:
    assert SAMPLE.header("mx.agents.test") == (
        b"Authentication-Results: mx.agents.test;\r\n"
        b" spf=pass smtp.mailfrom=example.com;\r\n"
        b" dkim=pass header.d=example.com header.s=s1;\r\n"
        b' dkim=fail reason="body hash \\"mismatch\\"" header.d=lists.test header.s=k;\r\n'
        b" dmarc=pass header.from=example.com policy.dmarc=reject;\r\n"
        b" arc=pass\r\n"
    )
    assert SAMPLE.as_dict() == {"spf": "pass", "dkim": "pass", "dmarc": "pass", "arc": "pass"}
    assert SAMPLE.dkim_domains == ("example.com",)


def test_header_quotes_client_chosen_values_and_cannot_be_split() -> None:
    results = authenticate(
        FixtureResolver(),
        MESSAGE,
        client_ip=SENDER_IP,
        mail_from="",
    )
    hostile = dataclasses.replace(results, spf_domain="[192.0.2.1]\r\nX-E2A-Auth-Verified: true")
    header = hostile.header("mx.agents.test")
    assert header.count(b"\r\n") == 4
    assert b' spf=none smtp.helo="[192.0.2.1]X-E2A-Auth-Verified: true";\r\n' in header
    assert results.spf_scope == "helo"
    assert results.spf_domain == "mail.sender.test"


def test_header_parses_as_one_field() -> None:
    parsed = email.parser.BytesHeaderParser(policy=email.policy.SMTP).parsebytes(
        SAMPLE.header("mx.agents.test") + b"\r\n"
    )
    assert len(parsed.keys()) == 1
    assert str(parsed["Authentication-Results"]).startswith("mx.agents.test; spf=pass")


@settings(max_examples=150, deadline=2000)
@given(
    message=st.binary(max_size=400),
    helo=st.text(max_size=40),
    mail_from=st.text(max_size=40),
)
def test_never_raises_for_arbitrary_input(message: bytes, helo: str, mail_from: str) -> None:
    key = rsa_key("example.com", "s1")
    resolver = FixtureResolver.from_zone(zone_with(key))
    for candidate in (message, key.sign(MESSAGE) + message, b"DKIM-Signature: " + message):
        results = authenticate_message(
            resolver, client_ip=SENDER_IP, helo=helo, mail_from=mail_from, message=candidate
        )
        assert results.header("mx.agents.test").endswith(b"\r\n")
