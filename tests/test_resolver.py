"""The Resolver implementations: the fixture one, and dnspython against a local DNS server."""

from __future__ import annotations

import gc
import socket
import time
import tracemalloc
from functools import partial

import pytest
import trio

from e2a_gateway.config import DnsSettings
from e2a_gateway.mailauth.dns_answers import DnsTemporaryError
from e2a_gateway.mailauth.resolver import (
    DnsResolver,
    FixtureResolver,
    Zone,
    lookup_txt,
    until,
)
from e2a_gateway.mailauth.spf import check_spf
from tests.dns_server import serve_dns

pytestmark = pytest.mark.backend_independent

LONG_TXT = "v=DKIM1; k=rsa; p=" + "A" * 600  # more than one 255-byte character-string

ZONE: Zone = {
    "example.com": {
        "TXT": ["v=spf1 ip4:192.0.2.0/24 -all", "site-verification=abc"],
        "A": ["192.0.2.10"],
        "AAAA": ["2001:db8::10"],
        "MX": [(10, "mx1.example.com"), (20, "mx2.example.com")],
    },
    "www.example.com": {"CNAME": "example.com"},
    "10.2.0.192.in-addr.arpa": {"PTR": ["mail.example.com"]},
    "key._domainkey.example.com": {"TXT": [LONG_TXT]},
    "many.example.com": {"TXT": [f"record {n} " + "x" * 200 for n in range(12)]},
    "loop1.example.com": {"CNAME": "loop2.example.com"},
    "loop2.example.com": {"CNAME": "loop1.example.com"},
}


def test_fixture_answers_every_type() -> None:
    resolver = FixtureResolver.from_zone(ZONE)
    assert resolver.txt("example.com") == ["v=spf1 ip4:192.0.2.0/24 -all", "site-verification=abc"]
    assert resolver.a("EXAMPLE.com.") == ["192.0.2.10"]
    assert resolver.aaaa("example.com") == ["2001:db8::10"]
    assert resolver.mx("example.com") == [(10, "mx1.example.com"), (20, "mx2.example.com")]
    assert resolver.ptr("10.2.0.192.in-addr.arpa") == ["mail.example.com"]
    assert resolver.txt("missing.example.com") == []
    assert resolver.mx("www.example.com") == resolver.mx("example.com")


def test_fixture_cname_loop_has_no_data() -> None:
    assert FixtureResolver.from_zone(ZONE).a("loop1.example.com") == []


def test_fixture_failures() -> None:
    resolver = FixtureResolver.from_zone(ZONE)
    resolver.failing_lookups.add(("example.com", "TXT"))
    with pytest.raises(DnsTemporaryError):
        resolver.txt("example.com")
    with pytest.raises(DnsTemporaryError):
        resolver.txt("www.example.com")  # the CNAME leads into the failure
    assert resolver.a("example.com") == ["192.0.2.10"]
    resolver.failing.add("example.com")
    with pytest.raises(DnsTemporaryError):
        resolver.a("example.com")


def test_fixture_txt_records_and_set_txt() -> None:
    resolver = FixtureResolver({"Corp.Example.": ["token-1"]})
    assert resolver.txt("corp.example") == ["token-1"]
    resolver.set_txt("corp.example", ["v=spf1 -all", "token-2"])
    assert resolver.txt("CORP.example") == ["v=spf1 -all", "token-2"]
    resolver.load_zone({"corp.example": {"A": ["192.0.2.1"]}})
    assert (resolver.txt("corp.example"), resolver.a("corp.example")) == ([], ["192.0.2.1"])


async def test_dns_resolver_over_local_server(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        port = await nursery.start(serve_dns, ZONE)
        resolver = DnsResolver([f"127.0.0.1:{port}"], timeout=2)
        run = partial(trio.to_thread.run_sync, abandon_on_cancel=True)
        assert sorted(await run(resolver.txt, "example.com")) == sorted(ZONE["example.com"]["TXT"])
        assert await run(resolver.a, "example.com") == ["192.0.2.10"]
        assert await run(resolver.aaaa, "example.com") == ["2001:db8::10"]
        assert sorted(await run(resolver.mx, "example.com")) == sorted(ZONE["example.com"]["MX"])
        assert await run(resolver.ptr, "10.2.0.192.in-addr.arpa") == ["mail.example.com"]
        assert await run(resolver.a, "www.example.com") == ["192.0.2.10"]
        assert sorted(await run(resolver.mx, "www.example.com")) == sorted(
            ZONE["example.com"]["MX"]
        )
        assert await run(resolver.txt, "nothing.example.com") == []
        assert await run(resolver.txt, "key._domainkey.example.com") == [LONG_TXT]
        assert sorted(await lookup_txt(resolver, "EXAMPLE.COM.")) == sorted(
            ZONE["example.com"]["TXT"]
        )


async def test_answers_too_big_for_udp_come_over_tcp(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        port = await nursery.start(serve_dns, ZONE)
        resolver = DnsResolver([f"127.0.0.1:{port}"], timeout=2)
        records = await lookup_txt(resolver, "many.example.com")
    assert sorted(records) == sorted(ZONE["many.example.com"]["TXT"])


async def test_invalid_names_have_no_records(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        port = await nursery.start(serve_dns, ZONE)
        resolver = DnsResolver([f"127.0.0.1:{port}"], timeout=2)
        assert await lookup_txt(resolver, "a..example.com") == []
        assert await lookup_txt(resolver, "x" * 64 + ".example.com") == []


async def test_cache_answers_after_the_server_is_gone() -> None:
    expected = sorted(ZONE["example.com"]["TXT"])
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_dns, ZONE)
            cached = DnsResolver([f"127.0.0.1:{port}"], timeout=0.5)
            uncached = DnsResolver([f"127.0.0.1:{port}"], timeout=0.5, cache=False)
            assert sorted(await lookup_txt(cached, "example.com")) == expected
            assert sorted(await lookup_txt(uncached, "example.com")) == expected
            nursery.cancel_scope.cancel()
        assert sorted(await lookup_txt(cached, "example.com")) == expected
        with pytest.raises(DnsTemporaryError):
            await lookup_txt(uncached, "example.com")


async def test_cached_answers_stay_within_their_memory_budget(nursery: trio.Nursery) -> None:
    """Senders name the domains looked up (their DKIM selectors, SPF includes, DMARC
    domains), and a DNS answer can be 64 KB: the cache is bounded by the memory its answers
    take, not by their number, and the least recently used go first."""
    budget = 1 << 20
    large = [f"{n:03d}" + "x" * 250 for n in range(200)]  # about 50 KB an answer, over TCP
    zone: Zone = {f"s{n}._domainkey.sender{n}.example": {"TXT": large} for n in range(16)}
    with trio.fail_after(30):
        port = await nursery.start(serve_dns, zone)
        resolver = DnsResolver([f"127.0.0.1:{port}"], timeout=5, cache_bytes=budget)
        await lookup_txt(resolver, "unknown.example")  # dnspython imported, resolver built
        gc.collect()
        tracemalloc.start()
        try:
            for name in zone:
                assert len(await lookup_txt(resolver, name)) == len(large)
            gc.collect()
            held, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert held < 1.5 * budget


async def test_silent_nameserver_times_out_as_temporary_error() -> None:
    timeout = 1.0
    with trio.fail_after(10), trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        await silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        resolver = DnsResolver([f"127.0.0.1:{port}"], timeout=timeout, cache=False)
        started = time.monotonic()
        with pytest.raises(DnsTemporaryError) as failed:
            await lookup_txt(resolver, "example.com")
        assert time.monotonic() - started < timeout + 0.5
        assert str(failed.value) == "TXT example.com: timed out"


async def test_lookups_until_a_deadline_end_at_it(nursery: trio.Nursery) -> None:
    """A lookup under a deadline waits no longer than what is left of it, whatever the
    resolver's own timeout; one asked after it fails without a query; answers still come."""
    with trio.fail_after(10):
        port = await nursery.start(partial(serve_dns, ZONE, silent=["stalled.example.com"]))
        resolver = DnsResolver([f"127.0.0.1:{port}"], timeout=5, cache=False)
        started = time.monotonic()
        bounded = until(resolver, started + 0.5)
        assert await trio.to_thread.run_sync(bounded.a, "example.com") == ["192.0.2.10"]
        with pytest.raises(DnsTemporaryError):
            await trio.to_thread.run_sync(bounded.txt, "stalled.example.com")
        assert 0.4 < time.monotonic() - started < 1.5
        with pytest.raises(DnsTemporaryError, match="no time left"):
            await trio.to_thread.run_sync(bounded.a, "example.com")
    fixture = FixtureResolver.from_zone(ZONE)
    assert until(fixture, time.monotonic() - 1) is fixture  # answers at once: nothing to bound


async def test_servfail_is_a_temporary_error(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        port = await nursery.start(partial(serve_dns, ZONE, servfail=["example.com"]))
        resolver = DnsResolver([f"127.0.0.1:{port}"], timeout=2)
        with pytest.raises(DnsTemporaryError) as failed:
            await lookup_txt(resolver, "example.com")
        # said plainly, without the nameserver's address (it may reach a stored message)
        assert str(failed.value) == "TXT example.com: no nameserver answered (SERVFAIL)"
        assert await lookup_txt(resolver, "nothing.example.com") == []  # NXDOMAIN: no records


async def test_failover_past_a_silent_nameserver_on_another_port(nursery: trio.Nursery) -> None:
    with trio.fail_after(10), trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        await silent.bind(("127.0.0.1", 0))
        port = await nursery.start(serve_dns, ZONE)
        settings = DnsSettings(
            nameservers=[f"127.0.0.1:{silent.getsockname()[1]}", f"127.0.0.1:{port}"],
            timeout_seconds=2,
        )
        resolver = DnsResolver.from_settings(settings)
        assert await trio.to_thread.run_sync(resolver.a, "example.com") == ["192.0.2.10"]


async def test_ipv6_nameserver_with_port(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        port = await nursery.start(partial(serve_dns, ZONE, host="::1"))
        resolver = DnsResolver([f"[::1]:{port}"], timeout=2)
        assert await trio.to_thread.run_sync(resolver.aaaa, "example.com") == ["2001:db8::10"]


async def test_spf_through_the_real_resolver(nursery: trio.Nursery) -> None:
    zone: Zone = {
        **ZONE,
        "mx1.example.com": {"A": ["192.0.2.30"]},
        "mx.example.net": {"TXT": ["v=spf1 mx:example.com -all"]},
    }
    with trio.fail_after(10):
        port = await nursery.start(serve_dns, zone)
        check = partial(check_spf, DnsResolver([f"127.0.0.1:{port}"], timeout=2), helo="c.test")
        passed, failed = [
            await trio.to_thread.run_sync(
                partial(check, client_ip=client_ip, mail_from="a@mx.example.net")
            )
            for client_ip in ("192.0.2.30", "198.51.100.1")
        ]
    assert (passed.result, failed.result) == ("pass", "fail")
