"""The parsed bodies this process keeps of the mail it reads, by the SHA-256 of the raw bytes.

`inbound.parse.parse_body` fills the cache and reads from it; the gateway's commit observer
empties it of erased mail (`forget`). It lives apart from the parser so that the gateway's
shared state, below the inbound pipeline, can reach it.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable
from typing import Any, Protocol

from cachetools import LRUCache


class Sized(Protocol):
    """A kept body: what it holds in memory, roughly, in characters."""

    @property
    def size(self) -> int: ...


BUDGET = 16 * 1024 * 1024
"""Characters of parsed bodies kept (a body larger than this is not kept)."""
BODIES: LRUCache[bytes, Any] = LRUCache(BUDGET, getsizeof=lambda body: body.size)
"""The kept bodies by `key_of` their raw bytes, most recently read kept longest."""
LOCK = threading.Lock()
"""Held for every use of `BODIES` (bodies are parsed in worker threads too)."""


def key_of(raw: bytes) -> bytes:
    """The key of `raw`'s parsed body: its SHA-256 digest."""
    return hashlib.sha256(raw).digest()


def forget(digests: Iterable[bytes]) -> None:
    """Forget the bodies kept of the raw bytes whose SHA-256 digests are `digests` (mail
    erased: nothing of it stays in memory until the budget would push it out)."""
    with LOCK:
        for digest in digests:
            BODIES.pop(digest, None)
