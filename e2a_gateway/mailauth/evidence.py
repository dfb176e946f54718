"""The authentication evidence of a stored message, read back from the `Authentication-Results`
field the gateway itself put on it (RFC 8601, parsed with `authres`): SPF with its domain, each
DKIM signature with its `d=` and `s=`, DMARC with its policy, and the alignment of each with the
author's domain under the modes the gateway judged it by. Pure: it reads bytes, it looks
nothing up.
"""

from __future__ import annotations

from dataclasses import dataclass

import authres

from e2a_gateway.mailauth.dmarc import is_aligned, normalise_domain
from e2a_gateway.mailauth.results import Alignment, dmarc_policy_named, unescaped
from e2a_gateway.rfc5322 import HeaderFields, header_text


@dataclass(frozen=True)
class SignatureEvidence:
    """One DKIM signature's verdict."""

    result: str
    domain: str | None
    selector: str | None
    aligned: bool | None
    reason: str | None


@dataclass(frozen=True)
class Evidence:
    """What the gateway found when the message arrived over SMTP."""

    spf: str
    spf_domain: str | None
    spf_aligned: bool | None
    dkim: tuple[SignatureEvidence, ...]
    dmarc: str
    dmarc_domain: str | None
    dmarc_policy: str | None
    aligned_by: tuple[str, ...]


def evidence_of(raw: bytes, authserv_id: str) -> Evidence | None:
    """The evidence in `raw`'s first `Authentication-Results` field naming `authserv_id` (the
    one the gateway added on arrival); None when there is none with SPF, DKIM and DMARC verdicts
    (mail delivered locally by another agent, or stored before the field was kept)."""
    for value in HeaderFields(header_text(raw)).get_all("Authentication-Results"):
        try:
            parsed = authres.AuthenticationResultsHeader.parse_value(value)
        except Exception:  # authres raises its own and plain errors on malformed fields
            continue
        if str(parsed.authserv_id).lower() != authserv_id.lower():
            continue
        return _evidence(parsed.results, value)
    return None


def _evidence(results: list[authres.AuthenticationResult], text: str) -> Evidence | None:
    by_method: dict[str, list[authres.AuthenticationResult]] = {}
    for result in results:
        by_method.setdefault(str(result.method).lower(), []).append(result)
    if not {"spf", "dmarc"} <= by_method.keys():
        return None
    dmarc = by_method["dmarc"][0]
    from_domain = _property(dmarc, "header", "from")
    aspf = _mode(_property(dmarc, "policy", "aspf"))
    adkim = _mode(_property(dmarc, "policy", "adkim"))
    spf = by_method["spf"][0]
    spf_domain = _property(spf, "smtp", "mailfrom") or _property(spf, "smtp", "helo")
    spf_aligned = _aligned(spf_domain, from_domain, aspf)
    signatures = tuple(
        SignatureEvidence(
            result=str(result.result).lower(),
            domain=_property(result, "header", "d"),
            selector=_property(result, "header", "s"),
            aligned=_aligned(_property(result, "header", "d"), from_domain, adkim),
            reason=str(result.reason) if result.reason else None,
        )
        for result in by_method.get("dkim", [])
        if _property(result, "header", "d") is not None
    )
    aligned_by = []
    if spf_aligned and str(spf.result).lower() == "pass":
        aligned_by.append("spf")
    if any(sig.aligned and sig.result == "pass" for sig in signatures):
        aligned_by.append("dkim")
    return Evidence(
        spf=str(spf.result).lower(),
        spf_domain=spf_domain,
        spf_aligned=spf_aligned,
        dkim=signatures,
        dmarc=str(dmarc.result).lower(),
        dmarc_domain=from_domain,
        dmarc_policy=dmarc_policy_named(text),
        aligned_by=tuple(aligned_by),
    )


def _property(result: authres.AuthenticationResult, kind: str, name: str) -> str | None:
    for prop in result.properties:
        if str(prop.type).lower() == kind and str(prop.name).lower() == name:
            return unescaped(str(prop.value)) or None  # authres keeps a quoted-pair's `\`
    return None


def _mode(recorded: str | None) -> Alignment:
    """The alignment mode the field records (`policy.aspf`, `policy.adkim`). Fields written
    before the gateway recorded them read relaxed, as they were shown then: right unless the
    domain's record asked for strict alignment."""
    return "s" if recorded is not None and recorded.lower() == "s" else "r"


def _aligned(domain: str | None, from_domain: str | None, mode: Alignment) -> bool | None:
    """Alignment of `domain` with the author's domain under `mode`; None when either is
    unknown."""
    if not domain or not from_domain:
        return None
    try:
        return is_aligned(
            normalise_domain(domain.rpartition("@")[2]), normalise_domain(from_domain), mode
        )
    except ValueError:
        return False
