"""A write sent with an Idempotency-Key runs once: its first successful answer is kept at least
KEPT_SECONDS and replayed to a retry of the same request; the same key with another request is
refused (Unprocessable), and while the first request still runs a retry is told so (Conflict);
under a key the gateway made (a redelivery's) the retry waits for the first answer instead.

A send settles its key with its message in the transaction that stores it (`held_key`), so a
request killed after storing the message and before its answer was kept still sends once: a
retry answers the stored message (the face's `resume`), at once and however late. So do
createWebhook with the webhook it made, approveReview with the approval and
rotateWebhookSecret with the rotation.

Knows no HTTP: a face gives the key, a fingerprint of its request (route and raw body) and the
write, which returns the answer as the face renders it. The answer is stored sealed with a key
derived from the server key and the Idempotency-Key, which is itself stored only hashed: a copy
of the database alone never reveals an answer (a new API key's plaintext, say).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass

import nacl.exceptions
import nacl.secret
import trio

from e2a_gateway.gateway import Gateway
from e2a_gateway.operations.caller import Caller
from e2a_gateway.operations.errors import Conflict, Invalid, Undeliverable, Unprocessable
from e2a_gateway.storage.base import ClaimLost, HeldKey

KEPT_SECONDS = 86_400
"""How long a completed key is remembered (e2a's published floor: at least 24 hours)."""
STALE_CLAIM_SECONDS = 300
"""A claim unfinished for this long is the leftover of a request that died: a retry may take
it over and write again, unless its request made what it asked for (that is answered)."""
MAX_KEY_LENGTH = 255
MINTED_WAIT_SECONDS = 5.0
"""How long a request under a minted key waits for the same request already running (a
redelivery: one short transaction) before it is told to retry."""
MINTED_POLL_SECONDS = 0.05
MINTED = b"\x00minted\x00"
"""Prefixed to a key the gateway makes before it is hashed: a caller's key is printable ASCII,
so never begins with it."""


@dataclass(frozen=True)
class Answer:
    """What a face answered to a write: its status and body bytes."""

    status: int
    body: bytes

    @property
    def succeeded(self) -> bool:
        """Whether it is worth replaying: a 2xx answer (a refusal changed nothing)."""
        return 200 <= self.status < 300


_held: ContextVar[HeldKey | None] = ContextVar("held_idempotency_key", default=None)


def held_key() -> HeldKey | None:
    """The Idempotency-Key claim the running write holds (None without a key): the storage
    write that makes what the request asked for settles it in the same transaction."""
    return _held.get()


async def run_once(
    gateway: Gateway,
    caller: Caller,
    key: str | None,
    fingerprint: bytes,
    write: Callable[[], Awaitable[Answer]],
    *,
    minted: bool = False,
    resume: Callable[[str], Awaitable[Answer]] | None = None,
) -> Answer:
    """Run `write` once per Idempotency-Key `key` of the caller's account (every time when
    `key` is None); `fingerprint` identifies the request (route and raw body, byte for byte).

    The API key that sent the request is part of it: the same Idempotency-Key sent with
    another key of the account is another request (422 `idempotency_key_reuse`), so an answer
    replays only to the key it was written for, never, say, an account key's new API key to an
    agent key. `minted`: the gateway made `key` itself (a redelivery's, asked by account keys
    only), and keeps it apart from every key a caller may send, so no caller's key can stand in
    for it; its answer is the account's, whichever account key asks. `resume`: the
    answer for what (its id) the first request made and never answered (it was killed, or
    still runs)."""
    if key is None:
        return await write()
    if not minted:
        _check_key(key)
        fingerprint = caller.key_hash.encode() + b"\n" + fingerprint
    storage = gateway.storage
    key_hash = hashlib.sha256((MINTED if minted else b"") + key.encode()).hexdigest()
    waited = 0.0
    while True:
        now = time.time()
        claim = await storage.claim_idempotency_key(
            caller.user_id,
            key_hash,
            hashlib.sha256(fingerprint).hexdigest(),
            now,
            now - STALE_CLAIM_SECONDS,
        )
        # A minted key's request was not sent twice by the caller's choice of key (the
        # same redelivery asked twice at once): it waits for the first one's answer.
        if not (minted and claim.outcome == "in_flight") or waited >= MINTED_WAIT_SECONDS:
            break
        await trio.sleep(MINTED_POLL_SECONDS)
        waited += MINTED_POLL_SECONDS
    box = nacl.secret.SecretBox(_sealing_key(gateway.server_key, caller.user_id, key))
    if claim.outcome == "replay" and claim.status is not None and claim.answer is not None:
        return Answer(claim.status, _opened(box, claim.answer))
    if claim.outcome == "made" and claim.made_id is not None and resume is not None:
        return await resume(claim.made_id)
    if claim.outcome == "mismatch":
        raise Unprocessable(
            "idempotency_key_reuse",
            "this Idempotency-Key was already used with a different request (another route, "
            "body or API key); resend that request byte for byte with the same API key to get "
            "its answer, or use a new Idempotency-Key for a new request",
        )
    if claim.outcome != "acquired" or claim.token is None:
        raise _in_flight(minted)
    token = claim.token
    held = _held.set(HeldKey(caller.user_id, key_hash, token))
    try:
        answer = await write()
    except ClaimLost:
        raise _in_flight() from None
    except Undeliverable:
        # Refused for good, nothing sent: a retry with the key sends again.
        await storage.release_idempotency_key(caller.user_id, key_hash, token, refused=True)
        raise
    except BaseException:
        with trio.CancelScope(shield=True):
            await storage.release_idempotency_key(caller.user_id, key_hash, token)
        raise
    finally:
        _held.reset(held)
    if answer.succeeded:
        sealed = bytes(box.encrypt(answer.body))
        await storage.complete_idempotency_key(
            caller.user_id, key_hash, token, answer.status, sealed, time.time()
        )
    else:
        await storage.release_idempotency_key(caller.user_id, key_hash, token)
    return answer


def _in_flight(minted: bool = False) -> Conflict:
    """The refusal of a request whose key another request with it holds (`minted`: a key
    the gateway made, which the caller never sent)."""
    running = "the same request" if minted else "a request with this Idempotency-Key"
    return Conflict(
        "idempotency_in_flight", f"{running} is still running; wait, then retry it unchanged"
    )


def _check_key(key: str) -> None:
    """Invalid unless `key` is 1 to MAX_KEY_LENGTH visible ASCII characters."""
    if not (0 < len(key) <= MAX_KEY_LENGTH and key.isascii() and key.isprintable()):
        raise Invalid(
            "invalid_request",
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} visible ASCII characters (a UUID, say)",
        )


def _sealing_key(server_key: str, user_id: str, key: str) -> bytes:
    """The key an answer is sealed with: the server key's HMAC of the user and their key."""
    message = b"e2a idempotent answer\x00" + user_id.encode() + b"\x00" + key.encode()
    return hmac.new(server_key.encode(), message, hashlib.sha256).digest()


def _opened(box: nacl.secret.SecretBox, sealed: bytes) -> bytes:
    """The answer sealed in `sealed`; Conflict if it cannot be opened (the server key changed
    since): the key cannot replay, so it must not be used again."""
    try:
        return bytes(box.decrypt(sealed))
    except nacl.exceptions.CryptoError:
        raise Conflict(
            "conflict",
            "the answer kept for this Idempotency-Key can no longer be read (the gateway's "
            "signing key changed); use a new key",
        ) from None
