"""SPF (RFC 7208) for one SMTP transaction: pyspf evaluating records fetched through our Resolver.

pyspf looks names up through its module-level `spf.DNSLookup`; this module replaces that
function, when it first imports pyspf, with one that asks the `Resolver` of the check in
progress. pyspf therefore never reaches DNS on its own, and a lookup outside `check_spf` fails
instead of touching the network. pyspf is imported on the first check, not at start-up: it
imports dnspython (a tenth of a second), and checks run in worker threads.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal, cast

from e2a_gateway.addresses import a_label_domain
from e2a_gateway.mailauth.dns_answers import DnsTemporaryError, Resolver
from e2a_gateway.mailauth.results import AuthResult

_resolver: ContextVar[Resolver] = ContextVar("e2a_spf_resolver")

# pyspf's answer shape: ((name, type), value), TXT values being tuples of byte strings.
_Answer = tuple[tuple[str, str], object]


@dataclass(frozen=True)
class SpfResult:
    """The outcome of an SPF check.

    `domain` is the domain whose policy was evaluated: the MAIL FROM domain, or the HELO name
    when the reverse path is empty (`scope` says which). `explanation` is the text pyspf
    offers for the result (the domain's `exp=` text on a fail, when it has one).
    """

    result: AuthResult
    domain: str
    scope: Literal["mailfrom", "helo"]
    explanation: str


def check_spf(resolver: Resolver, *, client_ip: str, helo: str, mail_from: str) -> SpfResult:
    """Evaluate the sender's SPF policy for a client at `client_ip`.

    An empty `mail_from` (a bounce) checks `postmaster@<helo>` as RFC 7208 section 2.4 asks.
    DNS trouble gives `temperror`; a broken policy gives `permerror`. Never raises for
    anything the client sent.
    """
    spf = pyspf()
    scope: Literal["mailfrom", "helo"] = "mailfrom" if mail_from else "helo"
    local, at, domain = mail_from.rpartition("@")
    if at:
        domain = _a_labels(domain)
        mail_from = f"{local}@{domain}"
    helo = _a_labels(helo)
    query = spf.query(i="", s=mail_from, h=helo)  # the address is set below
    if at:
        # pyspf splits the sender at its first `@`, but a quoted local part may hold one
        # (`"billing@victim.example"@example.org`): the domain follows the last. No local
        # part reads as `postmaster` (RFC 7208 section 4.3), as pyspf has it.
        query.l, query.o = local or "postmaster", domain
        query.d = domain
    try:
        # A link-local IPv6 client comes with its zone (`fe80::1%eth0`), no part of its address.
        query.set_ip(client_ip.partition("%")[0])
    except spf.PermError as exc:  # no client address (`unknown`): nothing to match
        return SpfResult("permerror", query.o, scope, str(exc))
    token = _resolver.set(resolver)
    try:
        result, _code, explanation = query.check()
    finally:
        _resolver.reset(token)
    # In its default (non-"harsh") mode pyspf answers only RFC 7208 results.
    return SpfResult(cast(AuthResult, result), query.o, scope, explanation)


def _a_labels(domain: str) -> str:
    """`domain` with its internationalised labels as A-labels, as RFC 7208 section 4.3 asks
    (and as the result names it); as it was when it is no domain name (an address literal)."""
    try:
        return a_label_domain(domain)
    except ValueError:
        return domain


def _lookup(name: str, qtype: str, *_pyspf_options: object) -> list[_Answer]:
    """pyspf's DNS hook: answers from the current check's Resolver, in pyspf's shapes.

    pyspf also passes its strictness and a per-lookup timeout; the Resolver has its own.
    """
    resolver = _resolver.get()
    try:
        return list(_answers(resolver, name, qtype))
    except DnsTemporaryError as exc:
        raise pyspf().TempError(f"DNS {exc}") from exc


def _answers(resolver: Resolver, name: str, qtype: str) -> Iterator[_Answer]:
    key = (name, qtype)
    if qtype == "TXT":
        yield from ((key, (text.encode("utf-8"),)) for text in resolver.txt(name))
    elif qtype == "A":
        yield from ((key, address) for address in resolver.a(name))
    elif qtype == "AAAA":
        yield from ((key, address) for address in resolver.aaaa(name))
    elif qtype == "MX":
        yield from ((key, record) for record in resolver.mx(name))
    elif qtype == "PTR":
        yield from ((key, target) for target in resolver.ptr(name))
    # Type SPF (99) is obsolete (RFC 7208 section 3.1): pyspf asks for it only in its "harsh"
    # mode, which we do not use; it has no answer here.


def pyspf() -> Any:
    """The pyspf module, its DNS hook pointed at our Resolver (imported on the first call)."""
    import spf

    spf.DNSLookup = _lookup
    return spf
