"""DKIM-signing the mail agents send, with the deployment's key (`dkim.selector`,
`dkim.private_key_path`), and the DNS record that publishes its public half. Pure over dkimpy:
bytes in, signed bytes out; no I/O beyond reading the key once.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass
from pathlib import Path

from e2a_gateway.config import ConfigError
from e2a_gateway.mailauth.dkim import dkimpy
from e2a_gateway.outbound.mime import CONVERSATION_HEADER

log = logging.getLogger("e2a.outbound")

MIN_KEY_BITS = 1024
"""RFC 8301 section 3.2: verifiers must not accept a signature by a shorter RSA key."""
ADVISED_KEY_BITS = 2048
"""RFC 8301 section 3.2: signers should use keys at least this long."""
_SIGNED_EVEN_ABSENT = (
    b"from",
    b"cc",
    b"reply-to",
    b"subject",
    b"in-reply-to",
    b"references",
    CONVERSATION_HEADER.lower().encode("ascii"),
)
"""Fields signed once more than they appear, also when they do not (RFC 6376 section 8.15), so
a copy replayed with one added (a Reply-To sending answers elsewhere, a Cc naming someone the
sender never wrote to, a second Subject or From on top, which readers show, a conversation id)
fails verification. No relay adds any of them."""
_SIGNED_ONCE_MORE = (
    b"to",
    b"date",
    b"message-id",
    b"mime-version",
    b"content-type",
    b"content-transfer-encoding",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
)
"""Fields signed once more than they appear where they do: a second one added fails
verification (RFC 8058 section 4 asks for both list fields under the signature). Where one is
absent it is left unsigned: an MTA may add it (a `To: undisclosed-recipients:;` to mail without
To or Cc, a Date to mail without one), which must not break the signature."""


class DkimKeyError(ConfigError):
    """The configured DKIM key cannot sign; the text says which setting to fix."""


@dataclass(frozen=True)
class DkimKeyRecord:
    """The TXT record receivers look the signing key up at: `<selector>._domainkey.<domain>`,
    `v=DKIM1; k=rsa; p=<base64 of the public key>` (RFC 6376 section 3.6.1)."""

    selector: str
    domain: str
    value: str

    @property
    def name(self) -> str:
        """The record's full name, `<selector>._domainkey.<domain>`."""
        return f"{self.host}.{self.domain}"

    @property
    def host(self) -> str:
        """The record's name under the domain, `<selector>._domainkey`."""
        return f"{self.selector}._domainkey"


def _rsa_key_bits(private_key_pem: bytes) -> int:
    """The length in bits of the RSA private key in PEM. ValueError when the PEM holds no
    private key, TypeError when it is not an RSA one."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = serialization.load_pem_private_key(private_key_pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise TypeError(f"a {type(key).__name__}, not an RSA key")
    return key.key_size


def public_key_record_value(private_key_pem: bytes) -> str:
    """`v=DKIM1; k=rsa; p=…`: the public half of an RSA private key in PEM (PKCS#1 or
    PKCS#8), as the DER SubjectPublicKeyInfo in base64 that `p=` carries. ValueError when the
    PEM holds no private key."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(private_key_pem, password=None)
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode('ascii')}"


class DkimSigner:
    """Signs outbound mail with the deployment's key (`dkim.selector`,
    `dkim.private_key_path`) for the sending agent's domain. The key is RSA: an ed25519-sha256
    signature alone (RFC 8463) fails at every receiver that does not know the algorithm, and
    RFC 8463 asks for an RSA signature beside it. A key shorter than 1024 bits is refused (no
    receiver accepts its signatures); one shorter than 2048 bits is used with a warning. Errors
    and the warning name `setting`, the key's setting (`dkim.next_private_key_path` for the key
    of the next rotation, loaded only for its record)."""

    def __init__(
        self, selector: str, private_key_path: Path, setting: str = "dkim.private_key_path"
    ) -> None:
        try:
            self._key = private_key_path.read_bytes()
        except OSError as exc:
            raise DkimKeyError(
                f"{setting}: cannot read {private_key_path}: {exc.strerror or exc} — give the "
                "path of an RSA private key in PEM that the gateway's user may read "
                "(`openssl genrsa -out dkim.pem 2048` makes one)"
            ) from None
        self._selector = selector.encode("ascii")
        self.selector = selector
        try:
            self.sign(b"From: probe@example.invalid\r\n\r\nprobe\r\n", "example.invalid")
            self._record_value = public_key_record_value(self._key)
            bits = _rsa_key_bits(self._key)
        except (dkimpy().DKIMException, ValueError, TypeError) as exc:
            raise DkimKeyError(
                f"{setting}: {private_key_path} is not a usable RSA private key "
                f"in PEM (PKCS#1 or PKCS#8; `openssl genrsa -out dkim.pem 2048` makes one): "
                f"{' '.join(str(exc).split())}"  # dkimpy's words may run over lines
            ) from None
        if bits < MIN_KEY_BITS:
            raise DkimKeyError(
                f"{setting}: {private_key_path} is a {bits}-bit RSA key: receivers "
                f"reject every DKIM signature by a key shorter than {MIN_KEY_BITS} bits (RFC "
                f"8301); make a {ADVISED_KEY_BITS}-bit one (`openssl genrsa -out dkim.pem "
                f"{ADVISED_KEY_BITS}`) and publish its record"
            )
        if bits < ADVISED_KEY_BITS:
            log.warning(
                "%s: %s is a %d-bit RSA key; RFC 8301 asks for at least %d bits (`openssl "
                "genrsa -out dkim.pem %d`, under a new selector)",
                setting,
                private_key_path,
                bits,
                ADVISED_KEY_BITS,
                ADVISED_KEY_BITS,
            )

    def key_record(self, domain: str) -> DkimKeyRecord:
        """The record that must publish this key for mail signed `d=domain` to verify."""
        return DkimKeyRecord(self.selector, domain, self._record_value)

    def sign(self, raw: bytes, domain: str) -> bytes:
        """`raw` with a DKIM-Signature (relaxed/simple, rsa-sha256) for `domain` on top.

        It signs dkimpy's default fields (those RFC 6376 recommends, present), each once more
        than it appears (`_SIGNED_ONCE_MORE`), and From, Cc, Reply-To, Subject, the threading
        fields and the conversation id (`X-E2A-Conversation-Id`) also where the message has
        none (`_SIGNED_EVEN_ABSENT`): mail relayed here and signed by our domain is trusted to
        name its conversation, and a signed copy replayed with a field added must fail
        verification rather than show the reader what the sender never wrote."""
        signer = dkimpy().DKIM(raw)
        signer.add_frozen((*_SIGNED_EVEN_ABSENT, *_SIGNED_ONCE_MORE))
        present = {name.lower() for name, _ in signer.headers}
        absent = [name for name in _SIGNED_EVEN_ABSENT if name not in present]
        fields = [*signer.default_sign_headers(), *absent]
        signature: bytes = signer.sign(
            self._selector, domain.encode("ascii"), self._key, include_headers=fields
        )
        return signature + raw


def sign_as_sender(signer: DkimSigner | None, raw: bytes, sender: str) -> bytes:
    """`raw` signed for the domain of its `sender` address when there is a signer, else as it
    is."""
    if signer is None:
        return raw
    return signer.sign(raw, sender.rpartition("@")[2])
