"""Request ids: every answer of e2a's `/v1` API carries one in `X-Request-Id` — the client's
own when it sent a sane one, else a new `req_…` — and an error's body repeats it, so a failing
call can be found in logs. Pure."""

from __future__ import annotations

import re
import secrets

HEADER = "X-Request-Id"
_SANE = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")
"""What a client's own id may be: short, and nothing that could split a log line or a header."""


def new_request_id() -> str:
    """A fresh id such as `req_3f9c…` (96 random bits, hex)."""
    return f"req_{secrets.token_hex(12)}"


def request_id_for(presented: str | None) -> str:
    """The id of a request that presented `presented` in its X-Request-Id header."""
    if presented is not None and _SANE.fullmatch(presented):
        return presented
    return new_request_id()
