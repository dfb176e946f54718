"""Opaque identifiers with a type prefix (`msg_…`, `usr_…`, `apk_…`, `wsec_…`).

An id is 24 hex digits: the milliseconds since the Unix epoch (12 digits, 48 bits) then 48
random bits. Ids made later sort later, so the unique indexes on them take new rows at their
end, as they take `seq`: one message stored for fifty agents touches a page or two of each
id index instead of fifty scattered ones. No id is a secret (every read is scoped by its owner
in the query), and 48 random bits keep ids made in the same millisecond apart.
"""

from __future__ import annotations

import os
import time

RANDOM_BYTES = 6


def new_id(prefix: str) -> str:
    """A fresh id such as `msg_019ad3f2c1a87e4b09d2c6f1`: time-ordered, then random."""
    return f"{prefix}_{time.time_ns() // 1_000_000:012x}{os.urandom(RANDOM_BYTES).hex()}"
