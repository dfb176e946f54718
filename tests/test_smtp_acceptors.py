"""SMTP acceptor processes (`smtp.processes`): real processes on a shared listening socket.

Each test starts acceptors with `AcceptorPool` on a socket the test process does not serve
itself, so every connection is served by an acceptor, which asks this process for storage
answers and for the commit. Also: a whole gateway with `smtp.processes = 2` stores mail.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import cast

import httpx
import pytest
import trio

from bench._gateway_process import GatewayProcess, process_tree
from bench._quiet_dns import QuietDns
from e2a_gateway.accounts import bootstrap_user
from e2a_gateway.app import RunningGateway, bind_tcp, run_gateway
from e2a_gateway.config import Settings
from e2a_gateway.gateway import Gateway, open_gateway
from e2a_gateway.hub import Listener
from e2a_gateway.inbound.acceptors import AcceptorPool
from e2a_gateway.inbound.pipeline import Arrival, InboundMailSink
from e2a_gateway.metrics import Metrics
from e2a_gateway.outbound.return_path import return_path_for, return_path_key
from e2a_gateway.signing.reply_tokens import generate_reply_token
from e2a_gateway.smtp.server import MessageNotStored, SenderNotYetAuthenticated
from e2a_gateway.storage.base import ReplyToken
from e2a_gateway.storage.group_commit import GroupCommitter
from e2a_gateway.storage.new_inbound import NewInboundMessage
from tests.conftest import Account, agent_path, make_settings
from tests.databases import query
from tests.delivery_support import wait_until
from tests.dns_server import serve_dns
from tests.test_approvals import Owner, add_pending
from tests.test_v1_bounces import delivery_status_notification

pytestmark = pytest.mark.slow

AGENT = "bot@agents.test"
MESSAGE = (
    b"From: Sender <sender@example.org>\r\nTo: <bot@agents.test>\r\n"
    b"Subject: through an acceptor\r\nMessage-ID: <acceptor@example.org>\r\n\r\nHello.\r\n"
)
START_SECONDS = 30.0


@dataclass
class Main:
    """This test process as the gateway's main process: storage, sink, metrics, the pool."""

    gateway: Gateway
    sink: InboundMailSink
    metrics: Metrics
    port: int
    delivered: list[tuple[Arrival, list[str], str]]


async def smtp_dialogue(
    port: int,
    recipient: str | list[str] = AGENT,
    replies: list[bytes] | None = None,
    *,
    sender: str = "sender@example.org",
    message: bytes = MESSAGE,
    proxy_header: bytes = b"",
) -> list[bytes]:
    """One message (`message` from `sender`) over a new connection, after `proxy_header` (as a
    load balancer writes it); every reply (also added to `replies` as it comes), the DATA's
    last but one."""
    replies = [] if replies is None else replies
    with trio.fail_after(START_SECONDS):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(proxy_header)
        buffer = b""

        async def reply() -> bytes:
            nonlocal buffer
            while True:
                lines = buffer.split(b"\r\n")
                for index, line in enumerate(lines[:-1]):
                    if line[3:4] == b" ":
                        buffer = b"\r\n".join(lines[index + 1 :])
                        replies.append(line)
                        return line
                data = await stream.receive_some(4096)
                if not data:
                    raise ConnectionError("closed")
                buffer += data

        await reply()
        for command in (b"EHLO client.example", f"MAIL FROM:<{sender}>".encode()):
            await stream.send_all(command + b"\r\n")
            await reply()
        for address in [recipient] if isinstance(recipient, str) else recipient:
            await stream.send_all(f"RCPT TO:<{address}>\r\n".encode())
            if not (await reply()).startswith(b"250"):
                await stream.aclose()
                return replies
        await stream.send_all(b"DATA\r\n")
        await reply()
        await stream.send_all(message + b".\r\n")
        await reply()
        await stream.send_all(b"QUIT\r\n")
        await reply()
        await stream.aclose()
    return replies


REVIEWER_ZONE = {
    "example.com": {"TXT": ["v=spf1 ip4:127.0.0.1 -all"]},
    "_dmarc.example.com": {"TXT": ["v=DMARC1; p=reject"]},
    "proxied.example": {"TXT": ["v=spf1 ip4:203.0.113.7 -all"]},
}
"""The reviewer's domain passes SPF, hence DMARC, from 127.0.0.1: their replies may act.
proxied.example's mail comes from 203.0.113.7 alone (behind a load balancer)."""


@pytest.fixture
async def dns_port(nursery: trio.Nursery) -> int:
    port: int = await nursery.start(serve_dns, REVIEWER_ZONE)
    return port


@pytest.fixture
def acceptor_settings(tmp_path: Path, dns_port: int) -> Settings:
    return make_settings(
        tmp_path,
        dns={"nameservers": [f"127.0.0.1:{dns_port}"], "timeout_seconds": 2},
        smtp={"listen": "127.0.0.1:0", "hostname": "mx.agents.test", "shutdown_grace_seconds": 5},
    )


@pytest.fixture
async def main(acceptor_settings: Settings) -> AsyncIterator[Main]:
    """Storage with a user and the agent; the sink whose commit the acceptors call."""
    async with open_gateway(acceptor_settings) as gateway:
        await bootstrap_user(gateway.storage, gateway.server_key, "o@example.com")
        metrics = Metrics()
        sink = InboundMailSink(gateway, GroupCommitter(gateway.storage))
        yield Main(gateway, sink, metrics, 0, [])


async def start_pool(
    nursery: trio.Nursery, main: Main, store: object = None, count: int = 1
) -> tuple[AcceptorPool, socket.socket]:
    listening = bind_tcp("127.0.0.1", 0, "smtp.listen", "127.0.0.1:0")
    main.port = listening.getsockname()[1]

    async def deliver(arrival: Arrival, addresses: list[str]) -> str:
        stored = await main.sink.deliver_handed_over(arrival, addresses)
        main.delivered.append((arrival, addresses, stored))
        return stored

    pool = AcceptorPool(
        main.gateway.settings,
        main.gateway.server_key,
        listening,
        count,
        main.gateway.storage,
        store or deliver,  # type: ignore[arg-type]
        main.metrics,
    )
    await nursery.start(pool.serve)
    return pool, listening


async def add_agent(main: Main, email: str = AGENT) -> None:
    """A local agent (bot@agents.test) for the bootstrapped user."""
    from e2a_gateway.storage.base import Agent

    user = await main.gateway.storage.first_user()
    assert user is not None
    await main.gateway.storage.add_agent(
        Agent(
            email=email,
            user_id=user.id,
            domain="agents.test",
            name=email.split("@")[0],
            webhook_url=None,
            agent_mode="local",
            hitl_enabled=False,
            hitl_ttl_seconds=604800,
            hitl_expiration_action="reject",
            created_at="2026-01-01T00:00:00Z",
        )
    )


def metric(metrics: Metrics, name: str) -> float:
    for line in metrics.render(None, storage_up=False).decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


async def test_an_acceptor_serves_the_session_and_the_main_process_commits(
    main: Main, nursery: trio.Nursery
) -> None:
    await add_agent(main)
    _, listening = await start_pool(nursery, main)
    replies = await smtp_dialogue(main.port)
    assert replies[-2].startswith(b"250 2.0.0"), replies
    [(arrival, addresses, message_id)] = main.delivered
    assert addresses == [AGENT]
    # Only the delivered form crosses between processes, and the agents' addresses.
    assert arrival.envelope.data == b"" and arrival.agents == []
    assert message_id.encode() in replies[-2]
    agent = await main.gateway.storage.find_agent(AGENT)
    assert agent is not None
    stored = await main.gateway.storage.read_inbound(agent.user_id, AGENT, message_id)
    assert stored is not None and stored.raw_message.endswith(MESSAGE)
    assert stored.raw_message.startswith(b"Return-Path: <sender@example.org>")
    assert "X-E2A-Auth-Signature" in stored.auth_headers
    for _ in range(100):  # the acceptor reports its counts every half second
        if metric(main.metrics, "e2a_smtp_messages_accepted_total") >= 1:
            break
        await trio.sleep(0.05)
    assert metric(main.metrics, "e2a_smtp_messages_accepted_total") == 1
    assert metric(main.metrics, "e2a_smtp_sessions_total") == 1
    listening.close()


async def test_an_acceptor_believes_a_trusted_load_balancers_proxy_header(
    tmp_path: Path, dns_port: int, nursery: trio.Nursery
) -> None:
    """`smtp.proxy_trusted_cidrs` reaches the acceptor processes: the client the header names
    is the one SPF judges, in the arrival the main process commits."""
    settings = make_settings(
        tmp_path,
        dns={"nameservers": [f"127.0.0.1:{dns_port}"], "timeout_seconds": 2},
        smtp={
            "listen": "127.0.0.1:0",
            "hostname": "mx.agents.test",
            "proxy_trusted_cidrs": "127.0.0.1",
        },
    )
    async with open_gateway(settings) as gateway:
        await bootstrap_user(gateway.storage, gateway.server_key, "o@example.com")
        sink = InboundMailSink(gateway, GroupCommitter(gateway.storage))
        main = Main(gateway, sink, Metrics(), 0, [])
        await add_agent(main)
        async with trio.open_nursery() as acceptors:
            _, listening = await start_pool(acceptors, main)
            header = b"PROXY TCP4 203.0.113.7 10.0.0.2 40000 25\r\n"
            replies = await smtp_dialogue(
                main.port, sender="alice@proxied.example", proxy_header=header
            )
            assert replies[-2].startswith(b"250 2.0.0"), replies
            [(arrival, _, _)] = main.delivered
            assert arrival.peer == "203.0.113.7"
            assert arrival.auth.spf == "pass"
            read = 'e2a_smtp_proxy_headers_total{outcome="read"}'
            await wait_until(lambda: metric(main.metrics, read) == 1)  # reported every 0.5 s
            acceptors.cancel_scope.cancel()
        listening.close()


async def test_an_acceptor_refuses_an_unknown_agent_from_the_main_process_storage(
    main: Main, nursery: trio.Nursery
) -> None:
    await start_pool(nursery, main)
    replies = await smtp_dialogue(main.port, "nobody@agents.test")
    assert replies[-1].startswith(b"550 5.1.1"), replies
    await add_agent(main)  # created in the main process: the acceptor sees it at once
    replies = await smtp_dialogue(main.port)
    assert replies[-2].startswith(b"250 2.0.0"), replies


async def test_no_250_before_the_main_process_has_committed(
    main: Main, nursery: trio.Nursery
) -> None:
    await add_agent(main)
    release = trio.Event()

    async def slow_deliver(arrival: Arrival, addresses: list[str]) -> str:
        await release.wait()
        return await main.sink.deliver_handed_over(arrival, addresses)

    await start_pool(nursery, main, slow_deliver)
    replies: list[bytes] = []
    async with trio.open_nursery() as clients:
        clients.start_soon(partial(smtp_dialogue, main.port, replies=replies))
        for _ in range(int(START_SECONDS / 0.05)):  # an acceptor process is starting
            if replies and replies[-1].startswith(b"354"):
                break
            await trio.sleep(0.05)
        await trio.sleep(1.0)  # the message's terminator has long been sent
        assert replies[-1].startswith(b"354"), replies  # ... and it has no answer yet
        release.set()
    assert replies[-2].startswith(b"250 2.0.0"), replies


async def test_a_commit_that_fails_in_the_main_process_is_451(
    main: Main, nursery: trio.Nursery
) -> None:
    await add_agent(main)

    async def failing(arrival: Arrival) -> str:
        raise MessageNotStored("database is down")

    await start_pool(nursery, main, failing)
    replies = await smtp_dialogue(main.port)
    assert replies[-2].startswith(b"451 4.3.0"), replies


async def test_a_sender_to_authenticate_again_is_451_4_7_0_through_an_acceptor(
    main: Main, nursery: trio.Nursery
) -> None:
    """The main process's word that a listed sender's authentication met a temporary error
    reaches the acceptor's client as such, not as a storage failure."""
    await add_agent(main)

    async def deferring(arrival: Arrival, addresses: list[str]) -> str:
        raise SenderNotYetAuthenticated("DMARC temperror for a listed sender")

    await start_pool(nursery, main, deferring)
    replies = await smtp_dialogue(main.port)
    assert replies[-2].startswith(b"451 4.7.0"), replies


async def test_an_agents_blocking_gate_quarantines_through_an_acceptor(
    main: Main, nursery: trio.Nursery
) -> None:
    from e2a_gateway.storage.base import AgentChanges

    await add_agent(main)
    user = await main.gateway.storage.first_user()
    assert user is not None
    gate = AgentChanges(inbound_gate_policy="domain", inbound_gate_action="block")
    await main.gateway.storage.update_agent(user.id, AGENT, gate)
    await start_pool(nursery, main)
    replies = await smtp_dialogue(main.port)
    assert replies[-2].startswith(b"250 2.0.0"), replies  # accepted, as e2a accepts it
    ((_, _, stored),) = main.delivered
    database = main.gateway.settings.database.url
    assert query(database, "SELECT id, hold FROM messages") == [(stored, "rejected")]
    assert await main.gateway.storage.peek_inbound(user.id, AGENT, stored) is None


async def test_cancelling_the_pool_stops_its_acceptors(main: Main) -> None:
    await add_agent(main)
    async with trio.open_nursery() as nursery:
        pool, listening = await start_pool(nursery, main, count=2)
        replies = await smtp_dialogue(main.port)
        assert replies[-2].startswith(b"250 2.0.0"), replies
        children = [pid for pid in pool.pids if pid is not None]
        assert len(children) == 2
        nursery.cancel_scope.cancel()
    assert not any(map(_running, children))
    listening.close()


def _running(pid: int) -> bool:
    """Whether process `pid` exists and is no zombie."""
    try:
        return not Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except OSError:
        return False


async def test_a_gateway_with_two_processes_stores_every_message(
    acceptor_settings: Settings, nursery: trio.Nursery
) -> None:
    settings = acceptor_settings.model_copy(
        update={"smtp": acceptor_settings.smtp.model_copy(update={"processes": 2})}
    )
    running: RunningGateway = await nursery.start(partial(run_gateway, settings))
    gateway = running.gateway
    _, issued, _ = await bootstrap_user(gateway.storage, gateway.server_key, "o@example.com")
    async with httpx.AsyncClient(
        base_url=running.addresses.http_url,
        headers={"Authorization": f"Bearer {issued.plaintext}"},
        timeout=10,
    ) as http:
        created = await http.post("/api/v1/agents", json={"slug": "bot", "agent_mode": "local"})
        assert created.status_code == 201, created.text
        count = 12
        answers: list[bytes] = []

        async def send() -> None:
            answers.append((await smtp_dialogue(running.addresses.smtp_port))[-2])

        async with trio.open_nursery() as clients:
            for _ in range(count):
                clients.start_soon(send)
        assert all(answer.startswith(b"250 2.0.0") for answer in answers), answers
        listed = await http.get(agent_path(AGENT, "/messages"), params={"limit": 50})
        assert listed.status_code == 200, listed.text
        assert len(listed.json()["messages"]) == count
    # Whichever process served a session, its DATA was committed (and counted) in this one.
    assert metric(gateway.metrics, "e2a_inbound_commit_transactions_sum") == count
    assert metric(gateway.metrics, "e2a_inbound_messages_stored_total") == count
    assert 1 <= metric(gateway.metrics, "e2a_inbound_commit_seconds_count") <= count


async def test_an_agent_deleted_since_an_acceptor_found_it_gets_no_copy(
    main: Main, nursery: trio.Nursery
) -> None:
    other = "other@agents.test"
    await add_agent(main)
    await add_agent(main, other)
    await start_pool(nursery, main)
    assert (await smtp_dialogue(main.port, [AGENT, other]))[-2].startswith(b"250 2.0.0")
    agent = await main.gateway.storage.find_agent(other)
    assert agent is not None
    assert await main.gateway.storage.delete_agent(agent.user_id, other) is not None
    # The acceptor still remembers the deleted agent at RCPT (for ROUTING_SECONDS); the main
    # process, looking both agents up again, stores the copy of the one that is left.
    replies = await smtp_dialogue(main.port, [AGENT, other])
    if replies[-1].startswith(b"550 5.1.1"):
        return  # a slow machine: over ROUTING_SECONDS went by and the acceptor asked again
    assert replies[-2].startswith(b"250 2.0.0"), replies
    _, addresses, message_id = main.delivered[-1]
    assert addresses == [AGENT, other]
    stored = await main.gateway.storage.read_inbound(agent.user_id, AGENT, message_id)
    assert stored is not None and stored.agent_email == AGENT


async def test_approval_replies_and_returned_mail_through_an_acceptor(
    main: Main, nursery: trio.Nursery
) -> None:
    """What the main process alone can answer (a reply token, the held message, a return
    path's message) is asked of it: the reviewer's reply approves, the bounce is recorded,
    and an auto-reply at the return path is handed over for the agent that sent the message."""
    await add_agent(main)
    storage = main.gateway.storage
    user = await storage.first_user()
    assert user is not None
    held = await add_pending(
        main.gateway, Owner(cast(Account, None), user.id, AGENT), time.time() + 3600
    )
    made, notice = generate_reply_token(), "<notice-1@mx.agents.test>"
    token, reviewer = made.plaintext, "owner@example.com"
    await storage.add_reply_token(
        ReplyToken(made.token_hash, held.id, reviewer, notice, time.time())
    )
    await start_pool(nursery, main)

    approval = (
        f"From: Owner <{reviewer}>\r\nTo: approvals+{token}@mx.agents.test\r\n"
        f"Subject: Re: Approval needed\r\nMessage-ID: <reply-1@example.com>\r\n"
        f"In-Reply-To: {notice}\r\nReferences: {notice}\r\n\r\nApprove\r\n"
    ).encode()
    replies = await smtp_dialogue(
        main.port, f"approvals+{token}@mx.agents.test", sender=reviewer, message=approval
    )
    assert replies[-2].startswith(b"250 2.0.0"), replies
    approved = await storage.get_outbound(user.id, held.id)
    assert approved is not None and approved.status == "queued"
    assert (approved.reviewed_by, approved.review_method) == (reviewer, "reply")

    return_path = return_path_for(
        held.id, "alice@example.org", return_path_key(main.gateway.server_key), "agents.test"
    )
    report = delivery_status_notification(return_path, "alice@example.org")
    replies = await smtp_dialogue(main.port, return_path, sender="", message=report)
    assert replies[-2].startswith(b"250 2.0.0"), replies
    suppressed = await storage.suppressed_among(user.id, AGENT, ["alice@example.org"])
    assert suppressed == ["alice@example.org"]
    assert main.delivered == []  # neither was mail for an agent

    # Alice's out-of-office reply at the same return path is mail for the agent that sent it,
    # threaded by the message it answers
    auto_reply = (
        f"From: Alice <alice@example.org>\r\nTo: {return_path}\r\n"
        f"Subject: Automatic reply: Hi\r\nAuto-Submitted: auto-replied\r\n\r\nAway.\r\n"
    ).encode()
    replies = await smtp_dialogue(main.port, return_path, sender="", message=auto_reply)
    assert replies[-2].startswith(b"250 2.0.0"), replies
    ((arrival, addresses, _),) = main.delivered
    assert addresses == [AGENT]
    assert arrival.answers == (approved.email_message_id,)


async def test_a_reply_after_the_review_deadline_is_answered_through_an_acceptor(
    main: Main, nursery: trio.Nursery
) -> None:
    """A reply that comes after the held message's deadline, before the expiry sweep decided
    it, is answered as in one process: why it did nothing and what will happen (which the
    agent's expiration action, read from the main process, says); not a 451 retried until the
    sweep has run."""
    await add_agent(main)
    storage = main.gateway.storage
    user = await storage.first_user()
    assert user is not None
    held = await add_pending(
        main.gateway, Owner(cast(Account, None), user.id, AGENT), time.time() - 60
    )
    made, notice = generate_reply_token(), "<notice-2@mx.agents.test>"
    token, reviewer = made.plaintext, "owner@example.com"
    await storage.add_reply_token(
        ReplyToken(made.token_hash, held.id, reviewer, notice, time.time() - 3600)
    )
    await start_pool(nursery, main)
    approval = (
        f"From: Owner <{reviewer}>\r\nTo: approvals+{token}@mx.agents.test\r\n"
        f"Subject: Re: Approval needed\r\nMessage-ID: <reply-2@example.com>\r\n"
        f"In-Reply-To: {notice}\r\nReferences: {notice}\r\n\r\nApprove\r\n"
    ).encode()
    replies = await smtp_dialogue(
        main.port, f"approvals+{token}@mx.agents.test", sender=reviewer, message=approval
    )
    assert replies[-2].startswith(b"250 2.0.0"), replies
    database = main.gateway.settings.database.url
    [(recipient, data)] = query(database, "SELECT recipient, data FROM approval_answers")
    assert recipient == reviewer
    assert b"review deadline had passed" in bytes(data), data
    assert b"discarded" in bytes(data), data  # the agent's expiration action: reject


async def test_an_acceptor_killed_leaves_no_session_counted_active(
    main: Main, nursery: trio.Nursery
) -> None:
    """The sessions an acceptor reported open end with it: when it is killed, the main
    process's gauge of SMTP connections being served does not keep them forever."""
    pool, _ = await start_pool(nursery, main)
    with trio.fail_after(START_SECONDS):
        client = await trio.open_tcp_stream("127.0.0.1", main.port)
        assert (await client.receive_some(4096)).startswith(b"220 ")
        # reported within the acceptor's next half second
        await wait_until(lambda: metric(main.metrics, "e2a_smtp_sessions_active") == 1)
        [killed] = pool.pids
        os.kill(killed, signal.SIGKILL)
        assert await client.receive_some(4096) == b""  # dropped with its process
        # the pool saw it die, and restarted it
        await wait_until(lambda: pool.pids not in ([], [killed]))
    assert metric(main.metrics, "e2a_smtp_sessions_active") == 0
    assert metric(main.metrics, "e2a_smtp_sessions_total") == 1
    await client.aclose()


def _acceptor_serving(root: int) -> int | None:
    """The pid of an acceptor under `root` that has begun to serve (it catches SIGTERM then)."""
    for pid in process_tree(root):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        caught = int(status.split("SigCgt:")[1].split()[0], 16)
        if b"spawn_main" in command and caught & (1 << (signal.SIGTERM - 1)):
            return pid
    return None


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGHUP], ids=["SIGINT", "SIGHUP"])
def test_a_terminal_signal_leaves_the_acceptors_serving_through_the_drain(
    tmp_path: Path, signum: signal.Signals
) -> None:
    """A terminal's Ctrl-C, or its hang-up (SIGINT or SIGHUP to every process of the
    gateway), is the main process's to act on: it drains and stops cleanly, and its acceptors
    go on serving through `http.drain_seconds` and stop with it, not at once (to be
    restarted, with an error logged, in the middle of the drain)."""
    with QuietDns() as dns:
        gateway = GatewayProcess(tmp_path, dns.address, smtp={"processes": 2}, log_level="info")
        config = gateway.config.read_text().replace("[http]\n", "[http]\ndrain_seconds = 2\n")
        gateway.config.write_text(config)
        gateway.start()
        try:
            assert gateway.process is not None
            root = gateway.process.pid
            deadline = time.monotonic() + START_SECONDS
            while (acceptor := _acceptor_serving(root)) is None:
                assert time.monotonic() < deadline, "no acceptor started"
                time.sleep(0.05)
            os.killpg(root, signum)
            time.sleep(1.0)  # within the drain
            assert _running(acceptor), gateway.log_text()
            assert gateway.wait(timeout=30) == 0
            assert not _running(acceptor)
            assert "exited with" not in gateway.log_text(), gateway.log_text()
            assert f"received {signum.name}, shutting down" in gateway.log_text()
        finally:
            gateway.kill()


async def test_what_an_acceptor_handed_over_is_finished_though_it_dies(
    main: Main, nursery: trio.Nursery
) -> None:
    """The main process finishes storing a message whose acceptor died meanwhile, telling
    live listeners too (as one process does for a client gone before its 250): a commit is
    never left made but unannounced, a local agent's WebSocket none the wiser."""
    await add_agent(main)
    agent = await main.gateway.storage.find_agent(AGENT)
    assert agent is not None
    storage = main.gateway.storage
    committed, release = trio.Event(), trio.Event()

    class SlowToReport:
        """Commits, then waits (as a group commit's member waits for its batch to end)."""

        async def store_inbound(self, messages: list[NewInboundMessage], now: float) -> None:
            await storage.store_inbound(messages, now)
            committed.set()
            await release.wait()

    sink = InboundMailSink(main.gateway, cast(GroupCommitter, SlowToReport()))
    pool, _ = await start_pool(nursery, main, sink.deliver_handed_over)
    listener = Listener(agent.id, agent.user_id, "key-hash", "websocket")
    with main.gateway.hub.subscribe(listener) as subscription:

        async def send() -> None:
            with pytest.raises(ConnectionError):
                await smtp_dialogue(main.port)

        async with trio.open_nursery() as clients:
            clients.start_soon(send)
            with trio.fail_after(START_SECONDS):
                await committed.wait()
            [acceptor] = pool.pids
            os.kill(acceptor, signal.SIGKILL)
            await wait_until(lambda: not _running(acceptor))
            await trio.sleep(0.5)  # the main process sees its channel end
            release.set()
        with trio.fail_after(5):
            frame = await subscription.receive()
    assert frame is not None and frame["subject"] == "through an acceptor"


def _socket_owner(port: int, client_port: int, pids: list[int]) -> int | None:
    """Which of `pids` holds the server side of the loopback connection from `client_port`
    to `port` (Linux /proc: the socket's inode in /proc/net/tcp, then in /proc/PID/fd)."""
    wanted = f":{port:04X}"
    remote = f":{client_port:04X}"
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(wanted) and fields[2].endswith(remote):
            inode = fields[9]
    if inode is None:
        return None
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) == f"socket:[{inode}]":
                        return pid
    return None


def _reply(connection: socket.socket) -> bytes:
    """The next complete SMTP reply's last line (b"" when the connection closed first)."""
    data = b""
    while not (lines := data.split(b"\r\n"))[:-1] or lines[-2][3:4] != b" ":
        chunk = connection.recv(4096)
        if not chunk:
            return b""
        data += chunk
    return next(line for line in lines[:-1] if line[3:4] == b" ")


def test_an_acceptor_whose_main_process_is_killed_answers_451_and_frees_the_port(
    tmp_path: Path,
) -> None:
    """SIGKILL to the main process alone (the OOM killer's choice), while an acceptor holds
    sessions in the middle of their DATA: the acceptor can have nothing committed, so each
    message is answered 451 (the client sends it again), never 250; the acceptor then exits, so
    the gateway, started again on the same port, takes the message sent again once."""
    with QuietDns() as dns:
        gateway = GatewayProcess(tmp_path, dns.address, smtp={"processes": 2})
        gateway.start()
        connections: list[socket.socket] = []
        try:
            api = gateway.bootstrap()
            assert gateway.process is not None
            main_pid = gateway.process.pid
            deadline = time.monotonic() + START_SECONDS
            while (acceptor := _acceptor_serving(main_pid)) is None:
                assert time.monotonic() < deadline, "no acceptor started"
                time.sleep(0.05)
            held: list[socket.socket] = []  # sessions the acceptor serves, DATA begun
            while len(held) < 2:
                assert len(connections) < 40, "the acceptor took none of 40 connections"
                connection = socket.create_connection(("127.0.0.1", gateway.smtp_port), 10)
                connections.append(connection)
                assert _reply(connection).startswith(b"220")
                for command in (
                    "EHLO c.example",
                    "MAIL FROM:<s@example.org>",
                    f"RCPT TO:<{AGENT}>",
                ):
                    connection.sendall(f"{command}\r\n".encode())
                    assert _reply(connection).startswith(b"250")
                connection.sendall(b"DATA\r\n")
                assert _reply(connection).startswith(b"354")
                connection.sendall(MESSAGE)
                port = connection.getsockname()[1]
                if _socket_owner(gateway.smtp_port, port, [acceptor]) == acceptor:
                    held.append(connection)
            os.kill(main_pid, signal.SIGKILL)
            gateway.process.wait(timeout=10)
            answers = []
            for connection in held:
                connection.sendall(b".\r\n")
                answers.append(_reply(connection))
            assert all(answer.startswith(b"451 ") for answer in answers), answers
            deadline = time.monotonic() + START_SECONDS
            while _running(acceptor):
                assert time.monotonic() < deadline, "the acceptor outlived its main process"
                time.sleep(0.05)
            gateway.process = None  # gone: start it again in the same folder, on its port
            gateway.start()
            assert smtp_dialogue_blocking(gateway.smtp_port)[-2].startswith(b"250 2.0.0")
            listed = api.get(f"/agents/{AGENT}/messages", params={"limit": 50})
            assert listed.status_code == 200, listed.text
            assert [m["subject"] for m in listed.json()["messages"]] == ["through an acceptor"]
            api.close()
        finally:
            for connection in connections:
                connection.close()
            gateway.kill()


def smtp_dialogue_blocking(port: int) -> list[bytes]:
    """`smtp_dialogue` from a test that runs no trio loop of its own."""
    return trio.run(smtp_dialogue, port)
