"""The published e2a 2.x SDKs (2.2.0 and 2.5.0) managing an account on `/api/v1`: domains,
agents and the review queue answer bodies their pydantic models validate (Literal enums and
all), the held mail is approved or rejected once, and refusals reach the script as
`E2AApiError` with the status the gateway answered. Each SDK runs in its own virtualenv, in a
subprocess in isolated mode.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from e2a_gateway.app import RunningGateway
from tests.conftest import Account
from tests.delivery_support import create_agent
from tests.relay_support import relay_port, sink  # noqa: F401  (fixtures)
from tests.test_sdk2_retries import calls, sdk25_python, settings
from tests.test_sdk_compat import sdk_python

pytestmark = pytest.mark.slow

__all__ = ["sdk25_python", "sdk_python", "settings"]  # fixtures


@pytest.fixture(params=["sdk_python", "sdk25_python"])
def any_sdk2(request: pytest.FixtureRequest) -> Path:
    """The python of one published 2.x SDK (2.2.0, then 2.5.0)."""
    python: Path = request.getfixturevalue(request.param)
    return python


async def test_domains_agents_and_reviews_answer_what_the_sdk_validates(
    running: RunningGateway, make_account: Any, any_sdk2: Path
) -> None:
    owner: Account = await make_account("owner@example.com")
    agent = await create_agent(owner, "bot")
    manage = [
        {"do": "register_domain", "args": ["corp.example"]},
        {"do": "register_domain", "args": ["corp.example"]},
        {"do": "verify_domain", "args": ["corp.example"]},
        {"do": "list_domains", "args": []},
        {"do": "verify_domain", "args": ["nowhere.example"]},
        {"do": "list_agents", "args": []},
        {"do": "get_agent", "args": ["nobody@agents.test"]},
        {"do": "update_agent", "args": [agent], "hitl_enabled": True, "hitl_ttl_seconds": 3600},
        {"do": "send", "args": [["dave@example.org"], "First", "Hello."]},
        {"do": "send", "args": [["dave@example.org"], "Second", "Hello."]},
        {"do": "list_pending_messages", "args": []},
    ]
    (
        made,
        again,
        verified,
        domains,
        unknown,
        agents,
        missing,
        updated,
        first,
        second,
        queue,
    ) = await calls(any_sdk2, running, owner, agent, *manage)

    assert made["answer"]["domain"] == "corp.example", made
    assert again["raised"] == 409, again
    assert verified["answer"]["verified"] is True, verified
    assert [d["domain"] for d in domains["answer"]["domains"]] == ["corp.example"], domains
    assert unknown["raised"] == 404 and missing["raised"] == 404, (unknown, missing)
    assert [a["email"] for a in agents["answer"]["agents"]] == [agent], agents
    assert updated["answer"]["hitl_enabled"] is True, updated
    assert updated["answer"]["hitl_ttl_seconds"] == 3600, updated
    assert first["answer"]["status"] == second["answer"]["status"] == "pending_approval"
    held = [first["answer"]["message_id"], second["answer"]["message_id"]]
    listed = queue["answer"]["messages"]
    assert sorted(m["id"] for m in listed) == sorted(held), queue
    assert {(m["status"], m["type"], m["direction"]) for m in listed} == {
        ("pending_approval", "send", "outbound")
    }

    review = [
        {"do": "approve_message", "args": [held[0]], "subject": "Edited"},
        {"do": "approve_message", "args": [held[0]]},
        {"do": "reject_message", "args": [held[1]]},
        {"do": "reject_message", "args": [held[1]], "reason": "twice"},
        {"do": "list_pending_messages", "args": []},
    ]
    approved, approved_twice, rejected, rejected_twice, emptied = await calls(
        any_sdk2, running, owner, agent, *review
    )

    assert approved["answer"]["message_id"] == held[0], approved
    assert approved["answer"]["edited"] is True, approved
    assert rejected["answer"] == {
        "message_id": held[1],
        "rejection_reason": "",
        "status": "rejected",
    }, rejected
    assert approved_twice["raised"] == rejected_twice["raised"] == 409
    assert emptied["answer"]["messages"] == [], emptied
