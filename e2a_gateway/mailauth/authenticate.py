"""Authenticate one inbound message: SPF, DKIM, ARC and DMARC into one AuthResults.

Synchronous and free of I/O but for the Resolver's lookups: the SMTP side runs it in a
worker thread under its own deadline (and uses `AuthResults.temporary_failure` when that
passes). It never raises for bad mail or DNS trouble, and it never rejects anything: what
to do with the results is the caller's business.

Mail that carries no DKIM or ARC header fields is judged by SPF and DMARC alone, and those
depend only on the client, its HELO, the reverse path and the author's domain. `RecentSenders`
remembers those verdicts for a short while, so a burst from one sender is judged once and the
rest of it without a DNS lookup or a worker thread (`authenticate_from_recent`) — as long as
its header section is small, since that path runs on the event loop.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from e2a_gateway.mailauth.dkim import DkimVerdict, verify_arc, verify_dkim
from e2a_gateway.mailauth.dmarc import Author, DmarcResult, author_of, evaluate_dmarc
from e2a_gateway.mailauth.dns_answers import Resolver
from e2a_gateway.mailauth.results import AuthResult, AuthResults
from e2a_gateway.mailauth.spf import SpfResult, check_spf
from e2a_gateway.rfc5322 import header_section

RECENT_SECONDS = 30.0
"""How long an unsigned sender's SPF and DMARC verdicts are reused. Short next to the TTL of
the SPF and DMARC records themselves (an hour is usual), so a changed policy is seen soon."""
RECENT_SENDERS = 10_000
"""How many senders are remembered at most; the least recently used is forgotten first."""
RECENT_MAX_HEADER_BYTES = 16_384
"""The largest header section judged from `RecentSenders`, on the event loop: parsing a header
takes time that grows with it (faster than linearly in dkimpy), so larger ones go the way of
all other mail, to a worker thread under the authentication deadline."""
_SIGNATURE_MARKERS = (b"dkim-signature:", b"arc-")

_SenderKey = tuple[str, str, str, Author]


@dataclass(frozen=True)
class _SenderVerdict:
    spf: SpfResult
    dmarc: DmarcResult
    expires: float


class RecentSenders:
    """SPF and DMARC verdicts of unsigned mail from recent senders, keyed by everything they
    depend on: client address, HELO name, reverse path and author. Verdicts with a temporary
    error are never kept. Not thread-safe: use it from the event loop only."""

    def __init__(
        self,
        *,
        seconds: float = RECENT_SECONDS,
        capacity: int = RECENT_SENDERS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._seconds = seconds
        self._capacity = capacity
        self._clock = clock
        self._verdicts: OrderedDict[_SenderKey, _SenderVerdict] = OrderedDict()

    def __len__(self) -> int:
        return len(self._verdicts)

    def get(self, key: _SenderKey) -> tuple[SpfResult, DmarcResult] | None:
        """The verdicts remembered for `key`, if still fresh."""
        verdict = self._verdicts.get(key)
        if verdict is None:
            return None
        if verdict.expires <= self._clock():
            del self._verdicts[key]
            return None
        self._verdicts.move_to_end(key)
        return verdict.spf, verdict.dmarc

    def remember(self, key: _SenderKey, spf: SpfResult, dmarc: DmarcResult) -> None:
        """Keep the verdicts for `key`, unless either is a temporary error."""
        if "temperror" in (spf.result, dmarc.result):
            return
        self._verdicts[key] = _SenderVerdict(spf, dmarc, self._clock() + self._seconds)
        self._verdicts.move_to_end(key)
        while len(self._verdicts) > self._capacity:
            self._verdicts.popitem(last=False)


@dataclass(frozen=True)
class Authentication:
    """The results, and — for unsigned mail — the sender verdicts worth remembering."""

    results: AuthResults
    sender_key: _SenderKey | None
    spf: SpfResult
    dmarc: DmarcResult

    def remember_in(self, recent: RecentSenders) -> None:
        """Keep this message's sender verdicts in `recent` (unsigned mail only)."""
        if self.sender_key is not None:
            recent.remember(self.sender_key, self.spf, self.dmarc)


def authenticate_message(
    resolver: Resolver, *, client_ip: str, helo: str, mail_from: str, message: bytes
) -> AuthResults:
    """Check who sent `message`: the client at `client_ip` that said `helo` and `MAIL FROM`.

    `message` is the DATA as received (dot-unstuffed, CRLF or LF line ends). `verified` in
    the result is True only for an SPF or DKIM pass aligned with the From: domain.
    """
    return check_sender(
        resolver, client_ip=client_ip, helo=helo, mail_from=mail_from, message=message
    ).results


def check_sender(
    resolver: Resolver, *, client_ip: str, helo: str, mail_from: str, message: bytes
) -> Authentication:
    """`authenticate_message`, with the sender verdicts `RecentSenders` may keep."""
    spf = check_spf(resolver, client_ip=client_ip, helo=helo, mail_from=mail_from)
    dkim = verify_dkim(resolver, message)
    author = author_of(message)
    dmarc = evaluate_dmarc(
        resolver,
        author,
        spf_result=spf.result,
        spf_domain=spf.domain,
        dkim_domains=dkim.passed_domains,
        dkim_temperror_domains=dkim.temperror_domains,
    )
    arc = verify_arc(resolver, message)
    key = _sender_key(client_ip, helo, mail_from, author) if _unsigned(message) else None
    return Authentication(_combine(spf, dkim, dmarc, author, arc), key, spf, dmarc)


def authenticate_from_recent(
    resolver: Resolver,
    recent: RecentSenders,
    *,
    client_ip: str,
    helo: str,
    mail_from: str,
    message: bytes,
) -> AuthResults | None:
    """The results of unsigned mail whose sender `recent` remembers, found without DNS (an
    unsigned message's DKIM verdict needs none); None when the message is signed, its header
    section is over RECENT_MAX_HEADER_BYTES or its sender is not remembered.

    Its cost is bounded by RECENT_MAX_HEADER_BYTES, whatever the size of the message: the
    caller may run it on the event loop."""
    if not _small_header(message) or not _unsigned(message):
        return None
    author = author_of(message)
    remembered = recent.get(_sender_key(client_ip, helo, mail_from, author))
    if remembered is None:
        return None
    spf, dmarc = remembered
    dkim = verify_dkim(resolver, message)  # no signature: `none`, or `permerror` if malformed
    return _combine(spf, dkim, dmarc, author, None)


def _small_header(message: bytes) -> bool:
    """True when the header section has at most RECENT_MAX_HEADER_BYTES, found by looking at
    no more of the message than that."""
    start = message[: RECENT_MAX_HEADER_BYTES + 4]  # room for the empty line after the limit
    return len(header_section(start)) <= RECENT_MAX_HEADER_BYTES


def _unsigned(message: bytes) -> bool:
    """True when the header section has no DKIM-Signature and no ARC field."""
    headers = header_section(message).lower()
    return not any(marker in headers for marker in _SIGNATURE_MARKERS)


def _sender_key(client_ip: str, helo: str, mail_from: str, author: Author) -> _SenderKey:
    return (client_ip, helo.lower(), mail_from.lower(), author)


def _combine(
    spf: SpfResult,
    dkim: DkimVerdict,
    dmarc: DmarcResult,
    author: Author,
    arc: AuthResult | None,
) -> AuthResults:
    return AuthResults(
        spf=spf.result,
        spf_domain=spf.domain,
        spf_scope=spf.scope,
        dkim=dkim.result,
        dkim_signatures=dkim.signatures,
        dmarc=dmarc.result,
        dmarc_policy=dmarc.policy,
        from_domain=author.domain,
        verified=dmarc.aligned,
        arc=arc,
        aspf=dmarc.aspf,
        adkim=dmarc.adkim,
    )
