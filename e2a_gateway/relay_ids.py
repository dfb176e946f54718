"""The id a relay names when it takes a message, and the part of a Message-ID it is matched by.

Some relays replace a message's Message-ID with their own and name it in their reply to DATA:
Amazon SES answers `250 Ok <id>` and writes `Message-ID: <id@email.amazonses.com>` (the domain
varies by region). A reply to such mail names that id, which the gateway never wrote. Pure
functions: no I/O.
"""

from __future__ import annotations

import re

MAX_RELAY_ID = 200
"""The longest id kept (SES's are 60 characters)."""
_ID_LEFT = rf"[A-Za-z0-9._-]{{8,{MAX_RELAY_ID}}}"
_NAMED_ID = re.compile(rf"<?({_ID_LEFT})(?:@[A-Za-z0-9.-]+)?>?")
_DIGIT = re.compile(r"[0-9]")


def relay_message_id(reply: str) -> str | None:
    """The id the relay named in its 250 `reply` to DATA: the reply's last word when it looks
    like one — letters, digits, `-`, `.` and `_`, 8 to MAX_RELAY_ID of them with a digit among
    them, optionally as `<left@domain>` (its left part is kept) — else None. `250 Ok
    0100018c…-000000` (Amazon SES) names `0100018c…-000000`; `250 2.0.0 Ok` and `250 Message
    accepted` name none. A queue id (`250 2.0.0 Ok: queued as 4Xyz1ABCDE`, Postfix) reads as
    one too, and simply matches no reply's Message-ID."""
    words = reply.split()
    if not words:
        return None
    word = words[-1]
    match = _NAMED_ID.fullmatch(word)
    if match is None or word.startswith("<") != word.endswith(">"):
        return None
    left = match.group(1)
    return left if _DIGIT.search(left) else None


def id_left(message_id: str) -> str | None:
    """The part of `message_id` (`<left@right>`) before its `@`, that a relay's id is matched
    against (`relay_message_id`); None when it has no `@` or its left part could not be a
    relay's id."""
    left, at, _ = message_id.strip().removeprefix("<").removesuffix(">").partition("@")
    if not at or re.fullmatch(_ID_LEFT, left) is None:
        return None
    return left
