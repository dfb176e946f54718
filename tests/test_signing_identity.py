"""X-E2A-Auth-* signing, checked against a verifier written here from the contract text alone."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import replace
from typing import Any

import httpx
import pytest

from e2a_gateway.inbound.identity import delivered_message
from e2a_gateway.signing.identity import (
    CopiesClaim,
    IdentityClaim,
    claim_from_headers,
    split_header_block,
    strip_auth_headers,
)
from e2a_gateway.v1.signature import AuthHeaders, verify_auth_headers

pytestmark = pytest.mark.backend_independent

SECRET = "ab" * 32
NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z


SIGNED_FIELDS = (
    "X-E2A-Auth-Verified",
    "X-E2A-Auth-Sender",
    "X-E2A-Auth-Entity-Type",
    "X-E2A-Auth-Domain-Check",
    "X-E2A-Auth-Delegation",
    "X-E2A-Auth-Timestamp",
    "X-E2A-Auth-Message-Id",
    "X-E2A-Auth-Body-Hash",
)
"""The eight values the claim signs, in the order delivery.md joins them."""


def contract_verify(headers: dict[str, str], raw: bytes, secret: str) -> bool:
    """delivery.md: hash the bytes, join eight values with \\n, HMAC-SHA256 keyed by the hex
    string's ASCII bytes, constant-time compare."""
    if hashlib.sha256(raw).hexdigest() != headers["X-E2A-Auth-Body-Hash"]:
        return False
    canonical = "\n".join(headers[name] for name in SIGNED_FIELDS)
    expected = hmac.new(secret.encode(), canonical.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, headers["X-E2A-Auth-Signature"])


def sdk_verifies(headers: dict[str, str], raw: bytes, secret: str, now: float) -> bool:
    """The SDK's verifier (what agents run) on a header dict the gateway produced."""
    return verify_auth_headers(AuthHeaders.from_headers(headers), raw, secret, now)


def claim_for(raw: bytes, timestamp: str = "2026-01-01T00:00:00Z") -> IdentityClaim:
    return IdentityClaim(
        verified=True,
        sender="alice@example.org",
        entity_type="human",
        domain_check="spf=pass; dkim=pass; dmarc=pass",
        delegation="",
        timestamp=timestamp,
        message_id="msg_0123456789abcdef01234567",
        body_hash=hashlib.sha256(raw).hexdigest(),
    )


def test_signed_headers_verify_with_an_independent_implementation() -> None:
    raw = b"Subject: hi\r\n\r\nbody\r\n"
    headers = claim_for(raw).signed_headers(SECRET)
    assert set(headers) == {
        "X-E2A-Auth-Verified",
        "X-E2A-Auth-Sender",
        "X-E2A-Auth-Entity-Type",
        "X-E2A-Auth-Domain-Check",
        "X-E2A-Auth-Delegation",
        "X-E2A-Auth-Timestamp",
        "X-E2A-Auth-Message-Id",
        "X-E2A-Auth-Body-Hash",
        "X-E2A-Auth-Signature",
    }
    assert headers["X-E2A-Auth-Verified"] == "true"
    assert contract_verify(headers, raw, SECRET)
    assert sdk_verifies(headers, raw, SECRET, NOW)
    assert claim_from_headers(headers) == claim_for(raw)


def test_copies_of_one_message_are_each_signed_for_their_own_message_id() -> None:
    raw = b"Subject: hi\r\n\r\nbody\r\n"
    shared = CopiesClaim(claim_for(raw))
    copies = {
        f"msg_copy{n:020d}": shared.signed_headers(f"msg_copy{n:020d}", SECRET) for n in (1, 2)
    }
    for message_id, headers in copies.items():
        assert headers["X-E2A-Auth-Message-Id"] == message_id
        assert headers == replace(claim_for(raw), message_id=message_id).signed_headers(SECRET)
        assert list(headers) == list(claim_for(raw).signed_headers(SECRET))
        assert contract_verify(headers, raw, SECRET)
        assert sdk_verifies(headers, raw, SECRET, NOW)
    first, second = copies.values()
    assert first["X-E2A-Auth-Signature"] != second["X-E2A-Auth-Signature"]
    swapped = {**first, "X-E2A-Auth-Message-Id": second["X-E2A-Auth-Message-Id"]}
    assert not contract_verify(swapped, raw, SECRET)
    # another owner's copy of the same message, signed by the same claim with its own secret
    other_secret = "0f" * 32
    theirs = shared.signed_headers("msg_copy3", other_secret)
    assert contract_verify(theirs, raw, other_secret)
    assert not contract_verify(theirs, raw, SECRET)
    again = f"msg_copy{1:020d}"
    assert shared.signed_headers(again, SECRET) == copies[again]  # after the other secret's


@pytest.mark.parametrize(
    ("change", "now"),
    [
        ({"X-E2A-Auth-Sender": "ceo@example.org"}, NOW),
        ({"X-E2A-Auth-Verified": "false"}, NOW),
        ({"X-E2A-Auth-Signature": "0" * 64}, NOW),
        ({}, NOW + 301),
        ({}, NOW - 31),
        ({"X-E2A-Auth-Timestamp": "yesterday"}, NOW),
        # a forged JSON body may hold lone surrogates ("\\ud800"), which no UTF-8 encodes
        ({"X-E2A-Auth-Sender": "ceo\ud800@example.org"}, NOW),
        ({"X-E2A-Auth-Signature": "\udc00" * 64}, NOW),
        ({"X-E2A-Auth-Body-Hash": "\ud800"}, NOW),
    ],
)
def test_tampering_and_stale_timestamps_are_refused(change: dict[str, str], now: float) -> None:
    raw = b"Subject: hi\r\n\r\nbody\r\n"
    headers = {**claim_for(raw).signed_headers(SECRET), **change}
    assert not sdk_verifies(headers, raw, SECRET, now)


def signed_as(raw: bytes, headers: dict[str, str]) -> dict[str, str]:
    """`headers` with the signature a forger holding the secret would compute: HMAC over the
    eight values joined as the contract joins them. Only to show which header sets sign
    alike; a forger without the secret has signatures the gateway made."""
    canonical = "\n".join(headers[name] for name in SIGNED_FIELDS)
    mac = hmac.new(SECRET.encode(), canonical.encode(), hashlib.sha256).hexdigest()
    return {**headers, "X-E2A-Auth-Signature": mac}


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("written", ["TRUE", "True", "FALSE", "False", "1", "0", "yes", "no", ""])
def test_a_verified_value_other_than_true_or_false_is_refused(signed: bool, written: str) -> None:
    """The SDK reads Verified as a boolean; were any other spelling accepted for the signed
    `false`, a receiver reading the header itself could be shown `yes` under a valid claim."""
    raw = b"Subject: hi\r\n\r\nbody\r\n"
    headers = replace(claim_for(raw), verified=signed).signed_headers(SECRET)
    assert sdk_verifies(headers, raw, SECRET, NOW)
    assert not sdk_verifies({**headers, "X-E2A-Auth-Verified": written}, raw, SECRET, NOW)


def test_values_holding_the_separator_are_refused() -> None:
    """Values joined with newlines are unambiguous only while none holds one: these two header
    sets join to the same string, so the signature of either would pass for the other."""
    raw = b"Subject: hi\r\n\r\nbody\r\n"
    headers = claim_for(raw).signed_headers(SECRET)
    one = signed_as(
        raw,
        {**headers, "X-E2A-Auth-Sender": "ceo@bank.example\nagent", "X-E2A-Auth-Entity-Type": ""},
    )
    other = {
        **one,
        "X-E2A-Auth-Sender": "ceo@bank.example",
        "X-E2A-Auth-Entity-Type": "agent\n",
    }
    assert contract_verify(one, raw, SECRET) and contract_verify(other, raw, SECRET)
    assert not sdk_verifies(one, raw, SECRET, NOW)
    assert not sdk_verifies(other, raw, SECRET, NOW)
    carriage = signed_as(raw, {**headers, "X-E2A-Auth-Sender": "ceo@bank.example\r"})
    assert not sdk_verifies(carriage, raw, SECRET, NOW)


@pytest.mark.parametrize(
    "field",
    ["sender", "entity_type", "domain_check", "delegation", "timestamp", "message_id"],
)
def test_the_gateway_refuses_to_sign_a_value_holding_the_separator(field: str) -> None:
    raw = b"Subject: hi\r\n\r\nbody\r\n"
    claim = replace(claim_for(raw), **{field: "a\nb"})
    with pytest.raises(ValueError, match="line break"):
        claim.signed_headers(SECRET)


def test_a_name_given_twice_is_refused() -> None:
    """One name in two cases: whichever the SDK read, a receiver looking up the other would
    see a value nobody signed."""
    raw = b"Subject: hi\r\n\r\nbody\r\n"
    headers = replace(claim_for(raw), verified=False).signed_headers(SECRET)
    twice = {"X-E2A-Auth-Verified": "true", **headers}
    twice["x-e2a-auth-verified"] = "false"
    assert not sdk_verifies(twice, raw, SECRET, NOW)
    twice = {**headers, "x-e2a-auth-sender": headers["X-E2A-Auth-Sender"]}
    assert not sdk_verifies(twice, raw, SECRET, NOW)
    # an HTTP request's headers, as a webhook receiver holds them: other names may repeat
    request = httpx.Headers([*headers.items(), ("Via", "1.1 a"), ("Via", "1.1 b")])
    assert verify_auth_headers(AuthHeaders.from_headers(request), raw, SECRET, NOW)
    repeated = httpx.Headers([*request.multi_items(), ("X-E2A-Auth-Verified", "true")])
    assert not verify_auth_headers(AuthHeaders.from_headers(repeated), raw, SECRET, NOW)


@pytest.mark.parametrize(
    "change",
    [
        {"X-E2A-Auth-Version": "2"},
        {"X-E2A-Auth-Algorithm": "hmac-sha1"},
        {"X-E2A-Auth-Anything-Else": ""},
    ],
)
def test_a_claim_of_a_scheme_the_sdk_does_not_know_is_refused(change: dict[str, str]) -> None:
    raw = b"Subject: hi\r\n\r\nbody\r\n"
    headers = claim_for(raw).signed_headers(SECRET)
    assert not sdk_verifies({**headers, **change}, raw, SECRET, NOW)


@pytest.mark.parametrize(
    "written",
    [
        lambda mac: mac.upper(),
        lambda mac: "sha256=" + mac,
        lambda mac: "v1=" + mac,
        lambda mac: "v2=" + mac,
        lambda mac: mac + " ",
        lambda mac: mac[:32],
        lambda mac: hmac.new(b"x", b"y", hashlib.sha1).hexdigest(),
    ],
    ids=["uppercase", "sha256-prefix", "v1-prefix", "v2-prefix", "space", "half", "sha1"],
)
def test_a_signature_other_than_the_lowercase_hmac_sha256_hex_is_refused(written: Any) -> None:
    raw = b"Subject: hi\r\n\r\nbody\r\n"
    headers = claim_for(raw).signed_headers(SECRET)
    signature = written(headers["X-E2A-Auth-Signature"])
    assert not sdk_verifies({**headers, "X-E2A-Auth-Signature": signature}, raw, SECRET, NOW)


def test_the_sdk_compares_signatures_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every comparison of a received value with an expected one goes through
    `hmac.compare_digest`, never `==`."""
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def recording(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr("e2a_gateway.v1.signature.hmac.compare_digest", recording)
    raw = b"Subject: hi\r\n\r\nbody\r\n"
    headers = claim_for(raw).signed_headers(SECRET)
    assert sdk_verifies(headers, raw, SECRET, NOW)
    received = [a for a, _ in compared]
    assert headers["X-E2A-Auth-Signature"].encode() in received
    assert headers["X-E2A-Auth-Body-Hash"].encode() in received


def test_other_body_or_secret_is_refused() -> None:
    raw = b"Subject: hi\r\n\r\nbody\r\n"
    headers = claim_for(raw).signed_headers(SECRET)
    assert not sdk_verifies(headers, raw + b"x", SECRET, NOW)
    assert not sdk_verifies(headers, raw, "cd" * 32, NOW)


def test_strip_auth_headers_removes_folded_fields_only_from_the_header_block() -> None:
    raw = (
        b"From: a@example.org\r\n"
        b"X-E2A-Auth-Verified: true\r\n"
        b"x-e2a-auth-sender: ceo@example.org\r\n"
        b"X-E2A-Auth-Domain-Check: spf=pass;\r\n"
        b"\tdkim=pass\r\n"
        b"Subject: keep\r\n"
        b" folded subject\r\n"
        b"\r\n"
        b"X-E2A-Auth-Verified: true stays in the body\r\n"
    )
    assert strip_auth_headers(raw) == (
        b"From: a@example.org\r\n"
        b"Subject: keep\r\n"
        b" folded subject\r\n"
        b"\r\n"
        b"X-E2A-Auth-Verified: true stays in the body\r\n"
    )


@pytest.mark.parametrize(
    "name",
    [
        b"=?utf-8?q?X-E2A-Auth-Verified?=",
        b"=?UTF-8?Q?x=2De2a=2Dauth=2Dverified?=",
        b"=?utf-8?b?WC1FMkEtQXV0aC1WZXJpZmllZA==?=",
        b"=?utf-8?b?WC1FMkEtQXV0aC1WZXJpZmllZA?=",  # unpadded
        b"X-=?utf-8?q?E2A-Auth?=-Verified",  # part of the name encoded
        b"=?no-such-charset?q?X-E2A-Auth-Verified?=",
    ],
)
def test_strip_auth_headers_removes_names_written_as_encoded_words(name: bytes) -> None:
    raw = b"From: a@example.org\r\n" + name + b": true\r\n\tfolded\r\nSubject: s\r\n\r\nbody"
    assert strip_auth_headers(raw) == b"From: a@example.org\r\nSubject: s\r\n\r\nbody"


@pytest.mark.parametrize(
    "name", [b"=?utf-8?q?X-Mailer?=", b"=?utf-8?b?!!!?=", b"=?utf-8?q?X_E2A_Auth_Verified?="]
)
def test_strip_auth_headers_keeps_other_encoded_word_names(name: bytes) -> None:
    raw = b"From: a@example.org\r\n" + name + b": true\r\n\r\nbody"
    assert strip_auth_headers(raw) == raw


@pytest.mark.parametrize(
    ("data", "kept"),
    [
        (
            b" X-E2A-Auth-Verified: true\r\nFrom: a@example.org\r\n\r\nb",
            b"From: a@example.org\r\n\r\nb",
        ),
        (b"\tdkim=pass\r\n more\r\nFrom: a\r\n\r\nb", b"From: a\r\n\r\nb"),
        (b" only\r\n \r\n", b""),
        (b" no line end", b""),
        (b"From: a\r\n folded\r\n\r\nb", b"From: a\r\n folded\r\n\r\nb"),
        (b"\r\n body", b"\r\n body"),
        (b"", b""),
    ],
)
def test_continuation_lines_before_the_first_field_are_not_delivered(
    data: bytes, kept: bytes
) -> None:
    """They would read as more of the gateway's Authentication-Results, put above them."""
    ours = b"Authentication-Results: mx.agents.test;\r\n dmarc=none\r\n"
    assert delivered_message(data, ours, b"") == ours + kept


@pytest.mark.parametrize(
    ("raw", "headers", "rest"),
    [
        (b"A: 1\r\n\r\nbody", b"A: 1\r\n", b"\r\nbody"),
        (b"A: 1\n\nbody", b"A: 1\n", b"\nbody"),
        (b"A: 1\r\n", b"A: 1\r\n", b""),
    ],
)
def test_split_header_block(raw: bytes, headers: bytes, rest: bytes) -> None:
    assert split_header_block(raw) == (headers, rest)
