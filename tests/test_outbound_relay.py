"""Handing mail to a real relay: an aiosmtpd sink on 127.0.0.1 (test-only) as `outbound_smtp`."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from e2a_gateway.config import OutboundSmtpSettings
from e2a_gateway.outbound import relay as relay_module
from e2a_gateway.outbound.relay import RelayConnections, hand_off
from e2a_gateway.smtp.client import Outgoing
from tests.relay_support import (
    ScriptedRelay,
    Sink,
    free_port,
    line_reader,
    relay_on_loopback,
    scripted_relay,
)

pytestmark = pytest.mark.backend_independent

DATA = b"From: bot@agents.test\r\nSubject: hi\r\n\r\n.dot line\r\nbody\r\n"


def authenticator(
    server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        b"agent",
        b"s3cret",
    )
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def sink() -> Sink:
    return Sink()


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


def start(sink: Sink, **kwargs: Any) -> Iterator[int]:
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


@pytest.fixture
def plain_relay(sink: Sink) -> Iterator[int]:
    yield from start(sink)


@pytest.fixture
def tls_relay(sink: Sink, ca: trustme.CA) -> Iterator[int]:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    yield from start(
        sink,
        server_hostname="localhost",
        tls_context=server_context,
        require_starttls=True,
        authenticator=authenticator,
        auth_require_tls=True,
    )


@pytest.fixture
def implicit_tls_relay(sink: Sink, ca: trustme.CA) -> Iterator[int]:
    """A relay that speaks TLS from the first byte (port 465's submissions)."""
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    yield from start(sink, server_hostname="localhost", ssl_context=server_context)


def settings(port: int, **overrides: Any) -> OutboundSmtpSettings:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "tls": "none",
        "timeout_seconds": 10,
    }
    values.update(overrides)
    return OutboundSmtpSettings.model_validate(values)


@pytest.fixture
def tls_settings(tls_relay: int, ca: trustme.CA, tmp_path: Path) -> OutboundSmtpSettings:
    """The STARTTLS relay with AUTH, its certificate trusted through `ca_file`."""
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return settings(
        tls_relay,
        host="localhost",
        tls="starttls",
        ca_file=ca_file,
        username="agent",
        password="s3cret",
    )


async def test_plain_hand_off(plain_relay: int, sink: Sink) -> None:
    outcome = await hand_off(
        settings(plain_relay),
        "mx.agents.test",
        Outgoing("bot@agents.test", ("a@example.org",), DATA),
    )
    assert outcome.accepted == ["a@example.org"] and outcome.error is None
    ((mail_from, recipients, content),) = sink.received
    assert (mail_from, recipients) == ("bot@agents.test", ["a@example.org"])
    assert content == DATA


async def test_starttls_with_auth(tls_settings: OutboundSmtpSettings, sink: Sink) -> None:
    outcome = await hand_off(
        tls_settings, "mx.agents.test", Outgoing("bot@agents.test", ("a@example.org",), DATA)
    )
    assert outcome.accepted == ["a@example.org"], outcome
    assert sink.received[0][2] == DATA


async def test_untrusted_certificate_defers(tls_relay: int, sink: Sink) -> None:
    outcome = await hand_off(
        settings(tls_relay, host="localhost", tls="starttls", username="agent", password="s3cret"),
        "mx.agents.test",
        Outgoing("bot@agents.test", ("a@example.org",), DATA),
    )
    assert outcome.accepted == [] and "a@example.org" in outcome.deferred
    assert "CERTIFICATE_VERIFY_FAILED" in (outcome.error or "")
    assert sink.received == []


async def test_a_relay_not_offering_starttls_defers_and_gets_no_mail(
    plain_relay: int, sink: Sink
) -> None:
    """STARTTLS stripped from EHLO (a man in the middle, or a relay whose certificate failed to
    load) is no refusal by the relay: nothing is sent in clear and the message waits to be
    retried, as an MTA requiring TLS defers it."""
    outcome = await hand_off(
        settings(plain_relay, tls="starttls"),
        "mx.agents.test",
        Outgoing("bot@agents.test", ("a@example.org",), DATA),
    )
    assert outcome.accepted == [] and outcome.refused == {}, outcome
    assert list(outcome.deferred) == ["a@example.org"]
    assert "relay does not offer STARTTLS" in (outcome.error or "")
    assert sink.received == []


async def test_the_ca_certificates_are_loaded_once_not_per_connection(
    tls_settings: OutboundSmtpSettings, sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loading a CA bundle takes OpenSSL about 0.1 s of CPU (the system's 140-odd CAs), during
    which nothing else in the gateway runs: new connections to the relay reuse one context."""
    loads: list[str | None] = []
    create = ssl.create_default_context

    def counted(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        loads.append(kwargs.get("cafile"))
        return create(*args, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", counted)
    relay = RelayConnections(
        tls_settings.model_copy(update={"connection_idle_seconds": 0}), "mx.agents.test"
    )
    for number in range(3):
        outcome = await relay.hand_off(
            Outgoing("bot@agents.test", (f"r{number}@example.org",), DATA)
        )
        assert outcome.accepted == [f"r{number}@example.org"], outcome
    assert relay.connections_opened == 3
    assert len(loads) <= 1


async def test_implicit_tls(
    implicit_tls_relay: int, sink: Sink, ca: trustme.CA, tmp_path: Path
) -> None:
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    outcome = await hand_off(
        settings(implicit_tls_relay, host="localhost", tls="implicit", ca_file=ca_file),
        "mx.agents.test",
        Outgoing("bot@agents.test", ("a@example.org",), DATA),
    )
    assert outcome.accepted == ["a@example.org"], outcome
    assert sink.received[0][2] == DATA


async def test_starttls_to_a_relay_expecting_tls_at_once_says_what_to_set(
    implicit_tls_relay: int, sink: Sink, ca: trustme.CA, tmp_path: Path
) -> None:
    """Port 465 with the default `tls = "starttls"`: both sides wait for the other; the
    deferral says which setting is likely wrong rather than only that the relay timed out."""
    outcome = await hand_off(
        settings(implicit_tls_relay, host="localhost", tls="starttls", timeout_seconds=0.5),
        "mx.agents.test",
        Outgoing("bot@agents.test", ("a@example.org",), DATA),
    )
    assert list(outcome.deferred) == ["a@example.org"]
    assert "timed out: no greeting within 0.5 s" in (outcome.error or "")
    assert 'outbound_smtp.tls = "implicit"' in (outcome.error or "")


async def test_implicit_tls_to_a_plain_relay_says_what_to_set(plain_relay: int, sink: Sink) -> None:
    outcome = await hand_off(
        settings(plain_relay, tls="implicit"),
        "mx.agents.test",
        Outgoing("bot@agents.test", ("a@example.org",), DATA),
    )
    assert list(outcome.deferred) == ["a@example.org"]
    assert "WRONG_VERSION_NUMBER" in (outcome.error or "")
    assert 'outbound_smtp.tls = "starttls"' in (outcome.error or "")


async def test_a_relay_that_is_silent_after_connecting_is_not_blamed_on_tls(
    plain_relay: int, sink: Sink
) -> None:
    """A relay that greets and then stalls timed out; no hint about the TLS mode."""
    sink.data_seconds = 2
    outcome = await hand_off(
        settings(plain_relay, tls="none", timeout_seconds=0.5, end_of_data_timeout_seconds=0.5),
        "mx.agents.test",
        Outgoing("bot@agents.test", ("a@example.org",), DATA),
    )
    assert list(outcome.deferred) == ["a@example.org"]
    assert "implicit" not in (outcome.error or "")


@pytest.mark.parametrize(
    ("relay", "tls", "said"),
    [
        (ScriptedRelay(greeting=b"554 5.7.1 no service for you\r\n"), "none", "greeting: 554"),
        (ScriptedRelay(answers={b"EHLO": b"550 5.7.1 bad hostname\r\n"}), "none", "EHLO: 550"),
        (
            ScriptedRelay(
                answers={
                    b"EHLO": b"250-relay.test\r\n250 STARTTLS\r\n",
                    b"STARTTLS": b"502 5.5.1 not implemented\r\n",
                }
            ),
            "starttls",
            "STARTTLS: 502",
        ),
    ],
    ids=["greeting", "EHLO", "STARTTLS"],
)
async def test_a_relay_refusing_the_session_defers_the_message(
    relay: ScriptedRelay, tls: str, said: str
) -> None:
    """A 5xx before any message was given says nothing of the message: the relay refuses the
    gateway (its address, its name in EHLO) or cannot start TLS, which mending the relay or
    e2a's settings cures. The message waits for a retry, as with a wrong password or STARTTLS
    not offered, rather than failing for good for every recipient."""
    async with scripted_relay(relay.serve) as port:
        outcome = await hand_off(
            settings(port, tls=tls),
            "mx.agents.test",
            Outgoing("bot@agents.test", ("a@example.org",), DATA),
        )
    assert list(outcome.deferred) == ["a@example.org"] and outcome.refused == {}, outcome
    assert said in (outcome.error or "")
    assert not any(command.startswith(b"MAIL") for command in relay.commands)


async def close_at_once(stream: trio.SocketStream) -> None:
    await stream.aclose()


async def stall(stream: trio.SocketStream) -> None:
    await trio.sleep_forever()


@pytest.mark.parametrize("after_data", [close_at_once, stall], ids=["closed", "silent"])
async def test_no_answer_to_the_end_of_data_defers_and_says_it_may_arrive_twice(
    after_data: Callable[[trio.SocketStream], Awaitable[None]],
) -> None:
    """The relay took the whole message and then closed the connection, or said nothing until
    the timeout: it may hold the message or not. It is retried (never lost), and the reason
    says the retry may deliver it twice, unlike a connection lost before the data."""
    relay = ScriptedRelay(after_data=after_data)
    async with scripted_relay(relay.serve) as port:
        outcome = await hand_off(
            settings(port, end_of_data_timeout_seconds=1),
            "mx.agents.test",
            Outgoing("bot@agents.test", ("a@example.org",), DATA),
        )
    assert len(relay.bodies) == 1
    assert list(outcome.deferred) == ["a@example.org"] and not outcome.refused, outcome
    assert "may deliver it twice" in outcome.deferred["a@example.org"]


async def test_a_message_over_the_relays_size_is_refused_before_a_word_of_it_is_sent() -> None:
    """A relay that announces SIZE but only refuses at the end of the data (or not at all)
    is sent no message larger than it takes (RFC 1870): it is refused at once with its size
    and the relay's, and the messages before and after it go out on the same connection."""
    relay = ScriptedRelay(answers={b"EHLO": b"250-relay.test\r\n250 SIZE 200\r\n"})
    big = Outgoing("bot@agents.test", ("big@example.org",), DATA + b"x" * 200 + b"\r\n")
    async with scripted_relay(relay.serve) as port:
        connections = RelayConnections(settings(port), "mx.agents.test")
        small, large, after = await connections.hand_off_each([outgoing(0), big, outgoing(1)])
    assert small.accepted == ["r0@example.org"] and after.accepted == ["r1@example.org"]
    assert not large.accepted and not large.deferred, large
    assert f"{len(big.data)} octets" in large.refused["big@example.org"]
    assert "at most 200" in large.refused["big@example.org"]
    assert relay.bodies == [DATA, DATA] and connections.connections_opened == 1
    assert sum(command.startswith(b"MAIL") for command in relay.commands) == 2


async def test_a_wrong_password_defers_the_message(
    tls_settings: OutboundSmtpSettings, sink: Sink
) -> None:
    """The relay's 535 is about the gateway's password, not the message: it waits for a retry
    (with the password mended), as Postfix's smtp_sasl_auth_soft_bounce has it."""
    outcome = await hand_off(
        tls_settings.model_copy(update={"password": "nope"}),
        "mx.agents.test",
        Outgoing("bot@agents.test", ("a@example.org",), DATA),
    )
    assert list(outcome.deferred) == ["a@example.org"] and outcome.refused == {}, outcome
    assert "535" in (outcome.error or "")
    assert sink.received == []


@pytest.mark.parametrize(
    ("answer", "bucket"), [("451 4.3.0 busy", "deferred"), ("554 5.7.1 spam", "refused")]
)
async def test_relay_answers_at_end_of_data(
    plain_relay: int, sink: Sink, answer: str, bucket: str
) -> None:
    sink.answer = answer
    outcome = await hand_off(
        settings(plain_relay),
        "mx.agents.test",
        Outgoing("bot@agents.test", ("a@example.org",), DATA),
    )
    assert outcome.accepted == []
    assert "a@example.org" in getattr(outcome, bucket)


async def test_per_recipient_refusal(plain_relay: int, sink: Sink) -> None:
    sink.rcpt_answers = {
        "gone@example.org": "550 5.1.1 no such user",
        "busy@example.org": "450 4.2.1 later",
    }
    outcome = await hand_off(
        settings(plain_relay),
        "mx.agents.test",
        Outgoing(
            "bot@agents.test", ("a@example.org", "gone@example.org", "busy@example.org"), DATA
        ),
    )
    assert outcome.accepted == ["a@example.org"]
    assert list(outcome.refused) == ["gone@example.org"]
    assert list(outcome.deferred) == ["busy@example.org"]
    assert sink.received[0][1] == ["a@example.org"]


async def test_relay_down_defers() -> None:
    outcome = await hand_off(
        settings(free_port()),
        "mx.agents.test",
        Outgoing("bot@agents.test", ("a@example.org",), DATA),
    )
    assert outcome.accepted == [] and "a@example.org" in outcome.deferred
    assert outcome.error is not None and "127.0.0.1" in outcome.error


async def test_a_reply_that_never_ends_is_cut_short_not_held_in_memory() -> None:
    """A relay sending continuation lines without end (`220-…` forever) must not make the
    gateway gather them until its timeout — hundreds of megabytes in seconds on a fast link:
    the reply is refused once it is too long, and the message waits for a retry."""

    async def endless_greeting(stream: trio.SocketStream) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while True:
                await stream.send_all((b"220-" + b"x" * 1000 + b"\r\n") * 64)

    async with scripted_relay(endless_greeting) as port:
        with trio.fail_after(5):  # far less than the hand-off's own timeout
            outcome = await hand_off(
                settings(port, timeout_seconds=60),
                "mx.agents.test",
                Outgoing("bot@agents.test", ("a@example.org",), DATA),
            )
    assert list(outcome.deferred) == ["a@example.org"] and not outcome.refused
    assert "reply too long" in (outcome.error or "")


@pytest.mark.parametrize("answer", [b"999 what\r\n", b"100 continue\r\n", b"650 no\r\n"])
async def test_a_reply_code_smtp_does_not_have_is_no_refusal(answer: bytes) -> None:
    """Only 2xx to 5xx are SMTP replies (RFC 5321 section 4.2): anything else says nothing of
    the message, which waits for a retry instead of failing for good."""
    relay = ScriptedRelay(answers={b".": answer})
    async with scripted_relay(relay.serve) as port:
        outcome = await hand_off(
            settings(port), "mx.agents.test", Outgoing("bot@agents.test", ("a@example.org",), DATA)
        )
    assert list(outcome.deferred) == ["a@example.org"] and not outcome.refused, outcome
    assert "not an SMTP reply" in (outcome.error or "")


class CountingSink(Sink):
    """A sink that also counts the QUITs it was sent (connections ended politely)."""

    quits: int = 0

    async def handle_QUIT(self, server: Any, session: Any, envelope: Any) -> str:
        self.quits += 1
        return "221 Bye"


class PipeliningSink(Sink):
    """A sink whose EHLO offers PIPELINING (aiosmtpd takes pipelined commands either way)."""

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]


def outgoing(number: int) -> Outgoing:
    return Outgoing("bot@agents.test", (f"r{number}@example.org",), DATA)


def in_turn(count: int) -> Callable[[RelayConnections], Awaitable[None]]:
    """Work for `keeping`: `count` messages handed off one after another, each accepted."""

    async def send(relay: RelayConnections) -> None:
        for number in range(count):
            outcome = await relay.hand_off(outgoing(number))
            assert outcome.accepted == [f"r{number}@example.org"], outcome

    return send


async def keeping(
    relay: RelayConnections, *steps: Callable[[RelayConnections], Awaitable[object]]
) -> None:
    """Run `steps` in turn while `relay` keeps connections, then stop keeping them."""
    async with trio.open_nursery() as nursery:
        await nursery.start(relay.keep_connections)
        for step in steps:
            await step(relay)
        nursery.cancel_scope.cancel()


def delivered(sink: Sink) -> list[list[str]]:
    """The recipients of each message the relay accepted, in order."""
    return [recipients for _, recipients, _ in sink.received]


def pause(seconds: float) -> Callable[[RelayConnections], Awaitable[None]]:
    """Work for `keeping`: wait `seconds` (the connections sit idle)."""

    async def wait(relay: RelayConnections) -> None:
        await trio.sleep(seconds)

    return wait


async def test_kept_connections_carry_message_after_message(
    tls_settings: OutboundSmtpSettings, sink: Sink
) -> None:
    relay = RelayConnections(tls_settings, "mx.agents.test")
    await keeping(relay, in_turn(5))
    assert relay.connections_opened == 1  # one connect, one TLS handshake, one AUTH
    assert delivered(sink) == [[f"r{number}@example.org"] for number in range(5)]


async def test_without_keeping_each_message_has_its_own_connection(
    plain_relay: int, sink: Sink
) -> None:
    relay = RelayConnections(settings(plain_relay), "mx.agents.test")
    await in_turn(3)(relay)
    assert relay.connections_opened == 3 and len(sink.received) == 3


async def test_a_connection_carries_at_most_messages_per_connection(
    plain_relay: int, sink: Sink
) -> None:
    relay = RelayConnections(settings(plain_relay, messages_per_connection=2), "mx.agents.test")
    await keeping(relay, in_turn(5))
    assert relay.connections_opened == 3 and len(sink.received) == 5


async def test_idle_connections_are_ended_after_connection_idle_seconds() -> None:
    sink = CountingSink()

    async def ended_while_idle(relay: RelayConnections) -> None:
        assert sink.quits == 1  # ended politely, without waiting for a message

    with relay_on_loopback(sink) as port:
        relay = RelayConnections(settings(port, connection_idle_seconds=0.2), "mx.agents.test")
        await keeping(relay, in_turn(1), pause(0.6), ended_while_idle, in_turn(1))
        assert relay.connections_opened == 2
        await trio.sleep(0.2)
        assert sink.quits == 2  # stopping keep_connections ends what it kept


class _SlowToQuit(trio.abc.Stream):
    """A kept connection on a slow link: saying QUIT takes 0.2 s, and nothing comes back."""

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.sleep(0.2)

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.sleep_forever()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


async def test_a_send_while_expired_connections_are_ended_does_not_stop_the_keeper() -> None:
    """Several kept connections expire at once (after a burst); while the first is told QUIT,
    a new message takes another from the idle list. Ending the rest must not fail then."""
    from e2a_gateway.outbound.relay import _Connection
    from e2a_gateway.smtp.client import ClientSession, _State

    relay = RelayConnections(
        OutboundSmtpSettings(host="relay.test", tls="none", connection_idle_seconds=0.5),
        "mx.agents.test",
    )
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(relay.keep_connections)
            burst_ended = trio.current_time()
            for _ in range(3):
                session = ClientSession("mx.agents.test")
                session._state = _State.IDLE  # greeted, between messages
                connection = _Connection(_SlowToQuit(), session)
                connection.idle_since = burst_ended
                relay._idle.append(connection)
            relay._changed.set()
            await trio.sleep(0.6)  # the keeper is saying QUIT to the first expired connection
            taken = relay._idle[-1:]  # as hand_off takes one for a new message
            del relay._idle[-1:]
            await trio.sleep(0.6)  # the keeper ends the others and goes on keeping
            assert relay._idle == [] and len(taken) <= 1
            nursery.cancel_scope.cancel()


async def test_a_kept_connection_the_relay_closed_is_replaced(sink: Sink) -> None:
    # The relay ends sessions idle for 0.3 s ("421 4.4.2 timeout", then closes): the kept
    # connection is found closed when the next message comes, which goes out on a new one.
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port, timeout=0.3)
    controller.start()
    try:
        relay = RelayConnections(settings(port), "mx.agents.test")
        await keeping(relay, in_turn(1), pause(0.8), in_turn(2))
    finally:
        controller.stop()
    assert relay.connections_opened == 2
    assert delivered(sink) == [["r0@example.org"], ["r0@example.org"], ["r1@example.org"]]


@pytest.mark.parametrize("pipelining", [False, True])
async def test_refused_messages_leave_the_connection_to_the_next(pipelining: bool) -> None:
    """A recipient refused among others, a message whose only recipient is refused (its
    transaction reset), then two accepted: one connection carries them all."""
    sink = PipeliningSink() if pipelining else Sink()
    sink.rcpt_answers = {"gone@example.org": "550 5.1.1 no such user"}
    outcomes = []

    async def refused(relay: RelayConnections) -> None:
        for recipients in (("a@example.org", "gone@example.org"), ("gone@example.org",)):
            outcomes.append(await relay.hand_off(Outgoing("bot@agents.test", recipients, DATA)))

    with relay_on_loopback(sink) as port:
        relay = RelayConnections(settings(port), "mx.agents.test")
        await keeping(relay, refused, in_turn(2))
    mixed, nobody = outcomes
    assert mixed.accepted == ["a@example.org"] and "550" in mixed.refused["gone@example.org"]
    assert not nobody.accepted and "550" in nobody.refused["gone@example.org"]
    assert relay.connections_opened == 1
    assert delivered(sink) == [["a@example.org"], ["r0@example.org"], ["r1@example.org"]]


async def envelope_first_relay(
    stream: trio.SocketStream, envelopes: list[bytes], messages: int
) -> None:
    """A relay that answers a message's commands only once its whole envelope (MAIL, RCPT,
    DATA) has arrived: only a client that pipelines gets past it."""
    buffer = bytearray()

    async def until(marker: bytes) -> bytes:
        while marker not in buffer:
            data = await stream.receive_some(65536)
            if not data:
                raise trio.BrokenResourceError("client left")
            buffer.extend(data)
        end = buffer.index(marker) + len(marker)
        chunk = bytes(buffer[:end])
        del buffer[:end]
        return chunk

    await stream.send_all(b"220 relay.test ESMTP\r\n")
    await until(b"\r\n")
    await stream.send_all(b"250-relay.test\r\n250-PIPELINING\r\n250 SIZE 1000000\r\n")
    for _ in range(messages):
        envelope = await until(b"DATA\r\n")
        envelopes.append(envelope)
        rcpts = envelope.count(b"RCPT TO:")
        await stream.send_all(b"250 sender ok\r\n" + b"250 rcpt ok\r\n" * rcpts + b"354 go\r\n")
        await until(b"\r\n.\r\n")
        await stream.send_all(b"250 queued\r\n")
    await until(b"QUIT\r\n")
    await stream.send_all(b"221 bye\r\n")


async def test_a_pipelined_envelope_needs_no_reply_before_data() -> None:
    envelopes: list[bytes] = []
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(trio.serve_tcp, host="127.0.0.1"),
            partial(envelope_first_relay, envelopes=envelopes, messages=2),
            0,
        )
        port = listeners[0].socket.getsockname()[1]
        relay = RelayConnections(settings(port, timeout_seconds=5), "mx.agents.test")
        await keeping(relay, in_turn(2))
        nursery.cancel_scope.cancel()
    assert relay.connections_opened == 1
    assert envelopes == [
        f"MAIL FROM:<bot@agents.test> SIZE={len(DATA)}\r\nRCPT TO:<r{n}@example.org>\r\n"
        "DATA\r\n".encode()
        for n in range(2)
    ]


async def silent_after_one_message(
    stream: trio.SocketStream, connections: list[int], delivered: list[str]
) -> None:
    """A relay whose first connection, after one message, stays open and answers nothing (as
    one a middlebox has dropped); later connections are served normally."""
    number = len(connections)
    connections.append(number)
    line = line_reader(stream)
    await stream.send_all(b"220 relay.test ESMTP\r\n")
    served = 0
    recipient = ""
    with contextlib.suppress(trio.BrokenResourceError):
        while True:
            command = await line()
            if number == 0 and served == 1:
                continue  # silent from now on
            verb = command[:4].upper()
            if verb == b"RCPT":
                recipient = command.decode().split("<")[1].split(">")[0]
            if verb == b"DATA":
                await stream.send_all(b"354 go\r\n")
                while await line() != b".\r\n":
                    pass
                delivered.append(recipient)
                served += 1
                await stream.send_all(b"250 queued\r\n")
            elif verb == b"QUIT":
                await stream.send_all(b"221 bye\r\n")
                return
            else:
                await stream.send_all(b"250 ok\r\n")


async def test_a_kept_connection_that_answers_nothing_is_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("e2a_gateway.outbound.relay.KEPT_ANSWER_SECONDS", 0.3)
    connections: list[int] = []
    delivered: list[str] = []
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(trio.serve_tcp, host="127.0.0.1"),
            partial(silent_after_one_message, connections=connections, delivered=delivered),
            0,
        )
        port = listeners[0].socket.getsockname()[1]
        relay = RelayConnections(settings(port, timeout_seconds=5), "mx.agents.test")
        with trio.fail_after(3):  # far less than the hand-off's own timeout
            await keeping(relay, in_turn(2))
        nursery.cancel_scope.cancel()
    assert relay.connections_opened == 2 and connections == [0, 1]
    assert delivered == ["r0@example.org", "r1@example.org"]


@pytest.mark.parametrize("pipelining", [False, True])
async def test_messages_handed_off_together_share_one_connection(pipelining: bool) -> None:
    """One transaction after another (a recipient's own return path each), over one connection
    though none is kept between hand-offs; each outcome is its own message's."""
    sink = PipeliningSink() if pipelining else Sink()
    sink.rcpt_answers = {
        "gone@example.org": "550 5.1.1 no such user",
        "busy@example.org": "450 4.2.1 mailbox busy",
    }
    recipients = ["a@example.org", "gone@example.org", "busy@example.org", "b@example.org"]
    with relay_on_loopback(sink) as port:
        relay = RelayConnections(settings(port), "mx.agents.test")
        outcomes = await relay.hand_off_each(
            [Outgoing(f"bounces+{rcpt[0]}@agents.test", (rcpt,), DATA) for rcpt in recipients]
        )
    accepted, refused, deferred, other = outcomes
    assert accepted.accepted == ["a@example.org"] and other.accepted == ["b@example.org"]
    assert "550" in refused.refused["gone@example.org"] and not refused.accepted
    assert "450" in deferred.deferred["busy@example.org"] and not deferred.accepted
    assert relay.connections_opened == 1
    assert [(path, rcpts) for path, rcpts, _ in sink.received] == [
        ("bounces+a@agents.test", ["a@example.org"]),
        ("bounces+b@agents.test", ["b@example.org"]),
    ]


async def test_messages_handed_off_together_each_have_the_whole_of_their_bounds() -> None:
    """Each transaction's steps are bounded on their own, not by a time the messages share:
    three answered 0.4 s after their data each (1.2 s in all) all go through under bounds of
    0.5 s."""
    sink = Sink(data_seconds=0.4)
    with relay_on_loopback(sink) as port:
        relay = RelayConnections(
            settings(port, timeout_seconds=0.5, end_of_data_timeout_seconds=0.5), "mx.agents.test"
        )
        outcomes = await relay.hand_off_each([outgoing(number) for number in range(3)])
    assert [outcome.accepted for outcome in outcomes] == [[f"r{n}@example.org"] for n in range(3)]


async def test_after_a_step_timed_out_the_messages_not_begun_are_deferred_untried() -> None:
    """A relay that leaves a step unanswered past its bound would do so to each message in
    turn: once one timed out, the rest are deferred without a word to the relay, with its
    reason, and retried later."""
    sink = Sink(data_seconds=1.5)
    with relay_on_loopback(sink) as port:
        relay = RelayConnections(settings(port, end_of_data_timeout_seconds=0.5), "mx.agents.test")
        with trio.fail_after(1.4):
            outcomes = await relay.hand_off_each([outgoing(number) for number in range(3)])
        await trio.sleep(1.2)  # whatever the relay still does with the first
    first, second, third = outcomes
    reason = f"relay 127.0.0.1:{port} timed out: no reply to end of DATA within 0.5 s"
    assert not first.accepted and first.error == reason
    assert "may deliver it twice" in first.deferred["r0@example.org"]
    assert second.deferred == {"r1@example.org": reason}
    assert third.deferred == {"r2@example.org": reason}
    assert ["r1@example.org"] not in delivered(sink) and ["r2@example.org"] not in delivered(sink)


def large_message(octets: int) -> bytes:
    """A message of about `octets` octets, in lines of 78."""
    line = b"x" * 76 + b"\r\n"
    return b"From: bot@agents.test\r\nSubject: large\r\n\r\n" + line * (octets // len(line))


async def test_a_large_message_over_a_slow_link_goes_through_once() -> None:
    """The relay takes 3 MiB at about 1.5 MB/s (a slow link): some 2 s, four times every bound
    (0.5 s). Sending the data is bounded by progress, not by its whole duration, so the
    message goes through at the first attempt, once."""
    relay = ScriptedRelay(read_pause=0.01)
    message = large_message(3 << 20)
    bounds = {"timeout_seconds": 0.5, "data_timeout_seconds": 0.5}
    async with scripted_relay(relay.serve) as port:
        started = trio.current_time()
        outcome = await hand_off(
            settings(port, **bounds, end_of_data_timeout_seconds=0.5),
            "mx.agents.test",
            Outgoing("bot@agents.test", ("a@example.org",), message),
        )
        took = trio.current_time() - started
    assert outcome.accepted == ["a@example.org"], outcome
    assert took > 1.5  # longer than any bound: the test throttled what it meant to
    assert relay.bodies == [message]


async def test_a_relay_that_stalls_mid_data_is_cut_after_the_data_timeout() -> None:
    """The relay stops reading after 1 MiB of 3: the transfer makes no progress, and is cut
    once `data_timeout_seconds` passed without any, not after the other bounds (longer here).
    The message's end never went out, so the relay cannot hold it: the retry delivers it
    once."""
    relay = ScriptedRelay(stall_after=1 << 20)
    async with scripted_relay(relay.serve) as port:
        with trio.fail_after(3):
            outcome = await hand_off(
                settings(port, timeout_seconds=10, data_timeout_seconds=0.5),
                "mx.agents.test",
                Outgoing("bot@agents.test", ("a@example.org",), large_message(3 << 20)),
            )
    assert list(outcome.deferred) == ["a@example.org"] and not outcome.accepted, outcome
    assert "made no progress for 0.5 s" in (outcome.error or "")
    assert "twice" not in outcome.deferred["a@example.org"]
    assert relay.bodies == []


async def test_an_end_of_data_never_answered_is_cut_after_its_own_bound() -> None:
    """The relay takes the data and says nothing more: the wait is cut after
    `end_of_data_timeout_seconds` (here shorter than the other bounds), and the message is
    deferred with a reason saying the retry may deliver it twice."""
    relay = ScriptedRelay(after_data=stall)
    async with scripted_relay(relay.serve) as port:
        started = trio.current_time()
        outcome = await hand_off(
            settings(port, timeout_seconds=10, end_of_data_timeout_seconds=0.5),
            "mx.agents.test",
            Outgoing("bot@agents.test", ("a@example.org",), DATA),
        )
        took = trio.current_time() - started
    assert 0.5 <= took < 2
    assert len(relay.bodies) == 1
    assert "no reply to end of DATA within 0.5 s" in (outcome.error or "")
    assert "may deliver it twice" in outcome.deferred["a@example.org"]


async def test_a_relay_taking_one_transaction_per_connection_gets_a_connection_each(
    plain_relay: int, sink: Sink
) -> None:
    relay = RelayConnections(settings(plain_relay, connection_idle_seconds=0), "mx.agents.test")
    outcomes = await relay.hand_off_each([outgoing(number) for number in range(3)])
    assert [outcome.accepted for outcome in outcomes] == [[f"r{n}@example.org"] for n in range(3)]
    assert relay.connections_opened == 3 and len(sink.received) == 3


@pytest.fixture
def openssl_looks_elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A host whose CA bundle is not where the OpenSSL in use looks: the one-file executable
    built on Debian (OpenSSL's directory /usr/lib/ssl) running on Fedora, say."""
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "no-such-bundle.pem"))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "no-such-directory"))
    relay_module._verifying_context.cache_clear()
    yield
    relay_module._verifying_context.cache_clear()


async def test_system_bundle_is_trusted_where_openssl_does_not_look(
    openssl_looks_elsewhere: None,
    tls_relay: int,
    ca: trustme.CA,
    sink: Sink,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    system_bundle = tmp_path / "ca-bundle.crt"  # the relay's CA, as the operator installed it
    ca.cert_pem.write_to_path(str(system_bundle))
    monkeypatch.setattr(
        relay_module, "SYSTEM_CA_BUNDLES", (str(tmp_path / "absent.crt"), str(system_bundle))
    )
    outcome = await hand_off(
        settings(tls_relay, host="localhost", tls="starttls", username="agent", password="s3cret"),
        "mx.agents.test",
        Outgoing("bot@agents.test", ("a@example.org",), DATA),
    )
    assert outcome.accepted == ["a@example.org"], outcome
    assert sink.received[0][2] == DATA


async def test_without_any_system_bundle_certifi_is_trusted(
    openssl_looks_elsewhere: None,
    tls_relay: int,
    sink: Sink,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(relay_module, "SYSTEM_CA_BUNDLES", (str(tmp_path / "absent.crt"),))
    outcome = await hand_off(
        settings(tls_relay, host="localhost", tls="starttls", username="agent", password="s3cret"),
        "mx.agents.test",
        Outgoing("bot@agents.test", ("a@example.org",), DATA),
    )
    # certifi's public CAs do not include the test CA: the relay is refused, not trusted blindly.
    assert outcome.accepted == [] and "CERTIFICATE_VERIFY_FAILED" in (outcome.error or "")
    context = relay_module._verifying_context(None)
    assert context.cert_store_stats()["x509_ca"] > 100  # certifi's bundle was loaded
