"""Signatures of `/v1` webhook deliveries, as e2a's SDKs verify them: each webhook's `whsec_`
secret is derived from a stored seed with the server key (a copy of the database alone reveals
none), and a delivery carries `X-E2A-Signature: t=<unix seconds>,v1=<hex>` — HMAC-SHA256 keyed
by the secret's text over `<t>.<raw body>`, one `v1` per secret while a rotation's grace lasts.
Pure.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from e2a_gateway.signing.credentials import derive_signing_secret

SECRET_PREFIX = "whsec_"


def webhook_secret(server_key: str, seed: str) -> str:
    """The `whsec_` secret of a webhook whose seed is `seed`."""
    return SECRET_PREFIX + derive_signing_secret(server_key, "webhook:" + seed)


def signature_header(secrets: Sequence[str], timestamp: int, body: bytes) -> str:
    """`t=…,v1=…[,v1=…]`: the body signed at `timestamp` with each of `secrets`."""
    signed = str(timestamp).encode("ascii") + b"." + body
    pairs = [
        "v1=" + hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()
        for secret in secrets
    ]
    return ",".join([f"t={timestamp}", *pairs])
