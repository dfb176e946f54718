"""Request limits over real HTTP: agent registrations per user and per client address per
hour (the address told by trusted proxies only, counted in the database), message polls per
user per minute (counted in the process's memory); 429 `rate_limited` with `Retry-After`."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from e2a_gateway.app import RunningGateway, bind_tcp, serve_http
from e2a_gateway.config import proxy_networks
from e2a_gateway.gateway import open_gateway
from e2a_gateway.mailauth.resolver import FixtureResolver
from e2a_gateway.networks import client_address
from tests.conftest import TEST_LIMITS, Account, agent_path, make_settings
from tests.databases import query
from tests.delivery_support import open_account, quiet_gateway


def assert_limited(response: httpx.Response, window_seconds: int) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == "rate_limited"
    retry_after = response.headers["Retry-After"]
    assert retry_after.isdigit() and 1 <= int(retry_after) <= window_seconds
    assert f"retry in {retry_after} seconds" in response.json()["error"]["message"]


async def register(account: Account, slug: str) -> httpx.Response:
    return await account.http.post("/api/v1/agents", json={"slug": slug, "agent_mode": "local"})


async def test_fourth_registration_in_the_hour_is_refused(
    make_account: Any, running: RunningGateway
) -> None:
    running.gateway.settings.limits.agent_registrations_per_ip_per_hour = 3
    alice: Account = await make_account("alice@example.com")
    for n in range(3):
        assert (await register(alice, f"bot-{n}")).status_code == 201
    limited = await register(alice, "bot-3")
    assert_limited(limited, 3600)
    listed = (await alice.http.get("/api/v1/agents")).json()["agents"]
    assert sorted(agent["name"] for agent in listed) == ["bot-0", "bot-1", "bot-2"]


async def test_users_at_one_address_share_its_registration_limit(
    make_account: Any, running: RunningGateway
) -> None:
    """Every test client connects from 127.0.0.1, so a second user shares the first's count;
    and a failed attempt that passed authentication counts too."""
    running.gateway.settings.limits.agent_registrations_per_ip_per_hour = 3
    alice: Account = await make_account("alice@example.com")
    bob: Account = await make_account("bob@example.com")
    assert (await register(alice, "a-1")).status_code == 201
    invalid = await alice.http.post("/api/v1/agents", json={"agent_mode": "local"})
    assert invalid.status_code == 400
    assert (await register(bob, "b-1")).status_code == 201
    assert_limited(await register(bob, "b-2"), 3600)
    assert (await bob.http.get("/api/v1/agents")).json()["agents"][0]["name"] == "b-1"


async def test_unauthenticated_registrations_are_not_counted(
    make_account: Any, running: RunningGateway
) -> None:
    running.gateway.settings.limits.agent_registrations_per_ip_per_hour = 1
    alice: Account = await make_account("alice@example.com")
    async with httpx.AsyncClient(base_url=running.addresses.http_url, timeout=10) as anonymous:
        for _ in range(3):
            refused = await anonymous.post("/api/v1/agents", json={"slug": "x"})
            assert refused.status_code == 401
    assert (await register(alice, "first")).status_code == 201
    assert_limited(await register(alice, "second"), 3600)


async def test_message_polling_is_limited_per_user(
    make_account: Any, running: RunningGateway
) -> None:
    alice: Account = await make_account("alice@example.com")
    bob: Account = await make_account("bob@example.com")
    alice_bot = (await register(alice, "alice-bot")).json()["email"]
    bob_bot = (await register(bob, "bob-bot")).json()["email"]
    running.gateway.settings.limits.message_polls_per_user_per_minute = 3

    assert (await alice.http.get(agent_path(alice_bot, "/messages"))).status_code == 200
    assert (await alice.http.get(agent_path(alice_bot, "/messages"))).status_code == 200
    missing = await alice.http.get(agent_path(alice_bot, "/messages/msg_missing"))
    assert missing.status_code == 404
    assert_limited(await alice.http.get(agent_path(alice_bot, "/messages")), 60)
    assert_limited(await alice.http.get(agent_path(alice_bot, "/messages/msg_missing")), 60)

    # Bob polls from the same address but is counted on his own.
    for _ in range(3):
        assert (await bob.http.get(agent_path(bob_bot, "/messages"))).status_code == 200
    assert_limited(await bob.http.get(agent_path(bob_bot, "/messages")), 60)

    # Failed authentication is not counted against anyone; other endpoints are not polls.
    bad = await alice.http.get(
        agent_path(alice_bot, "/messages"), headers={"Authorization": "Bearer e2a_wrong"}
    )
    assert bad.status_code == 401
    assert (await alice.http.get(agent_path(alice_bot))).status_code == 200

    # A poll is never a durable write: the counts live in memory, the database holds none.
    database = running.gateway.settings.database.url
    polls = query(database, "SELECT key FROM rate_limit_hits WHERE key LIKE ?", ("message_poll%",))
    assert polls == []
    assert query(database, "SELECT count(*) FROM rate_limit_hits")[0][0] >= 2  # registrations


async def test_registrations_count_per_user_as_well(
    make_account: Any, running: RunningGateway
) -> None:
    """Behind one address many users are told apart by their own count."""
    running.gateway.settings.limits.agent_registrations_per_user_per_hour = 2
    alice: Account = await make_account("alice@example.com")
    bob: Account = await make_account("bob@example.com")
    for n in range(2):
        assert (await register(alice, f"alice-{n}")).status_code == 201
    limited = await register(alice, "alice-2")
    assert_limited(limited, 3600)
    assert "2 agent registrations per hour for this account" in limited.json()["error"]["message"]
    assert (await register(bob, "bob-0")).status_code == 201


async def test_a_registration_one_limit_refuses_spends_nothing_of_the_other(
    make_account: Any, running: RunningGateway
) -> None:
    """A refused request is counted against no limit: asking again and again while the
    address is over its limit leaves the account's own allowance whole."""
    limits = running.gateway.settings.limits
    limits.agent_registrations_per_ip_per_hour = 1
    limits.agent_registrations_per_user_per_hour = 2
    alice: Account = await make_account("alice@example.com")
    assert (await register(alice, "first")).status_code == 201
    for n in range(4):
        refused = await register(alice, f"refused-{n}")
        assert_limited(refused, 3600)
        assert "per hour from this address" in refused.json()["error"]["message"]
    limits.agent_registrations_per_ip_per_hour = 100  # the address's limit raised
    assert (await register(alice, "second")).status_code == 201
    limited = await register(alice, "third")
    assert_limited(limited, 3600)
    assert "2 agent registrations per hour for this account" in limited.json()["error"]["message"]


async def register_from(account: Account, slug: str, forwarded_for: str) -> httpx.Response:
    return await account.http.post(
        "/api/v1/agents",
        json={"slug": slug, "agent_mode": "local"},
        headers={"X-Forwarded-For": forwarded_for},
    )


async def test_behind_a_trusted_proxy_each_client_address_has_its_own_limit(
    tmp_path: Path,
) -> None:
    """The test client at 127.0.0.1 plays the proxy; 10.0.0.0/8 holds further proxies."""
    settings = make_settings(
        tmp_path,
        http={"listen": "127.0.0.1:0", "trusted_proxies": ["127.0.0.1", "10.0.0.0/8"]},
        limits={**TEST_LIMITS, "agent_registrations_per_ip_per_hour": 2},
    )
    async with quiet_gateway(settings, FixtureResolver()) as quiet:
        alice = await open_account(quiet.gateway, quiet.http_url, "alice@example.com")
        bob = await open_account(quiet.gateway, quiet.http_url, "bob@example.com")
        async with alice.http, bob.http:
            assert (await register_from(alice, "a-0", "198.51.100.7")).status_code == 201
            # What a client writes itself is left of what the proxy saw, and ignored.
            forged = "203.0.113.99, 198.51.100.7"
            assert (await register_from(alice, "a-1", forged)).status_code == 201
            assert_limited(await register_from(alice, "a-2", "198.51.100.7"), 3600)
            assert (await register_from(bob, "b-0", "198.51.100.8")).status_code == 201
            # A chain of trusted proxies is walked back to the first address outside it.
            for n, proxy in enumerate(["10.1.2.3", "10.9.9.9"]):
                via = f"198.51.100.9, {proxy}"
                assert (await register_from(bob, f"c-{n}", via)).status_code == 201
            assert_limited(await register_from(bob, "c-2", "198.51.100.9"), 3600)


async def test_without_trusted_proxies_x_forwarded_for_is_ignored(
    make_account: Any, running: RunningGateway
) -> None:
    running.gateway.settings.limits.agent_registrations_per_ip_per_hour = 2
    alice: Account = await make_account("alice@example.com")
    assert (await register_from(alice, "a-0", "198.51.100.1")).status_code == 201
    assert (await register_from(alice, "a-1", "198.51.100.2")).status_code == 201
    assert_limited(await register_from(alice, "a-2", "198.51.100.3"), 3600)


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("192.0.2.1", ["198.51.100.7"], "192.0.2.1"),  # not a proxy: its header is ignored
        ("10.0.0.2", ["198.51.100.7"], "198.51.100.7"),
        ("10.0.0.2", ["203.0.113.5, 198.51.100.7"], "198.51.100.7"),
        ("10.0.0.2", ["203.0.113.5", "198.51.100.7, 10.0.0.3"], "198.51.100.7"),
        ("10.0.0.2", ["10.0.0.4, 10.0.0.3"], "10.0.0.4"),  # all trusted: the farthest one
        ("10.0.0.2", ["198.51.100.7:4711"], "198.51.100.7"),
        ("10.0.0.2", ["[2001:db8::7]:4711"], "2001:db8::7"),
        ("10.0.0.2", ["unknown"], "10.0.0.2"),
        ("10.0.0.2", ["198.51.100.7, garbage"], "10.0.0.2"),
        ("10.0.0.2", [], "10.0.0.2"),
        ("::ffff:10.0.0.2", ["::ffff:198.51.100.7"], "198.51.100.7"),  # a dual-stack listener
    ],
)
def test_client_address_walks_back_through_trusted_proxies_only(
    peer: str, forwarded: list[str], client: str
) -> None:
    trusted = proxy_networks(["10.0.0.0/8"])
    assert client_address(peer, forwarded, trusted) == client


@pytest.mark.parametrize("listed", ["::ffff:10.0.0.2", "::ffff:10.0.0.0/104", "::FFFF:A00:2"])
@pytest.mark.parametrize("peer", ["10.0.0.2", "::ffff:10.0.0.2"])
def test_a_proxy_listed_as_a_dual_stack_listener_names_it_is_trusted(
    listed: str, peer: str
) -> None:
    """A dual-stack listener sees (and logs) an IPv4 proxy as `::ffff:a.b.c.d`; listed in that
    form, the proxy is the IPv4 one it maps, trusted whichever way its connection comes."""
    trusted = proxy_networks([listed])
    assert client_address(peer, ["198.51.100.7"], trusted) == "198.51.100.7"
    assert client_address("::ffff:10.0.1.2", ["198.51.100.7"], trusted) == (
        "198.51.100.7" if listed.endswith("/104") else "10.0.1.2"
    )


async def test_refused_by_both_limits_waits_for_the_later_to_free(tmp_path: Path) -> None:
    """A registration both limits refuse is told to wait until both have room: the account's
    oldest registration came from another address, so its own window frees first."""
    settings = make_settings(
        tmp_path,
        http={"listen": "127.0.0.1:0", "trusted_proxies": ["127.0.0.1"]},
        limits={
            **TEST_LIMITS,
            "agent_registrations_per_user_per_hour": 2,
            "agent_registrations_per_ip_per_hour": 1,
        },
    )
    async with quiet_gateway(settings, FixtureResolver()) as quiet:
        alice = await open_account(quiet.gateway, quiet.http_url, "alice@example.com")
        async with alice.http:
            assert (await register_from(alice, "a-0", "198.51.100.7")).status_code == 201
            await trio.sleep(3.0)
            assert (await register_from(alice, "a-1", "198.51.100.8")).status_code == 201
            refused = await register_from(alice, "a-2", "198.51.100.8")
            assert_limited(refused, 3600)
            # the address's window frees 3 s after the account's: its wait is the one told
            assert int(refused.headers["Retry-After"]) >= 3599, refused.headers


async def test_a_lowered_limit_is_waited_out_to_the_request_that_frees_a_place(
    make_account: Any, running: RunningGateway
) -> None:
    """Lowered while its windows hold more than it allows, a limit tells a refused client to
    wait until enough have left for one more, not merely the oldest (polls in memory,
    registrations in the database)."""
    limits = running.gateway.settings.limits
    limits.message_polls_per_user_per_minute = 4
    limits.agent_registrations_per_user_per_hour = 4
    alice: Account = await make_account("alice@example.com")
    bot = (await register(alice, "early-0")).json()["email"]
    assert (await register(alice, "early-1")).status_code == 201
    for _ in range(2):
        assert (await alice.http.get(agent_path(bot, "/messages"))).status_code == 200
    await trio.sleep(3.0)
    for n in range(2):
        assert (await register(alice, f"late-{n}")).status_code == 201
        assert (await alice.http.get(agent_path(bot, "/messages"))).status_code == 200
    limits.message_polls_per_user_per_minute = 2
    limits.agent_registrations_per_user_per_hour = 2
    # two of the four must leave for a place: the later two, 3 s after the first two
    polled = await alice.http.get(agent_path(bot, "/messages"))
    assert_limited(polled, 60)
    assert int(polled.headers["Retry-After"]) >= 59, polled.headers
    registered = await register(alice, "late-2")
    assert_limited(registered, 3600)
    assert int(registered.headers["Retry-After"]) >= 3599, registered.headers


async def feedback_from(client: httpx.AsyncClient, forwarded_for: str) -> httpx.Response:
    return await client.post(
        "/api/feedback", json={"message": "hello"}, headers={"X-Forwarded-For": forwarded_for}
    )


async def test_an_ipv6_client_is_counted_by_its_network(tmp_path: Path) -> None:
    """One IPv6 client holds a whole /64 (2^64 addresses): counted per address, it would never
    meet a per-address limit. Its network is counted; an IPv4 address written in IPv6 is the
    IPv4 address."""
    settings = make_settings(
        tmp_path,
        http={"listen": "127.0.0.1:0", "trusted_proxies": ["127.0.0.1"]},
        limits={**TEST_LIMITS, "feedback_per_ip_per_hour": 2},
    )
    async with (
        quiet_gateway(settings, FixtureResolver()) as quiet,
        httpx.AsyncClient(base_url=quiet.http_url) as client,
    ):
        for address in ["2001:db8:1:2::1", "2001:db8:1:2:ffff::7"]:
            assert (await feedback_from(client, address)).status_code == 200
        assert_limited(await feedback_from(client, "2001:db8:1:2:abcd::99"), 3600)
        assert (await feedback_from(client, "2001:db8:1:3::1")).status_code == 200
        assert (await feedback_from(client, "198.51.100.7")).status_code == 200
        assert (await feedback_from(client, "::ffff:198.51.100.7")).status_code == 200
        assert_limited(await feedback_from(client, "198.51.100.7"), 3600)
        assert (await feedback_from(client, "198.51.100.8")).status_code == 200


async def test_a_dual_stack_listener_trusts_its_ipv4_proxies(tmp_path: Path) -> None:
    """Listening on `[::]`, an IPv4 proxy connects as `::ffff:127.0.0.1`: it is still the
    trusted 127.0.0.1, and its clients are told apart."""
    settings = make_settings(
        tmp_path,
        http={"listen": "[::]:0", "trusted_proxies": ["127.0.0.1"]},
        limits={**TEST_LIMITS, "feedback_per_ip_per_hour": 1},
    )
    sock = bind_tcp("::", 0, "http.listen", "[::]:0")
    port = sock.getsockname()[1]
    async with open_gateway(settings, FixtureResolver()) as gateway, trio.open_nursery() as nursery:
        await nursery.start(partial(serve_http, gateway, sock))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            assert (await feedback_from(client, "198.51.100.7")).status_code == 200
            assert (await feedback_from(client, "198.51.100.8")).status_code == 200
            assert_limited(await feedback_from(client, "198.51.100.8"), 3600)
        nursery.cancel_scope.cancel()
