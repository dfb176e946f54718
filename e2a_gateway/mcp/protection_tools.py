"""The MCP tools of an agent's protection config (`/v1/agents/{email}/protection`) under e2a's
names and flat arguments: read it, and change the fields given (read, modify, write the
whole config). Account keys only: the gateway refuses an agent-scoped key."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from e2a_gateway.mcp.mailbox_tools import AGENT
from e2a_gateway.mcp.toolkit import Arguments, ToolCaller, ToolSpec

Policy = Literal["open", "allowlist", "domain"]
Action = Literal["flag", "review", "block"]
Sensitivity = Literal["off", "low", "medium", "high"]

FIELDS: dict[str, tuple[str, str, str]] = {
    "inbound_gate_policy": ("inbound", "gate", "policy"),
    "inbound_gate_allowlist": ("inbound", "gate", "allowlist"),
    "inbound_gate_action": ("inbound", "gate", "action"),
    "inbound_scan_sensitivity": ("inbound", "scan", "sensitivity"),
    "outbound_gate_policy": ("outbound", "gate", "policy"),
    "outbound_gate_allowlist": ("outbound", "gate", "allowlist"),
    "outbound_gate_action": ("outbound", "gate", "action"),
    "outbound_scan_sensitivity": ("outbound", "scan", "sensitivity"),
    "holds_ttl_seconds": ("holds", "", "ttl_seconds"),
    "holds_on_expiry": ("holds", "", "on_expiry"),
    "holds_suppress_notifications": ("holds", "", "suppress_notifications"),
}
"""Each flat argument of update_protection and where it sits in the config."""


class ProtectionArguments(Arguments):
    """Arguments of get_protection."""

    email: str | None = Field(default=None, description=AGENT)


class UpdateProtectionArguments(ProtectionArguments):
    """Arguments of update_protection: only those given change."""

    inbound_gate_policy: Policy | None = None
    inbound_gate_allowlist: list[str] | None = None
    inbound_gate_action: Action | None = None
    inbound_scan_sensitivity: Sensitivity | None = None
    outbound_gate_policy: Policy | None = None
    outbound_gate_allowlist: list[str] | None = None
    outbound_gate_action: Action | None = None
    outbound_scan_sensitivity: Sensitivity | None = None
    holds_ttl_seconds: int | None = Field(default=None, ge=0)
    holds_on_expiry: Literal["approve", "reject"] | None = None
    holds_suppress_notifications: bool | None = None


async def get_protection(caller: ToolCaller, arguments: ProtectionArguments) -> dict[str, Any]:
    """The agent's gates, scans and holds."""
    return await caller.port.get_protection(await caller.agent(arguments.email))


async def update_protection(
    caller: ToolCaller, arguments: UpdateProtectionArguments
) -> dict[str, Any]:
    """The fields given changed, the rest kept: the config as it stands now."""
    email = await caller.agent(arguments.email)
    config = await caller.port.get_protection(email)
    for name, (direction, part, key) in FIELDS.items():
        value = getattr(arguments, name)
        if value is not None:
            section = config[direction][part] if part else config[direction]
            section[key] = value
    return await caller.port.put_protection(email, config)


PROTECTION_TOOLS: tuple[ToolSpec[Any], ...] = (
    ToolSpec(
        "get_protection",
        "Get an agent's protection config (beta)",
        "An agent's inbound and outbound gates (policy, allowlist, action), content-scan "
        "sensitivity and holds (how long held mail waits, what happens at expiry). Account "
        "keys only.",
        ProtectionArguments,
        get_protection,
    ),
    ToolSpec(
        "update_protection",
        "Update an agent's protection config (beta)",
        "Change an agent's protection: only the fields given change. To review every "
        "outbound message set outbound_gate_policy=allowlist, outbound_gate_allowlist=[] and "
        "outbound_gate_action=review (and holds_on_expiry=reject so nothing is sent "
        "unapproved); an open outbound gate holds nothing, whatever its action; an allowlist "
        "with entries, or the domain policy, applies the action to sends to anyone else. "
        "Content scanning is refused with not_implemented. Account keys only.",
        UpdateProtectionArguments,
        update_protection,
        read_only=False,
    ),
)
