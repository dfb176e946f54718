"""Registering and verifying a domain on `/v1` as e2a answers it: registering one the caller
has already answers it as it stands (same token), another account's verified domain is 409
`domain_taken`, and a verification whose DNS lookup fails reads as the record missing (200
`verified: false`) — nothing changes in either case."""

from __future__ import annotations

from typing import Any

from e2a_gateway.app import RunningGateway
from e2a_gateway.mailauth.resolver import FixtureResolver
from tests.conftest import Account


async def test_registering_again_and_verifying_without_dns(
    running: RunningGateway, make_account: Any
) -> None:
    running.gateway.settings.env = "production"
    resolver = running.gateway.resolver
    assert isinstance(resolver, FixtureResolver)
    alice: Account = await make_account("alice@example.com")
    bob: Account = await make_account("bob@example.com")

    first = await alice.http.post("/v1/domains", json={"domain": "corp.example"})
    assert first.status_code == 201, first.text
    again = await alice.http.post("/v1/domains", json={"domain": "Corp.Example"})
    assert again.status_code == 201, again.text
    assert again.json()["verification_token"] == first.json()["verification_token"]
    listed = (await alice.http.get("/v1/domains")).json()["items"]
    assert [domain["domain"] for domain in listed] == ["corp.example"]

    resolver.failing.add("corp.example")
    unanswered = await alice.http.post("/v1/domains/corp.example/verify")
    assert unanswered.status_code == 200, unanswered.text
    assert (unanswered.json()["domain"], unanswered.json()["verified"]) == ("corp.example", False)
    resolver.failing.clear()

    resolver.set_txt("corp.example", [first.json()["verification_token"]])
    verified = await alice.http.post("/v1/domains/corp.example/verify")
    assert verified.status_code == 200 and verified.json()["verified"] is True
    taken = await bob.http.post("/v1/domains", json={"domain": "corp.example"})
    assert taken.status_code == 409, taken.text
    assert taken.json()["error"]["code"] == "domain_taken"
    assert (await bob.http.get("/v1/domains")).json()["items"] == []
    kept = await alice.http.post("/v1/domains", json={"domain": "corp.example"})
    assert kept.status_code == 201 and kept.json()["verified"] is True


async def test_registering_again_a_domain_another_account_verified_meanwhile_is_409(
    running: RunningGateway, make_account: Any
) -> None:
    """A registration made while a domain was still open to everyone is not answered as
    if it could still succeed once another account has verified the domain: registering it
    again is 409 `domain_taken`, as for an account that never registered it."""
    running.gateway.settings.env = "production"
    resolver = running.gateway.resolver
    assert isinstance(resolver, FixtureResolver)
    alice: Account = await make_account("alice@example.com")
    bob: Account = await make_account("bob@example.com")

    early = await bob.http.post("/v1/domains", json={"domain": "corp.example"})
    assert early.status_code == 201, early.text
    claimed = await alice.http.post("/v1/domains", json={"domain": "corp.example"})
    resolver.set_txt("corp.example", [claimed.json()["verification_token"]])
    verified = await alice.http.post("/v1/domains/corp.example/verify")
    assert verified.json()["verified"] is True

    again = await bob.http.post("/v1/domains", json={"domain": "Corp.Example."})
    assert again.status_code == 409, again.text
    assert again.json()["error"]["code"] == "domain_taken"
    kept = await alice.http.post("/v1/domains", json={"domain": "corp.example"})
    assert kept.status_code == 201 and kept.json()["verified"] is True


async def test_deleting_a_domain_whose_agents_are_in_the_trash_says_so(
    running: RunningGateway, make_account: Any
) -> None:
    """An agent deleted to the trash still holds its domain: the refusal says so, and how to
    free it, rather than asking to delete agents the caller has just deleted."""
    alice: Account = await make_account("alice@example.com")
    await alice.http.post("/v1/domains", json={"domain": "corp.example"})
    assert (await alice.http.post("/v1/domains/corp.example/verify")).json()["verified"] is True
    created = await alice.http.post("/v1/agents", json={"email": "desk@corp.example"})
    assert created.status_code == 201, created.text
    trashed = await alice.http.delete("/v1/agents/desk@corp.example?confirm=DELETE")
    assert trashed.status_code == 200, trashed.text

    refused = await alice.http.delete("/v1/domains/corp.example?confirm=DELETE")
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["code"] == "domain_has_agents"
    assert "in the trash" in error["message"] and "permanent" in error["message"]
    legacy = await alice.http.delete("/api/v1/domains/corp.example")
    assert legacy.status_code == 409 and legacy.json()["error"]["message"] == error["message"]
