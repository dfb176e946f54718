"""DKIM and ARC verification: the RFC 8463 example, fresh keys, and every failure mode."""

from __future__ import annotations

import base64
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dkim
import nacl.signing
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from e2a_gateway.mailauth.dkim import MAX_SIGNATURES, verify_arc, verify_dkim
from e2a_gateway.mailauth.resolver import FixtureResolver, Zone

pytestmark = pytest.mark.backend_independent

DATA = Path(__file__).parent / "data" / "mailauth"

# RFC 8463 appendix A: the example message signed with ed25519 (brisbane) and RSA (test),
# and the two key records of section A.2.
RFC8463_KEYS: Zone = {
    "brisbane._domainkey.football.example.com": {
        "TXT": ["v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="]
    },
    "test._domainkey.football.example.com": {
        "TXT": [
            "v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWRiGs5V6NpP3idY"
            "6Wk08a5qhdR6wy5bdOKb2jLQiY/J16JYi0Qvx/byYzCNb3W91y3FutACDfzwQ/BC/e/8uBsCR+yz1Lxj"
            "+PL6lHvqMKrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3Ip3G+2kryOTIKT+l/K4w3QIDAQAB"
        ]
    },
}

MESSAGE = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: agent@agents.test\r\n"
    b"Subject: Quarterly numbers\r\n"
    b"Date: Mon, 01 Jan 2024 10:00:00 +0000\r\n"
    b"Message-ID: <q1@example.com>\r\n"
    b"\r\n"
    b"The numbers are in.\r\n"
    b"Regards, Alice\r\n"
)


RSA_512_PRIVATE = (
    b"-----BEGIN PRIVATE KEY-----\n"
    b"MIIBVAIBADANBgkqhkiG9w0BAQEFAASCAT4wggE6AgEAAkEA0zCLEZGIYk7PZ1iF\n"
    b"5S3UVnn6LCTVpMs8qC6+RKY2SltvMpQSYiIaf94ylg7suu8lDnwAhw9XKu8LgFRU\n"
    b"WYCAUQIDAQABAkA9aQM3c5s2Ava6dXpR3xa8orGFfpyFU/fqa9U1/yMQUaiaRdte\n"
    b"67pnihfFojflCNwto6oOw8nNlhBIgmxs1/0lAiEA+fxh4rScRtQYGPtDcnDSPyLx\n"
    b"iEXAvfMwbbO9DnQDg2cCIQDYRTjJbQca+MfeeX5c67TTq7wEIZRWRi/xMwmvoIQD\n"
    b"hwIgFBNHjRwx/KIluUPcW8FhsP5OZUIsw1RXTEgF47Y/XfsCIQCwcJDqq/tfAtY0\n"
    b"59OyxU3KXtJOYILfe/WDB0uAsCjjowIgW5GXIS2+BLSprAgOBnLL62sa/8mi5pTW\n"
    b"DbgXkKfng4w=\n"
    b"-----END PRIVATE KEY-----\n"
)
"""A 512-bit RSA key, as some old signers still use (the cryptography package will not make one)."""


@dataclass(frozen=True)
class SigningKey:
    """A DKIM key pair for one selector of one domain, and its DNS record."""

    domain: str
    selector: str
    algorithm: bytes
    private: bytes
    public_record: str

    @property
    def record_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"

    def zone(self) -> Zone:
        return {self.record_name: {"TXT": [self.public_record]}}

    def sign(
        self, message: bytes, canonicalize: tuple[bytes, bytes] = (b"relaxed", b"relaxed")
    ) -> bytes:
        """`message` with this key's DKIM-Signature prepended."""
        signature = dkim.sign(
            message,
            self.selector.encode(),
            self.domain.encode(),
            self.private,
            canonicalize=canonicalize,
            signature_algorithm=self.algorithm,
        )
        return bytes(signature) + message


@functools.cache
def _rsa_private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def rsa_key(domain: str, selector: str = "rsa1") -> SigningKey:
    """A 2048-bit RSA key (one per test run, shared by every domain that asks)."""
    key = _rsa_private_key()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    record = f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}"
    return SigningKey(domain, selector, b"rsa-sha256", private, record)


def ed25519_key(domain: str, selector: str = "ed1") -> SigningKey:
    """A fresh ed25519 key (RFC 8463)."""
    key = nacl.signing.SigningKey.generate()
    private = base64.b64encode(bytes(key))
    public = base64.b64encode(bytes(key.verify_key)).decode()
    record = f"v=DKIM1; k=ed25519; p={public}"
    return SigningKey(domain, selector, b"ed25519-sha256", private, record)


def test_rfc8463_example_verifies_both_signatures() -> None:
    message = (DATA / "rfc8463-signed.eml").read_bytes()
    verdict = verify_dkim(FixtureResolver.from_zone(RFC8463_KEYS), message)
    assert verdict.result == "pass"
    assert [(sig.result, sig.selector) for sig in verdict.signatures] == [
        ("pass", "brisbane"),
        ("pass", "test"),
    ]
    assert verdict.passed_domains == ("football.example.com", "football.example.com")


def test_rfc8463_example_altered_body_fails_both() -> None:
    message = (DATA / "rfc8463-signed.eml").read_bytes().replace(b"hungry", b"thirsty")
    verdict = verify_dkim(FixtureResolver.from_zone(RFC8463_KEYS), message)
    assert [sig.result for sig in verdict.signatures] == ["fail", "fail"]
    assert verdict.result == "fail"
    assert verdict.passed_domains == ()


KEY_MAKERS = [pytest.param(rsa_key, id="rsa"), pytest.param(ed25519_key, id="ed25519")]
CANONICALISATIONS = [
    pytest.param((header, body), id=f"{header.decode()}/{body.decode()}")
    for header in (b"simple", b"relaxed")
    for body in (b"simple", b"relaxed")
]


@pytest.mark.parametrize("make_key", KEY_MAKERS)
@pytest.mark.parametrize("canonicalize", CANONICALISATIONS)
def test_fresh_signature_passes(
    make_key: Callable[[str], SigningKey], canonicalize: tuple[bytes, bytes]
) -> None:
    key = make_key("example.com")
    verdict = verify_dkim(FixtureResolver.from_zone(key.zone()), key.sign(MESSAGE, canonicalize))
    assert verdict.result == "pass"
    assert verdict.signatures[0].domain == "example.com"
    assert verdict.signatures[0].selector == key.selector


@pytest.mark.parametrize("make_key", KEY_MAKERS)
def test_body_altered_after_signing_fails(make_key: Callable[[str], SigningKey]) -> None:
    key = make_key("example.com")
    signed = key.sign(MESSAGE).replace(b"numbers are in", b"numbers are IN")
    verdict = verify_dkim(FixtureResolver.from_zone(key.zone()), signed)
    assert verdict.result == "fail"
    assert "body hash" in verdict.signatures[0].reason


def test_header_altered_after_signing_fails() -> None:
    key = rsa_key("example.com")
    signed = key.sign(MESSAGE).replace(b"Quarterly numbers", b"Wire the money")
    verdict = verify_dkim(FixtureResolver.from_zone(key.zone()), signed)
    assert (verdict.result, verdict.signatures[0].reason) == ("fail", "signature did not verify")


def test_relaxed_survives_header_whitespace_but_simple_does_not() -> None:
    key = ed25519_key("example.com")
    resolver = FixtureResolver.from_zone(key.zone())

    def rewrap(signed: bytes) -> bytes:
        return signed.replace(b"Subject: Quarterly numbers", b"subject:  Quarterly   numbers")

    relaxed = rewrap(key.sign(MESSAGE, (b"relaxed", b"relaxed")))
    simple = rewrap(key.sign(MESSAGE, (b"simple", b"simple")))
    assert verify_dkim(resolver, relaxed).result == "pass"
    assert verify_dkim(resolver, simple).result == "fail"


def test_missing_key_is_permerror() -> None:
    """RFC 6376 6.1.2: no key record is PERMFAIL (no key for signature): permerror."""
    signed = rsa_key("example.com").sign(MESSAGE)
    verdict = verify_dkim(FixtureResolver(), signed)
    assert (verdict.result, verdict.signatures[0].reason) == ("permerror", "no key for signature")


def test_revoked_key_is_permerror() -> None:
    """RFC 6376 3.6.1: an empty p= is a revoked key; 6.1.2 makes that PERMFAIL (key revoked)."""
    key = rsa_key("example.com")
    resolver = FixtureResolver({key.record_name: ["v=DKIM1; k=rsa; p="]})
    verdict = verify_dkim(resolver, key.sign(MESSAGE))
    assert (verdict.result, verdict.signatures[0].reason) == ("permerror", "key revoked")


def test_malformed_key_is_permerror() -> None:
    key = rsa_key("example.com")
    resolver = FixtureResolver({key.record_name: ["v=DKIM1; k=rsa; p=bm90IGEga2V5"]})
    verdict = verify_dkim(resolver, key.sign(MESSAGE))
    assert verdict.result == "permerror"
    assert verdict.signatures[0].reason.startswith("unusable key")


def test_a_key_under_1024_bits_is_permerror_though_the_signature_verifies() -> None:
    """RFC 8301 section 3.2: verifiers must not consider signatures with RSA keys of fewer
    than 1024 bits valid; one that verifies with such a key is not a pass."""
    public = serialization.load_pem_private_key(RSA_512_PRIVATE, None).public_key()
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    record = f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"
    signed = dkim.sign(MESSAGE, b"old", b"example.com", RSA_512_PRIVATE)
    resolver = FixtureResolver({"old._domainkey.example.com": [record]})
    verdict = verify_dkim(resolver, bytes(signed) + MESSAGE)
    assert (verdict.result, verdict.signatures[0].reason) == (
        "permerror",
        "unusable key: public key too small: 512",
    )


def test_key_of_another_algorithm_is_permerror() -> None:
    """RFC 6376 6.1.2 step 8: a key unsuitable for the signature's a= is PERMFAIL
    (inappropriate key algorithm), not a signature that failed to verify."""
    rsa_signed = rsa_key("example.com", "sel").sign(MESSAGE)
    ed_zone = ed25519_key("example.com", "sel").zone()
    verdict = verify_dkim(FixtureResolver.from_zone(ed_zone), rsa_signed)
    assert (verdict.result, verdict.signatures[0].reason) == (
        "permerror",
        "unusable key: its k= is not the signature's key type",
    )


@pytest.mark.parametrize(
    ("restriction", "identity", "expected"),
    [
        ("h=sha256", None, "pass"),
        ("h=sha1 : sha256", None, "pass"),
        ("h=sha1", None, "permerror"),
        ("t=s", b"alice@example.com", "pass"),
        ("t=y:s", b"alice@mail.example.com", "permerror"),
        ("t=y", b"alice@mail.example.com", "pass"),
    ],
)
def test_a_key_record_restricting_its_use_is_obeyed(
    restriction: str, identity: bytes | None, expected: str
) -> None:
    """RFC 6376 section 3.6.1: a key's h= names the hashes it may be used with (6.1.2 step 6:
    any other is PERMFAIL, inappropriate hash algorithm), and its t=s flag forbids an i= in a
    subdomain of d=. A signature the key's owner did not allow it for does not pass."""
    key = rsa_key("example.com")
    signed = dkim.sign(MESSAGE, b"rsa1", b"example.com", key.private, identity=identity)
    record = f"{key.public_record}; {restriction}"
    verdict = verify_dkim(FixtureResolver({key.record_name: [record]}), bytes(signed) + MESSAGE)
    assert verdict.result == expected


def test_dns_trouble_is_temperror() -> None:
    key = rsa_key("example.com")
    resolver = FixtureResolver.from_zone(key.zone())
    resolver.failing.add(key.record_name)
    verdict = verify_dkim(resolver, key.sign(MESSAGE))
    assert verdict.result == "temperror"


def test_unsigned_message_is_none() -> None:
    assert verify_dkim(FixtureResolver(), MESSAGE).result == "none"
    assert verify_dkim(FixtureResolver(), MESSAGE).signatures == ()


def test_unusable_signature_field_is_neutral() -> None:
    broken = b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=sel\r\n" + MESSAGE
    verdict = verify_dkim(FixtureResolver(), broken)
    assert verdict.result == "neutral"
    assert (verdict.signatures[0].domain, verdict.signatures[0].selector) == ("example.com", "sel")


def test_identity_that_is_the_bare_signing_domain_is_neutral() -> None:
    """`i=example.com` (no `@`) for `d=example.com`: dkimpy indexed past the start of it and
    raised IndexError, which left the message unstorable (451 until it bounced)."""
    key = rsa_key("example.com")
    signed = key.sign(MESSAGE).replace(b"i=@example.com;", b"i=example.com;", 1)
    verdict = verify_dkim(FixtureResolver.from_zone(key.zone()), signed)
    assert verdict.result == "neutral"
    assert verdict.signatures[0].domain == "example.com"
    assert verdict.signatures[0].reason.startswith("unusable signature")


def test_signature_not_covering_from_is_neutral() -> None:
    """RFC 6376 6.1.1: a signature whose h= lacks From must be ignored, whatever it signs."""
    key = rsa_key("example.com")
    signed = re.sub(rb"h=[^;]*;", b"h=to : subject;", key.sign(MESSAGE), count=1)
    verdict = verify_dkim(FixtureResolver.from_zone(key.zone()), signed)
    assert (verdict.result, verdict.signatures[0].reason) == (
        "neutral",
        "unusable signature: From field not signed",
    )


def test_rsa_sha1_is_not_taken() -> None:
    """RFC 8301 section 3.1: verifiers must not consider rsa-sha1 signatures valid."""
    key = rsa_key("example.com")
    signed = dkim.sign(
        MESSAGE, b"rsa1", b"example.com", key.private, signature_algorithm=b"rsa-sha1"
    )
    verdict = verify_dkim(FixtureResolver.from_zone(key.zone()), bytes(signed) + MESSAGE)
    assert verdict.result == "permerror"
    assert "rsa-sha1" in verdict.signatures[0].reason


def test_a_body_longer_than_its_l_length_is_not_taken() -> None:
    """RFC 6376 section 8.2: text after the signed length is unsigned, and could be added on
    the way; the signature passes only while its l= covers the whole body."""
    key = rsa_key("example.com")
    signed = bytes(dkim.sign(MESSAGE, b"rsa1", b"example.com", key.private, length=True))
    resolver = FixtureResolver.from_zone(key.zone())
    assert verify_dkim(resolver, signed + MESSAGE).result == "pass"  # l= covers it all
    added = signed + MESSAGE + b"PS: wire the deposit to IBAN XX00 today.\r\n"
    verdict = verify_dkim(resolver, added)
    assert verdict.result == "neutral"
    assert "l=" in verdict.signatures[0].reason


def test_a_signed_message_whose_header_cannot_be_parsed_is_permerror() -> None:
    key = rsa_key("example.com")
    signed = key.sign(MESSAGE)
    broken = signed.replace(b"\r\n\r\n", b"\r\nthis is not a header\r\n\r\n", 1)
    verdict = verify_dkim(FixtureResolver.from_zone(key.zone()), broken)
    assert (verdict.result, verdict.signatures) == ("permerror", ())


@pytest.mark.parametrize(
    "header",
    [b"X-Mailer : Outlook 1.0\r\n", b"this is not a header\r\n"],
    ids=["obsolete-syntax", "garbage"],
)
def test_an_unsigned_message_is_none_whatever_its_header_holds(header: bytes) -> None:
    """RFC 5322 section 4.5.3 still lets a field name be followed by spaces before its colon;
    dkimpy refuses to parse such a header, but a message with no signature is `none`."""
    message = b"From: a@example.org\r\n" + header + b"Subject: hi\r\n\r\nbody\r\n"
    verdict = verify_dkim(FixtureResolver(), message)
    assert (verdict.result, verdict.signatures) == ("none", ())


def test_one_passing_signature_among_failures_passes() -> None:
    good = rsa_key("example.com", "good")
    forged = ed25519_key("mailer.example.net", "stale")
    published = ed25519_key("mailer.example.net", "stale")  # another key under that name
    signed = forged.sign(good.sign(MESSAGE))
    resolver = FixtureResolver.from_zone({**good.zone(), **published.zone()})
    verdict = verify_dkim(resolver, signed)
    assert verdict.result == "pass"
    assert [sig.result for sig in verdict.signatures] == ["fail", "pass"]
    assert verdict.passed_domains == ("example.com",)


def test_signatures_beyond_the_limit_are_not_checked() -> None:
    key = ed25519_key("example.com")
    signed = MESSAGE
    for _ in range(MAX_SIGNATURES + 2):
        signed = key.sign(signed)
    verdict = verify_dkim(FixtureResolver.from_zone(key.zone()), signed)
    assert len(verdict.signatures) == MAX_SIGNATURES


LIST_MESSAGE = MESSAGE.replace(
    b"\r\n\r\n",
    b"\r\nAuthentication-Results: lists.example.org; dkim=pass header.d=example.com\r\n\r\n",
    1,
)


def arc_sealed(message: bytes, key: SigningKey) -> bytes:
    """`message` with an ARC set added by `key`'s domain acting as a mailing list."""
    arc_set = dkim.arc_sign(
        message,
        key.selector.encode(),
        key.domain.encode(),
        key.private,
        key.domain.encode(),
    )
    return b"".join(arc_set) + message


def test_arc_chain_passes() -> None:
    key = rsa_key("lists.example.org", "arc")
    sealed = arc_sealed(LIST_MESSAGE, key)
    assert verify_arc(FixtureResolver.from_zone(key.zone()), sealed) == "pass"


def test_arc_chain_with_altered_body_fails() -> None:
    key = rsa_key("lists.example.org", "arc")
    sealed = arc_sealed(LIST_MESSAGE, key) + b"P.S. click here\r\n"
    assert verify_arc(FixtureResolver.from_zone(key.zone()), sealed) == "fail"


def test_arc_without_key_fails_and_dns_trouble_is_temperror() -> None:
    key = rsa_key("lists.example.org", "arc")
    sealed = arc_sealed(LIST_MESSAGE, key)
    assert verify_arc(FixtureResolver(), sealed) == "fail"
    resolver = FixtureResolver.from_zone(key.zone())
    resolver.failing.add(key.record_name)
    assert verify_arc(resolver, sealed) == "temperror"


def test_no_arc_headers_is_none() -> None:
    assert verify_arc(FixtureResolver(), MESSAGE) is None
    assert verify_arc(FixtureResolver(), b"garbage line\r\n\r\n") is None


@pytest.mark.parametrize(
    "fold",
    [
        pytest.param(b"ARC-Message-Signature:\r\n\ti=1;", id="folded-with-a-tab"),
        pytest.param(b"ARC-Message-Signature:i=1;", id="no-space"),
        pytest.param(b"ARC-Message-Signature: i=1 ;", id="space-before-semicolon"),
    ],
)
def test_arc_message_signature_dkimpy_cannot_find_is_a_failed_chain(fold: bytes) -> None:
    """dkimpy looks its AMS up again by the bytes ` i=1;` and raised IndexError when they were
    spelt otherwise; an exception here left the message unstorable (451 until it bounced)."""
    key = rsa_key("lists.example.org", "arc")
    sealed = arc_sealed(LIST_MESSAGE, key).replace(b"ARC-Message-Signature: i=1;", fold, 1)
    assert verify_arc(FixtureResolver.from_zone(key.zone()), sealed) == "fail"


def test_arc_seal_checked_with_a_key_of_another_type_is_a_failed_chain() -> None:
    """An RSA seal whose selector publishes an ed25519 key: dkimpy raised nacl's ValueError."""
    key = rsa_key("lists.example.org", "arc")
    other = ed25519_key("lists.example.org", "arc")
    assert verify_arc(FixtureResolver.from_zone(other.zone()), arc_sealed(LIST_MESSAGE, key)) == (
        "fail"
    )


class CountingResolver(FixtureResolver):
    """A fixture resolver that records the TXT names asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[str] = []

    def txt(self, name: str) -> list[str]:
        self.asked.append(name)
        return super().txt(name)


def unsigned_arc_sets(count: int, domain: str, selector: str) -> bytes:
    """`count` complete ARC sets, newest first, well formed but signed by nobody."""
    sets = b""
    for instance in range(count, 0, -1):
        cv = b"none" if instance == 1 else b"pass"
        tags = b"i=%d; a=rsa-sha256; d=%s; s=%s" % (instance, domain.encode(), selector.encode())
        sets += (
            b"ARC-Seal: %s; cv=%s; b=AAAA\r\n" % (tags, cv)
            + b"ARC-Message-Signature: %s; h=from; bh=AAAA; b=AAAA\r\n" % tags
            + b"ARC-Authentication-Results: i=%d; %s; spf=pass\r\n" % (instance, domain.encode())
        )
    return sets


def test_arc_chain_of_more_than_fifty_sets_fails_unchecked() -> None:
    """RFC 8617 section 4.2.1: at most 50 sets. Each set checked costs key lookups and a hash
    of the whole body; hundreds fit in a header section, minutes of work per message."""
    key = rsa_key("lists.example.org", "arc")
    resolver = CountingResolver()
    resolver.load_zone(key.zone())
    chain = unsigned_arc_sets(51, key.domain, key.selector)
    assert verify_arc(resolver, chain + LIST_MESSAGE) == "fail"
    assert resolver.asked == []


def test_arc_checks_only_the_newest_message_signature() -> None:
    """RFC 8617 section 5.2: the newest ARC-Message-Signature must validate, older ones need
    not (the mail was changed since, which is why it is sealed); every seal is checked. The
    verdict never depended on the older ones, only the work (a body hash each) did."""
    first = rsa_key("lists.example.org", "arc")
    second = rsa_key("forwarder.example.net", "arc2")
    once = arc_sealed(LIST_MESSAGE, first)
    twice = arc_sealed(
        once.replace(
            b"\r\n\r\n",
            b"\r\nAuthentication-Results: forwarder.example.net; arc=pass\r\n\r\n",
            1,
        ),
        second,
    )
    resolver = CountingResolver()
    resolver.load_zone({**first.zone(), **second.zone()})
    assert verify_arc(resolver, twice) == "pass"
    asked = [name.rstrip(".") for name in resolver.asked]
    # the newest seal and message signature, the first seal, not the first message signature
    assert (asked.count(second.record_name), asked.count(first.record_name)) == (2, 1)
    altered_newest = twice.replace(b"The numbers are in.", b"The numbers are out.")
    assert verify_arc(resolver, altered_newest) == "fail"


@pytest.mark.parametrize(
    "added",
    [
        b"Subject: Wire the deposit to IBAN XX00 today\r\n",
        b"Reply-To: payments@attacker.test\r\n",
        b"Content-Type: text/html\r\n",
    ],
    ids=["subject", "reply-to", "content-type"],
)
def test_a_once_only_field_it_signs_given_again_unsigned_is_not_taken(added: bytes) -> None:
    """RFC 6376 section 8.15: a verifier checks the bottom instance of a field it signed; a
    second one put above it is unsigned, yet it is the one readers show. A signature that
    covers fewer instances of a once-only field (RFC 5322 section 3.6, RFC 2045) than the
    message holds does not pass."""
    key = rsa_key("example.com")
    once = b"Reply-To: alice@example.com\r\nContent-Type: text/plain\r\nSubject:"
    message = MESSAGE.replace(b"Subject:", once, 1)
    signature = dkim.sign(
        message,
        b"rsa1",
        b"example.com",
        key.private,
        include_headers=[b"from", b"to", b"reply-to", b"subject", b"content-type"],
    )
    resolver = FixtureResolver.from_zone(key.zone())
    assert verify_dkim(resolver, bytes(signature) + message).result == "pass"
    verdict = verify_dkim(resolver, added + bytes(signature) + message)
    assert verdict.result == "neutral"
    assert "fields than it signs" in verdict.signatures[0].reason


def test_once_only_fields_signed_over_their_count_pass() -> None:
    """Signing a field more times than it appears (over-signing, RFC 6376 section 5.4.2) is
    how a signer guards against the above: such a signature passes."""
    key = rsa_key("example.com")
    include = [b"from", b"from", b"subject", b"subject", b"reply-to", b"to", b"date"]
    signature = dkim.sign(MESSAGE, b"rsa1", b"example.com", key.private, include_headers=include)
    verdict = verify_dkim(FixtureResolver.from_zone(key.zone()), bytes(signature) + MESSAGE)
    assert verdict.result == "pass"
