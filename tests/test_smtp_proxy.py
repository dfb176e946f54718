"""The SMTP listener behind a layer-4 load balancer (`smtp.proxy_trusted_cidrs`): the client
named by a trusted peer's PROXY protocol header is the client for limits, SPF, the Received
line and the logs; nobody else's header is believed; bad or slow headers are bounded.

The test client is the "load balancer": it connects from 127.0.0.1 and writes the header itself.
"""

from __future__ import annotations

import base64
import ipaddress
import logging
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from e2a_gateway.app import RunningGateway, run_gateway
from e2a_gateway.mailauth.resolver import FixtureResolver
from e2a_gateway.metrics import Metrics
from e2a_gateway.networks import IpNetwork
from e2a_gateway.smtp import server as smtp_server
from e2a_gateway.smtp.protocol import SessionLimits
from e2a_gateway.smtp.server import ListenerLimits, serve_smtp
from tests.conftest import make_settings
from tests.test_authentication_e2e import account_with_bot, received
from tests.test_proxy_header import v2, v2_inet
from tests.test_smtp_server import HOST, MemorySink, RawClient, codes

TIMEOUT = 10
LOOPBACK = [ipaddress.ip_network("127.0.0.0/8")]
ELSEWHERE = [ipaddress.ip_network("10.0.0.0/8")]
V1 = b"PROXY TCP4 203.0.113.7 10.0.0.2 40000 25\r\n"
TRANSACTION = b"EHLO client.example\r\nMAIL FROM:<s@example.org>\r\nRCPT TO:<alice@agents.test>\r\n"


async def start(
    nursery: trio.Nursery,
    sink: MemorySink,
    trusted: Sequence[IpNetwork],
    limits: ListenerLimits | None = None,
    metrics: Metrics | None = None,
) -> int:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    await nursery.start(
        partial(
            serve_smtp,
            listeners,
            sink,
            HOST,
            SessionLimits(),
            listener_limits=limits or ListenerLimits(idle_timeout=30),
            proxy_trusted=trusted,
            observer=metrics,
        )
    )
    return int(listeners[0].socket.getsockname()[1])


async def deliver(client: RawClient, first: bytes = b"", before: int = 1) -> list[bytes]:
    """Send `first` (a header, or a line), then one message to alice@ in two pipelined
    writes; the replies: `before` the EHLO's (the greeting, unless read already, and those to
    `first`), EHLO, MAIL, RCPT, DATA, end of data."""
    await client.send(first + TRANSACTION)
    replies = await client.replies(3 + before)
    await client.send(b"DATA\r\n")
    replies.append(await client.reply())
    await client.send(b"Subject: hi\r\n\r\nhello\r\n.\r\n")
    replies.append(await client.reply())
    return replies


@pytest.mark.parametrize(
    ("header", "client"),
    [
        (V1, "203.0.113.7"),
        (b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 25\r\n", "2001:db8::7"),
        (v2_inet("198.51.100.9"), "198.51.100.9"),
        (v2_inet("2001:db8::9", "2001:db8::1"), "2001:db8::9"),
        (v2(command=0), "127.0.0.1"),  # LOCAL: the balancer's own connection
        (b"PROXY UNKNOWN\r\n", "127.0.0.1"),
    ],
    ids=["v1-tcp4", "v1-tcp6", "v2-inet", "v2-inet6", "v2-local", "v1-unknown"],
)
async def test_a_trusted_balancers_header_names_the_client_and_pipelined_commands_are_kept(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture, header: bytes, client: str
) -> None:
    """The header and the client's first commands in one write: none of them is lost."""
    caplog.set_level(logging.INFO, logger="e2a.smtp")
    sink = MemorySink()
    port = await start(nursery, sink, LOOPBACK)
    with trio.fail_after(TIMEOUT):
        connection = await RawClient.connect(port)
        replies = await deliver(connection, header)
        await connection.aclose()
        assert codes(replies) == ["220", "250", "250 2.1.0", "250 2.1.5", "354", "250 2.0.0"]
        assert [peer for _, peer in sink.stored] == [client]
        while "SMTP session client=" not in caplog.text:  # noqa: ASYNC110
            await trio.sleep(0.01)
    assert f"SMTP session client={client} " in caplog.text


async def test_an_untrusted_peers_header_is_an_unknown_command(nursery: trio.Nursery) -> None:
    sink = MemorySink()
    port = await start(nursery, sink, ELSEWHERE)
    with trio.fail_after(TIMEOUT):
        connection = await RawClient.connect(port)
        replies = await deliver(connection, V1, before=2)
    assert codes(replies) == [
        "220",
        "500 5.5.2",
        "250",
        "250 2.1.0",
        "250 2.1.5",
        "354",
        "250 2.0.0",
    ]
    assert [peer for _, peer in sink.stored] == ["127.0.0.1"]


async def test_without_trusted_balancers_no_header_is_read(nursery: trio.Nursery) -> None:
    """The default: a PROXY line is SMTP input like any other, answered after the greeting."""
    sink = MemorySink()
    port = await start(nursery, sink, ())
    with trio.fail_after(TIMEOUT):
        connection = await RawClient.connect(port)
        await connection.send(v2_inet("198.51.100.9") + b"\r\n" + TRANSACTION)
        assert (await connection.reply()).startswith(b"220 ")
        assert codes([await connection.reply()]) == ["500 5.5.2"]
    assert sink.stored == []


@pytest.mark.parametrize(
    ("data", "logged"),
    [
        (b"PROXY TCP4 203.0.113.7 10.0.0.2 40000 99999\r\n" + TRANSACTION, "port"),
        (b"PROXY TCP4 203.0.113.7\n", "bare LF"),
        (b"PROXY UNKNOWN " + b"x" * 200, "longer than 107 octets"),
        (v2(body=bytes(5000)), "over 4096"),
        (v2(command=7), "neither LOCAL nor PROXY"),
    ],
    ids=["v1-port", "v1-bare-lf", "v1-too-long", "v2-too-long", "v2-command"],
)
async def test_a_malformed_header_from_a_trusted_peer_closes_the_connection(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture, data: bytes, logged: str
) -> None:
    sink = MemorySink()
    port = await start(nursery, sink, LOOPBACK)
    with trio.fail_after(TIMEOUT):
        connection = await RawClient.connect(port)
        await connection.send(data)
        assert await connection.ending() in ((b"", "closed"), (b"", "reset"))
    (line,) = [r.getMessage() for r in caplog.records if "closed:" in r.getMessage()]
    assert line.startswith("SMTP connection from 127.0.0.1 closed: PROXY")
    assert logged in line and "203.0.113" not in line and "xxx" not in line


async def test_a_header_cut_short_by_the_end_of_the_connection_is_logged(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    port = await start(nursery, MemorySink(), LOOPBACK)
    with trio.fail_after(TIMEOUT):
        connection = await RawClient.connect(port)
        await connection.send(V1[:20])
        await connection._stream.send_eof()
        assert await connection.ending() == (b"", "closed")
        while "ended inside its PROXY header" not in caplog.text:  # noqa: ASYNC110
            await trio.sleep(0.01)


async def test_a_slow_header_is_cut_off_and_a_silent_balancer_is_served_as_itself(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Half a header when the clock runs out: closed. Nothing at all (a health check that
    connects): greeted after the wait, as the balancer itself."""
    monkeypatch.setattr(smtp_server, "PROXY_HEADER_SECONDS", 0.5)
    sink = MemorySink()
    port = await start(nursery, sink, LOOPBACK)
    with trio.fail_after(TIMEOUT):
        slow = await RawClient.connect(port)
        await slow.send(V1[:10])
        started = trio.current_time()
        assert await slow.ending() in ((b"", "closed"), (b"", "reset"))
        assert 0.4 < trio.current_time() - started < 3
        assert "PROXY header incomplete after 0.5 s" in caplog.text

        silent = await RawClient.connect(port)
        started = trio.current_time()
        assert (await silent.reply()).startswith(b"220 ")
        assert trio.current_time() - started > 0.4
        assert codes(await deliver(silent, before=0))[-1] == "250 2.0.0"
    assert [peer for _, peer in sink.stored] == ["127.0.0.1"]


async def test_a_balancer_that_connects_and_closes_is_not_logged(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    port = await start(nursery, MemorySink(), LOOPBACK)
    with trio.fail_after(TIMEOUT):
        for _ in range(3):
            connection = await RawClient.connect(port)
            await connection.aclose()
        checked = await RawClient.connect(port)  # the listener is still serving
        await checked.send(V1)
        assert (await checked.reply()).startswith(b"220 ")
    assert "PROXY" not in caplog.text


async def test_the_connection_limits_count_the_client_the_header_names(
    nursery: trio.Nursery,
) -> None:
    """Behind a balancer every connection comes from its address: the per-address limit counts
    each client instead, so one client's flood is turned away and another's mail is not."""
    limits = ListenerLimits(max_sessions_per_ip=1, max_sessions_per_network=2)
    port = await start(nursery, MemorySink(), LOOPBACK, limits)
    with trio.fail_after(TIMEOUT):
        first = await RawClient.connect(port)
        await first.send(V1)
        assert (await first.reply()).startswith(b"220 ")
        again = await RawClient.connect(port)
        await again.send(V1)
        assert b"421 4.7.0 mx.agents.test Too many connections from your address" in (
            await again.reply()
        )
        neighbour = await RawClient.connect(port)
        await neighbour.send(V1.replace(b"203.0.113.7", b"203.0.113.8"))
        assert (await neighbour.reply()).startswith(b"220 ")
        other = await RawClient.connect(port)
        await other.send(V1.replace(b"203.0.113.7", b"198.51.100.1"))
        assert (await other.reply()).startswith(b"220 ")


async def test_shutdown_closes_a_connection_whose_header_is_awaited(nursery: trio.Nursery) -> None:
    scope = trio.CancelScope()
    stopped = trio.Event()

    async def run(task_status: trio.TaskStatus[int]) -> None:
        with scope:
            async with trio.open_nursery() as inner:
                task_status.started(await start(inner, MemorySink(), LOOPBACK))
        stopped.set()

    port = await nursery.start(run)
    with trio.fail_after(3):  # well within PROXY_HEADER_SECONDS
        waiting = await RawClient.connect(port)
        await waiting.send(V1[:10])
        await trio.sleep(0.1)
        scope.cancel()
        assert await waiting.ending() in ((b"", "closed"), (b"", "reset"))
        await stopped.wait()


def proxy_headers(metrics: Metrics) -> dict[str, float]:
    """`e2a_smtp_proxy_headers_total` by outcome, as /metrics shows it."""
    counts = {}
    for line in metrics.render(None, storage_up=False).decode().splitlines():
        if line.startswith('e2a_smtp_proxy_headers_total{outcome="'):
            series, value = line.split()
            counts[series.split('"')[1]] = float(value)
    return counts


async def test_metrics_count_each_trusted_connections_header_by_outcome(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A header read, none sent (SMTP first, or silence), a malformed one, one cut short by
    the connection's end or by the clock, and one not read for a flood: each counted once
    under its outcome, every outcome shown from the start. A connection that sends nothing
    and closes (a health check) is not counted; nor is an untrusted peer."""
    monkeypatch.setattr(smtp_server, "PROXY_HEADER_SECONDS", 0.5)
    metrics = Metrics()
    expected = dict.fromkeys(
        ("read", "none", "malformed", "cut_short", "timeout", "over_limit"), 0.0
    )
    assert proxy_headers(metrics) == expected
    limits = ListenerLimits(idle_timeout=30, max_sessions=2)
    port = await start(nursery, MemorySink(), LOOPBACK, limits, metrics)
    with trio.fail_after(TIMEOUT):
        for header in (V1, b"EHLO client.example\r\n"):
            connection = await RawClient.connect(port)
            await connection.send(header)
            assert (await connection.reply()).startswith(b"220 ")
            await connection.aclose()
        silent = await RawClient.connect(port)
        assert (await silent.reply()).startswith(b"220 ")
        await silent.aclose()
        for data in (b"PROXY TCP4 203.0.113.7\n", V1[:20], V1[:10]):
            connection = await RawClient.connect(port)
            await connection.send(data)
            if data == V1[:20]:
                await connection._stream.send_eof()
            assert await connection.ending() in ((b"", "closed"), (b"", "reset"))
        health_check = await RawClient.connect(port)
        await health_check.aclose()
        monkeypatch.setattr(smtp_server, "PROXY_HEADER_SECONDS", 5)
        waiting = [await RawClient.connect(port) for _ in range(2)]
        await trio.testing.wait_all_tasks_blocked()
        flood = await RawClient.connect(port)  # closed at once while two wait
        assert await flood.ending() in ((b"", "closed"), (b"", "reset"))
        for connection in waiting:
            await connection.aclose()
        expected.update(read=1, none=2, malformed=1, cut_short=1, timeout=1, over_limit=1)
        assert proxy_headers(metrics) == expected
    untrusted_port = await start(nursery, MemorySink(), ELSEWHERE, metrics=metrics)
    with trio.fail_after(TIMEOUT):
        connection = await RawClient.connect(untrusted_port)
        await connection.send(V1)
        assert (await connection.reply()).startswith(b"220 ")
    assert proxy_headers(metrics) == expected


# End to end: the gateway's SPF check and Received line see the client the header names.

SPF_ZONE = {"example.org": ["v=spf1 ip4:203.0.113.7 ip6:2001:db8::7 -all"]}
"""example.org's mail comes from 203.0.113.7 and 2001:db8::7 only: never from 127.0.0.1."""


@pytest.fixture
async def proxied(tmp_path: Path, nursery: trio.Nursery) -> RunningGateway:
    settings = make_settings(
        tmp_path,
        smtp={
            "listen": "127.0.0.1:0",
            "hostname": "mx.agents.test",
            "proxy_trusted_cidrs": ["127.0.0.1/32", "::1"],
        },
    )
    resolver = FixtureResolver(SPF_ZONE)
    running: RunningGateway = await nursery.start(partial(run_gateway, settings, resolver=resolver))
    return running


async def send_through_balancer(port: int, header: bytes, subject: str) -> None:
    with trio.fail_after(TIMEOUT):
        connection = RawClient(await trio.open_tcp_stream("127.0.0.1", port))
        await connection.send(
            header + b"EHLO client.example\r\nMAIL FROM:<alice@example.org>\r\n"
            b"RCPT TO:<bot@agents.test>\r\n"
        )
        assert codes(await connection.replies(4))[-1] == "250 2.1.5"
        await connection.send(b"DATA\r\n")
        await connection.reply()
        await connection.send(
            f"From: alice@example.org\r\nSubject: {subject}\r\n\r\nHi.\r\n.\r\n".encode()
        )
        assert codes([await connection.reply()]) == ["250 2.0.0"]
        await connection.aclose()


@pytest.mark.parametrize(
    ("header", "spf", "literal"),
    [
        (V1, "pass", b"[203.0.113.7]"),
        (v2_inet("2001:db8::7", "2001:db8::1"), "pass", b"[IPv6:2001:db8::7]"),
        (b"PROXY TCP4 203.0.113.99 10.0.0.2 40000 25\r\n", "fail", b"[203.0.113.99]"),
        (b"", "fail", b"[127.0.0.1]"),  # no header: the balancer is the client
    ],
    ids=["v1-ipv4", "v2-ipv6", "another-address", "no-header"],
)
async def test_spf_and_the_received_line_judge_the_client_the_header_names(
    proxied: RunningGateway,
    monkeypatch: pytest.MonkeyPatch,
    header: bytes,
    spf: str,
    literal: bytes,
) -> None:
    monkeypatch.setattr(smtp_server, "PROXY_HEADER_SECONDS", 0.2)
    account, _ = await account_with_bot(proxied)
    await send_through_balancer(proxied.addresses.smtp_port, header, "via balancer")
    message: dict[str, Any] = await received(account, "via balancer")
    assert message["authentication_results"]["spf"] == spf
    raw = base64.b64decode(message["raw_message"])
    received_line = raw.split(b"\r\n")[1]
    assert received_line == b"Received: from client.example (" + literal + b")", raw[:300]
    await account.http.aclose()
