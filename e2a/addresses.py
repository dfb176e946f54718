"""Email address and domain rules shared by the SMTP listener and the REST API.

Pure functions over strings: normalisation (lowercase, IDNA, no trailing dot) and the slug
rules for agents on the shared domain. No I/O.
"""

from __future__ import annotations

import re

SLUG_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,38}[a-z0-9]$")
_LABEL_PATTERN = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
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


class AddressError(ValueError):
    """An address or domain that the gateway will not accept; the message says why."""


def normalise_domain(domain: str) -> str:
    """Lowercase `domain`, drop one trailing dot and encode it as IDNA (punycode).

    Raises AddressError when it is not a valid host name with at least two labels.
    """
    candidate = domain.strip()
    if candidate.endswith("."):
        candidate = candidate[:-1]
    try:
        ascii_form = candidate.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise AddressError(f"{domain!r} is not a valid domain name") from None
    labels = ascii_form.split(".")
    if len(labels) < 2 or len(ascii_form) > 253:
        raise AddressError(f"{domain!r} is not a fully qualified domain name")
    if not all(_LABEL_PATTERN.match(label) for label in labels):
        raise AddressError(f"{domain!r} is not a valid domain name")
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
