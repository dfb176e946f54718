"""DMARC (RFC 7489): the author's domain, its policy record, and identifier alignment.

Organisational domains come from the Public Suffix List shipped with `publicsuffixlist`
(offline, never downloaded at run time). This module judges; it does not act on a policy
(no rejecting or quarantining here) and it queries DNS only through the Resolver it is given.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Literal

from publicsuffixlist import PublicSuffixList

from e2a_gateway.addresses import a_label_domain
from e2a_gateway.mailauth.dns_answers import DnsTemporaryError, Resolver
from e2a_gateway.mailauth.results import Alignment, AuthResult
from e2a_gateway.rfc5322 import HeaderFields, field_addresses, header_section, header_text

Disposition = Literal["none", "quarantine", "reject"]

_DISPOSITIONS: dict[str, Disposition] = {
    "none": "none",
    "quarantine": "quarantine",
    "reject": "reject",
}
# The version tag first, its name in either case (ABNF strings are), its value exactly DMARC1.
_VERSION = re.compile(r"[vV]\s*=\s*DMARC1\s*(;|$)")
_OBSOLETE_FROM = re.compile(rb"^from[ \t]+:", re.IGNORECASE | re.MULTILINE)
"""A `From` field with whitespace before its colon (`obs-optional`, RFC 5322 section 4.5)."""


@dataclass(frozen=True)
class Author:
    """What the RFC 5322 `From:` field(s) name: how many authors, and the domain of the one.

    `addresses` counts the addresses, and is at least the number of From fields: RFC 5322
    allows one, and a second (addressless or not) is a second author readers may show.
    `domain` is set only when there is exactly one author and it has a domain.
    """

    addresses: int
    domain: str | None


@dataclass(frozen=True)
class DmarcPolicy:
    """A parsed `_dmarc` record and the domain it was published at."""

    published_at: str
    p: Disposition
    sp: Disposition | None = None
    adkim: Alignment = "r"
    aspf: Alignment = "r"

    def disposition_for(self, from_domain: str) -> Disposition:
        """The policy asked for `from_domain`: `sp` when it is a subdomain of the record's."""
        if from_domain != self.published_at and self.sp is not None:
            return self.sp
        return self.p


@dataclass(frozen=True)
class DmarcResult:
    """The DMARC verdict, the policy the domain asked for, and whether an aligned pass exists.

    `aligned` is True when SPF or DKIM passed for a domain aligned with the From: domain:
    under the record's modes, relaxed when there is no usable record, and strict when the
    record could not be fetched (strict alignment satisfies every mode). `aspf` and `adkim`
    are the modes so used; None when there is no From: domain to align with.
    """

    result: AuthResult
    policy: Disposition | None
    aligned: bool
    aspf: Alignment | None = None
    adkim: Alignment | None = None


class InvalidPolicyRecord(Exception):
    """The domain publishes a DMARC record without a usable `p=` (a permerror)."""


def author_of(message: bytes) -> Author:
    """The author's domain from the message's `From:` field(s), lowercased, IDNA-encoded.

    A `From` written with whitespace before its colon (RFC 5322's obsolete syntax) counts as
    one more field: the stdlib, and the gateway with it, reads no field there (it skips the
    line, or ends the header section at it), but other mail readers show it as the author."""
    values = HeaderFields(header_text(message)).get_all("From")
    fields = len(values) + len(_OBSOLETE_FROM.findall(header_section(message)))
    addresses = [address for _name, address in field_addresses(values) if address]
    authors = max(len(addresses), fields) if fields > 1 else len(addresses)
    if authors != 1:
        return Author(authors, None)
    return Author(1, author_domain(addresses[0]))


def author_domain(address: str) -> str | None:
    """The domain of the author `address` as DMARC judges it (`normalise_domain`: lowercase,
    an internationalised domain as A-labels); None when the address names no domain."""
    _local, at, domain = address.rpartition("@")
    return (normalise_domain(domain) or None) if at else None


def evaluate_dmarc(
    resolver: Resolver,
    author: Author,
    *,
    spf_result: AuthResult,
    spf_domain: str,
    dkim_domains: tuple[str, ...],
    dkim_temperror_domains: tuple[str, ...] = (),
) -> DmarcResult:
    """Judge the message against its author domain's DMARC policy (RFC 7489 section 6.6).

    No From: address gives `none`, several (or one without a domain) `permerror`; DNS
    trouble gives `temperror`: looking the policy up, or in the SPF check (`spf_result`
    temperror) or a signature's key (`dkim_temperror_domains`, the `d=` of such signatures)
    of a domain aligned with the author's when nothing aligned passed, which may pass once DNS
    answers. Never raises for bad mail or DNS trouble.
    """
    if author.addresses == 0:
        return DmarcResult("none", None, False)
    if author.domain is None:
        return DmarcResult("permerror", None, False)
    from_domain = author.domain

    def aligned_among(
        spf_as: AuthResult, dkim: tuple[str, ...], aspf: Alignment, adkim: Alignment
    ) -> bool:
        """Whether SPF came to `spf_as` for a domain aligned with the author's under `aspf`,
        or a domain of `dkim` is aligned under `adkim`."""
        spf_aligned = spf_result == spf_as and is_aligned(
            normalise_domain(spf_domain), from_domain, aspf
        )
        return spf_aligned or any(
            is_aligned(normalise_domain(domain), from_domain, adkim) for domain in dkim
        )

    def aligned(aspf: Alignment, adkim: Alignment) -> bool:
        return aligned_among("pass", dkim_domains, aspf, adkim)

    try:
        policy = discover_policy(resolver, from_domain)
    except DnsTemporaryError:
        return DmarcResult("temperror", None, aligned("s", "s"), "s", "s")
    except InvalidPolicyRecord:
        return DmarcResult("permerror", None, aligned("r", "r"), "r", "r")
    if policy is None:
        return DmarcResult("none", None, aligned("r", "r"), "r", "r")
    passed = aligned(policy.aspf, policy.adkim)
    unsure = not passed and aligned_among(
        "temperror", dkim_temperror_domains, policy.aspf, policy.adkim
    )
    return DmarcResult(
        "pass" if passed else "temperror" if unsure else "fail",
        policy.disposition_for(from_domain),
        passed,
        policy.aspf,
        policy.adkim,
    )


def discover_policy(resolver: Resolver, from_domain: str) -> DmarcPolicy | None:
    """The DMARC record for `from_domain`, else its organisational domain's; None when none.

    Raises DnsTemporaryError when DNS cannot answer, InvalidPolicyRecord for a record with
    no usable `p=`. Several records at one name mean none applies (RFC 7489 section 6.6.3).
    """
    records = _dmarc_records(resolver, from_domain)
    org_domain = organizational_domain(from_domain)
    if not records and org_domain != from_domain:
        from_domain = org_domain
        records = _dmarc_records(resolver, org_domain)
    if len(records) != 1:
        return None
    return parse_policy(records[0], published_at=from_domain)


def parse_policy(record: str, *, published_at: str) -> DmarcPolicy:
    """Parse a `v=DMARC1; p=…` record. Unknown tags and invalid optional values are ignored;
    tag values are read without regard to case.

    A missing or invalid `p=` is read as `p=none` when the record names a report address
    (`rua=`), as RFC 7489 section 6.6.3 asks; otherwise it raises InvalidPolicyRecord.
    """
    tags = _tags(record)
    p = _disposition(tags.get("p"))
    if p is None:
        if not tags.get("rua"):
            raise InvalidPolicyRecord(f"_dmarc.{published_at}: no valid p= in {record!r}")
        p = "none"
    return DmarcPolicy(
        published_at=published_at,
        p=p,
        sp=_disposition(tags.get("sp")),
        adkim=_mode(tags.get("adkim")),
        aspf=_mode(tags.get("aspf")),
    )


def is_aligned(domain: str, from_domain: str, mode: Alignment) -> bool:
    """Identifier alignment (RFC 7489 section 3.1): same domain (strict) or same
    organisational domain (relaxed). Both domains must already be normalised."""
    if mode == "s":
        return domain == from_domain
    return organizational_domain(domain) == organizational_domain(from_domain)


def organizational_domain(domain: str) -> str:
    """The registered domain under the Public Suffix List; a public suffix is its own."""
    return _public_suffix_list().privatesuffix(domain) or domain


def normalise_domain(domain: str) -> str:
    """A domain as compared and queried: `a_label_domain`, or just lowercased when it is not a
    valid name (it then matches no policy and aligns with nothing but itself)."""
    domain = domain.strip().rstrip(".")
    try:
        return a_label_domain(domain)
    except ValueError:
        return domain.lower()


_SUFFIX_LIST_LOCK = threading.Lock()
_suffix_list: PublicSuffixList | None = None


def _public_suffix_list() -> PublicSuffixList:
    """The Public Suffix List, parsed once (about 0.4 s) even when many threads ask at once."""
    global _suffix_list
    with _SUFFIX_LIST_LOCK:
        if _suffix_list is None:
            _suffix_list = PublicSuffixList()
        return _suffix_list


def load_public_suffix_list() -> None:
    """Parse the Public Suffix List now (the gateway does this in the background at start)."""
    _public_suffix_list()


def _dmarc_records(resolver: Resolver, domain: str) -> list[str]:
    return [text for text in resolver.txt(f"_dmarc.{domain}") if _VERSION.match(text)]


def _tags(record: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for spec in record.split(";"):
        name, separator, value = spec.partition("=")
        if separator:
            tags.setdefault(name.strip().lower(), value.strip())
    return tags


def _mode(value: str | None) -> Alignment:
    """An `adkim=`/`aspf=` value: strict for `s` in either case (RFC 7489's ABNF, like all
    ABNF, is case-insensitive), relaxed for anything else."""
    return "s" if (value or "").lower() == "s" else "r"


def _disposition(value: str | None) -> Disposition | None:
    return _DISPOSITIONS.get((value or "").lower())
