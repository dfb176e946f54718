"""What `env = "production"` demands of the settings before the gateway starts.

Refusals are `ConfigError`s of one line that name the key and say how to fix it; things that
are risky but sometimes intended come back as warnings for the log. Development keeps its
shortcuts (generated server key, domains verified without DNS); production has none of them.
"""

from __future__ import annotations

import math
import re
import string

from e2a_gateway.config import ConfigError, Settings

MIN_SECRET_BYTES = 32
MIN_SECRET_BITS = 256
"""What 32 random bytes carry: 64 hex digits, 43 base64 characters, 40 of printable ASCII."""
MIN_DISTINCT_SHARE = 0.6
"""A random value of n characters drawn from an alphabet of a characters shows about
a * (1 - (1 - 1/a) ** n) distinct ones; a secret with fewer than this share of that number is
not random."""
REPEAT_BITS = 64
"""A sequence carrying this many bits seen twice means the secret repeats itself: 16 hex
digits, 11 base64 characters, 10 of printable ASCII. A random value repeats such a run about
once in 10**16 draws, so real secrets are never refused for it."""
_HEX = frozenset(string.hexdigits)
_BASE64 = frozenset(string.ascii_letters + string.digits + "+/=-_")
_PRINTABLE_ASCII = 95
PLACEHOLDER_WORDS = (
    "change",
    "replace",
    "example",
    "placeholder",
    "secret",
    "password",
    "dummy",
    "default",
    "xxxxx",
)
"""Words found in secrets copied from documentation rather than generated (as words: not
next to another letter, so a random value that happens to spell one inside is not refused)."""
_PLACEHOLDER = re.compile(
    "|".join(rf"(?<![a-z]){word}(?![a-z])" for word in PLACEHOLDER_WORDS), re.IGNORECASE
)
RESERVED_DOMAINS = (
    "localhost",
    "test",
    "example",
    "invalid",
    "local",
    "example.com",
    "example.net",
    "example.org",
)
"""Names that never receive mail (RFC 2606, RFC 6761, mDNS), nor do their subdomains."""
DEVELOPMENT_PUBLIC_URL = "http://localhost:8080"
GENERATE_SECRET = "openssl rand -hex 32"
"""Makes a good signing.hmac_secret where e2a runs, the one-file executable's machines with no
Python included."""


def alphabet_size(secret: str) -> int:
    """The alphabet `secret` looks drawn from: hex digits (16), base64 or base64url (64), else
    printable ASCII (95)."""
    if set(secret) <= _HEX:
        return len(_HEX) - 6  # either case: 0-9 and a-f
    if set(secret) <= _BASE64:
        return 64
    return _PRINTABLE_ASCII


def estimated_bits(secret: str) -> int:
    """How much randomness `secret` can carry at most: its length times the bits of each
    character of its alphabet (a random value of that length and alphabet carries this)."""
    return math.floor(len(secret) * math.log2(alphabet_size(secret)))


def _too_few_distinct(secret: str) -> bool:
    size = alphabet_size(secret)
    expected = size * (1 - (1 - 1 / size) ** len(secret))
    return len(set(secret)) < MIN_DISTINCT_SHARE * expected


def repeat_length(secret: str) -> int:
    """How many characters of `secret`'s alphabet carry REPEAT_BITS."""
    return math.ceil(REPEAT_BITS / math.log2(alphabet_size(secret)))


def _repeats_itself(secret: str) -> bool:
    length = repeat_length(secret)
    seen: set[str] = set()
    for start in range(len(secret) - length + 1):
        part = secret[start : start + length]
        if part in seen:
            return True
        seen.add(part)
    return False


def secret_weakness(secret: str) -> str | None:
    """Why `secret` is not good enough for production, or None when it is: it must be at least
    32 bytes, carry at least MIN_SECRET_BITS by its length and alphabet, and look random (no
    placeholder words, about as many distinct characters as a random value shows, no repeated
    sequence)."""
    if len(secret.encode()) < MIN_SECRET_BYTES:
        return f"is shorter than {MIN_SECRET_BYTES} bytes"
    placeholder = _PLACEHOLDER.search(secret)
    if placeholder is not None:
        return f"looks like a placeholder (contains {placeholder[0].lower()!r})"
    bits = estimated_bits(secret)
    if bits < MIN_SECRET_BITS:
        return (
            f"carries at most {bits} bits of randomness by its length and alphabet; "
            f"{MIN_SECRET_BITS} are needed (32 random bytes: 64 hex digits, 43 base64 "
            "characters or 40 of printable ASCII)"
        )
    if _too_few_distinct(secret):
        return "repeats too few characters to be random"
    if _repeats_itself(secret):
        return f"repeats a sequence of {repeat_length(secret)} characters, so it is not random"
    return None


def _signing_secret_problem(settings: Settings) -> str | None:
    """In production, what is wrong with `signing.hmac_secret` (missing, short, placeholder)."""
    if not settings.is_production:
        return None
    secret = settings.signing.hmac_secret
    if not secret:
        return (
            "signing.hmac_secret: required in production — set it in the config file or "
            f"E2A_SIGNING_HMAC_SECRET to the output of `{GENERATE_SECRET}`"
        )
    weakness = secret_weakness(secret)
    if weakness is not None:
        return (
            f"signing.hmac_secret: {weakness} — in production use {MIN_SECRET_BYTES} random "
            f"bytes' worth (64 hex digits), e.g. the output of `{GENERATE_SECRET}`"
        )
    return None


def check_signing_secret(settings: Settings) -> None:
    """In production, refuse a missing, short or placeholder `signing.hmac_secret`."""
    problem = _signing_secret_problem(settings)
    if problem is not None:
        raise ConfigError(problem)


def _is_reserved_domain(domain: str) -> bool:
    return any(domain == name or domain.endswith(f".{name}") for name in RESERVED_DOMAINS)


LOCAL_HOST_SUFFIXES = ("localhost", "localdomain", "local")
"""Names a machine calls itself that no other host resolves (`raspberrypi.local`)."""


def _is_local_host_name(hostname: str) -> bool:
    """True when `hostname` is unqualified (`raspberrypi`) or a name only its own network knows."""
    name = hostname.lower()
    return "." not in name or any(name.endswith(f".{suffix}") for suffix in LOCAL_HOST_SUFFIXES)


def _refusals(settings: Settings) -> list[str]:
    """Every production problem of `settings` (the signing secret aside), one line each."""
    problems: list[str] = []
    if _is_local_host_name(settings.smtp.hostname):
        problems.append(
            f"smtp.hostname: {settings.smtp.hostname} is not a name other mail servers can "
            "reach (unless set, it is the system's host name) — set it to this MX host's "
            "public name, such as mx.example.com: users are told to point their domains' MX "
            "records at it, and approval replies are addressed to it"
        )
    if settings.shared_domain and _is_reserved_domain(settings.shared_domain):
        problems.append(
            f"shared_domain: {settings.shared_domain} is a reserved name that cannot receive "
            'mail — set it to a domain whose MX points at this gateway, or to "" to disable '
            "slug registration"
        )
    if settings.http.public_url == DEVELOPMENT_PUBLIC_URL:
        problems.append(
            f"http.public_url: still the development default {DEVELOPMENT_PUBLIC_URL} — set it "
            "to the https:// address people reach this gateway at (magic links use it)"
        )
    for setting, token, unset in (
        ("operators.selftest_secret", settings.operators.selftest_secret, "refuse GET /selftest"),
        ("metrics.token", settings.metrics.token, "ask scrapers for none"),
    ):
        weakness = secret_weakness(token) if token else None
        if weakness is not None:
            problems.append(
                f"{setting}: {weakness} — use {MIN_SECRET_BYTES} random bytes' worth (64 hex "
                f"digits), e.g. the output of `{GENERATE_SECRET}`, or leave it unset to {unset}"
            )
    relay = settings.outbound_smtp
    if relay.tls == "none" and (relay.username or relay.password):
        problems.append(
            'outbound_smtp.tls: "none" would send the relay password in clear text — use '
            '"starttls" or "implicit" in production'
        )
    return problems


def check_production(settings: Settings) -> list[str]:
    """Refuse settings unfit for production (ConfigError naming every bad key, one line);
    return warnings about risky ones. Does nothing in development."""
    if not settings.is_production:
        return []
    secret_problem = _signing_secret_problem(settings)
    problems = [secret_problem, *_refusals(settings)] if secret_problem else _refusals(settings)
    if problems:
        raise ConfigError("; ".join(problems))
    warnings: list[str] = []
    if settings.smtp.tls_cert is None:
        warnings.append(
            "smtp.tls_cert/smtp.tls_key are not set: inbound SMTP offers no STARTTLS, so mail "
            "reaches this gateway unencrypted — set both to a certificate for smtp.hostname"
        )
    if settings.http.public_url.startswith("http://"):
        warnings.append(
            "http.public_url is plain http://: magic links travel unencrypted — put the API "
            "behind TLS and set an https:// public_url"
        )
    if settings.webhooks.allow_private:
        warnings.append(
            "webhooks.allow_private is true: agents may point webhooks at this host's private "
            "network — turn it off unless every user is trusted"
        )
    return warnings
