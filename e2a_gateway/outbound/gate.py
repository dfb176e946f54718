"""An agent's outbound gate (e2a's protection config): whether a send's recipients may be
mailed unquestioned, and what becomes of a send to anyone else. Pure: no I/O.

The policy says who matches: everyone (`open`), the addresses of the allowlist (`allowlist`),
or addresses on the agent's own domain (`domain`). When any recipient (To, Cc or Bcc) does not
match, the action applies: the send goes out with the reason kept (`flag`), waits for a human
(`review`), or is refused (`block`). An allowlist with no entry matches no one, so with
`review` every send waits: the approval hold `/api/v1` calls `hitl_enabled`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from e2a_gateway.addresses import comparable_entry
from e2a_gateway.storage.base import Agent

Outcome = Literal["send", "flag", "review", "block"]


@dataclass(frozen=True)
class OutboundVerdict:
    """What the gate does with one send, and why (for the flag, the reviewer and the refusal)."""

    outcome: Outcome
    reason: str | None = None


PASSED = OutboundVerdict("send")


def outbound_verdict(agent: Agent, recipients: Sequence[str]) -> OutboundVerdict:
    """The agent's outbound gate on a send to `recipients` (every To, Cc and Bcc)."""
    stranger = _first_unmatched(agent, recipients)
    if stranger is None:
        return PASSED
    if agent.outbound_gate_policy == "allowlist":
        reason = f"{stranger} is not on the agent's outbound allowlist"
    else:
        reason = f"{stranger} is not on the agent's domain {agent.domain}"
    return OutboundVerdict(agent.outbound_gate_action, reason)


def _first_unmatched(agent: Agent, recipients: Sequence[str]) -> str | None:
    """The first recipient the policy does not match, lowercased; None when all match."""
    if agent.outbound_gate_policy == "open":
        return None
    trusted = {comparable_entry(entry) for entry in agent.outbound_gate_allowlist}
    own_domain = agent.domain.lower()
    for recipient in recipients:
        address = recipient.strip().lower()
        if agent.outbound_gate_policy == "allowlist":
            matched = comparable_entry(address) in trusted
        else:
            matched = address.rpartition("@")[2] == own_domain
        if not matched:
            return address
    return None
