"""Attacks on approving held mail, end to end over real SMTP and HTTP: replies to the notice
forged in the reviewer's name (an address SPF does not allow, no DKIM, a DKIM signature of
another domain, a reviewer's domain publishing DMARC `p=none`), a genuine signed reply replayed
at another notice's reply address, and the channels racing one another. DNS from zone fixtures;
the notice through an aiosmtpd relay on 127.0.0.1 (test only)."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest
import trio

from e2a_gateway.app import RunningGateway
from e2a_gateway.mailauth.resolver import FixtureResolver
from tests.delivery_support import wait_until
from tests.test_approval_replies import (
    answers,
    notice_for,
    reply,
    row,
    send_reply,
    settings,
)
from tests.test_approvals import (
    OWNER,
    MakeAccount,
    Owner,
    Sink,
    add_pending,
    hitl_owner,
    local_path,
    relay_port,
    sink,
)
from tests.test_mailauth_dkim import rsa_key

__all__ = ["relay_port", "settings", "sink"]  # fixtures

REVIEWER_KEY = rsa_key("example.com", "s1")
ATTACKER_KEY = rsa_key("attacker.example", "s1")
ZONE = {
    # The reviewer's domain: only 192.0.2.1 may send for it, and it signs with DKIM.
    "example.com": {"TXT": ["v=spf1 ip4:192.0.2.1 -all"]},
    "_dmarc.example.com": {"TXT": ["v=DMARC1; p=reject"]},
    **REVIEWER_KEY.zone(),
    # The attacker's own domain passes SPF and DKIM from 127.0.0.1.
    "attacker.example": {"TXT": ["v=spf1 ip4:127.0.0.1 -all"]},
    "_dmarc.attacker.example": {"TXT": ["v=DMARC1; p=reject"]},
    **ATTACKER_KEY.zone(),
}


@pytest.fixture
def resolver() -> FixtureResolver:
    return FixtureResolver.from_zone(ZONE)  # type: ignore[arg-type]


@pytest.fixture
async def owner(running: RunningGateway, make_account: MakeAccount) -> Owner:
    return await hitl_owner(running.gateway, await make_account(OWNER))


def with_second_from(data: bytes) -> bytes:
    """`data` with another From field added above the signed ones (not covered by the
    signature, which signs the last From)."""
    return b"From: <owner@example.com>\r\n" + data


FORGERIES: dict[str, tuple[str, Callable[[bytes], bytes], str]] = {
    # name: (envelope sender, what is done to the reply's bytes, DMARC result the answer names)
    "spoofed from an address SPF does not allow, unsigned": (OWNER, lambda data: data, "fail"),
    "spoofed with the attacker's own aligned envelope": (
        "mallory@attacker.example",
        lambda data: data,
        "fail",
    ),
    "signed by another domain": (
        "mallory@attacker.example",
        ATTACKER_KEY.sign,
        "fail",
    ),
}


@pytest.mark.parametrize("name", list(FORGERIES))
async def test_a_reply_forged_in_the_reviewers_name_is_refused(
    running: RunningGateway, owner: Owner, sink: Sink, name: str
) -> None:
    mail_from, forge, result = FORGERIES[name]
    gateway = running.gateway
    message = await add_pending(gateway, owner, time.time() + 3600)
    notice = await notice_for(sink, message.id)
    await send_reply(running, notice, forge(reply(notice, "approve")), mail_from=mail_from)
    assert row(gateway.settings, message.id)[:3] == ("pending_approval", None, None)
    await wait_until(lambda: bool(answers(sink)))
    assert (
        f"DMARC did not pass for example.com (result: {result})" in answers(sink)[-1].get_content()
    )


async def test_a_forged_reply_is_refused_where_the_reviewers_domain_asks_for_no_enforcement(
    running: RunningGateway, owner: Owner, sink: Sink, resolver: FixtureResolver
) -> None:
    # p=none: receivers are asked to deliver failing mail, yet it still fails DMARC.
    resolver.set_txt("_dmarc.example.com", ["v=DMARC1; p=none"])
    gateway = running.gateway
    message = await add_pending(gateway, owner, time.time() + 3600)
    notice = await notice_for(sink, message.id)
    await send_reply(running, notice, reply(notice, "approve"))
    assert row(gateway.settings, message.id)[0] == "pending_approval"
    await wait_until(lambda: bool(answers(sink)))
    assert "DMARC did not pass for example.com (result: fail)" in answers(sink)[-1].get_content()


async def test_the_reviewers_signed_reply_approves_and_a_second_from_above_it_does_not(
    running: RunningGateway, owner: Owner, sink: Sink
) -> None:
    gateway = running.gateway
    first = await add_pending(gateway, owner, time.time() + 3600)
    second = await add_pending(gateway, owner, time.time() + 3600)
    first_notice = await notice_for(sink, first.id)
    second_notice = await notice_for(sink, second.id)
    mail_from = "bounces@mailer.example.com"  # SPF: none; DKIM alone aligns
    forged = with_second_from(REVIEWER_KEY.sign(reply(second_notice, "approve")))
    await send_reply(running, second_notice, forged, mail_from=mail_from)
    assert row(gateway.settings, second.id)[0] == "pending_approval"
    genuine = REVIEWER_KEY.sign(reply(first_notice, "approve"))
    await send_reply(running, first_notice, genuine, mail_from=mail_from)
    assert row(gateway.settings, first.id)[:3] in {
        ("queued", OWNER, "reply"),
        ("sent", OWNER, "reply"),
    }
    # The same signed reply replayed at the other notice's reply address acts on nothing.
    await send_reply(running, second_notice, genuine, mail_from=mail_from)
    assert row(gateway.settings, second.id)[0] == "pending_approval"


async def test_a_reply_a_link_and_the_api_approving_at_once_send_the_mail_once(
    running: RunningGateway, owner: Owner, sink: Sink
) -> None:
    gateway = running.gateway
    message = await add_pending(gateway, owner, time.time() + 3600)
    notice = await notice_for(sink, message.id)
    link = next(
        line for line in notice.get_content().splitlines() if "/api/v1/approve?token=" in line
    )
    signed = REVIEWER_KEY.sign(reply(notice, "approve"))
    statuses: list[int] = []

    async def by_reply() -> None:
        await send_reply(running, notice, signed, mail_from="bounces@mailer.example.com")

    async def by_link() -> None:
        async with httpx.AsyncClient(base_url=running.addresses.http_url, timeout=10) as web:
            token = local_path(link).partition("token=")[2]
            response = await web.post("/api/v1/approve", data={"token": token})
            statuses.append(response.status_code)

    async def by_api() -> None:
        response = await owner.account.http.post(f"/api/v1/messages/{message.id}/approve")
        statuses.append(response.status_code)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(by_reply)
        nursery.start_soon(by_link)
        nursery.start_soon(by_api)
    await wait_until(lambda: any("alice@example.org" in r for _, r, _ in sink.received))
    await trio.sleep(1)
    sent = [r for _, r, _ in sink.received if "alice@example.org" in r]
    assert len(sent) == 1
    assert sorted(statuses).count(200) <= 1
    assert row(gateway.settings, message.id)[0] == "sent"
