"""Registering and verifying a domain on `/v1` as e2a answers it: registering one the caller
has already answers it as it stands (same token), another account's verified domain is 409
`domain_taken`, and a verification whose DNS lookup fails reads as the record missing (200
`verified: false`) — nothing changes in either case. The MX records point at the gateway
throughout (`/v1` verifies a domain only then; test_v1_domain_probe)."""

from __future__ import annotations

from typing import Any

from e2a_gateway.app import RunningGateway
from e2a_gateway.mailauth.resolver import FixtureResolver
from tests.conftest import Account

MAIL_HOST = "mx.agents.test"  # smtp.hostname of the test settings


def route_here(resolver: FixtureResolver, *names: str) -> None:
    """Publish an MX pointing at the gateway for each of `names`."""
    resolver.load_zone({name: {"MX": [(10, MAIL_HOST)]} for name in names})


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

    route_here(resolver, "corp.example")
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
    route_here(resolver, "corp.example")
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


def longest_name() -> str:
    """A valid domain of exactly 253 characters, the most RFC 1035 allows."""
    name = ".".join(["a" * 62, "b" * 62, "c" * 62, "d" * 61, "ex"])
    assert len(name) == 253
    return name


async def test_the_name_check_judges_a_names_length(make_account: Any) -> None:
    """Both faces take a 253-character name written with its trailing dot (254 characters),
    and refuse a longer one as the name check does: 400 `invalid_domain`, its message not
    repeating the whole name."""
    alice: Account = await make_account("alice@example.com")
    name = longest_name()
    for path in ("/v1/domains", "/api/v1/domains"):
        made = await alice.http.post(path, json={"domain": f"{name.upper()}."})
        assert made.status_code in (201, 409), made.text
        assert made.status_code == 201 or made.json()["error"]["code"] == "domain_exists"
    listed = (await alice.http.get("/v1/domains")).json()["items"]
    assert [domain["domain"] for domain in listed] == [name]

    for too_long in (f"x.{name}", f"x.{name}.", "a." * 5000 + "example"):
        for path in ("/v1/domains", "/api/v1/domains"):
            refused = await alice.http.post(path, json={"domain": too_long})
            assert refused.status_code == 400, refused.text
            error = refused.json()["error"]
            assert error["code"] == "invalid_domain", error
            assert "too long" in error["message"] and len(error["message"]) < 200


async def test_a_txt_record_holding_the_token_among_other_text_proves_ownership(
    running: RunningGateway, make_account: Any
) -> None:
    """e2a verifies a domain when one of its apex TXT records holds the token: among other
    records, and also with text around it — the quotes a DNS provider's form stored with the
    value pasted into it, say. A record with another token, or the token cut short, proves
    nothing; nor does the token published under another name."""
    running.gateway.settings.env = "production"
    resolver = running.gateway.resolver
    assert isinstance(resolver, FixtureResolver)
    alice: Account = await make_account("alice@example.com")
    tokens = {}
    for name in ("quoted.example", "other.example", "short.example", "elsewhere.example"):
        made = await alice.http.post("/v1/domains", json={"domain": name})
        tokens[name] = made.json()["verification_token"]
    route_here(resolver, *tokens, "www.elsewhere.example")
    unrelated = ["v=spf1 include:relay.example.net ~all", "google-site-verification=abc"]
    resolver.set_txt("quoted.example", [*unrelated, f'"{tokens["quoted.example"]}"'])
    resolver.set_txt("other.example", [*unrelated, tokens["quoted.example"]])
    resolver.set_txt("short.example", [tokens["short.example"][:-1]])
    resolver.set_txt("www.elsewhere.example", [tokens["elsewhere.example"]])

    for name in ("other.example", "short.example", "elsewhere.example"):
        legacy = await alice.http.post(f"/api/v1/domains/{name}/verify")
        assert legacy.status_code == 412, legacy.text
        assert tokens[name] in legacy.json()["error"]["message"]
        assert (await alice.http.post(f"/v1/domains/{name}/verify")).json()["verified"] is False
    verified = await alice.http.post("/v1/domains/quoted.example/verify")
    assert verified.status_code == 200 and verified.json()["verified"] is True, verified.text
