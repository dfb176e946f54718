"""DKIM-signing outbound mail (e2a_gateway/outbound/dkim_signing.py) with plain data: a key made
here, the signature checked by dkimpy against its public half, unusable keys refused naming the
setting."""

from __future__ import annotations

import base64
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from e2a_gateway.outbound.dkim_signing import DkimKeyError, DkimSigner

pytestmark = pytest.mark.backend_independent

MESSAGE = b"From: bot@agents.test\r\nTo: carol@example.org\r\nSubject: Hi\r\n\r\nNumbers.\r\n"


def write_rsa_key(path: Path) -> bytes:
    """Write a new RSA key as PEM to `path`; return the DNS record of its public half."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)


def test_a_signed_message_verifies_for_the_agents_domain(tmp_path: Path) -> None:
    record = write_rsa_key(tmp_path / "dkim.pem")
    signed = DkimSigner("e2a", tmp_path / "dkim.pem").sign(MESSAGE, "agents.test")

    def dns(name: bytes, timeout: int = 5) -> bytes:
        return record if name == b"e2a._domainkey.agents.test." else b""

    assert signed.startswith(b"DKIM-Signature:") and signed.endswith(MESSAGE)
    assert dkim.verify(signed, dnsfunc=dns)
    assert not dkim.verify(signed.replace(b"Numbers.", b"Altered!"), dnsfunc=dns)


def test_a_missing_key_file_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(DkimKeyError, match=r"^dkim\.private_key_path: cannot read .*nope\.pem"):
        DkimSigner("e2a", tmp_path / "nope.pem")


def test_a_file_that_is_not_a_key_names_the_setting(tmp_path: Path) -> None:
    (tmp_path / "dkim.pem").write_text("not a key\n")
    with pytest.raises(
        DkimKeyError, match=r"^dkim\.private_key_path: .* is not a usable RSA private key in PEM"
    ):
        DkimSigner("e2a", tmp_path / "dkim.pem")


def test_an_ed25519_key_is_refused_saying_an_rsa_key_is_needed(tmp_path: Path) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    (tmp_path / "dkim.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(DkimKeyError) as refused:
        DkimSigner("e2a", tmp_path / "dkim.pem")
    message = str(refused.value)
    assert message.startswith("dkim.private_key_path: ")
    assert "is not a usable RSA private key in PEM" in message
    assert "Ed25519" not in message  # never claims a key type it cannot use
    assert "openssl genrsa" in message


def test_the_key_record_is_the_public_half_of_the_key(tmp_path: Path) -> None:
    """PKCS#1 PEM here (PKCS#8 in tests/test_domain_dkim_record.py): the record a domain is
    told to publish is `v=DKIM1; k=rsa; p=<SubjectPublicKeyInfo>` at the selector."""
    expected = write_rsa_key(tmp_path / "dkim.pem")
    record = DkimSigner("e2a", tmp_path / "dkim.pem").key_record("agents.test")
    assert (record.name, record.host) == ("e2a._domainkey.agents.test", "e2a._domainkey")
    assert record.value.encode() == expected


THREADED = (
    b"From: bot@agents.test\r\nTo: carol@example.org\r\nSubject: Hi\r\n"
    b"X-E2A-Conversation-Id: conv_1\r\n\r\nNumbers.\r\n"
)


@pytest.mark.parametrize(
    ("message", "tampered"),
    [
        # the conversation id changed, or one more put above it (a reader takes the first)
        (THREADED, THREADED.replace(b"conv_1", b"conv_2")),
        (THREADED, b"X-E2A-Conversation-Id: conv_2\r\n" + THREADED),
        # one added to a message sent without
        (MESSAGE, MESSAGE.replace(b"\r\n\r\n", b"\r\nX-E2A-Conversation-Id: conv_2\r\n\r\n")),
    ],
    ids=["changed", "one-more-above", "added"],
)
def test_the_conversation_id_is_signed_so_no_one_can_change_or_add_it(
    tmp_path: Path, message: bytes, tampered: bytes
) -> None:
    """Mail relayed by this deployment and signed by its domain is trusted to name its
    conversation (docs/delivery.md): the header that names it is signed, and signed once more
    than it appears, so a copy replayed with another conversation id fails verification."""
    record = write_rsa_key(tmp_path / "dkim.pem")
    signed = DkimSigner("e2a", tmp_path / "dkim.pem").sign(message, "agents.test")
    signature, _, _ = signed.partition(message)

    def dns(name: bytes, timeout: int = 5) -> bytes:
        return record if name == b"e2a._domainkey.agents.test." else b""

    assert dkim.verify(signed, dnsfunc=dns)
    assert not dkim.verify(signature + tampered, dnsfunc=dns)


@pytest.mark.parametrize(
    "added",
    [
        b"Cc: ceo@victim.example\r\n",
        b"Reply-To: thief@attacker.example\r\n",
        b"Subject: Urgent: wire the money\r\n",
        b"From: ceo@agents.test\r\n",
    ],
    ids=["cc", "reply-to", "subject", "from"],
)
def test_a_copy_replayed_with_a_field_the_sender_never_wrote_fails_verification(
    tmp_path: Path, added: bytes
) -> None:
    """Signed mail replayed with a field added on top, one the message did not have (a Cc
    naming someone the agent never wrote to, which readers show and reply-all answers) or a
    second one (a Subject or From read first), must fail verification: these fields are signed
    once more than they appear, also where absent. No MTA on the way adds any of them."""
    record = write_rsa_key(tmp_path / "dkim.pem")
    signed = DkimSigner("e2a", tmp_path / "dkim.pem").sign(MESSAGE, "agents.test")
    signature, _, _ = signed.partition(MESSAGE)

    def dns(name: bytes, timeout: int = 5) -> bytes:
        return record if name == b"e2a._domainkey.agents.test." else b""

    assert dkim.verify(signed, dnsfunc=dns)
    assert not dkim.verify(signature + added + MESSAGE, dnsfunc=dns)


def test_a_to_or_date_an_mta_adds_to_mail_without_one_leaves_the_signature_intact(
    tmp_path: Path,
) -> None:
    """To, Cc, Date and the like are signed once more than they appear only where they do:
    an MTA adds `To: undisclosed-recipients:;` to mail that has neither To nor Cc, and a Date
    to mail without one, and the copy must still verify."""
    record = write_rsa_key(tmp_path / "dkim.pem")
    bcc_only = b"From: bot@agents.test\r\nSubject: Hi\r\n\r\nNumbers.\r\n"
    signed = DkimSigner("e2a", tmp_path / "dkim.pem").sign(bcc_only, "agents.test")
    added = b"To: undisclosed-recipients:;\r\nDate: Mon, 01 Jan 2035 00:00:00 +0000\r\n\r\n"

    def dns(name: bytes, timeout: int = 5) -> bytes:
        return record if name == b"e2a._domainkey.agents.test." else b""

    assert dkim.verify(signed.replace(b"\r\n\r\n", b"\r\n" + added, 1), dnsfunc=dns)


SHORT_KEY = b"""-----BEGIN PRIVATE KEY-----
MIIBVgIBADANBgkqhkiG9w0BAQEFAASCAUAwggE8AgEAAkEAr32I6wYsztECO24l
gFr/kx1G5yNz5RaeSpBmfl2Bus+frUqNZeS76OZ4qmn61qmHtHzBXH4BJY5QH+PJ
0U/W8QIDAQABAkEAhRVKVBFmwaC3dKJfRiu8TbCSKI82QLEacal4ULRQwX2ZIhcr
SACvha2knYWm7MOPlIV86psn8BkweygEAKEOUQIhANlJGyck0FB0wUFDshUDVvDf
QjgCRvLwx4zc4lVvpaT7AiEAzsINvyR7a3EHOfCWCzAhDmp5zYeAXuTO1hy+ALBY
OAMCIQC77jIQ8hNGcyUu+IkPCZtpq//PB5Er0DsXx3fu4yjGfwIhALIZfIfrIBlT
2pqxQD5Q7hih5VwC3bRgOj87sPuc69ELAiA/eoAPGhn5qC+Jew8sx2e7Xj5einRc
x+XGbWVhk0tu9A==
-----END PRIVATE KEY-----
"""
"""A 512-bit RSA key (`openssl genrsa 512`, made for this test; `cryptography` makes none
shorter than 1024 bits)."""


def test_a_key_shorter_than_1024_bits_is_refused_as_no_receiver_accepts_it(
    tmp_path: Path,
) -> None:
    """RFC 8301 section 3.2: verifiers must not accept a signature by an RSA key shorter than
    1024 bits, so a gateway signing with one would send mail whose every signature fails (and
    with it DMARC). It is refused at start, saying how to make a usable key."""
    (tmp_path / "dkim.pem").write_bytes(SHORT_KEY)
    with pytest.raises(DkimKeyError) as refused:
        DkimSigner("e2a", tmp_path / "dkim.pem")
    message = str(refused.value)
    assert message.startswith("dkim.private_key_path: ")
    assert "512-bit" in message and "1024" in message
    assert "openssl genrsa -out dkim.pem 2048" in message


def test_a_1024_bit_key_signs_with_a_warning_to_use_2048_bits(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A 1024-bit key still verifies everywhere, but RFC 8301 asks signers for 2048 bits: it is
    used, and the log says so once, when the key is loaded."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    (tmp_path / "dkim.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with caplog.at_level("WARNING", logger="e2a.outbound"):
        signer = DkimSigner("e2a", tmp_path / "dkim.pem")
    record = signer.key_record("agents.test").value.encode()

    def dns(name: bytes, timeout: int = 5) -> bytes:
        return record if name == b"e2a._domainkey.agents.test." else b""

    assert dkim.verify(signer.sign(MESSAGE, "agents.test"), dnsfunc=dns)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "1024-bit" in warnings[0] and "2048" in warnings[0]
