"""API keys and signing secrets: generation, hashing and derivation. Pure, no storage.

API keys (`e2a_` + 64 hex) are stored only as SHA-256 hashes. Signing secrets must be
recoverable by the gateway (it signs with them), so the database keeps a random seed and the
secret is HMAC-SHA256(server key, seed): a copy of the database alone reveals no secret.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

API_KEY_PATTERN = re.compile(r"^e2a_[0-9a-f]{64}$")
API_KEY_PREFIX_LENGTH = 12
SECRET_PREFIX_LENGTH = 12


@dataclass(frozen=True)
class NewApiKey:
    """A freshly generated API key: the plaintext is shown once, the hash is stored."""

    plaintext: str
    key_hash: str
    prefix: str


def hash_api_key(key: str) -> str:
    """The lowercase hex SHA-256 of an API key, as stored."""
    return hashlib.sha256(key.encode("ascii")).hexdigest()


def generate_api_key() -> NewApiKey:
    """A new random API key `e2a_<64 hex>` with its hash and display prefix."""
    plaintext = "e2a_" + secrets.token_hex(32)
    return NewApiKey(plaintext, hash_api_key(plaintext), plaintext[:API_KEY_PREFIX_LENGTH])


def is_well_formed_api_key(key: str) -> bool:
    """True when `key` has the shape of an e2a API key (it may still be unknown or revoked)."""
    return API_KEY_PATTERN.match(key) is not None


def new_secret_seed() -> str:
    """A random seed from which a signing secret is derived."""
    return secrets.token_hex(32)


def derive_signing_secret(server_key: str, seed: str) -> str:
    """The 64-hex signing secret for `seed` under the server key."""
    message = b"e2a signing secret\x00" + seed.encode("ascii")
    return hmac.new(server_key.encode("utf-8"), message, hashlib.sha256).hexdigest()
