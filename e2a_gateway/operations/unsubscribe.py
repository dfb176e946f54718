"""Managed unsubscribe (e2a's beta): the rule a message opting in must keep (one recipient, so
that its one `List-Unsubscribe` link speaks for one person), and what its public `/u/{token}`
link does — show whose mail it stops, and stop it for that agent alone. Nothing here is
authenticated: the token is the only authority, and it can add one suppression, nothing else.
"""

from __future__ import annotations

import time

from e2a_gateway.addresses import envelope_recipients
from e2a_gateway.gateway import Gateway
from e2a_gateway.operations.errors import Invalid, NotFound
from e2a_gateway.operations.rate_limits import NamedLimit, count_request, counted_address
from e2a_gateway.rate_windows import RateLimit
from e2a_gateway.signing.unsubscribe_tokens import hash_unsubscribe_token, looks_like_token
from e2a_gateway.storage.base import UnsubscribeScope

ONE_RECIPIENT = (
    "managed unsubscribe requires exactly one recipient across to, cc and bcc; "
    "send one message per recipient"
)
"""The refusal of a managed message to none or several people (stable: clients may match it)."""
LINK_WINDOW_SECONDS = 60
"""The window of `limits.unsubscribe_requests_per_ip_per_minute`."""


def check_recipients(mode: str | None, *, to: list[str], cc: list[str], bcc: list[str]) -> None:
    """Invalid (400 `invalid_request`) when a message opting into managed unsubscribe (`mode`
    not None) goes to other than exactly one address."""
    if mode is not None and len(envelope_recipients(to, cc, bcc)) != 1:
        raise Invalid("invalid_request", ONE_RECIPIENT)


async def count_link_request(gateway: Gateway, remote_addr: str | None) -> None:
    """Count a request to a `/u/{token}` page against the client's address (`remote_addr`, as
    trusted proxies reveal it), in the database so that replicas share the count; RateLimited
    past `limits.unsubscribe_requests_per_ip_per_minute`. Counted before the token is looked
    up, so guessing tokens uses up the allowance as fast as following a link."""
    limit = RateLimit(
        f"unsubscribe_link:ip:{counted_address(gateway, remote_addr)}",
        LINK_WINDOW_SECONDS,
        gateway.settings.limits.unsubscribe_requests_per_ip_per_minute,
    )
    await count_request(gateway, NamedLimit(limit, "unsubscribe link requests per minute"))


async def link_scope(gateway: Gateway, token: str) -> UnsubscribeScope:
    """What the link of `token` may do; NotFound, saying nothing more, for a token that is
    malformed or that no link has."""
    scope = None
    if looks_like_token(token):
        scope = await gateway.storage.find_unsubscribe_token(hash_unsubscribe_token(token))
    if scope is None:
        raise NotFound.of("page")
    return scope


async def unsubscribe(gateway: Gateway, token: str) -> UnsubscribeScope:
    """Suppress the link's address for its agent (source `unsubscribe`, told once as
    `agent.suppression_added`); the same answer however often it is asked. NotFound as
    `link_scope`."""
    scope = None
    if looks_like_token(token):
        scope = await gateway.storage.unsubscribe_by_token(
            hash_unsubscribe_token(token), time.time()
        )
    if scope is None:
        raise NotFound.of("page")
    return scope
