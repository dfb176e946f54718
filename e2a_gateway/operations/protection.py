"""An agent's protection config, as e2a's `/v1` models it: the inbound gate (who may mail the
agent unquestioned, matched on a DMARC-aligned From, and what becomes of other mail), the
outbound gate (whom the agent may mail unquestioned — anyone, listed addresses, or its own
domain — and what becomes of a send to anyone else: sent flagged, held for approval, or
refused), and the holds' TTL, expiry action and notice email. Account keys only: an agent
never reads or changes what screens it.

What the gateway does not have is refused, never accepted as if on: content scanning (`scan`
other than `off`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import Field

from e2a_gateway.addresses import AddressError, comparable_address, normalise_domain
from e2a_gateway.gateway import Gateway
from e2a_gateway.operations.agents import owned_agent
from e2a_gateway.operations.caller import Caller
from e2a_gateway.operations.errors import Invalid, NotAvailable, NotFound
from e2a_gateway.operations.requests import RequestBody
from e2a_gateway.storage.base import Agent, AgentChanges

MAX_HOLD_SECONDS = 604800
"""The longest a message may wait for review (7 days, as `hitl_ttl_seconds` on `/api/v1`)."""
MAX_ALLOWLIST = 1000
MAX_ENTRY_LENGTH = 320


class Gate(RequestBody):
    """A direction's trust gate."""

    policy: Literal["open", "allowlist", "domain"] = "open"
    allowlist: list[str] = Field(default_factory=list, max_length=MAX_ALLOWLIST)
    action: Literal["flag", "review", "block"] = "flag"


class Scan(RequestBody):
    """Content screening: only `off` on this gateway."""

    sensitivity: Literal["off", "low", "medium", "high"] = "off"


class Direction(RequestBody):
    """One direction's protection: its gate and its scan."""

    gate: Gate
    scan: Scan


class HoldSettings(RequestBody):
    """How held messages wait: for how long, what their expiry does, whether the owner is
    emailed."""

    ttl_seconds: int = Field(default=MAX_HOLD_SECONDS, ge=0)
    """Seconds a held message waits; 0 means the default, MAX_HOLD_SECONDS (as e2a holds for
    its default when the TTL is 0), never a hold that expires as it is made."""
    on_expiry: Literal["approve", "reject"] = "reject"
    suppress_notifications: bool = False


class ProtectionConfig(RequestBody):
    """PUT …/protection: the whole config (its three sections are required)."""

    inbound: Direction
    outbound: Direction
    holds: HoldSettings


async def protected_agent(gateway: Gateway, caller: Caller, email: str) -> Agent:
    """The caller's agent at `email`, whose protection config an account key may read."""
    caller.require_account("read or change an agent's protection config")
    return await owned_agent(gateway, caller, email)


async def replace_protection(
    gateway: Gateway, caller: Caller, email: str, config: ProtectionConfig
) -> Agent:
    """Set the agent's protection config wholesale; the agent as it stands now."""
    agent = await protected_agent(gateway, caller, email)
    changes = _changes(config)
    updated = await gateway.storage.update_agent(caller.user_id, agent.email, changes)
    if updated is None:
        raise NotFound.of("agent")
    return updated


def _changes(config: ProtectionConfig) -> AgentChanges:
    """The agent's columns for `config`; NotAvailable or Invalid for what cannot be set."""
    for direction in ("inbound", "outbound"):
        if getattr(config, direction).scan.sensitivity != "off":
            raise NotAvailable(
                "not_implemented",
                f"content scanning is not available on this gateway: set "
                f"{direction}.scan.sensitivity to 'off' (use the inbound gate to hold or refuse "
                "mail from unknown senders)",
            )
    outbound = config.outbound.gate
    outbound_allowlist = _allowlist(outbound, "outbound")
    holds = config.holds
    if holds.ttl_seconds > MAX_HOLD_SECONDS:
        raise Invalid(
            "invalid_request",
            f"holds.ttl_seconds is at most {MAX_HOLD_SECONDS} (7 days) on this gateway",
        )
    inbound = config.inbound.gate
    return AgentChanges(
        hitl_enabled=holds_every_send(outbound.policy, outbound_allowlist, outbound.action),
        hitl_ttl_seconds=holds.ttl_seconds or MAX_HOLD_SECONDS,
        hitl_expiration_action=holds.on_expiry,
        approval_notifications=not holds.suppress_notifications,
        inbound_gate_policy=inbound.policy,
        inbound_gate_allowlist=_allowlist(inbound, "inbound"),
        inbound_gate_action=inbound.action,
        outbound_gate_policy=outbound.policy,
        outbound_gate_allowlist=outbound_allowlist,
        outbound_gate_action=outbound.action,
    )


def holds_every_send(policy: str, allowlist: Sequence[str], action: str) -> bool:
    """Whether an outbound gate holds every send for approval (the agent's `hitl_enabled`):
    an allowlist with no entry matches no recipient, so with action `review` nothing leaves
    unapproved."""
    return policy == "allowlist" and not allowlist and action == "review"


def _allowlist(gate: Gate, direction: str) -> tuple[str, ...]:
    """The gate's entries in the form the gates compare, each once: addresses for `allowlist`
    (`comparable_address`), domains as A-labels for an inbound `domain` gate (an outbound
    `domain` gate matches the agent's own domain, and an `open` gate matches everyone: their
    lists are kept lowercased, unused). Invalid for an entry that can never match."""
    entries: dict[str, None] = {}
    for raw in gate.allowlist:
        entry = raw.strip().lower()
        if not entry or len(entry) > MAX_ENTRY_LENGTH or any(c.isspace() for c in entry):
            raise Invalid("invalid_request", f"{direction}.gate.allowlist: {raw!r} is not an entry")
        if gate.policy == "allowlist":
            try:
                entry = comparable_address(entry)
            except AddressError as exc:
                raise Invalid(
                    "invalid_request",
                    f"{direction}.gate.allowlist: {raw!r} is not an address ({exc}); policy "
                    "'allowlist' lists addresses, policy 'domain' domains",
                ) from None
        elif gate.policy == "domain" and direction == "inbound":
            try:
                entry = normalise_domain(entry)
            except AddressError as exc:
                raise Invalid(
                    "invalid_request",
                    f"{direction}.gate.allowlist: {raw!r} is not a domain ({exc}); policy "
                    "'domain' lists domains, policy 'allowlist' addresses",
                ) from None
        entries[entry] = None
    return tuple(entries)
