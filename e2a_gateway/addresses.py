"""Email address and domain rules shared by the SMTP listener, the REST API and DMARC.

Pure functions over strings: normalisation (lowercase, IDNA, no trailing dot) and the slug
rules for agents on the shared domain. No I/O.

There is one rule for turning a domain into the form e2a compares and stores
(`a_label_domain`), so a name registered over the API, a recipient given over SMTP and an
author's domain judged by DMARC always meet: labels are lowercased, non-ASCII labels become
A-labels by NFC + Punycode (IDNA 2008 style), and IDNA 2003 mappings (such as "ß" to "ss", or
"。" as a dot) are deliberately not applied — they would merge names that IDNA 2008 keeps apart,
and mail must never reach the wrong domain.
"""

from __future__ import annotations

import functools
import re
import unicodedata

SLUG_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,38}[a-z0-9]$")
_LOCAL_PATTERN = re.compile(r"^[a-z0-9!#$&'*+/=?^_`{|}~-]+(\.[a-z0-9!#$&'*+/=?^_`{|}~-]+)*$")

RESERVED_SLUGS = frozenset(
    {
        "abuse",
        "admin",
        "administrator",
        "bounce",
        "bounces",
        "hostmaster",
        "info",
        "mailer-daemon",
        "no-reply",
        "noc",
        "noreply",
        "postmaster",
        "root",
        "security",
        "support",
        "webmaster",
        "www",
    }
)


MAX_DOMAIN_LENGTH = 253
_LDH_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


class AddressError(ValueError):
    """An address or domain that the gateway will not accept; the message says why."""


@functools.lru_cache(maxsize=4096)
def a_label_domain(domain: str) -> str:
    """`domain` as e2a compares and stores it: lowercase A-labels, one trailing dot dropped.

    Raises ValueError (with the reason) for an empty or invalid label, a non-ASCII label that
    folds to ASCII, or a name over MAX_DOMAIN_LENGTH. Asked for each recipient of each
    message, so the last answers are remembered.
    """
    if domain.endswith("."):
        domain = domain[:-1]
    ascii_form = ".".join(_a_label(label) for label in domain.split("."))
    if len(ascii_form) > MAX_DOMAIN_LENGTH:
        raise ValueError("domain too long")
    return ascii_form


def _a_label(label: str) -> str:
    """One domain label as lowercase LDH; non-ASCII labels as `xn--` + Punycode."""
    if label.isascii():
        ascii_label = label.lower()
    else:
        folded = unicodedata.normalize("NFC", label.lower())
        if folded.isascii():
            raise ValueError("non-ASCII label folds to ASCII")
        ascii_label = "xn--" + folded.encode("punycode").decode("ascii")
    if not _LDH_LABEL.fullmatch(ascii_label):
        raise ValueError("invalid domain label")
    return ascii_label


def normalise_domain(domain: str) -> str:
    """Lowercase `domain`, drop one trailing dot and encode it as A-labels (`a_label_domain`).

    Raises AddressError when it is not a valid host name with at least two labels.
    """
    try:
        ascii_form = a_label_domain(domain.strip())
    except ValueError as exc:
        raise AddressError(f"{domain!r} is not a valid domain name ({exc})") from None
    if len(ascii_form.split(".")) < 2:
        raise AddressError(f"{domain!r} is not a fully qualified domain name")
    return ascii_form


def normalise_address(address: str) -> str:
    """Return `local@domain` lowercased with a normalised domain; raise AddressError if invalid.

    Agent addresses are deliberately plain: dot-atom local parts only, so quoted local parts,
    `%` and `!` routing tricks can never name an agent.
    """
    local, sep, domain = address.strip().rpartition("@")
    local = local.lower()
    if not sep or not local or len(local) > 64 or not _LOCAL_PATTERN.match(local):
        raise AddressError(f"{address!r} is not a valid email address")
    return f"{local}@{normalise_domain(domain)}"


def lowercase_address(address: str) -> str:
    """An address as e2a reports a sender or recipient named in a header (RFC 6532 allows
    UTF-8 there): lowercased by Unicode's default case mapping (`str.lower`, locale-independent;
    not case folding, so "ß" stays "ß"), then NFC-normalised.

    The domain keeps the form the message gave it (U-labels stay U-labels, A-labels stay
    A-labels): the result is for reading and signing, not routing (`normalise_address` routes).
    """
    return unicodedata.normalize("NFC", address.strip().lower())


def check_slug(slug: str) -> str:
    """Return `slug` if it may name an agent on the shared domain, else raise AddressError."""
    if not SLUG_PATTERN.match(slug):
        raise AddressError(
            "slug must be 2-40 characters of a-z, 0-9 and '-', starting and ending with a "
            "letter or digit"
        )
    if slug in RESERVED_SLUGS:
        raise AddressError(f"slug {slug!r} is reserved; choose another")
    return slug
