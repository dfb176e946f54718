"""The authentication evidence agents are shown, end to end: mail handed to the inbound pipeline
(its SPF, DKIM and DMARC checked against a fixture zone), then the `email.received` event and
the `/v1` message view of it: the gateway's own verdicts, whatever the sender wrote."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from e2a_gateway.mailauth.resolver import FixtureResolver, Zone
from tests.conftest import Account
from tests.delivery_support import QuietGateway, accept, create_agent, mail
from tests.test_mailauth_dkim import rsa_key
from tests.test_v1_reviews import conforms
from tests.webhook_support import alice, quiet, settings

__all__ = ["alice", "quiet", "settings"]  # fixtures

ESP = rsa_key("esp.example", "s")
ZONE: Zone = {
    "example.org": {"TXT": ["v=spf1 ip4:192.0.2.25 -all"]},
    "mail.bank.example": {"TXT": ["v=spf1 ip4:192.0.2.25 -all"]},
    "_dmarc.bank.example": {"TXT": ["v=DMARC1; p=reject; aspf=s"]},
    "xn--bcher-kva.example": {"TXT": ["v=spf1 ip4:192.0.2.25 -all"]},
    "_dmarc.xn--bcher-kva.example": {"TXT": ["v=DMARC1; p=reject"]},
    **ESP.zone(),
}
"""Mail from the pipeline's peer passes SPF for example.org, which has no DMARC record, and for
mail.bank.example, whose organisation asks for strict SPF alignment; esp.example signs."""


@pytest.fixture
def resolver() -> FixtureResolver:
    return FixtureResolver.from_zone(ZONE)


async def shown(account: Account, agent: str, message_id: str) -> tuple[Any, Any]:
    """The `authentication` of the message's `email.received` event and of its `/v1` view."""
    events = await account.http.get(
        "/v1/events", params={"type": "email.received", "message_id": message_id}
    )
    assert events.status_code == 200, events.text
    (event,) = events.json()["items"]
    view = await account.http.get(f"/v1/agents/{quote(agent, safe='')}/messages/{message_id}")
    assert view.status_code == 200, view.text
    return event["data"]["authentication"], view.json()["authentication"]


async def test_a_policy_another_server_reported_is_not_shown_as_the_domains(
    quiet: QuietGateway, alice: Account
) -> None:
    bot = await create_agent(alice, "bot")
    theirs = (
        "Authentication-Results: mx.google.com; dmarc=pass (p=reject) header.from=example.org\r\n"
    )
    message_id = await accept(quiet.gateway, [bot], mail("Relayed", extra_headers=theirs))

    event, view = await shown(alice, bot, message_id)
    assert event["dmarc"] == {
        "status": "none",
        "domain": "example.org",
        "policy": None,
        "aligned_by": [],
    }
    assert view["dmarc"] == event["dmarc"]


@pytest.mark.parametrize(
    ("mail_from", "domain"),
    [("alice@example.org", "example.org"), ("", "mail.example.org")],
    ids=["mail-from", "null-reverse-path"],
)
async def test_the_event_names_the_domain_spf_checked_as_the_message_does(
    quiet: QuietGateway, alice: Account, mail_from: str, domain: str
) -> None:
    """RFC 7208: SPF checks the MAIL FROM's domain, or the HELO's for a null reverse path (a
    bounce). The `email.received` event names that domain as getMessage does; null there
    says no SPF identity existed."""
    bot = await create_agent(alice, "bot")
    message_id = await accept(quiet.gateway, [bot], mail("Checked"), mail_from=mail_from)

    event, view = await shown(alice, bot, message_id)
    assert view["spf"]["domain"] == domain
    assert event["spf"]["domain"] == view["spf"]["domain"]
    assert event["spf"]["status"] == view["spf"]["status"]


async def test_spf_is_not_shown_aligned_where_the_record_asks_for_strict(
    quiet: QuietGateway, alice: Account
) -> None:
    bot = await create_agent(alice, "bot")
    data = b"From: ceo@bank.example\r\nTo: bot@agents.test\r\nSubject: Wire\r\n\r\nPay.\r\n"
    message_id = await accept(quiet.gateway, [bot], data, mail_from="b@mail.bank.example")

    event, view = await shown(alice, bot, message_id)
    assert (event["spf"]["status"], event["dmarc"]["status"]) == ("pass", "fail")
    assert view["spf"] == {"status": "pass", "domain": "mail.bank.example", "aligned": False}
    assert view["dmarc"] == {
        "status": "fail",
        "domain": "bank.example",
        "policy": "reject",
        "aligned_by": [],
    }


async def test_the_trust_basis_is_the_pass_that_aligned(
    quiet: QuietGateway, alice: Account
) -> None:
    """SPF passes for example.org, the author's domain; the DKIM pass is esp.example's."""
    bot = await create_agent(alice, "bot")
    message_id = await accept(quiet.gateway, [bot], ESP.sign(mail("Signed elsewhere")))

    read = await alice.http.get(f"/v1/agents/{quote(bot, safe='')}/messages/{message_id}")
    assert read.status_code == 200, read.text
    sender = read.json()["trust"]["sender"]
    assert sender["authentication_results"] == {"spf": "pass", "dkim": "pass", "dmarc": "none"}
    assert (sender["verified"], sender["basis"]) == (True, "spf=pass")


async def test_an_internationalised_envelope_domain_is_checked_and_shown_as_a_labels(
    quiet: QuietGateway, alice: Account
) -> None:
    """RFC 7208 section 4.3: SPF looks an internationalised domain up by its A-labels. The
    U-labels of an SMTPUTF8 reverse path went into the Authentication-Results field as they
    were, which its reader could not parse: the message showed no evidence at all."""
    bot = await create_agent(alice, "bot")
    data = "From: anna@bücher.example\r\nTo: bot@agents.test\r\nSubject: Buch\r\n\r\nHi.\r\n"
    message_id = await accept(quiet.gateway, [bot], data.encode(), mail_from="anna@Bücher.example")

    event, view = await shown(alice, bot, message_id)
    assert (event["spf"]["status"], event["dmarc"]["status"]) == ("pass", "pass")
    assert view is not None
    assert view["spf"] == {"status": "pass", "domain": "xn--bcher-kva.example", "aligned": True}
    assert view["dmarc"]["aligned_by"] == ["spf"]


async def test_a_signature_naming_a_domain_in_u_labels_does_not_hide_the_evidence(
    quiet: QuietGateway, alice: Account
) -> None:
    """A DKIM-Signature's d= and s= went into the gateway's Authentication-Results field as
    written; non-ASCII there left the field unreadable, and a forged From: showed no DMARC
    failure: a sender could hide the evidence against its mail with one junk signature."""
    bot = await create_agent(alice, "bot")
    data = (
        "DKIM-Signature: v=1; a=rsa-sha256; d=Bücher.example; s=sélecteur; h=from;"
        " bh=AAAA; b=AAAA\r\n"
        "From: ceo@bank.example\r\nTo: bot@agents.test\r\nSubject: Wire\r\n\r\nPay.\r\n"
    ).encode()
    message_id = await accept(quiet.gateway, [bot], data)

    _event, view = await shown(alice, bot, message_id)
    assert view is not None
    assert (view["dmarc"]["status"], view["dmarc"]["policy"]) == ("fail", "reject")
    (signature,) = view["dkim"]
    assert signature["domain"] == "xn--bcher-kva.example"
    assert signature["status"] == "permerror"


async def test_alignment_is_shown_only_for_a_pass_judged_under_a_dmarc_record(
    quiet: QuietGateway, alice: Account
) -> None:
    """e2a's schema: `aligned` is null unless the mechanism passed and the author's domain
    publishes a DMARC record. example.org publishes none, so its SPF pass and esp.example's
    DKIM pass are not judged; bank.example publishes one, but nothing passed for it."""
    bot = await create_agent(alice, "bot")
    unjudged = await accept(quiet.gateway, [bot], ESP.sign(mail("No record")))
    _, view = await shown(alice, bot, unjudged)
    conforms(view["spf"], "SPFResult")
    conforms(view["dkim"][0], "DKIMResult")
    assert view["spf"] == {"status": "pass", "domain": "example.org", "aligned": None}
    assert [(sig["status"], sig["aligned"]) for sig in view["dkim"]] == [("pass", None)]
    assert view["dmarc"] == {
        "status": "none",
        "domain": "example.org",
        "policy": None,
        "aligned_by": [],
    }

    data = b"From: ceo@bank.example\r\nTo: bot@agents.test\r\nSubject: Wire\r\n\r\nPay.\r\n"
    failed = await accept(quiet.gateway, [bot], data, mail_from="ceo@bank.example")
    _, view = await shown(alice, bot, failed)
    conforms(view, "Authentication")
    assert view["spf"] == {"status": "none", "domain": "bank.example", "aligned": None}
    assert (view["dmarc"]["status"], view["dmarc"]["policy"]) == ("fail", "reject")
