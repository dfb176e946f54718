"""RecentSenders: unsigned mail from a sender judged moments ago is judged again without DNS,
with exactly the results a full check gives; signed mail is always checked in full."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from e2a_gateway.mailauth.authenticate import (
    RECENT_MAX_HEADER_BYTES,
    RecentSenders,
    authenticate_from_recent,
    authenticate_message,
    check_sender,
)
from e2a_gateway.mailauth.dmarc import Author, DmarcResult
from e2a_gateway.mailauth.resolver import FixtureResolver
from e2a_gateway.mailauth.results import AuthResults
from e2a_gateway.mailauth.spf import SpfResult
from e2a_gateway.rfc5322 import header_section
from tests.test_mailauth_authenticate import ATTACKER_IP, SENDER_IP, zone_with
from tests.test_mailauth_dkim import MESSAGE, rsa_key

pytestmark = pytest.mark.backend_independent

T = TypeVar("T")
HELO = "mail.sender.test"
MAIL_FROM = "bounces@example.com"


class CountingResolver(FixtureResolver):
    """A fixture zone that counts the lookups made through it."""

    lookups = 0

    def _answer(self, name: str, rdtype: str, pick: Callable[[Any], list[T]]) -> list[T]:
        self.lookups += 1
        return super()._answer(name, rdtype, pick)


@pytest.fixture
def resolver() -> CountingResolver:
    resolver = CountingResolver()
    resolver.load_zone(zone_with())
    return resolver


def judged(
    resolver: FixtureResolver, recent: RecentSenders, message: bytes, **sender: str
) -> AuthResults:
    """Check in full and remember, as the pipeline does on a miss."""
    values = {"client_ip": SENDER_IP, "helo": HELO, "mail_from": MAIL_FROM, **sender}
    checked = check_sender(resolver, **values, message=message)
    checked.remember_in(recent)
    return checked.results


def from_recent(
    resolver: FixtureResolver, recent: RecentSenders, message: bytes, **sender: str
) -> AuthResults | None:
    values = {"client_ip": SENDER_IP, "helo": HELO, "mail_from": MAIL_FROM, **sender}
    return authenticate_from_recent(resolver, recent, **values, message=message)


def test_a_remembered_unsigned_sender_is_judged_without_dns_and_alike(
    resolver: CountingResolver,
) -> None:
    recent = RecentSenders()
    full = judged(resolver, recent, MESSAGE)
    assert full.verified and full.domain_check == "spf=pass; dkim=none; dmarc=pass"
    lookups = resolver.lookups
    assert lookups > 0

    again = from_recent(resolver, recent, MESSAGE.replace(b"Quarterly", b"Monthly"))
    assert again == full
    assert resolver.lookups == lookups


@pytest.mark.parametrize(
    "change",
    [
        {"client_ip": ATTACKER_IP},
        {"helo": "other.sender.test"},
        {"mail_from": "someone@attacker.test"},
    ],
)
def test_another_client_helo_or_reverse_path_is_not_remembered(
    resolver: CountingResolver, change: dict[str, str]
) -> None:
    recent = RecentSenders()
    judged(resolver, recent, MESSAGE)
    assert from_recent(resolver, recent, MESSAGE, **change) is None


def test_another_author_is_not_remembered(resolver: CountingResolver) -> None:
    recent = RecentSenders()
    judged(resolver, recent, MESSAGE)
    forged = MESSAGE.replace(b"alice@example.com", b"ceo@example.net")
    assert from_recent(resolver, recent, forged) is None


def test_signed_mail_is_never_answered_from_memory() -> None:
    key = rsa_key("example.com", "s1")
    resolver = FixtureResolver.from_zone(zone_with(key))
    recent = RecentSenders()
    signed = key.sign(MESSAGE)
    judged(resolver, recent, signed)
    assert len(recent) == 0
    judged(resolver, recent, MESSAGE)  # the same sender, unsigned this time
    assert from_recent(resolver, recent, signed) is None
    tampered = signed.replace(b"Quarterly", b"Doctored")
    assert (
        authenticate_message(
            resolver, client_ip=SENDER_IP, helo=HELO, mail_from=MAIL_FROM, message=tampered
        ).dkim
        == "fail"
    )


def test_arc_sealed_mail_is_never_answered_from_memory(resolver: CountingResolver) -> None:
    recent = RecentSenders()
    judged(resolver, recent, MESSAGE)
    sealed = b"ARC-Seal: i=1; a=rsa-sha256; cv=none; d=example.com; s=s1; b=AAAA\r\n" + MESSAGE
    assert from_recent(resolver, recent, sealed) is None


def test_a_malformed_unsigned_header_still_gets_its_own_dkim_verdict(
    resolver: CountingResolver,
) -> None:
    recent = RecentSenders()
    judged(resolver, recent, MESSAGE)
    malformed = b" folded line before any field\r\n" + MESSAGE
    remembered = from_recent(resolver, recent, malformed)
    # unsigned, so none (not permerror) although dkimpy cannot parse the header
    assert remembered is not None and remembered.dkim == "none"
    assert remembered == authenticate_message(
        resolver, client_ip=SENDER_IP, helo=HELO, mail_from=MAIL_FROM, message=malformed
    )


def test_only_a_small_header_is_answered_from_memory(resolver: CountingResolver) -> None:
    """That path runs on the event loop; a header's parse takes time that grows with it."""
    recent = RecentSenders()
    judged(resolver, recent, MESSAGE)
    header_size = len(header_section(MESSAGE))
    filler = RECENT_MAX_HEADER_BYTES - header_size - len(b"X-Filler: \r\n")
    largest = b"X-Filler: " + b"f" * filler + b"\r\n" + MESSAGE
    assert len(header_section(largest)) == RECENT_MAX_HEADER_BYTES
    assert from_recent(resolver, recent, largest) is not None
    assert from_recent(resolver, recent, b"X-Filler: f\r\n" + largest) is None


def test_temporary_errors_are_not_remembered(resolver: CountingResolver) -> None:
    recent = RecentSenders()
    resolver.failing.add("example.com")
    assert judged(resolver, recent, MESSAGE).spf == "temperror"
    assert len(recent) == 0


VERDICTS = (
    SpfResult("pass", "example.com", "mailfrom", ""),
    DmarcResult("pass", "reject", True),
)


def key(n: int) -> tuple[str, str, str, Author]:
    return (f"192.0.2.{n}", HELO, MAIL_FROM, Author(1, "example.com"))


def test_verdicts_expire() -> None:
    now = [0.0]
    recent = RecentSenders(seconds=30.0, clock=lambda: now[0])
    recent.remember(key(1), *VERDICTS)
    now[0] = 29.9
    assert recent.get(key(1)) == VERDICTS
    now[0] = 30.0
    assert recent.get(key(1)) is None
    assert len(recent) == 0


def test_the_least_recently_used_sender_is_forgotten_first() -> None:
    recent = RecentSenders(capacity=2)
    recent.remember(key(1), *VERDICTS)
    recent.remember(key(2), *VERDICTS)
    assert recent.get(key(1)) == VERDICTS  # 1 is now the most recent
    recent.remember(key(3), *VERDICTS)
    assert recent.get(key(2)) is None
    assert recent.get(key(1)) == VERDICTS and recent.get(key(3)) == VERDICTS
