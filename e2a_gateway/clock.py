"""Time as the contract writes it: RFC 3339, UTC, `Z` suffix, whole seconds."""

from __future__ import annotations

import time


def format_timestamp(seconds: float) -> str:
    """Format Unix time `seconds` as `2026-01-31T12:00:00Z`."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def utc_now() -> str:
    """The current time as an RFC 3339 UTC string."""
    return format_timestamp(time.time())
