"""Which webhook URLs the gateway accepts and calls (the SSRF guard): the rules on plain data,
then at registration over real HTTP and at delivery time, when DNS has changed since
(rebinding), against a receiver on 127.0.0.1 that must never be reached."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from e2a_gateway.config import Settings
from e2a_gateway.mailauth.resolver import FixtureResolver
from e2a_gateway.storage.base import AgentChanges
from e2a_gateway.webhook_targets import (
    WebhookTargetError,
    check_webhook_url,
    ipv4_spelling,
    is_public_address,
)
from e2a_gateway.workers.subscribers import SubscriberWorker
from e2a_gateway.workers.webhook_connections import WebhookConnections
from e2a_gateway.workers.webhooks import WebhookWorker
from tests.conftest import Account, agent_path, make_settings
from tests.delivery_support import (
    accept,
    create_agent,
    delivery_status,
    mail,
    open_account,
    quiet_gateway,
    recorded_attempts,
)
from tests.http_receiver import HttpReceiver

PUBLIC = "93.184.215.14"
REACHES = {
    "mapped": ("::ffff:127.0.0.1", "::ffff:7f00:1 (which reaches 127.0.0.1)"),
    "compatible": ("::127.0.0.1", "::7f00:1 (which reaches 127.0.0.1)"),
    "nat64": ("64:ff9b::7f00:1", "64:ff9b::7f00:1 (which reaches 127.0.0.1)"),
    "6to4": ("2002:7f00:1::", "2002:7f00:1:: (which reaches 127.0.0.1)"),
    "mapped-private": ("::ffff:10.0.0.5", "::ffff:a00:5 (which reaches 10.0.0.5)"),
    "nat64-metadata": ("64:ff9b::a9fe:a9fe", "64:ff9b::a9fe:a9fe (which reaches 169.254.169.254)"),
    "6to4-private": ("2002:c0a8:101::1", "2002:c0a8:101::1 (which reaches 192.168.1.1)"),
    "compatible-private": ("::192.168.1.1", "::c0a8:101 (which reaches 192.168.1.1)"),
    "nat64-local-use": ("64:ff9b:1::5db8:d70e", "64:ff9b:1::5db8:d70e"),
    "translated": ("::ffff:0:127.0.0.1", "::ffff:0:7f00:1 (which reaches 127.0.0.1)"),
    "translated-metadata": (
        "::ffff:0:169.254.169.254",
        "::ffff:0:a9fe:a9fe (which reaches 169.254.169.254)",
    ),
    "loopback": ("::1", "::1"),
    "unspecified": ("::", "::"),
    "site-local": ("fec0::1", "fec0::1"),
}
"""IPv6 forms of loopback and private IPv4 addresses, IPv6's own loopback, unspecified and
site-local addresses (RFC 3879: deprecated, still routed inside networks that use them), and
how refusals describe them."""
FORMS = {name: address for name, (address, _) in REACHES.items()}


# -- the rules, on plain data ------------------------------------------------------------------


@pytest.mark.parametrize("address", FORMS.values(), ids=FORMS.keys())
def test_ipv6_forms_of_private_ipv4_addresses_are_not_public(address: str) -> None:
    assert not is_public_address(address)


@pytest.mark.parametrize(
    "address",
    [
        "::ffff:93.184.215.14",
        "::ffff:0:93.184.215.14",
        "64:ff9b::5db8:d70e",
        "2002:5db8:d70e::1",
        PUBLIC,
        "2606:4700::1",
    ],
)
def test_ipv6_forms_of_public_addresses_stay_public(address: str) -> None:
    assert is_public_address(address)


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.1", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0x7F.0.0.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("127.0.0.1.", "127.0.0.1"),
        ("10.1.2", "10.1.0.2"),
        ("0", "0.0.0.0"),
        ("93.184.215.14", PUBLIC),
        ("hooks.example.com", None),
        ("0x.example.com", None),
    ],
)
def test_numeric_hosts_are_read_as_browsers_read_them(host: str, address: str | None) -> None:
    found = ipv4_spelling(host)
    assert (None if found is None else str(found)) == address


@pytest.mark.parametrize("host", ["1.2.3.4.5", "08.1", "256.1.1.1", "4294967296", "1.0x1ffffff"])
def test_numbers_that_are_no_address_are_refused(host: str) -> None:
    with pytest.raises(WebhookTargetError, match="not a valid IPv4 address"):
        ipv4_spelling(host)


@pytest.mark.parametrize(
    ("url", "normalised"),
    [
        ("HTTPS://Hooks.Example.COM.:8443/in?x=1", "https://hooks.example.com:8443/in?x=1"),
        ("http://0x7f000001:8080/hook", "http://127.0.0.1:8080/hook"),
        ("http://[::FFFF:7f00:1]/hook", "http://[::ffff:7f00:1]/hook"),
        ("https://bücher.example/hook", "https://xn--bcher-kva.example/hook"),
        ("http://localhost./hook", "http://localhost/hook"),
    ],
)
def test_urls_are_stored_in_normal_form(url: str, normalised: str) -> None:
    assert check_webhook_url(url, require_https=False, allow_private=True) == normalised


BAD_URLS = {
    "port-too-large": ("http://loop.x.test:99999/x", "port must be a number from 1 to 65535"),
    "port-zero": ("https://hooks.example.com:0/x", "port must be a number from 1 to 65535"),
    "port-not-a-number": ("https://hooks.example.com:8o/x", "port must be a number"),
    "nul": ("https://hooks.example.com/x\x00y", "control characters (found U+0000"),
    "line-separator": ("https://hooks.example.com/a\u2028b", "found U+2028"),
    "space-in-host": ("https://hooks .example.com/", "found U+0020"),
    "too-long": ("https://hooks.example.com/" + "a" * 2048, "longer than 2048"),
    "bad-ipv6": ("http://[::1/x", "not a valid URL"),
    "bad-host": ("https://hooks_example.com/x", "not a valid host name"),
    "bad-number": ("http://1.2.3.4.5/x", "not a valid IPv4 address"),
    "no-host": ("https://:443/x", "must name a host"),
    "credentials": ("https://user:pw@hooks.example.com/x", "credentials"),
    "scheme": ("ftp://hooks.example.com/x", "http:// or https://"),
    "relative": ("/hook", "http:// or https://"),
}


@pytest.mark.parametrize(("url", "reason"), BAD_URLS.values(), ids=BAD_URLS.keys())
def test_malformed_urls_are_refused_with_the_reason(url: str, reason: str) -> None:
    with pytest.raises(WebhookTargetError, match=r"^webhook_url") as raised:
        check_webhook_url(url, require_https=False, allow_private=True)
    assert reason in str(raised.value)


LOCAL_URLS = {
    "short-form": "http://127.1/hook",
    "hex": "http://0x7f000001/hook",
    "decimal": "http://2130706433/hook",
    "octal": "http://0177.0.0.1/hook",
    "localhost-dot": "http://localhost./hook",
    "localhost-sub": "http://api.localhost/hook",
    "single-label": "http://intranet/hook",
    "zero": "http://0/hook",
    **{name: f"http://[{address}]/hook" for name, address in FORMS.items()},
}


@pytest.mark.parametrize("url", LOCAL_URLS.values(), ids=LOCAL_URLS.keys())
def test_private_targets_in_any_spelling_are_refused(url: str) -> None:
    with pytest.raises(WebhookTargetError, match=r"webhooks\.allow_private"):
        check_webhook_url(url, require_https=False, allow_private=False)


# -- at registration, over HTTP ----------------------------------------------------------------


async def register(account: Account, url: str) -> Any:
    return await account.http.post(
        "/api/v1/agents", json={"slug": "hooked", "agent_mode": "cloud", "webhook_url": url}
    )


def assert_refused(response: Any, *fragments: str) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_webhook_url"
    assert error["message"].startswith("webhook_url")
    for fragment in fragments:
        assert fragment in error["message"]


@pytest.mark.parametrize(
    ("url", "reason"),
    [BAD_URLS[name] for name in ("port-too-large", "line-separator", "bad-ipv6")],
)
async def test_registration_and_update_refuse_malformed_urls(
    make_account: Any, url: str, reason: str
) -> None:
    alice: Account = await make_account("alice@example.com")
    assert_refused(await register(alice, url), reason)
    assert (await alice.http.get("/api/v1/agents")).json()["agents"] == []

    local = await alice.http.post("/api/v1/agents", json={"slug": "later", "agent_mode": "local"})
    assert local.status_code == 201, local.text
    email = local.json()["email"]
    update = {"agent_mode": "cloud", "webhook_url": url}
    assert_refused(await alice.http.put(agent_path(email), json=update), reason)
    assert (await alice.http.get(agent_path(email))).json()["webhook_url"] is None


@pytest.mark.parametrize("url", LOCAL_URLS.values(), ids=LOCAL_URLS.keys())
async def test_registration_refuses_private_targets_in_any_spelling(
    make_account: Any, url: str
) -> None:
    alice: Account = await make_account("alice@example.com")
    assert_refused(await register(alice, url), "webhooks.allow_private")


def refused_name(host: str) -> str:
    """What a caller is told of a webhook host that resolves to an address it may not reach:
    the host it gave and how to fix it, never the address (the operator's internal DNS)."""
    return (
        f"webhook_url host {host} resolves to a private, loopback or link-local address; "
        "use a host that resolves to public addresses only (operators can allow private "
        "targets with webhooks.allow_private = true)"
    )


@pytest.mark.parametrize(("address", "described"), REACHES.values(), ids=REACHES.keys())
async def test_registration_refuses_names_resolving_to_ipv6_forms_of_private_addresses(
    make_account: Any, resolver: FixtureResolver, address: str, described: str
) -> None:
    resolver.load_zone({"sneaky.hooks.test": {"A": [PUBLIC], "AAAA": [address]}})
    alice: Account = await make_account("alice@example.com")
    response = await register(alice, "https://sneaky.hooks.test/x")
    assert response.status_code == 400, response.text
    assert response.json()["error"] == {
        "code": "invalid_webhook_url",
        "message": refused_name("sneaky.hooks.test"),
    }
    # An address the caller wrote in the URL is named back, with the IPv4 one it reaches.
    literal = await register(alice, f"https://[{address}]/x")
    assert_refused(literal, f"points at {described}, a private")


async def test_registration_stores_the_normal_form(make_account: Any, running: Any) -> None:
    running.gateway.settings.webhooks.allow_private = True
    alice: Account = await make_account("alice@example.com")
    created = await register(alice, "HTTP://0x7F000001:8080/Hook?A=1")
    assert created.status_code == 201, created.text
    assert created.json()["webhook_url"] == "http://127.0.0.1:8080/Hook?A=1"


# -- at delivery, after DNS changed -----------------------------------------------------------


@pytest.fixture
def strict(tmp_path: Path) -> Settings:
    settings = make_settings(tmp_path)
    assert settings.webhooks.allow_private is False
    return settings


@pytest.mark.parametrize("address", FORMS.values(), ids=FORMS.keys())
async def test_a_name_rebound_to_an_ipv6_form_of_a_private_address_is_refused_at_delivery(
    strict: Settings, resolver: FixtureResolver, receiver: HttpReceiver, address: str
) -> None:
    resolver.load_zone({"rebound.hooks.test": {"A": [PUBLIC]}})
    async with quiet_gateway(strict, resolver) as quiet:
        account = await open_account(quiet.gateway, quiet.http_url, "alice@example.com")
        async with account.http, WebhookConnections() as connections:
            url = f"http://rebound.hooks.test:{receiver.port}/hook"
            agent = await create_agent(account, "rebound", url)
            resolver.load_zone({"rebound.hooks.test": {"AAAA": [address]}})
            message_id = await accept(quiet.gateway, [agent], mail())
            worker = WebhookWorker(quiet.gateway, connections)
            assert await worker.deliver_due(time.time()) == 1
            assert await delivery_status(account, agent, message_id) == "failed"
            (attempt,) = await recorded_attempts(quiet.gateway, message_id)
    assert attempt.error == f"target refused: {refused_name('rebound.hooks.test')}"
    assert receiver.requests == []


async def test_an_old_row_in_an_odd_spelling_is_judged_by_the_address_it_means(
    strict: Settings, resolver: FixtureResolver, receiver: HttpReceiver
) -> None:
    async with quiet_gateway(strict, resolver) as quiet:
        account = await open_account(quiet.gateway, quiet.http_url, "alice@example.com")
        async with account.http, WebhookConnections() as connections:
            agent = await create_agent(account, "odd", "https://hooks.example.com/x")
            await _set_webhook_url(quiet.gateway, agent, f"http://127.1:{receiver.port}/hook")
            message_id = await accept(quiet.gateway, [agent], mail())
            assert await WebhookWorker(quiet.gateway, connections).deliver_due(time.time()) == 1
            (attempt,) = await recorded_attempts(quiet.gateway, message_id)
    assert attempt.error is not None and "points at 127.0.0.1" in attempt.error
    assert receiver.requests == []


async def _set_webhook_url(gateway: Any, agent: str, url: str) -> None:
    """Write `url` as the agent's webhook straight through storage, as a row stored before
    today's checks would hold it."""
    found = await gateway.storage.find_agent(agent)
    changes = AgentChanges(webhook_url=url)
    assert await gateway.storage.update_agent(found.user_id, agent, changes) is not None


@pytest.fixture
async def receiver(nursery: Any) -> HttpReceiver:
    started = HttpReceiver()
    await nursery.start(started.serve)
    return started


async def test_no_refusal_a_caller_can_read_names_the_address_a_host_resolves_to(
    strict: Settings, resolver: FixtureResolver, receiver: HttpReceiver
) -> None:
    """The guard is no oracle for the operator's DNS: registering or changing an agent's
    webhook (/api/v1), creating or changing a /v1 webhook, and the delivery logs of a refused
    attempt (/api/v1 dead letters, /v1 webhook deliveries after a test delivery) name the host
    the caller gave, never the internal address it resolves to."""
    internal = "10.20.30.40"
    host = "inside.hooks.test"
    url = f"http://{host}:{receiver.port}/hook"
    resolver.load_zone({host: {"A": [internal]}})
    async with quiet_gateway(strict, resolver) as quiet:
        account = await open_account(quiet.gateway, quiet.http_url, "alice@example.com")
        async with account.http, WebhookConnections() as connections:
            http = account.http
            local = await http.post("/api/v1/agents", json={"slug": "inner", "agent_mode": "local"})
            assert local.status_code == 201, local.text
            inner = local.json()["email"]
            answers = [
                await register(account, url),
                await http.put(agent_path(inner), json={"agent_mode": "cloud", "webhook_url": url}),
                await http.post("/v1/webhooks", json={"url": url, "events": ["email.received"]}),
            ]
            resolver.load_zone({host: {"A": [PUBLIC]}})
            agent = await create_agent(account, "rebound", url)
            made = await http.post("/v1/webhooks", json={"url": url, "events": ["email.received"]})
            assert made.status_code in (200, 201), made.text
            hook = made.json()["id"]
            resolver.load_zone({host: {"A": [internal]}})
            answers.append(await http.patch(f"/v1/webhooks/{hook}", json={"url": url + "2"}))
            for answer in answers:
                assert answer.status_code == 400, answer.text
                error = answer.json()["error"]
                assert error["code"] == "invalid_webhook_url", answer.text
                assert error["message"].endswith(refused_name(host)), answer.text

            message_id = await accept(quiet.gateway, [agent], mail())
            assert await WebhookWorker(quiet.gateway, connections).deliver_due(time.time()) == 1
            assert await delivery_status(account, agent, message_id) == "failed"
            (letter,) = (await http.get(agent_path(agent, "/dead-letters"))).json()["dead_letters"]
            assert letter["last_error"] == f"target refused: {refused_name(host)}"

            tested = await http.post(f"/v1/webhooks/{hook}/test", json={})
            assert tested.status_code in (200, 202), tested.text
            worker = SubscriberWorker(quiet.gateway, connections)
            assert await worker.deliver_due(time.time()) == 2  # the mail's event, and the test
            deliveries = (await http.get(f"/v1/webhooks/{hook}/deliveries")).json()["items"]
            assert [item["last_error"] for item in deliveries] == [
                f"target refused: {refused_name(host)}"
            ] * 2
    assert receiver.requests == []
