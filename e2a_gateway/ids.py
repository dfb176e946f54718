"""Opaque identifiers with a type prefix (`msg_…`, `usr_…`, `apk_…`, `wsec_…`).

An id is 24 hex digits: the milliseconds since the Unix epoch (12 digits, 48 bits) then 48
unpredictable bits. Ids made later sort later, so the unique indexes on them take new rows at
their end, as they take `seq`: one message stored for fifty agents touches a page or two of
each id index instead of fifty scattered ones. No id is a secret (every read is scoped by its
owner in the query; return paths carry their own MAC).

The 48 bits are BLAKE2b, keyed by 32 random bytes drawn once per process, of a counter (ten
pieces of one 64-byte digest when many ids are made at once): as unpredictable as fresh random
bytes, and distinct within the process as far as 48 random bits are, without a system call per
id (a mail to fifty agents makes a hundred ids on the event loop, and each `os.urandom` call
let the writer thread take the interpreter from it). A forked child draws its own key.

A derived id (`derived_id`) names what another id gives rise to, the same every time it is
worked out: an event of a message, the copy of a sent message stored for one recipient.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import time

RANDOM_BYTES = 6
_KEY_BYTES = 32
_HASH_BYTES = 64
"""BLAKE2b's longest digest."""
_HEX = 2 * RANDOM_BYTES
_PIECES = range(0, 2 * _HASH_BYTES - _HEX + 1, _HEX)
"""Where each value starts in one digest's hex: ten values of RANDOM_BYTES a hash."""


class _Sequence:
    """A keyed counter: distinct, unpredictable values for this process."""

    def __init__(self) -> None:
        self.key = os.urandom(_KEY_BYTES)
        self.counter = itertools.count()

    def next_hex(self) -> str:
        """The next value, RANDOM_BYTES as hex."""
        number = next(self.counter).to_bytes(8, "little")
        return hashlib.blake2b(number, key=self.key, digest_size=RANDOM_BYTES).hexdigest()

    def next_hexes(self, count: int) -> list[str]:
        """`count` next values: each BLAKE2b of the counter gives ten of them (its 64 bytes
        cut in pieces of RANDOM_BYTES, at _PIECES), so the ids of a message's copies for fifty
        agents cost five hashes, not fifty (12 us instead of 46). One or two values cost less
        a short hash each."""
        if count < 3:
            return [self.next_hex() for _ in range(count)]
        values: list[str] = []
        while len(values) < count:
            number = next(self.counter).to_bytes(8, "little")
            block = hashlib.blake2b(number, key=self.key, digest_size=_HASH_BYTES).hexdigest()
            values += [block[start : start + _HEX] for start in _PIECES]
        del values[count:]
        return values


_sequence = _Sequence()


def _renew_after_fork() -> None:
    global _sequence
    _sequence = _Sequence()


os.register_at_fork(after_in_child=_renew_after_fork)


def new_id(prefix: str) -> str:
    """A fresh id such as `msg_019ad3f2c1a87e4b09d2c6f1`: time-ordered, then unpredictable."""
    return f"{_stamped(prefix)}{_sequence.next_hex()}"


def new_ids(prefix: str, count: int) -> list[str]:
    """`count` fresh ids made at one instant (`new_id`'s, with one reading of the clock): the
    copies of one message for many agents."""
    stamp = _stamped(prefix)
    return [f"{stamp}{value}" for value in _sequence.next_hexes(count)]


def _stamped(prefix: str) -> str:
    """`prefix`, "_" and the milliseconds since the Unix epoch now, as 12 hex digits."""
    return f"{prefix}_{time.time_ns() // 1_000_000:012x}"


_TIME_ORDERED = re.compile(r"[a-z]+_([0-9a-f]{12})[0-9a-f]{12}")
"""An id made by `new_id`: its first 12 hex digits are the milliseconds of its making."""


def derived_id(prefix: str, parent: str, name: str) -> str:
    """The id of what `parent` gives rise to under `name` (the `email.received` event of a
    message, the copy of a sent message stored for one recipient agent), the same wherever and
    however often it is worked out: `parent`'s milliseconds (so it sorts by time, as `new_id`'s
    do), then 48 bits of BLAKE2b over both. A parent not made by `new_id` gives 96 bits of the
    hash instead."""
    named = f"{parent}|{name}".encode()
    stamp = _TIME_ORDERED.fullmatch(parent)
    if stamp is None:
        return f"{prefix}_{hashlib.blake2b(named, digest_size=12).hexdigest()}"
    return f"{prefix}_{stamp.group(1)}{hashlib.blake2b(named, digest_size=6).hexdigest()}"
