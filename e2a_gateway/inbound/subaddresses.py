"""Subaddresses (RFC 5233, "plus addressing"): mail to `bot+github@example.com` reaches the agent
`bot@example.com` when no agent has the tagged address itself. Pure, no I/O.

The local part is cut at the first of the delimiters (`smtp.recipient_delimiter`, "+" unless
set otherwise; Postfix's `recipient_delimiter` cuts the same way). The gateway's own local parts
keep their meaning and are never cut: a forged return path (`bounces+…`) or reply address
(`approvals+…`) is refused as before, and `postmaster+x` or `abuse+x` is no operator mailbox.
`agent_at` is the one lookup by these rules that everything routing mail to agents asks: the
SMTP listener, local delivery, and the check that keeps approval notices out of agents' inboxes.
"""

from __future__ import annotations

from e2a_gateway.inbound.postmaster import OPERATOR_MAILBOXES
from e2a_gateway.outbound.return_path import LOCAL_PART_PREFIX
from e2a_gateway.signing.reply_tokens import REPLY_LOCAL_PREFIX
from e2a_gateway.storage.base import Agent, Directory

GATEWAY_LOCAL_PARTS = OPERATOR_MAILBOXES | {
    LOCAL_PART_PREFIX.removesuffix("+"),
    REPLY_LOCAL_PREFIX.removesuffix("+"),
}
"""Local parts whose tagged forms belong to the gateway, or reach nobody: never cut."""


def untagged_address(address: str, delimiters: str) -> str | None:
    """`address` (`local@domain`, normalised) without its tag: the local part up to the first
    character of `delimiters`. None when there is nothing to cut (no delimiter in the local
    part, `delimiters` empty), nothing before the delimiter, or the part before it is one of
    GATEWAY_LOCAL_PARTS."""
    if not delimiters:
        return None
    local, _, domain = address.rpartition("@")
    cut = min((at for at in map(local.find, delimiters) if at >= 0), default=-1)
    if cut <= 0:
        return None
    base = local[:cut]
    if base in GATEWAY_LOCAL_PARTS:
        return None
    return f"{base}@{domain}"


async def agent_at(directory: Directory, address: str, delimiters: str) -> Agent | None:
    """The agent mail to `address` (normalised) reaches: the one at the address; only when
    there is none, the one at `untagged_address` (`agent_of_tagged`). An agent whose own
    address holds a delimiter keeps its mail, and an address held exactly costs one lookup."""
    agent = await directory.find_agent(address)
    if agent is not None:
        return agent
    return await agent_of_tagged(directory, address, delimiters)


async def agent_of_tagged(directory: Directory, address: str, delimiters: str) -> Agent | None:
    """The agent at `address` without its tag, for an `address` no agent holds itself; None
    when it has no tag to cut or that agent does not exist either."""
    untagged = untagged_address(address, delimiters)
    return None if untagged is None else await directory.find_agent(untagged)
