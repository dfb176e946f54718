"""Time as the contract writes it: RFC 3339, UTC, `Z` suffix, whole seconds; and RFC 3339
times as clients give them, read back."""

from __future__ import annotations

import functools
import re
import time
from datetime import datetime

_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?"
    r"(?:[Zz]|[+-][0-9]{2}:[0-5][0-9])"
)
"""RFC 3339's date-time: full date, `T`, time with seconds (a fraction allowed) and its offset
(whose minutes run to 59: `+02:75` is no offset, where `fromisoformat` reads it as `+03:15`)."""


@functools.lru_cache(maxsize=256)
def format_timestamp(seconds: float) -> str:
    """Format Unix time `seconds` as `2026-01-31T12:00:00Z` (the year in four digits, as RFC
    3339 wants it, also before 1000, where `%Y` writes fewer on some systems). Remembered for
    the last few times asked: the copies of one message for many agents share theirs."""
    t = time.gmtime(seconds)
    return (
        f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}"
        f"T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}Z"
    )


def parse_timestamp(text: str) -> datetime:
    """An RFC 3339 time (`2026-01-31T12:00:00Z`, `2026-01-31T14:00:00.5+02:00`; `t` and `z`
    in lower case too) as an aware datetime. ValueError for anything else: a time without its
    offset, a date alone, minutes without seconds, a date that does not exist."""
    if not _RFC3339.fullmatch(text):
        raise ValueError(f"not an RFC 3339 time with its offset: {text!r}")
    return datetime.fromisoformat(text.upper())


def utc_now() -> str:
    """The current time as an RFC 3339 UTC string."""
    return format_timestamp(time.time())
