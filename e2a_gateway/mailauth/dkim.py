"""DKIM (RFC 6376, RSA and RFC 8463 ed25519) and ARC (RFC 8617) verification with dkimpy.

Keys are fetched through our Resolver, never by dkimpy itself. Each signature gets an
RFC 8601 result (RFC 6376 section 6.1 outcomes mapped as below); nothing here raises for a
bad message or bad DNS:

- pass: the signature verified with the published key;
- fail: the body hash or the signature did not match (the message was altered, or forged);
- neutral: the signature field itself is unusable (syntax, missing tags, unknown algorithm,
  expired, From not among the signed fields), or leaves part of what readers show unsigned (an
  `l=` shorter than the body, a once-only field given more often than it signs) — RFC 8601
  section 2.7.1's "contained syntax errors or were not otherwise able to be processed";
- permerror: the key cannot be used — no key record ("no key for signature"), revoked
  (empty `p=`), malformed, smaller than 1024 bits (RFC 8301), or not for this signature (its
  `k=`, `h=` or `t=s` forbids it): RFC 6376's PERMFAIL cases that are not a verification
  failure;
- temperror: DNS could not answer for the key (RFC 6376's TEMPFAIL).
"""

from __future__ import annotations

import binascii
import functools
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from e2a_gateway.mailauth.dmarc import normalise_domain
from e2a_gateway.mailauth.dns_answers import DnsTemporaryError, Resolver
from e2a_gateway.mailauth.results import AuthResult, DkimSignatureResult
from e2a_gateway.rfc5322 import header_section

if TYPE_CHECKING:
    import dkim

# RFC 6376 section 6.1 lets a verifier limit the signatures it checks; each costs a lookup.
MAX_SIGNATURES = 8

# RFC 8617 section 4.2.1: a chain has at most 50 ARC sets; a longer one fails unchecked.
MAX_ARC_SETS = 50

# Fields a message has at most once (RFC 5322 section 3.6, RFC 2045): readers show the first.
_ONCE_ONLY_FIELDS = (
    b"date",
    b"from",
    b"sender",
    b"reply-to",
    b"to",
    b"cc",
    b"bcc",
    b"message-id",
    b"in-reply-to",
    b"references",
    b"subject",
    b"mime-version",
    b"content-type",
    b"content-transfer-encoding",
)

# When several signatures disagree, the message's DKIM result is the first of these present.
_PRECEDENCE: tuple[AuthResult, ...] = ("pass", "temperror", "fail", "permerror", "neutral")


@dataclass(frozen=True)
class DkimVerdict:
    """The message's DKIM result and the verdict on each signature checked."""

    result: AuthResult
    signatures: tuple[DkimSignatureResult, ...]

    @property
    def passed_domains(self) -> tuple[str, ...]:
        """The `d=` domains of the signatures that passed."""
        return tuple(sig.domain for sig in self.signatures if sig.result == "pass")

    @property
    def temperror_domains(self) -> tuple[str, ...]:
        """The `d=` domains of the signatures DNS trouble left unchecked (their key unread)."""
        return tuple(sig.domain for sig in self.signatures if sig.result == "temperror")


def verify_dkim(resolver: Resolver, message: bytes) -> DkimVerdict:
    """Verify the message's DKIM signatures (at most MAX_SIGNATURES, topmost first).

    `none` when the message has no signature, whatever else its header holds (a field in
    RFC 5322's obsolete syntax, `X-Mailer : …`, which dkimpy cannot parse, among them);
    `permerror` when a signed message's header cannot be parsed.
    """
    headers_part = header_section(message)
    if b"dkim-signature" not in headers_part.lower():
        return DkimVerdict("none", ())
    dkim = dkimpy()
    verifier = _parsed(dkim.DKIM, message)
    if verifier is None:
        return DkimVerdict("permerror", ())
    headers = [value for name, value in verifier.headers if name.lower() == b"dkim-signature"]
    counts = Counter(name.lower() for name, _value in verifier.headers)
    signatures = tuple(
        _verify_signature(resolver, verifier, index, value, counts)
        for index, value in enumerate(headers[:MAX_SIGNATURES])
    )
    results = {sig.result for sig in signatures}
    overall: AuthResult = next((result for result in _PRECEDENCE if result in results), "none")
    return DkimVerdict(overall, signatures)


def verify_arc(resolver: Resolver, message: bytes) -> AuthResult | None:
    """The ARC chain's validation result (pass or fail; temperror on DNS trouble).

    None when the message carries no ARC header fields, or its header cannot be parsed.
    """
    dkim = dkimpy()
    arc = _parsed(_newest_signature_arc(), _needed_part(message, b"arc-"))
    if arc is None or not any(name.lower() in dkim.ARC.ARC_HEADERS for name, _ in arc.headers):
        return None

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        records = resolver.txt(name.decode("utf-8", "replace"))
        return records[0].encode("utf-8") if records else None

    try:
        arc.newest, _headers = arc.sorted_arc_headers()
        if arc.newest > MAX_ARC_SETS:
            return "fail"
        chain_validation, _sets, _reason = arc.verify(dnsfunc=dnsfunc)
    except DnsTemporaryError:
        return "temperror"
    except Exception:  # dkimpy's ARC code raises plain errors on odd input (IndexError for an
        # ARC-Message-Signature not spelt ` i=N;`, ValueError for a key of another type): a
        # chain it cannot follow has not been shown to pass.
        return "fail"
    return "pass" if chain_validation == dkim.CV_Pass else "fail"


@functools.cache
def _newest_signature_arc() -> Any:
    """dkimpy's ARC verifier, checking only the newest ARC-Message-Signature of a chain (its
    `newest` instance): RFC 8617 section 5.2 asks for that one and every seal, and dkimpy's
    verdict reads no other, yet it checked each — a key lookup and a hash of the whole body
    apiece, minutes of work for a message of many sets."""
    arc: Any = dkimpy().ARC

    class NewestSignatureArc(arc):  # type: ignore[misc]
        newest = 0

        def verify_sig(
            self,
            sig: dict[bytes, bytes],
            include_headers: list[bytes],
            sig_header: tuple[bytes, bytes],
            dnsfunc: Any,
        ) -> bool:
            if sig_header[0].lower() == b"arc-message-signature" and not self._newest(sig):
                return False  # not looked at: dkimpy's verdict reads only the newest's
            return bool(super().verify_sig(sig, include_headers, sig_header, dnsfunc))

        def _newest(self, sig: dict[bytes, bytes]) -> bool:
            try:
                return int(sig.get(b"i", b"")) == self.newest
            except ValueError:
                return False

    return NewestSignatureArc


def _needed_part(message: bytes, marker: bytes) -> bytes:
    """The whole message when its header section mentions `marker` (lowercase), else just the
    header section: dkimpy parses every line it is given, and unsigned mail needs no body."""
    headers = header_section(message)
    if len(headers) == len(message) or marker in headers.lower():
        return message
    return headers + b"\r\n"


def _parsed(kind: Any, message: bytes) -> Any:
    """`kind(message)` (dkimpy's DKIM or ARC); None when the header section is malformed."""
    try:
        return kind(message)
    except (dkimpy().DKIMException, IndexError):  # IndexError: a folded line before any field
        return None


def _verify_signature(
    resolver: Resolver,
    verifier: dkim.DKIM,
    index: int,
    value: bytes,
    field_counts: Counter[bytes],
) -> DkimSignatureResult:
    dkim = dkimpy()
    tags = _tags(value)
    domain = normalise_domain(tags.get(b"d", b"").decode("utf-8", "replace"))
    selector = tags.get(b"s", b"").decode("utf-8", "replace")

    def verdict(result: AuthResult, reason: str = "") -> DkimSignatureResult:
        return DkimSignatureResult(result, domain, selector, reason)

    try:
        signature, include_headers, signature_headers = verifier.verify_headerprep(index)
    except dkim.DKIMException as exc:
        return verdict("neutral", f"unusable signature: {exc}")
    except IndexError:  # dkimpy's i= check reads past an `i=` that is just the `d=` domain
        return verdict("neutral", "unusable signature: i= is not an address in d=")
    if b"from" not in include_headers:  # RFC 6376 section 6.1.1; dkimpy does not check it
        return verdict("neutral", "unusable signature: From field not signed")
    unsigned = _unsigned_once_only_field(include_headers, field_counts)
    if unsigned is not None:
        name = unsigned.decode("ascii")
        return verdict("neutral", f"unusable signature: more {name} fields than it signs")
    if signature.get(b"a", b"").lower() == b"rsa-sha1":  # dkimpy still verifies it
        return verdict("permerror", "unusable signature: rsa-sha1 (RFC 8301 section 3.1)")
    if _leaves_body_unsigned(dkim, signature, verifier.body):
        return verdict("neutral", "unusable signature: the body extends past its l= length")
    key_name = f"{selector}._domainkey.{domain}"
    try:
        records = resolver.txt(key_name)
    except DnsTemporaryError as exc:
        return verdict("temperror", f"key unavailable: {exc}")
    if not records:
        return verdict("permerror", "no key for signature")
    key = records[0].encode("utf-8")
    key_tags = _tags(key)
    if key_tags.get(b"p") == b"":
        return verdict("permerror", "key revoked")
    refusal = _key_refusal(key_tags, signature)
    if refusal is not None:
        return verdict("permerror", f"unusable key: {refusal}")
    try:
        verifier.pk, verifier.keysize, verifier.ktag, verifier.seqtlsrpt = dkim.evaluate_pk(
            key_name, key
        )
    except (dkim.DKIMException, binascii.Error) as exc:
        return verdict("permerror", f"unusable key: {exc}")
    try:
        valid = verifier.verify_sig_process(
            signature, include_headers, signature_headers[index], None
        )
    except dkim.ValidationError as exc:  # the body hash did not match (or a TLSRPT-only key)
        return verdict("fail", str(exc))
    except dkim.DKIMException as exc:  # a key too small, or of the wrong type
        return verdict("permerror", f"unusable key: {exc}")
    except ValueError as exc:  # an ed25519 signature of the wrong length
        return verdict("fail", f"malformed signature: {exc}")
    return verdict("pass") if valid else verdict("fail", "signature did not verify")


def _unsigned_once_only_field(
    include_headers: list[bytes], field_counts: Counter[bytes]
) -> bytes | None:
    """A once-only field the message has more instances of than the signature's `h=` names,
    if any. The signature covers the bottom instances (RFC 6376 section 5.4.2), yet readers
    show the first: one put above a signed Subject, Reply-To or Content-Type would be read as
    signed (RFC 6376 section 8.15). Signers guard against it by naming such a field once more
    than it appears; a signature that does not is not taken when the message has more."""
    for name in _ONCE_ONLY_FIELDS:
        if 0 < include_headers.count(name) < field_counts[name]:
            return name
    return None


def _key_refusal(key: dict[bytes, bytes], signature: dict[bytes, bytes]) -> str | None:
    """Why the key record does not allow `signature`, if it does not (RFC 6376 section 3.6.1,
    which dkimpy leaves unchecked but for the key's parsing): its `k=` is another key type
    than the signature's `a=` (section 6.1.2 step 8), its `h=` does not name the signature's
    hash (step 6), or its `t=s` flag forbids the `i=` domain to be a subdomain of `d=`."""
    key_type, _dash, hash_name = signature.get(b"a", b"").lower().partition(b"-")
    if key.get(b"k", b"rsa").lower() != key_type:
        return "its k= is not the signature's key type"
    if b"h" in key and hash_name not in _colon_list(key[b"h"]):
        return f"its h= does not allow {hash_name.decode('ascii', 'replace')}"
    if b"i" in signature and b"s" in _colon_list(key.get(b"t", b"")):
        identity_domain = signature[b"i"].rpartition(b"@")[2]
        if identity_domain.lower() != signature.get(b"d", b"").lower():
            return "its t=s does not allow an i= in a subdomain of d="
    return None


def _colon_list(value: bytes) -> list[bytes]:
    """A key record's colon-separated list (`h=sha1:sha256`, `t=y:s`), lowercased."""
    return [item.strip().lower() for item in value.split(b":")]


def _leaves_body_unsigned(dkim: Any, signature: dict[bytes, bytes], body: bytes) -> bool:
    """Whether the signature's `l=` covers less than the whole (canonicalised) body: anything
    after it is unsigned, and could be text added on the way (RFC 6376 section 8.2), which the
    agent would read as signed. Such a signature is not taken (a bad `l=` or `c=` is dkimpy's
    to refuse)."""
    if b"l" not in signature:
        return False
    try:
        length = int(signature[b"l"])
        policy = dkim.canonicalization.CanonicalizationPolicy.from_c_value(
            signature.get(b"c", b"simple/simple")
        )
    except (ValueError, dkim.canonicalization.InvalidCanonicalizationPolicyError):
        return False
    return length < len(policy.canonicalize_body(body))


def _tags(value: bytes) -> dict[bytes, bytes]:
    """A DKIM tag=value list as a dict; {} when it cannot be parsed."""
    util = dkimpy().util
    try:
        tags: dict[bytes, bytes] = util.parse_tag_value(value)
    except util.InvalidTagValueList:
        return {}
    return tags


def dkimpy() -> Any:
    """The dkimpy module (with `dkim.util`), imported on first use rather than at start-up: it
    imports dnspython (a tenth of a second), and verification runs in worker threads."""
    import dkim
    import dkim.canonicalization
    import dkim.util

    return dkim
