"""An agent's inbound gate (e2a's protection config): whether a message's sender may reach the
agent unquestioned, and what becomes of mail it does not pass. Pure: no I/O.

The gate trusts only an authenticated From: over SMTP, one whose domain passed DMARC
(`aligned_from`); for mail another agent of this deployment sends, its own address (the gateway
authenticated its key). An `allowlist` or `domain` gate matches nothing else. Every way mail
reaches an agent goes through its gate, local delivery included.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from e2a_gateway.addresses import a_label_domain, comparable_entry
from e2a_gateway.mailauth.results import AuthResults
from e2a_gateway.storage.base import Agent

Outcome = Literal["deliver", "flag", "review", "block"]


@dataclass(frozen=True)
class GateVerdict:
    """What the gate does with one message for one agent, and why (for the reviewer, the flag
    and the refused sender)."""

    outcome: Outcome
    reason: str | None = None

    def applied(self, hold_seconds: int, now: float) -> tuple[float | None, str | None, bool]:
        """What the stored message records of the verdict: until when it is held for review
        (`hold_seconds` from `now`; None when not held), the reason kept with it when the gate
        did not pass it, and whether it is blocked (accepted, then quarantined)."""
        held_until = now + hold_seconds if self.outcome == "review" else None
        reason = self.reason if self.outcome != "deliver" else None
        return held_until, reason, self.outcome == "block"


PASSED = GateVerdict("deliver")


def aligned_from(from_addr: str, auth: AuthResults) -> str | None:
    """The From address, lowercased, when DMARC passed for its domain; else None. DMARC names
    the domain as A-labels (`a_label_domain`); the From may give it as U-labels (RFC 6532) or
    with a trailing dot, and is the same sender."""
    address = from_addr.strip().lower()
    domain = address.rpartition("@")[2]
    if auth.dmarc != "pass" or not domain:
        return None
    try:
        authenticated = a_label_domain(domain) == (auth.from_domain or "").lower()
    except ValueError:
        return None
    return address if authenticated else None


def awaits_authentication(agent: Agent, from_addr: str, auth: AuthResults) -> bool:
    """Whether the agent's gate keeps the message from it (held or blocked) only for want of
    an authentication that failed for now: DMARC met a temporary error (DNS) and the From,
    once authenticated, would pass. Such a message is better deferred (the sender retries)
    than screened on a check a retry may pass."""
    if auth.dmarc != "temperror" or agent.inbound_gate_policy == "open":
        return False
    if agent.inbound_gate_action not in ("review", "block"):
        return False
    return gate_verdict(agent, from_addr.strip().lower() or None).outcome == "deliver"


def gate_verdict(agent: Agent, sender: str | None) -> GateVerdict:
    """The agent's gate on a message whose authenticated From address is `sender` (lowercased;
    None when the From is not authenticated)."""
    if agent.inbound_gate_policy == "open":
        return PASSED
    trusted = {comparable_entry(entry) for entry in agent.inbound_gate_allowlist}
    if sender is not None:
        key = sender if agent.inbound_gate_policy == "allowlist" else sender.rpartition("@")[2]
        if comparable_entry(key) in trusted:  # Bücher.example and xn--bcher-kva.example alike
            return PASSED
    if sender is None:
        reason = "the sender's From domain is not authenticated by DMARC"
    elif agent.inbound_gate_policy == "allowlist":
        reason = f"{sender} is not on the agent's allowlist"
    else:
        reason = f"{sender.rpartition('@')[2]} is not one of the agent's trusted domains"
    action = agent.inbound_gate_action
    return GateVerdict("deliver" if action not in ("flag", "review", "block") else action, reason)
