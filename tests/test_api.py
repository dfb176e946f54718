"""REST API over real HTTP against a running gateway: resources, errors and ownership."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from e2a_gateway.app import RunningGateway
from e2a_gateway.mailauth.resolver import FixtureResolver
from tests.conftest import SHARED_DOMAIN, Account, agent_path
from tests.databases import reported_backend


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response is a JSON error with this status and code and a message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code, error
    assert error["message"]
    return dict(error)


async def test_health_and_info(anonymous: httpx.AsyncClient) -> None:
    health = await anonymous.get("/api/health")
    assert health.status_code == 200
    storage = {"backend": reported_backend(), "state": "up"}
    assert health.json() == {"status": "ok", "storage": storage}
    info = (await anonymous.get("/api/v1/info")).json()
    assert info["shared_domain"] == SHARED_DOMAIN
    assert info["slug_registration_enabled"] is True
    assert info["public_url"] == "http://localhost:8080"
    assert info["version"]


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "missing"),
        ("Bearer", "missing"),
        ("Basic abc", "missing"),
        ("Bearer e2a_123", "malformed"),
        ("Bearer e2a_" + "0" * 64, "unknown"),
    ],
)
async def test_bad_credentials_get_401(
    anonymous: httpx.AsyncClient, header: str | None, reason: str
) -> None:
    headers = {"Authorization": header} if header else {}
    response = await anonymous.get("/api/v1/agents", headers=headers)
    assert reason in assert_error(response, 401, "unauthorized")["message"]


async def test_agent_lifecycle(make_account: Any) -> None:
    alice: Account = await make_account("alice@example.com")
    created = await alice.http.post(
        "/api/v1/agents", json={"slug": "bot", "agent_mode": "local", "name": "Bot"}
    )
    assert created.status_code == 201, created.text
    agent = created.json()
    address = f"bot@{SHARED_DOMAIN}"
    assert agent == {
        "id": address,
        "email": address,
        "domain": SHARED_DOMAIN,
        "name": "Bot",
        "webhook_url": None,
        "agent_mode": "local",
        "domain_verified": True,
        "hitl_enabled": False,
        "hitl_ttl_seconds": 604800,
        "hitl_expiration_action": "reject",
        "approval_notifications": True,
        "created_at": agent["created_at"],
    }
    assert agent["created_at"].endswith("Z")
    listed = (await alice.http.get("/api/v1/agents")).json()["agents"]
    assert [a["email"] for a in listed] == [address]
    for path in (agent_path(address), f"/api/v1/agents/{address}"):
        assert (await alice.http.get(path)).json()["email"] == address
    assert (await alice.http.get(agent_path(address.upper()))).status_code == 200

    updated = await alice.http.put(
        agent_path(address),
        json={"hitl_enabled": True, "hitl_ttl_seconds": 3600, "hitl_expiration_action": "approve"},
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["hitl_enabled"] is True
    assert updated.json()["hitl_ttl_seconds"] == 3600
    assert updated.json()["name"] == "Bot"

    to_cloud = await alice.http.put(agent_path(address), json={"agent_mode": "cloud"})
    assert_error(to_cloud, 400, "webhook_url_required")
    to_cloud = await alice.http.put(
        agent_path(address),
        json={"agent_mode": "cloud", "webhook_url": "https://hooks.example.com/e2a"},
    )
    assert to_cloud.json()["agent_mode"] == "cloud"

    deleted = await alice.http.delete(agent_path(address))
    assert deleted.status_code == 200 and deleted.json() == {"status": "deleted"}
    assert_error(await alice.http.get(agent_path(address)), 404, "not_found")


async def test_form_encoded_curl_body_is_read_as_json(make_account: Any) -> None:
    alice: Account = await make_account("alice@example.com")
    response = await alice.http.post(
        "/api/v1/agents",
        content=b'{"slug":"curly","agent_mode":"local"}',
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b"", 400, "invalid_json"),
        (b"[1, 2]", 400, "invalid_json"),
        (b'{"slug": "ok-bot", "agent_mode": "local", "colour": "red"}', 400, "invalid_request"),
        (b'{"agent_mode": "local"}', 400, "invalid_request"),
        (
            b'{"slug": "ok-bot", "email": "x@agents.test", "agent_mode": "local"}',
            400,
            "invalid_request",
        ),
        (b'{"slug": "Bad_Slug", "agent_mode": "local"}', 400, "invalid_slug"),
        (b'{"slug": "-bot", "agent_mode": "local"}', 400, "invalid_slug"),
        (b'{"slug": "b", "agent_mode": "local"}', 400, "invalid_slug"),
        (b'{"slug": "' + b"a" * 41 + b'", "agent_mode": "local"}', 400, "invalid_slug"),
        (b'{"slug": "postmaster", "agent_mode": "local"}', 400, "reserved_slug"),
        (b'{"slug": "admin", "agent_mode": "local"}', 400, "reserved_slug"),
        (b'{"slug": "ok-bot", "agent_mode": "robot"}', 400, "invalid_request"),
        (b'{"slug": "ok-bot"}', 400, "webhook_url_required"),
        (b'{"slug": "ok-bot", "webhook_url": "ftp://x.example.com"}', 400, "invalid_webhook_url"),
        (b'{"slug": "ok-bot", "webhook_url": "http://127.0.0.1:9/x"}', 400, "invalid_webhook_url"),
        (
            b'{"slug": "ok-bot", "webhook_url": "http://169.254.169.254/"}',
            400,
            "invalid_webhook_url",
        ),
        (b'{"email": "not-an-address", "agent_mode": "local"}', 400, "invalid_email"),
        (b'{"email": "bot@unknown.example", "agent_mode": "local"}', 400, "domain_not_registered"),
    ],
)
async def test_bad_agent_registrations(
    make_account: Any, body: bytes, status: int, code: str
) -> None:
    alice: Account = await make_account("alice@example.com")
    response = await alice.http.post("/api/v1/agents", content=body)
    assert_error(response, status, code)
    assert (await alice.http.get("/api/v1/agents")).json()["agents"] == []


async def test_unknown_field_is_named(make_account: Any) -> None:
    alice: Account = await make_account("alice@example.com")
    response = await alice.http.post(
        "/api/v1/agents", json={"slug": "ok", "agent_mode": "local", "colour": "red"}
    )
    assert "colour" in assert_error(response, 400, "invalid_request")["message"]


async def test_duplicate_agent_is_409_even_across_users(make_account: Any) -> None:
    alice: Account = await make_account("alice@example.com")
    bob: Account = await make_account("bob@example.com")
    body = {"slug": "dup", "agent_mode": "local"}
    assert (await alice.http.post("/api/v1/agents", json=body)).status_code == 201
    assert_error(await alice.http.post("/api/v1/agents", json=body), 409, "agent_exists")
    assert_error(await bob.http.post("/api/v1/agents", json=body), 409, "agent_exists")


async def test_no_shared_domain_disables_slugs(make_account: Any, running: RunningGateway) -> None:
    running.gateway.settings.shared_domain = ""
    alice: Account = await make_account("alice@example.com")
    response = await alice.http.post("/api/v1/agents", json={"slug": "bot", "agent_mode": "local"})
    assert_error(response, 400, "slug_registration_disabled")
    assert (await alice.http.get("/api/v1/info")).json()["slug_registration_enabled"] is False


async def test_custom_domain_flow(make_account: Any, running: RunningGateway) -> None:
    running.gateway.settings.env = "production"
    resolver = running.gateway.resolver
    assert isinstance(resolver, FixtureResolver)
    alice: Account = await make_account("alice@example.com")

    created = await alice.http.post("/api/v1/domains", json={"domain": "Corp.Example."})
    assert created.status_code == 201, created.text
    domain = created.json()
    assert domain["domain"] == "corp.example"
    assert domain["verified"] is False
    token = domain["verification_token"]
    assert token.startswith("e2a-verify=") and len(token) == len("e2a-verify=") + 32
    assert domain["dns_records"] == {
        "mx": {"host": "@", "value": "mx.agents.test", "priority": 10},
        "txt": {"host": "@", "value": token},
    }

    register = await alice.http.post(
        "/api/v1/agents", json={"email": "support@corp.example", "agent_mode": "local"}
    )
    assert_error(register, 400, "domain_not_verified")

    missing = await alice.http.post("/api/v1/domains/corp.example/verify")
    assert token in assert_error(missing, 412, "verification_record_missing")["message"]

    resolver.failing.add("corp.example")
    assert_error(
        await alice.http.post("/api/v1/domains/corp.example/verify"), 503, "dns_unavailable"
    )
    resolver.failing.clear()

    resolver.set_txt("corp.example", ["v=spf1 -all", token])
    verified = await alice.http.post("/api/v1/domains/corp.example/verify")
    assert verified.status_code == 200, verified.text
    assert verified.json()["verified"] is True and verified.json()["verified_at"]

    agent = await alice.http.post(
        "/api/v1/agents", json={"email": "Support@Corp.Example", "agent_mode": "local"}
    )
    assert agent.status_code == 201, agent.text
    assert agent.json()["email"] == "support@corp.example"
    assert agent.json()["domain_verified"] is True

    assert_error(await alice.http.delete("/api/v1/domains/corp.example"), 409, "domain_in_use")
    await alice.http.delete(agent_path("support@corp.example"))
    assert (await alice.http.delete("/api/v1/domains/corp.example")).status_code == 204
    assert (await alice.http.get("/api/v1/domains")).json() == {"domains": []}


async def test_development_mode_verifies_without_dns(make_account: Any) -> None:
    alice: Account = await make_account("alice@example.com")
    await alice.http.post("/api/v1/domains", json={"domain": "dev.example"})
    response = await alice.http.post("/api/v1/domains/dev.example/verify")
    assert response.status_code == 200 and response.json()["verified"] is True


async def test_an_address_no_path_can_name_is_refused_for_an_agent(make_account: Any) -> None:
    """A `/` is allowed in an email address's local part, but the API names an agent by its
    address in the request path, where a `/` (escaped or not) splits the path: such an agent
    could never be read, changed or deleted. It is refused when registered, saying why."""
    alice: Account = await make_account("alice@example.com")
    await alice.http.post("/api/v1/domains", json={"domain": "dev.example"})
    assert (await alice.http.post("/api/v1/domains/dev.example/verify")).status_code == 200
    for api, mode in (("/api/v1", {"agent_mode": "local"}), ("/v1", {})):
        register = await alice.http.post(
            f"{api}/agents", json={"email": "sales/eu@dev.example", **mode}
        )
        assert register.status_code in (400, 422), register.text
        assert "/" in register.text and "path" in register.text
    assert (await alice.http.get("/api/v1/agents")).json()["agents"] == []


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"domain": "not a domain"}, 400, "invalid_domain"),
        ({"domain": "localhost"}, 400, "invalid_domain"),
        ({"domain": SHARED_DOMAIN}, 400, "domain_reserved"),
        ({}, 400, "invalid_request"),
        ({"domain": "ok.example", "extra": 1}, 400, "invalid_request"),
    ],
)
async def test_bad_domains(make_account: Any, body: dict[str, Any], status: int, code: str) -> None:
    alice: Account = await make_account("alice@example.com")
    assert_error(await alice.http.post("/api/v1/domains", json=body), status, code)


async def test_a_domain_no_valid_idna_name_is_refused(make_account: Any) -> None:
    """A name whose label beyond ASCII is no valid IDNA U-label (an emoji, full-width letters,
    which browsers and mail programs map to plain `corp`, a lone joiner) is refused as e2a
    refuses it for a recipient, rather than registered under an A-label no mail program
    would send to (`xn--oi7cyadh.example` for full-width `corp.example`); valid ones are taken."""
    alice: Account = await make_account("alice@example.com")
    for api in ("/api/v1", "/v1"):
        for name in ("\U0001f600.example", "\uff43\uff4f\uff52\uff50.example", "\u200d.example"):
            refused = await alice.http.post(f"{api}/domains", json={"domain": name})
            assert refused.status_code == 400, refused.text
            assert refused.json()["error"]["code"] == "invalid_domain", refused.text
            assert "IDNA" in refused.json()["error"]["message"]
    made = await alice.http.post("/v1/domains", json={"domain": "Straße.example"})
    assert made.status_code == 201 and made.json()["domain"] == "xn--strae-oqa.example", made.text
    listed = (await alice.http.get("/api/v1/domains")).json()["domains"]
    assert [domain["domain"] for domain in listed] == ["xn--strae-oqa.example"]


async def test_a_long_unicode_domain_is_refused_at_once(make_account: Any) -> None:
    """A name with a label of thousands of distinct non-ASCII characters (no valid label is
    over 63) is refused without first being encoded as Punycode, whose cost grows with the
    square of the label: one such request from any key used to hold the gateway for
    seconds to minutes."""
    alice: Account = await make_account("alice@example.com")
    created = await alice.http.post("/api/v1/agents", json={"slug": "bot", "agent_mode": "local"})
    assert created.status_code == 201, created.text
    label = "".join(chr(0x4E00 + n) for n in range(12_000))
    started = time.monotonic()
    in_path = quote(f"{label[:6000]}.example")  # within a URL's 64 KiB
    assert_error(await alice.http.get(f"/v1/domains/{in_path}"), 404, "not_found")
    sent = await alice.http.post(
        f"/v1/agents/bot@{SHARED_DOMAIN}/messages",
        json={"to": [f"someone@{label}.example"], "subject": "Hi", "text": "Hello"},
    )
    assert_error(sent, 400, "invalid_recipient")
    assert time.monotonic() - started < 3


async def test_domain_verified_by_another_user_is_409(make_account: Any) -> None:
    alice: Account = await make_account("alice@example.com")
    bob: Account = await make_account("bob@example.com")
    await alice.http.post("/api/v1/domains", json={"domain": "shared.example"})
    await bob.http.post("/api/v1/domains", json={"domain": "shared.example"})
    assert (await alice.http.post("/api/v1/domains/shared.example/verify")).status_code == 200
    assert_error(await bob.http.post("/api/v1/domains/shared.example/verify"), 409, "domain_exists")
    carol: Account = await make_account("carol@example.com")
    assert_error(
        await carol.http.post("/api/v1/domains", json={"domain": "shared.example"}),
        409,
        "domain_exists",
    )


async def test_refusals_say_whose_registration_is_in_the_way(make_account: Any) -> None:
    """Registering a domain one holds already says so, not "by you, or by another user"; and
    an agent asked for on a domain another account verified (after the caller registered it)
    is refused saying the caller's registration can never be verified, rather than asking
    them to verify it (which would then be 409)."""
    alice: Account = await make_account("alice@example.com")
    bob: Account = await make_account("bob@example.com")
    await alice.http.post("/api/v1/domains", json={"domain": "held.example"})
    again = await alice.http.post("/api/v1/domains", json={"domain": "Held.Example."})
    message = assert_error(again, 409, "domain_exists")["message"]
    assert "you have registered held.example already" in message and "another" not in message

    await bob.http.post("/api/v1/domains", json={"domain": "held.example"})
    assert (await alice.http.post("/api/v1/domains/held.example/verify")).status_code == 200
    for api, mode in (("/api/v1", {"agent_mode": "local"}), ("/v1", {})):
        refused = await bob.http.post(f"{api}/agents", json={"email": "x@held.example", **mode})
        assert refused.status_code == 400, refused.text
        message = refused.json()["error"]["message"]
        assert "verified by another account" in message and "delete" in message, message


async def test_signing_secrets(make_account: Any) -> None:
    alice: Account = await make_account("alice@example.com")
    (default,) = (await alice.http.get("/api/v1/users/me/signing-secrets")).json()["secrets"]
    assert default["name"] == "default" and default["id"].startswith("wsec_")
    assert "secret" not in default and "seed" not in default
    created = await alice.http.post("/api/v1/users/me/signing-secrets", json={"name": "rotate"})
    assert created.status_code == 201
    secret = created.json()
    assert len(secret["secret"]) == 64 and secret["secret_prefix"] == secret["secret"][:12]
    listed = (await alice.http.get("/api/v1/users/me/signing-secrets")).json()["secrets"]
    assert [s["name"] for s in listed] == ["rotate", "default"]
    for _ in range(3):
        assert (await alice.http.post("/api/v1/users/me/signing-secrets")).status_code == 201
    assert_error(
        await alice.http.post("/api/v1/users/me/signing-secrets"), 400, "signing_secret_limit"
    )
    ids = [
        s["id"]
        for s in (await alice.http.get("/api/v1/users/me/signing-secrets")).json()["secrets"]
    ]
    for secret_id in ids[:-1]:
        assert (
            await alice.http.delete(f"/api/v1/users/me/signing-secrets/{secret_id}")
        ).status_code == 204
    assert_error(
        await alice.http.delete(f"/api/v1/users/me/signing-secrets/{ids[-1]}"),
        400,
        "last_signing_secret",
    )


async def test_api_keys_create_list_revoke(make_account: Any, anonymous: httpx.AsyncClient) -> None:
    alice: Account = await make_account("alice@example.com")
    created = await alice.http.post("/api/v1/users/me/api-keys", json={"name": "laptop"})
    assert created.status_code == 201
    new_key = created.json()["key"]
    assert new_key.startswith("e2a_") and len(new_key) == 68
    listed = (await alice.http.get("/api/v1/users/me/api-keys")).json()["api_keys"]
    assert {k["name"] for k in listed} == {"bootstrap", "laptop"}
    assert all("key" not in k and len(k["key_prefix"]) == 12 for k in listed)
    headers = {"Authorization": f"Bearer {new_key}"}
    assert (await anonymous.get("/api/v1/agents", headers=headers)).status_code == 200
    key_id = created.json()["id"]
    assert (await alice.http.delete(f"/api/v1/users/me/api-keys/{key_id}")).status_code == 204
    assert_error(await anonymous.get("/api/v1/agents", headers=headers), 401, "unauthorized")
    assert_error(await alice.http.delete(f"/api/v1/users/me/api-keys/{key_id}"), 404, "not_found")


async def test_the_key_list_says_what_each_key_reaches_and_until_when(
    make_account: Any, anonymous: httpx.AsyncClient
) -> None:
    """A key made over `/v1` may be bound to one agent or expire; listed here, it must not
    pass for a key of the whole account that never expires (an expired one is refused)."""
    alice: Account = await make_account("alice@example.com")
    made = await alice.http.post("/api/v1/agents", json={"slug": "bot", "agent_mode": "local"})
    assert made.status_code == 201, made.text
    bot = made.json()["email"]
    bound = await alice.http.post(
        "/v1/account/api-keys",
        json={"scope": "agent", "agent_email": bot, "expires_at": "2999-01-01T00:00:00Z"},
    )
    assert bound.status_code == 201, bound.text
    listed = {
        k["id"]: k for k in (await alice.http.get("/api/v1/users/me/api-keys")).json()["api_keys"]
    }
    entry = listed[bound.json()["id"]]
    assert (entry["scope"], entry["agent_email"], entry["expires_at"]) == (
        "agent",
        bot,
        "2999-01-01T00:00:00Z",
    )
    created = await alice.http.post("/api/v1/users/me/api-keys", json={"name": "laptop"})
    assert created.status_code == 201
    assert (created.json()["scope"], created.json()["agent_email"]) == ("account", None)
    assert created.json()["expires_at"] is None


async def test_unknown_route_and_method_are_json(make_account: Any) -> None:
    alice: Account = await make_account("alice@example.com")
    assert_error(await alice.http.get("/api/v1/nothing-here"), 404, "not_found")
    assert_error(await alice.http.patch("/api/v1/agents"), 405, "method_not_allowed")


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("status=deleted", "invalid_request"),
        ("page_size=0", "invalid_request"),
        ("page_size=101", "invalid_request"),
        ("page_size=ten", "invalid_request"),
        ("page_size=" + "1" * 5000, "invalid_request"),  # beyond what int() converts
        ("token=garbage!!", "invalid_token"),
        ("token=djI6MTA", "invalid_token"),
    ],
)
async def test_bad_message_queries(make_account: Any, query: str, code: str) -> None:
    alice: Account = await make_account("alice@example.com")
    await alice.http.post("/api/v1/agents", json={"slug": "qq", "agent_mode": "local"})
    response = await alice.http.get(agent_path(f"qq@{SHARED_DOMAIN}", f"/messages?{query}"))
    assert_error(response, 400, code)


async def test_webhook_host_resolving_to_a_private_address_is_refused(
    make_account: Any, resolver: FixtureResolver
) -> None:
    resolver.load_zone(
        {"internal.example": {"A": ["10.0.0.5"]}, "public.example": {"A": ["93.184.215.14"]}}
    )
    alice: Account = await make_account("alice@example.com")
    refused = await alice.http.post(
        "/api/v1/agents", json={"slug": "hooked", "webhook_url": "https://internal.example/hook"}
    )
    message = assert_error(refused, 400, "invalid_webhook_url")["message"]
    assert "internal.example" in message and "private" in message
    assert "10.0.0.5" not in message  # the operator's internal addresses stay unknown to callers
    accepted = await alice.http.post(
        "/api/v1/agents", json={"slug": "hooked", "webhook_url": "https://public.example/hook"}
    )
    assert accepted.status_code == 201, accepted.text


@pytest.mark.parametrize(
    "domain",
    ["192.0.2.10", "127.0.0.1", "10.1", "0x7f.1", "1.2.3.4.5", "mail.example.123", "10.0.0.1."],
)
async def test_ip_literals_are_not_domains(make_account: Any, domain: str) -> None:
    alice: Account = await make_account("alice@example.com")
    response = await alice.http.post("/api/v1/domains", json={"domain": domain})
    message = assert_error(response, 400, "invalid_domain")["message"]
    assert "is an IP address, not a domain name" in message
    assert (await alice.http.get("/api/v1/domains")).json() == {"domains": []}


@pytest.mark.parametrize(
    ("domain", "owner"),
    [
        ("mx.agents.test", "smtp.hostname"),  # the test gateway's smtp.hostname
        ("MX.Agents.Test.", "smtp.hostname"),
        ("bots.agents.test", "under shared_domain agents.test"),
        ("a.b.mx.agents.test", "under shared_domain agents.test"),
        ("gateway.e2a-prod.net", "the host of http.public_url"),
        ("eu.gateway.e2a-prod.net", "under the host of http.public_url gateway.e2a-prod.net"),
    ],
)
async def test_the_gateways_own_names_cannot_be_registered(
    make_account: Any, running: RunningGateway, domain: str, owner: str
) -> None:
    running.gateway.settings.http.public_url = "https://gateway.e2a-prod.net"
    alice: Account = await make_account("alice@example.com")
    response = await alice.http.post("/api/v1/domains", json={"domain": domain})
    message = assert_error(response, 400, "domain_reserved")["message"]
    assert f"is one of this gateway's own names ({owner})" in message
    assert (await alice.http.get("/api/v1/domains")).json() == {"domains": []}
    parent = await alice.http.post("/api/v1/domains", json={"domain": "e2a-prod.net"})
    assert parent.status_code == 201, parent.text


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1//agents",
        "/api//health",
        "//api/v1/agents",
        "/api/v1/agents//",
        "/agents//bot@agents.test",
        "/static//x",
        "/api/v1/agents/",
        "/agents/",
        "/",
    ],
)
async def test_no_answer_echoes_the_host_header(anonymous: httpx.AsyncClient, path: str) -> None:
    """Redirects are relative (or built from http.public_url), never from the Host header."""
    response = await anonymous.get(path, headers={"Host": "evil.example"})
    assert "evil.example" not in response.text
    assert all("evil.example" not in value for value in response.headers.values())
    location = response.headers.get("location")
    assert location is None or (location.startswith("/") and not location.startswith("//"))


async def test_assets_serves_the_dashboards_files_and_nothing_else(
    anonymous: httpx.AsyncClient,
) -> None:
    """`/assets/` names only the dashboard's own files: any other name, one too long for the
    filesystem included, is a plain 404 (it was an error 500, logged with a traceback)."""
    css = await anonymous.get("/assets/dashboard.css")
    assert css.status_code == 200 and "--accent" in css.text
    assert css.headers["content-type"].startswith("text/css")
    icon = await anonymous.get("/assets/favicon.svg")
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg")
    for name in ("9" * 400, "missing.css", "../site.py", "..%2Fsite.py", "%00", "dashboard.css/x"):
        assert (await anonymous.get(f"/assets/{name}")).status_code == 404, name
