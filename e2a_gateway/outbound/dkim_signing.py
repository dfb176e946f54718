"""DKIM-signing the mail agents send, with the deployment's key (`dkim.selector`,
`dkim.private_key_path`). Pure over dkimpy: bytes in, signed bytes out; no I/O beyond reading
the key once.
"""

from __future__ import annotations

from pathlib import Path

from e2a_gateway.config import ConfigError, DkimSettings
from e2a_gateway.mailauth.dkim import dkimpy


class DkimKeyError(ConfigError):
    """The configured DKIM key cannot sign; the text says which setting to fix."""


class DkimSigner:
    """Signs outbound mail with the deployment's key (`dkim.selector`,
    `dkim.private_key_path`) for the sending agent's domain. The key is RSA: an ed25519-sha256
    signature alone (RFC 8463) fails at every receiver that does not know the algorithm, and
    RFC 8463 asks for an RSA signature beside it."""

    def __init__(self, selector: str, private_key_path: Path) -> None:
        try:
            self._key = private_key_path.read_bytes()
        except OSError as exc:
            raise DkimKeyError(
                f"dkim.private_key_path: cannot read {private_key_path}: {exc.strerror or exc}"
            ) from None
        self._selector = selector.encode("ascii")
        try:
            self.sign(b"From: probe@example.invalid\r\n\r\nprobe\r\n", "example.invalid")
        except dkimpy().DKIMException as exc:
            raise DkimKeyError(
                f"dkim.private_key_path: {private_key_path} is not a usable RSA private key "
                f"in PEM (PKCS#1 or PKCS#8; `openssl genrsa -out dkim.pem 2048` makes one): "
                f"{exc}"
            ) from None

    def sign(self, raw: bytes, domain: str) -> bytes:
        """`raw` with a DKIM-Signature (relaxed/simple, rsa-sha256) for `domain` on top."""
        signature: bytes = dkimpy().sign(raw, self._selector, domain.encode("ascii"), self._key)
        return signature + raw


def deployment_signer(settings: DkimSettings) -> DkimSigner | None:
    """The signer for `dkim.selector` and `dkim.private_key_path`, None when they are not set.
    DkimKeyError when the key cannot sign."""
    if settings.selector and settings.private_key_path:
        return DkimSigner(settings.selector, settings.private_key_path)
    return None


def sign_as_sender(signer: DkimSigner | None, raw: bytes, sender: str) -> bytes:
    """`raw` signed for the domain of its `sender` address when there is a signer, else as it
    is."""
    if signer is None:
        return raw
    return signer.sign(raw, sender.rpartition("@")[2])
