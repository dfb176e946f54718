"""The exit codes of the client commands: e2a's CLI's frozen contract (`@e2a/cli` 2.0.0,
`cli/src/exit.ts`), so a script written for it branches the same way here (`== 3` for mail
held for review, `== 4` for a refused key, …).
"""

from __future__ import annotations

OK = 0
ERROR = 1
"""Transient (no answer, 5xx, rate limited: a retry may help), or an error the user can fix
that the gateway did not refuse (a domain not verified yet, a missed forward)."""
USAGE = 2
"""Bad flags or arguments."""
HELD = 3
"""A send or reply was held for review (not delivered)."""
AUTH = 4
"""The key was refused (401) or may not do this (403)."""
REQUEST = 5
"""The gateway refused the request for good (404, 409, 422, …): retrying cannot help."""
TIMEOUT = 6
"""`listen --once --until` saw no matching message before the deadline."""
SEND_OUTCOME = 7
"""A send was stored but failed, or answered a status this CLI does not know: do not retry,
look at the message id it printed."""
WARN = 8
"""`doctor` found warnings only."""
CONFIG = 9
"""`doctor` found a check that failed."""


def for_api_status(status: int) -> int:
    """The exit code of an API error answered with HTTP `status`."""
    if status in (401, 403):
        return AUTH
    if status in (408, 425, 429) or status >= 500:
        return ERROR
    return REQUEST if 400 <= status < 500 else ERROR
