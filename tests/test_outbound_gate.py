"""The outbound gate's verdicts (e2a_gateway.outbound.gate): who matches each policy, which
action applies to a send with any recipient that does not match, and why."""

from __future__ import annotations

from dataclasses import replace

import pytest

from e2a_gateway.outbound.gate import PASSED, OutboundVerdict, outbound_verdict
from e2a_gateway.storage.base import Agent

pytestmark = pytest.mark.backend_independent

AGENT = Agent(
    email="bot@corp.example",
    user_id="usr_1",
    domain="corp.example",
    name="Bot",
    webhook_url=None,
    agent_mode="local",
    hitl_enabled=False,
    hitl_ttl_seconds=3600,
    hitl_expiration_action="reject",
    created_at="2026-01-01T00:00:00Z",
)


def gated(policy: str, allowlist: tuple[str, ...] = (), action: str = "review") -> Agent:
    return replace(
        AGENT,
        outbound_gate_policy=policy,  # type: ignore[arg-type]
        outbound_gate_allowlist=allowlist,
        outbound_gate_action=action,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("action", ["flag", "review", "block"])
def test_an_open_gate_passes_everyone_whatever_its_action(action: str) -> None:
    assert outbound_verdict(gated("open", action=action), ["x@anywhere.example"]) == PASSED


def test_an_allowlist_passes_only_when_every_recipient_is_listed() -> None:
    agent = gated("allowlist", ("boss@example.org", " Partner@Example.NET "))
    assert outbound_verdict(agent, ["BOSS@example.org", "partner@example.net"]) == PASSED
    assert outbound_verdict(agent, ["boss@example.org", "Eve@Example.org"]) == OutboundVerdict(
        "review", "eve@example.org is not on the agent's outbound allowlist"
    )


def test_an_empty_allowlist_matches_no_one() -> None:
    verdict = outbound_verdict(gated("allowlist"), ["boss@example.org"])
    assert verdict.outcome == "review"


@pytest.mark.parametrize("action", ["flag", "block"])
def test_the_domain_policy_passes_the_agents_own_domain_only(action: str) -> None:
    agent = gated("domain", action=action)
    assert outbound_verdict(agent, ["colleague@Corp.Example"]) == PASSED
    assert outbound_verdict(agent, ["someone@sub.corp.example"]) == OutboundVerdict(
        action, "someone@sub.corp.example is not on the agent's domain corp.example"
    )
