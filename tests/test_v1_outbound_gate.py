"""An agent's outbound gate over real HTTP, as e2a's protection config defines it: whom the
agent may mail unquestioned (anyone, an allowlist, its own domain) and what becomes of a send
to anyone else — sent flagged, held for approval (with the reason as the hold's detail), or
refused 403 `blocked_by_policy` with nothing stored; `/api/v1`'s `hitl_enabled` is the gate
that holds every send."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from tests.conftest import Account
from tests.test_v1_reviews import BOT, owner, protect, protection, resolver, v1_agent

__all__ = ["owner", "resolver"]  # the fixtures these tests share with test_v1_reviews


def gate(policy: str, action: str, allowlist: list[str] | None = None) -> dict[str, Any]:
    config = protection()
    config["outbound"]["gate"] = {"policy": policy, "allowlist": allowlist or [], "action": action}
    return config


async def send(owner: Account, *to: str, subject: str = "Hello") -> Any:
    return await owner.http.post(
        v1_agent(BOT, "/messages"), json={"to": list(to), "subject": subject, "text": "Hi."}
    )


async def sent_subjects(owner: Account) -> list[str]:
    listed = await owner.http.get(v1_agent(BOT, "/messages"), params={"direction": "outbound"})
    assert listed.status_code == 200, listed.text
    return sorted(item["subject"] for item in listed.json()["items"])


async def test_an_allowlist_holds_sends_to_anyone_not_on_it(owner: Account) -> None:
    shown = await protect(owner, BOT, gate("allowlist", "review", [" Boss@Example.org "]))
    assert shown["outbound"]["gate"] == {
        "policy": "allowlist",
        "allowlist": ["boss@example.org"],
        "action": "review",
    }
    trusted = await send(owner, "boss@example.org", subject="To the boss")
    assert trusted.status_code == 202 and trusted.json()["status"] == "accepted", trusted.text
    held = await send(owner, "boss@example.org", "eve@example.org", subject="To Eve too")
    assert held.status_code == 202 and held.json()["status"] == "pending_review", held.text

    (review,) = (await owner.http.get("/v1/reviews")).json()["items"]
    assert review["id"] == held.json()["message_id"] and review["subject"] == "To Eve too"
    assert review["hold_reason"] == {
        "type": "gate",
        "code": "recipient_gate",
        "summary": "One or more recipients aren't allowed by the inbox policy.",
        "detail": "eve@example.org is not on the agent's outbound allowlist",
    }
    legacy = (await owner.http.get(f"/api/v1/agents/{quote(BOT, safe='')}")).json()
    assert legacy["hitl_enabled"] is False  # not every send waits
    approved = await owner.http.post(f"/v1/reviews/{review['id']}/approve", json={})
    assert approved.status_code == 202, approved.text


async def test_the_domain_policy_refuses_sends_off_the_agents_domain(owner: Account) -> None:
    await protect(owner, BOT, gate("domain", "block"))
    inside = await send(owner, "colleague@agents.test", subject="Inside")
    assert inside.status_code == 202, inside.text
    refused = await send(owner, "colleague@agents.test", "x@example.org", subject="Outside")
    assert refused.status_code == 403, refused.text
    error = refused.json()["error"]
    assert error["code"] == "blocked_by_policy"
    assert "x@example.org is not on the agent's domain agents.test" in error["message"]
    assert await sent_subjects(owner) == ["Inside"]  # nothing of the refused send is stored
    listed = await owner.http.get("/v1/events", params={"type": "email.blocked"})
    (blocked,) = listed.json()["items"]
    data = blocked["data"]
    assert data["message_id"].startswith("msgblk_") and data["direction"] == "outbound"
    assert (data["to"], data["subject"]) == (["colleague@agents.test", "x@example.org"], "Outside")
    assert data["reason_source"] == "recipient_gate" and "x@example.org" in data["reason"]


async def test_a_flagging_gate_sends_and_keeps_the_reason(owner: Account) -> None:
    await protect(owner, BOT, gate("allowlist", "flag"))
    sent = await send(owner, "carol@example.net", subject="Flagged")
    assert sent.status_code == 202 and sent.json()["status"] == "accepted", sent.text
    read = await owner.http.get(v1_agent(BOT, f"/messages/{sent.json()['message_id']}"))
    assert read.status_code == 200, read.text
    assert read.json()["flagged"] is True
    assert read.json()["flag_reason"] == (
        "carol@example.net is not on the agent's outbound allowlist"
    )
    assert (await owner.http.get("/v1/reviews")).json()["items"] == []


async def test_hitl_enabled_is_the_gate_that_holds_every_send(owner: Account) -> None:
    agent_path = f"/api/v1/agents/{quote(BOT, safe='')}"
    on = await owner.http.put(agent_path, json={"hitl_enabled": True})
    assert on.status_code == 200 and on.json()["hitl_enabled"] is True, on.text
    shown = (await owner.http.get(v1_agent(BOT, "/protection"))).json()["outbound"]["gate"]
    assert shown == {"policy": "allowlist", "allowlist": [], "action": "review"}
    held = await send(owner, "boss@example.org")
    assert held.json()["status"] == "pending_review", held.text

    off = await owner.http.put(agent_path, json={"hitl_enabled": False})
    assert off.json()["hitl_enabled"] is False
    shown = (await owner.http.get(v1_agent(BOT, "/protection"))).json()["outbound"]["gate"]
    assert shown == {"policy": "open", "allowlist": [], "action": "flag"}

    # Turning off a hold of every send leaves a gate that holds only some sends as it is.
    await protect(owner, BOT, gate("allowlist", "review", ["boss@example.org"]))
    await owner.http.put(agent_path, json={"hitl_enabled": False})
    shown = (await owner.http.get(v1_agent(BOT, "/protection"))).json()["outbound"]["gate"]
    assert shown == {"policy": "allowlist", "allowlist": ["boss@example.org"], "action": "review"}
