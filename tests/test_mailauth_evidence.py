"""What the gateway tells agents about a message's authentication, read back from the
Authentication-Results field it added (e2a_gateway.mailauth.evidence, the events'
`authentication`): only the gateway's own verdicts, whatever text the sender wrote."""

from __future__ import annotations

import pytest

from e2a_gateway.events import inbound_authentication
from e2a_gateway.inbound.identity import delivered_message
from e2a_gateway.mailauth.authenticate import authenticate_message
from e2a_gateway.mailauth.evidence import evidence_of
from e2a_gateway.mailauth.resolver import FixtureResolver, Zone
from e2a_gateway.mailauth.results import (
    AuthResults,
    dmarc_policy_named,
    spf_domain_named,
    without_results_of,
)
from tests.test_mailauth_dkim import rsa_key

pytestmark = pytest.mark.backend_independent

OURS = "mx.agents.test"
CLIENT_IP = "203.0.113.9"
TRACE = b"Received: from mx.sender.test by mx.agents.test; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
EVIL_SPF: Zone = {"evil.example": {"TXT": ["v=spf1 ip4:203.0.113.9 -all"]}}
BANK_KEY = rsa_key("bank.example", "s")
BANK: Zone = {
    "mail.bank.example": {"TXT": ["v=spf1 ip4:203.0.113.9 -all"]},
    **BANK_KEY.zone(),
}
"""The bank's mail leaves from mail.bank.example (SPF) and is signed by bank.example (DKIM)."""


def bank_record(record: str) -> Zone:
    return {**BANK, "_dmarc.bank.example": {"TXT": [record]}}


def letter(sender: str, extra: bytes = b"") -> bytes:
    return (
        extra + f"From: {sender}\r\nTo: bot@agents.test\r\nSubject: hi\r\n\r\nHello.\r\n".encode()
    )


def arrive(zone: Zone, message: bytes, mail_from: str) -> tuple[AuthResults, bytes]:
    """The results of `message` from CLIENT_IP and the bytes stored, as the pipeline makes them."""
    results = authenticate_message(
        FixtureResolver.from_zone(zone),
        client_ip=CLIENT_IP,
        helo="mx.sender.test",
        mail_from=mail_from,
        message=message,
    )
    stored = delivered_message(without_results_of(message, OURS), results.header(OURS), TRACE)
    return results, stored


def policy_shown(results: AuthResults, stored: bytes, sender: str) -> tuple[str | None, str | None]:
    """The DMARC policy of the message view's evidence, and of its events."""
    evidence = evidence_of(stored, OURS)
    assert evidence is not None
    event = inbound_authentication(sender, results.as_dict(), stored)
    return evidence.dmarc_policy, event["dmarc"]["policy"]


def test_another_servers_policy_is_not_taken_for_ours() -> None:
    """A field of another authserv-id is kept (it is not forged in our name), but the policy
    it names is that server's word, or the sender's: the domain publishes none."""
    theirs = b"Authentication-Results: mx.google.com; dmarc=pass (p=reject) header.from=x\r\n"
    results, stored = arrive(EVIL_SPF, letter("x@evil.example", theirs), "x@evil.example")

    assert theirs in stored
    assert (results.dmarc, results.dmarc_policy) == ("none", None)
    assert policy_shown(results, stored, "x@evil.example") == (None, None)


def test_a_policy_written_into_a_dkim_reason_is_not_read() -> None:
    """A signature's error, which quotes the sender's own text, goes into our field's reason."""
    signature = (
        b"DKIM-Signature: v=1; a=dmarc=pass (p=reject); d=evil.example; s=s; h=from; bh=AA;\r\n"
        b" b=AA\r\n"
    )
    results, stored = arrive(EVIL_SPF, letter("x@evil.example", signature), "x@evil.example")

    assert b"(p=reject)" in results.header(OURS)
    assert results.dmarc_policy is None
    assert policy_shown(results, stored, "x@evil.example") == (None, None)


def test_the_policy_found_is_a_property_of_the_dmarc_result() -> None:
    zone: Zone = {**EVIL_SPF, "_dmarc.evil.example": {"TXT": ["v=DMARC1; p=quarantine"]}}
    results, stored = arrive(zone, letter("x@evil.example"), "x@evil.example")

    assert b" dmarc=pass header.from=evil.example policy.dmarc=quarantine" in stored
    assert policy_shown(results, stored, "x@evil.example") == ("quarantine", "quarantine")


def test_fields_written_before_the_property_name_the_policy_in_the_results_comment() -> None:
    old = "mx.agents.test; spf=pass smtp.mailfrom=a.b; dmarc=fail (p=reject) header.from=a.b"
    assert dmarc_policy_named(old) == "reject"


def test_only_the_dmarc_results_own_policy_is_read() -> None:
    for field in (
        'mx.agents.test; dkim=neutral reason="x; dmarc=pass (p=reject)"; dmarc=none',
        'mx.agents.test; dkim=neutral reason="policy.dmarc=reject"; dmarc=none',
        "mx.agents.test; spf=pass (p=reject); dmarc=none header.from=a.b",
    ):
        assert dmarc_policy_named(field) is None, field


@pytest.mark.parametrize(
    ("domain", "scope"),
    [("mail.bank.example", "mailfrom"), ("mx.sender.test", "helo"), ('[203.0.113.9] "x"', "helo")],
)
def test_the_events_spf_domain_is_the_one_the_message_view_reads(domain: str, scope: str) -> None:
    """The domain SPF checked, as the field names it (a HELO that is no token quoted): the
    events read what `evidence_of` (authres) reads for getMessage."""
    results = AuthResults(
        spf="permerror",
        spf_domain=domain,
        spf_scope=scope,  # type: ignore[arg-type]
        dkim="none",
        dkim_signatures=(),
        dmarc="none",
        dmarc_policy=None,
        from_domain="bank.example",
        verified=False,
    )
    stored = delivered_message(letter("ceo@bank.example"), results.header(OURS), TRACE)
    evidence = evidence_of(stored, OURS)
    assert evidence is not None and evidence.spf_domain == domain
    event = inbound_authentication("ceo@bank.example", results.as_dict(), stored)
    assert event is not None and event["spf"]["domain"] == domain


def test_only_the_spf_results_own_domain_is_read() -> None:
    for field in (
        'mx.agents.test; dkim=neutral reason="x; spf=pass smtp.mailfrom=evil.example"; dmarc=none',
        "mx.agents.test; spf=temperror; dmarc=none header.from=a.b",
        "mx.agents.test; spf=none (smtp.mailfrom=evil.example); dmarc=none",
    ):
        assert spf_domain_named(field) is None, field


def test_spf_for_a_subdomain_is_not_aligned_when_the_record_asks_for_strict() -> None:
    zone = bank_record("v=DMARC1; p=reject; aspf=s")
    results, stored = arrive(zone, letter("ceo@bank.example"), "b@mail.bank.example")

    assert (results.spf, results.dmarc, results.verified) == ("pass", "fail", False)
    assert b" policy.dmarc=reject policy.aspf=s policy.adkim=r\r\n" in stored
    evidence = evidence_of(stored, OURS)
    assert evidence is not None
    assert (evidence.spf_aligned, evidence.aligned_by) == (False, ())


def test_only_the_method_aligned_under_the_records_modes_is_named() -> None:
    zone = bank_record("v=DMARC1; p=reject; aspf=s")
    signed = BANK_KEY.sign(letter("ceo@bank.example"))
    results, stored = arrive(zone, signed, "b@mail.bank.example")

    assert (results.dmarc, results.verified) == ("pass", True)
    evidence = evidence_of(stored, OURS)
    assert evidence is not None
    assert (evidence.spf_aligned, [sig.aligned for sig in evidence.dkim]) == (False, [True])
    assert evidence.aligned_by == ("dkim",)


def test_a_signature_of_a_subdomain_is_not_aligned_when_the_record_asks_for_strict() -> None:
    key = rsa_key("mail.bank.example", "s")
    zone = {**bank_record("v=DMARC1; p=reject; adkim=s"), **key.zone()}
    results, stored = arrive(zone, key.sign(letter("ceo@bank.example")), "b@bank.example")

    assert (results.dkim, results.dmarc, results.verified) == ("pass", "fail", False)
    evidence = evidence_of(stored, OURS)
    assert evidence is not None
    assert ([sig.aligned for sig in evidence.dkim], evidence.aligned_by) == ([False], ())


def test_a_field_written_before_the_modes_reads_relaxed_as_it_was_shown() -> None:
    before = (
        b"Authentication-Results: mx.agents.test;\r\n spf=pass smtp.mailfrom=mail.bank.example;\r\n"
        b" dkim=none;\r\n dmarc=pass (p=reject) header.from=bank.example\r\n"
    )
    evidence = evidence_of(before + letter("ceo@bank.example"), OURS)
    assert evidence is not None
    assert (evidence.spf_aligned, evidence.aligned_by, evidence.dmarc_policy) == (
        True,
        ("spf",),
        "reject",
    )
