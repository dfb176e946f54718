"""When the STARTTLS certificate expires, whom it names, and what to tell the operator.

`read_certificate` reads the names and notAfter of a PEM file's first certificate (the
server's own, ahead of its chain); `expiry_notice` says, from those facts and the time, what
to log, and `name_notice` whether the certificate names the MX host. Nothing here reads the
key, opens sockets or logs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from e2a_gateway.addresses import a_label_domain
from e2a_gateway.clock import format_timestamp

if TYPE_CHECKING:
    from cryptography import x509

WARNING_SECONDS = 14 * 86_400
"""How long before its expiry a certificate is warned about: time for a renewal that failed
(ACME clients renew 30 days ahead) to be noticed and fixed."""
SECONDS_PER_DAY = 86_400


@dataclass(frozen=True)
class CertificateFacts:
    """What the operator needs to recognise a certificate and know when it expires."""

    path: Path
    names: tuple[str, ...]
    """Its DNS names and addresses (subjectAltName), or its subject when it has none."""
    not_after: float
    """Its notAfter as Unix time."""


def read_certificate(path: Path) -> CertificateFacts:
    """The facts of the first certificate in the PEM file at `path`. ValueError (OSError when
    the file cannot be read) when it holds none that can be parsed."""
    # Imported here: gateways without a certificate never load the X.509 parser.
    from cryptography import x509

    certificates = x509.load_pem_x509_certificates(Path(path).read_bytes())
    leaf = certificates[0]
    return CertificateFacts(
        path=path, names=_names(leaf), not_after=leaf.not_valid_after_utc.timestamp()
    )


def _names(certificate: x509.Certificate) -> tuple[str, ...]:
    """The subjectAltName DNS names and IP addresses, else the subject's common name, else the
    whole subject."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        alternatives = certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value
    except x509.ExtensionNotFound:
        alternatives = None
    if alternatives is not None:
        names = [*alternatives.get_values_for_type(x509.DNSName)]
        names += [str(address) for address in alternatives.get_values_for_type(x509.IPAddress)]
        if names:
            return tuple(names)
    common = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if common:
        return tuple(str(attribute.value) for attribute in common)
    return (certificate.subject.rfc4514_string() or "an empty subject",)


def expiry_notice(
    served: CertificateFacts, now: float, on_disk: CertificateFacts | None = None
) -> tuple[int, str] | None:
    """The log level and message for the certificate `served` at `now`: ERROR once it has
    expired, WARNING within WARNING_SECONDS of it, else None. `on_disk` is what its file holds
    now: when that expires later, the message says a restart serves it."""
    expires = format_timestamp(served.not_after)
    subject = f"smtp.tls_cert {served.path}: the STARTTLS certificate for {', '.join(served.names)}"
    if on_disk is not None and on_disk.not_after > served.not_after:
        fix = (
            f"the file now holds one valid until {format_timestamp(on_disk.not_after)}, "
            "which e2a serves once restarted: restart e2a"
        )
    else:
        fix = "renew it and restart e2a"
    if served.not_after <= now:
        return (
            logging.ERROR,
            f"{subject} expired at {expires} — sending servers refuse it and deliver without "
            f"encryption, or not at all where the domain requires TLS (MTA-STS, DANE); {fix}",
        )
    left = served.not_after - now
    if left > WARNING_SECONDS:
        return None
    days = int(left // SECONDS_PER_DAY)
    when = f"{days} days" if days > 1 else "1 day" if days == 1 else f"{int(left // 3600)} hours"
    return logging.WARNING, f"{subject} expires at {expires} (in {when}) — {fix}"


def name_notice(served: CertificateFacts, hostname: str) -> str | None:
    """The warning to log when the certificate `served` does not name `hostname` (smtp.hostname,
    the MX name) as a sending server checking it would (RFC 6125: exact, case-insensitive, or
    a wildcard standing for the leftmost label alone); None when it does."""
    try:
        wanted = a_label_domain(hostname)
    except ValueError:
        wanted = hostname.lower()
    if any(_name_matches(name, wanted) for name in served.names):
        return None
    return (
        f"smtp.tls_cert {served.path}: the STARTTLS certificate is for "
        f"{', '.join(served.names)}, not for smtp.hostname {hostname} — it is served all the "
        "same, but sending servers that check it (MTA-STS, DANE) refuse it and do not deliver; "
        "give the MX host a certificate for its name, or set smtp.hostname to the name the MX "
        "record names"
    )


def _name_matches(name: str, hostname: str) -> bool:
    """True when the certificate name `name` stands for the A-label `hostname`."""
    name = name.lower().removesuffix(".")
    if name.startswith("*."):
        first, _, rest = hostname.partition(".")
        return bool(first) and rest == name[2:]
    return name == hostname
