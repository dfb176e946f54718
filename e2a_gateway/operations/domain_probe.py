"""The live DNS probe that `/v1`'s verifyDomain reports beside `verified`: what DNS answers
now for the records a domain lists besides its ownership TXT — the inbound MX pointing at
`smtp.hostname` and, when the gateway DKIM-signs, the key record at
`<selector>._domainkey.<domain>` (and the next key's, while a rotation is under way) — in
e2a's probe words (`found`, `missing`, `mismatch`, `deferred`). Judging an answer is pure;
the lookups go through the gateway's resolver, past its cache, in worker threads, each within
`dns.timeout_seconds`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import trio

from e2a_gateway.addresses import a_label_domain
from e2a_gateway.gateway import Gateway
from e2a_gateway.mailauth.dns_answers import DnsTemporaryError, MxRecord
from e2a_gateway.mailauth.resolver import fresh_answers

FOUND = "found"
"""The record is published as the domain's record list names it."""
MISSING = "missing"
"""DNS says there is no such record (no such name, or no record of the type)."""
MISMATCH = "mismatch"
"""A record is published, but not the one listed (an MX to another host, another DKIM key)."""
DEFERRED = "deferred"
"""DNS did not answer (timeout, SERVFAIL): the record may be there; verify again later."""

_T = TypeVar("_T")


@dataclass(frozen=True)
class DomainProbe:
    """The probe's outcome for each record; `dkim` None when the gateway lists no DKIM record
    (it does not sign outbound mail), `dkim_next` None when it lists no next key's record (no
    key rotation under way)."""

    mx: str
    dkim: str | None
    dkim_next: str | None = None


def mx_outcome(records: list[MxRecord], mail_host: str) -> str:
    """`found` when one of `records` points at `mail_host`, `mismatch` when they point only
    elsewhere (a null MX included), `missing` when there are none."""
    if not records:
        return MISSING
    wanted = _host(mail_host)
    return FOUND if any(_host(exchange) == wanted for _, exchange in records) else MISMATCH


def dkim_outcome(records: list[str], listed_value: str) -> str:
    """`found` when one of the TXT `records` carries the listed record's key (`p=`; a match
    wins over a stale key beside it), `mismatch` when they carry only another key (an old one,
    a revoked one, a value cut short), `missing` when none is a key record."""
    keys = [key for key in map(dkim_public_key, records) if key is not None]
    if not keys:
        return MISSING
    return FOUND if dkim_public_key(listed_value) in keys else MISMATCH


def dkim_public_key(record: str) -> str | None:
    """The `p=` tag of a DKIM key record without its folding whitespace (RFC 6376 section
    3.6.1), empty for a revoked key; None when the record has no `p=` tag (not a key record)."""
    for tag in record.split(";"):
        label, _, value = tag.partition("=")
        if label.strip() == "p":
            return "".join(value.split())
    return None


async def probe_domain(gateway: Gateway, domain: str) -> DomainProbe:
    """Look up `domain`'s MX and, when the gateway signs, its DKIM key record (and the next
    key's, while a rotation is under way), concurrently, as the nameservers answer now (not
    the gateway's cache of answers)."""
    outcomes: dict[str, str] = {}
    resolver = fresh_answers(gateway.resolver)
    keys = {"dkim": gateway.dkim_record(domain), "dkim_next": gateway.dkim_next_record(domain)}

    async def probe_mx() -> None:
        outcomes["mx"] = await _probe(
            gateway,
            resolver.mx,
            domain,
            lambda records: mx_outcome(records, gateway.settings.smtp.hostname),
        )

    async def probe_dkim(key: str, name: str, value: str) -> None:
        outcomes[key] = await _probe(
            gateway, resolver.txt, name, lambda records: dkim_outcome(records, value)
        )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(probe_mx)
        for key, record in keys.items():
            if record is not None:
                nursery.start_soon(probe_dkim, key, record.name, record.value)
    return DomainProbe(
        mx=outcomes["mx"], dkim=outcomes.get("dkim"), dkim_next=outcomes.get("dkim_next")
    )


async def _probe(
    gateway: Gateway,
    lookup: Callable[[str], list[_T]],
    name: str,
    judge: Callable[[list[_T]], str],
) -> str:
    """`judge` of what `lookup(name)` answers in a worker thread; `deferred` when DNS fails or
    does not answer within `dns.timeout_seconds` (the thread is abandoned)."""
    with trio.move_on_after(gateway.settings.dns.timeout_seconds):
        try:
            records = await trio.to_thread.run_sync(lookup, name, abandon_on_cancel=True)
        except DnsTemporaryError:
            return DEFERRED
        return judge(records)
    return DEFERRED


def _host(name: str) -> str:
    """A host name as DNS compares it: lowercase A-labels without the trailing dot."""
    try:
        return a_label_domain(name)
    except ValueError:
        return name.lower().rstrip(".")
