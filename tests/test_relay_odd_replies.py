"""Relays that answer oddly, scripted byte for byte on 127.0.0.1: a relay that knows no EHLO,
multi-line replies whose lines disagree, replies nobody asked for yet, and a large message to
a relay offering 8BITMIME (which must not stall the gateway while its bytes are looked at)."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from e2a_gateway.config import OutboundSmtpSettings
from e2a_gateway.outbound.relay import RelayConnections, hand_off
from e2a_gateway.smtp.client import Outgoing
from tests.relay_support import ScriptedRelay, line_reader, scripted_relay

pytestmark = pytest.mark.backend_independent

DATA = b"From: bot@agents.test\r\nSubject: hi\r\n\r\nbody\r\n"


def settings(port: int, **overrides: Any) -> OutboundSmtpSettings:
    values: dict[str, Any] = {"host": "127.0.0.1", "port": port, "tls": "none"}
    values["timeout_seconds"] = 10
    values.update(overrides)
    return OutboundSmtpSettings.model_validate(values)


def message(*recipients: str) -> Outgoing:
    return Outgoing("bot@agents.test", recipients or ("a@example.org",), DATA)


def verbs(relay: ScriptedRelay) -> list[bytes]:
    return [command.split(b" ")[0].split(b":")[0].strip().upper() for command in relay.commands]


@pytest.mark.parametrize("refusal", [b"500 5.5.1 unrecognized", b"502 5.5.2 not implemented"])
async def test_a_relay_that_knows_no_ehlo_gets_the_mail_after_helo(refusal: bytes) -> None:
    """RFC 5321 section 3.2 and 4.1.4: a server refusing EHLO as unknown is greeted with
    HELO and spoken to without extensions; a plain relay taking no password needs none."""
    relay = ScriptedRelay(answers={b"EHLO": refusal + b"\r\n"})
    async with scripted_relay(relay.serve) as port:
        with trio.fail_after(10):
            outcome = await hand_off(settings(port), "mx.agents.test", message())
    assert outcome.accepted == ["a@example.org"], outcome
    assert verbs(relay) == [b"EHLO", b"HELO", b"MAIL", b"RCPT", b"DATA", b"QUIT"]
    assert relay.commands[1] == b"HELO mx.agents.test\r\n"
    assert relay.commands[2] == b"MAIL FROM:<bot@agents.test>\r\n"  # no SIZE=, no BODY=
    assert relay.bodies == [DATA]


async def test_helo_refused_too_defers() -> None:
    relay = ScriptedRelay(answers={b"EHLO": b"502 5.5.2 no\r\n", b"HELO": b"550 5.7.1 go away\r\n"})
    async with scripted_relay(relay.serve) as port:
        outcome = await hand_off(settings(port), "mx.agents.test", message())
    assert list(outcome.deferred) == ["a@example.org"] and not outcome.refused, outcome
    assert "HELO: 550" in (outcome.error or "")
    assert b"MAIL" not in verbs(relay)


@pytest.mark.parametrize(
    ("overrides", "said"),
    [
        ({"tls": "starttls"}, "EHLO: 502"),  # STARTTLS needs EHLO: nothing goes in clear
        ({"username": "agent", "password": "s3cret"}, "EHLO: 502"),  # so does AUTH
    ],
    ids=["starttls", "auth"],
)
async def test_no_helo_fallback_where_ehlo_is_needed(overrides: dict[str, Any], said: str) -> None:
    """Without EHLO there is neither STARTTLS nor AUTH: falling back to HELO would send the
    mail in clear, or unauthenticated. The message waits for a retry."""
    relay = ScriptedRelay(answers={b"EHLO": b"502 5.5.2 not implemented\r\n"})
    async with scripted_relay(relay.serve) as port:
        outcome = await hand_off(settings(port, **overrides), "mx.agents.test", message())
    assert list(outcome.deferred) == ["a@example.org"] and not outcome.refused, outcome
    assert said in (outcome.error or "")
    assert verbs(relay) == [b"EHLO", b"QUIT"]


async def test_continuation_lines_with_codes_of_one_class_are_one_reply() -> None:
    """`250-…` then `251 …`: lines of one class (both success) read as the last line's code,
    as Postfix and smtplib read them."""
    relay = ScriptedRelay(answers={b"RCPT": b"250-2.1.5 ok\r\n251 2.1.5 forwarded\r\n"})
    async with scripted_relay(relay.serve) as port:
        outcome = await hand_off(settings(port), "mx.agents.test", message())
    assert outcome.accepted == ["a@example.org"], outcome


@pytest.mark.parametrize(
    ("verb", "answer"),
    [
        (b"RCPT", b"550-5.1.1 no such user\r\n250 2.1.5 ok\r\n"),
        (b".", b"554-5.7.1 rejected as spam\r\n250 2.0.0 queued\r\n"),
    ],
    ids=["RCPT", "end of data"],
)
async def test_a_reply_whose_lines_disagree_on_success_is_no_acceptance(
    verb: bytes, answer: bytes
) -> None:
    """RFC 5321 section 4.2.1: every line of a reply has the same code. A reply that begins
    with a refusal and ends with a 250 says nothing certain: the message is not counted as
    handed off (nor refused for good); it waits for a retry."""
    relay = ScriptedRelay(answers={verb: answer})
    async with scripted_relay(relay.serve) as port:
        outcome = await hand_off(settings(port), "mx.agents.test", message())
    assert outcome.accepted == [] and not outcome.refused, outcome
    assert list(outcome.deferred) == ["a@example.org"]
    assert "disagree" in (outcome.error or "")


async def extra_replies(stream: trio.SocketStream, extra_after: bytes, extra: bytes) -> None:
    """A relay answering each command once (the end of data with 554), but `extra_after` (a
    verb) with `extra` appended: a reply to a command not sent yet."""
    line = line_reader(stream)
    await stream.send_all(b"220 relay.test ESMTP\r\n")
    while True:
        command = await line()
        verb = command.split(b" ")[0].split(b":")[0].strip().upper()
        if verb == b"QUIT":
            await stream.send_all(b"221 bye\r\n")
            return
        answer = b"354 go\r\n" if verb == b"DATA" else b"250 ok\r\n"
        await stream.send_all(answer + (extra if verb == extra_after else b""))
        if verb == b"DATA":
            while await line() != b".\r\n":
                pass
            await stream.send_all(b"554 5.7.1 refused\r\n")


@pytest.mark.parametrize(
    ("after", "extra"),
    [(b"EHLO", b"250 ok\r\n"), (b"DATA", b"250 2.0.0 queued\r\n"), (b"MAIL", b"250 ok\r\n")],
)
async def test_a_reply_to_a_command_not_yet_sent_ends_the_session(
    after: bytes, extra: bytes
) -> None:
    """A reply that came before the command it would answer was sent (two replies to one
    command) would be read as the answer to the next one, and every reply after it one
    command late: a 250 meant for nothing would count as the relay taking a message it then
    refuses. The session ends; the message waits for a retry, neither sent nor refused."""
    async with scripted_relay(lambda stream: extra_replies(stream, after, extra)) as port:
        with trio.fail_after(10):
            outcome = await hand_off(settings(port), "mx.agents.test", message())
    assert outcome.accepted == [] and not outcome.refused, outcome
    assert list(outcome.deferred) == ["a@example.org"]
    assert "before it was sent" in (outcome.error or "")


async def test_pipelined_replies_arriving_together_are_no_surprise() -> None:
    """With PIPELINING the replies to MAIL, every RCPT and DATA come in one piece: all asked
    for, none early."""

    async def pipelining(stream: trio.SocketStream) -> None:
        line = line_reader(stream)
        await stream.send_all(b"220 relay.test\r\n")
        await line()
        await stream.send_all(b"250-relay.test\r\n250 PIPELINING\r\n")
        for _ in range(4):
            await line()
        await stream.send_all(b"250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n")
        while await line() != b".\r\n":
            pass
        await stream.send_all(b"250 queued\r\n")
        await line()
        await stream.send_all(b"221 bye\r\n")

    async with scripted_relay(pipelining) as port:
        outcome = await hand_off(
            settings(port), "mx.agents.test", message("a@example.org", "b@example.org")
        )
    assert outcome.accepted == ["a@example.org", "b@example.org"], outcome


async def longest_stall_of_a_send(data: bytes, *, offers_8bitmime: bool) -> float:
    """The longest the event loop went unserved (a 5 ms ticker's longest gap) while `data`
    was handed to a relay on 127.0.0.1 that does, or does not, offer 8BITMIME."""
    extensions = b"250-relay.test\r\n" + (b"250-8BITMIME\r\n" if offers_8bitmime else b"")

    async def sink(stream: trio.SocketStream) -> None:
        line = line_reader(stream)
        await stream.send_all(b"220 relay.test\r\n")
        await line()
        await stream.send_all(extensions + b"250 SIZE 100000000\r\n")
        for answer in (b"250 ok\r\n", b"250 ok\r\n", b"354 go\r\n"):
            await line()
            await stream.send_all(answer)
        tail = b""
        while not tail.endswith(b"\r\n.\r\n"):
            tail = (tail + await stream.receive_some(65536))[-5:]
        await stream.send_all(b"250 queued\r\n")
        await line()
        await stream.send_all(b"221 bye\r\n")

    longest = 0.0
    done = False

    async def ticker() -> None:
        nonlocal longest
        last = trio.current_time()
        while not done:
            await trio.sleep(0.005)
            now = trio.current_time()
            longest = max(longest, now - last)
            last = now

    async with scripted_relay(sink) as port, trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        connections = RelayConnections(settings(port), "mx.agents.test")
        outcome = await connections.hand_off(Outgoing("bot@agents.test", ("a@example.org",), data))
        done = True
    assert outcome.accepted == ["a@example.org"], outcome
    return longest


async def test_a_large_message_to_a_relay_offering_8bitmime_does_not_stall_the_gateway() -> None:
    """Whether a message needs BODY=8BITMIME is decided without looking at its bytes one by
    one in Python (half a second for 25 MB, during which nothing else in the process runs:
    the API, the SMTP listener, the other sends). Measured against the same send to a relay
    that does not offer it (no decision to make), so the machine's speed weighs on both: the
    look at each byte made the first 0.5-0.7 s longer here."""
    data = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 40_000
    without = await longest_stall_of_a_send(data, offers_8bitmime=False)
    offered = await longest_stall_of_a_send(data, offers_8bitmime=True)
    assert offered < without + 0.3, f"the event loop stalled {offered:.3f} s ({without:.3f} s)"


async def test_a_spare_reply_after_a_message_taken_keeps_the_connection_from_the_next() -> None:
    """`250 queued` then a spare `250`: the message was taken (its reply came first), but the
    spare would answer the next message's MAIL; that one goes out on a new connection."""
    relay = ScriptedRelay(answers={b".": b"250 2.0.0 queued\r\n250 2.0.0 again\r\n"})
    async with scripted_relay(relay.serve) as port, trio.open_nursery() as nursery:
        connections = RelayConnections(settings(port), "mx.agents.test")
        await nursery.start(connections.keep_connections)
        first, second = await connections.hand_off_each(
            [message("a@example.org"), message("b@example.org")]
        )
        nursery.cancel_scope.cancel()
    assert first.accepted == ["a@example.org"] and second.accepted == ["b@example.org"]
    assert connections.connections_opened == 2
    assert len(relay.bodies) == 2


@pytest.mark.parametrize("answer", [b"250 2.0.0 ok", b"220 ready", b"334 go on"])
async def test_data_answered_with_neither_354_nor_a_refusal_waits_for_a_retry(
    answer: bytes,
) -> None:
    """A relay answering DATA with a reply that neither invites the data (354) nor refuses it
    (4xx, 5xx) is out of step with the session: the message is not refused for good (it
    bounced back to the agent before) but waits for a retry, its data unsent, and the session
    ends rather than carry another message."""
    relay = ScriptedRelay(answers={b"DATA": answer + b"\r\n"})
    async with scripted_relay(relay.serve) as port:
        outcome = await hand_off(settings(port), "mx.agents.test", message())
    assert outcome.accepted == [] and not outcome.refused, outcome
    assert list(outcome.deferred) == ["a@example.org"]
    assert answer.decode() in (outcome.error or str(outcome.deferred))
    assert b"RSET" not in verbs(relay) and verbs(relay)[-1] == b"QUIT"
