"""The sans-IO SMTP server session, driven with plain bytes: no sockets, no trio."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from e2a_gateway.smtp.header_limits import HeaderSectionCheck
from e2a_gateway.smtp.message_memory import MessageMemory, memory_for_message
from e2a_gateway.smtp.protocol import (
    Awaiting,
    ConnectionClosed,
    Envelope,
    Event,
    LocalProtocolError,
    Mailbox,
    MessageReceived,
    MessageRefusal,
    Pause,
    RecipientRequested,
    Reply,
    ServerSession,
    SessionLimits,
    SessionState,
    Timeout,
    TlsRequested,
    _AddressError,
    _ChunkedContent,
    _CommandError,
    _MessageReader,
    _parse_mailbox,
    _plain_recipient,
    _split_command_line,
    _split_path_argument,
)

pytestmark = pytest.mark.backend_independent

HOST = "mx.agents.test"
G, R, M, T = SessionState.GREETING, SessionState.READY, SessionState.MAIL, SessionState.RCPT
DATA, CLOSED = SessionState.DATA, SessionState.CLOSED
AWAIT_RCPT, AWAIT_MSG = SessionState.AWAITING_RECIPIENT, SessionState.AWAITING_MESSAGE
STARTING_TLS = SessionState.STARTING_TLS

EHLO = b"EHLO client.example\r\n"
MAIL = b"MAIL FROM:<sender@example.org>\r\n"
RCPT = b"RCPT TO:<alice@agents.test>\r\n"


class Dialogue:
    """A session plus a scripted shell: refuses local parts starting "unknown", stores the rest.

    With `tls` the session offers STARTTLS and the shell "completes the handshake" at once,
    after dropping whatever the test feeds through `during_handshake`.
    """

    def __init__(
        self,
        *,
        tls: bool = False,
        during_handshake: bytes = b"",
        memory: MessageMemory | None = None,
        **limits: int,
    ) -> None:
        self.session = ServerSession(
            HOST, SessionLimits(**limits), tls_available=tls, memory=memory
        )
        self.requested: list[Mailbox] = []
        self.envelopes: list[Envelope] = []
        self.closed = False
        self.handshakes = 0
        self.during_handshake = during_handshake

    def send(self, data: bytes) -> list[bytes]:
        """Feed `data`, answer every decision, return the replies in order, each `Pause` as
        `PAUSE` among them."""
        self.session.receive_data(data)
        return self.drain()

    def drain(self) -> list[bytes]:
        replies = []
        while (event := self.session.next_event()) is not None:
            if isinstance(event, ConnectionClosed):
                self.closed = True
                break
            if isinstance(event, Reply):
                replies.append(event.data)
            elif isinstance(event, Pause):
                assert event.seconds == self.session._limits.error_delay
                replies.append(PAUSE)
            elif isinstance(event, RecipientRequested):
                self.requested.append(event.address)
                if event.address.local.startswith("unknown"):
                    self.session.reject_recipient(550, "5.1.1", "no such agent here")
                else:
                    self.session.accept_recipient()
            elif isinstance(event, TlsRequested):
                self.handshakes += 1
                if self.during_handshake:
                    self.session.receive_data(self.during_handshake)
                self.session.tls_started()
            else:
                self.envelopes.append(event.envelope)
                self.session.message_accepted(f"Q{len(self.envelopes)}")
        return replies

    def statuses(self, data: bytes) -> list[str]:
        return [status(reply) for reply in self.send(data)]


PAUSE = b"pause\r\n"
"""A `Pause` among a `Dialogue`'s replies (its `status` is "pause")."""


def status(reply: bytes) -> str:
    """'250 2.1.0' for b'250 2.1.0 Ok\\r\\n'; just the code for replies without enhanced code."""
    last_line = reply.rstrip(b"\r\n").split(b"\r\n")[-1].decode()
    code, _, rest = last_line.partition(" ")
    enhanced = rest.split(" ")[0]
    return f"{code} {enhanced}" if re.fullmatch(r"[245]\.\d+\.\d+", enhanced) else code


def in_state(state: SessionState, *, tls: bool = False, **limits: int) -> Dialogue:
    setup = {G: [], R: [EHLO], M: [EHLO, MAIL], T: [EHLO, MAIL, RCPT]}[state]
    dialogue = Dialogue(tls=tls, **limits)
    for command in setup:
        dialogue.send(command)
    assert dialogue.session.state is state
    return dialogue


def message(body: bytes) -> bytes:
    return EHLO + MAIL + RCPT + b"DATA\r\n" + body


def split_at(stream: bytes, points: list[int]) -> list[bytes]:
    """`stream` cut at `points`, without empty chunks (an empty chunk would mean end of input)."""
    cuts = sorted({0, len(stream), *(point for point in points if point <= len(stream))})
    return [stream[a:b] for a, b in itertools.pairwise(cuts)]


# Every command in every state

COMMANDS: list[tuple[bytes, dict[SessionState, tuple[str, SessionState]]]] = [
    (b"EHLO client.example", {s: ("250", R) for s in (G, R, M, T)}),
    (b"HELO client.example", {s: ("250", R) for s in (G, R, M, T)}),
    (
        b"MAIL FROM:<bob@example.org>",
        {G: ("503 5.5.1", G), R: ("250 2.1.0", M), M: ("503 5.5.1", M), T: ("503 5.5.1", T)},
    ),
    (
        b"RCPT TO:<alice@agents.test>",
        {G: ("503 5.5.1", G), R: ("503 5.5.1", R), M: ("250 2.1.5", T), T: ("250 2.1.5", T)},
    ),
    (b"DATA", {G: ("503 5.5.1", G), R: ("503 5.5.1", R), M: ("554 5.5.1", M), T: ("354", DATA)}),
    (
        b"BDAT 0",
        {G: ("503 5.5.1", G), R: ("503 5.5.1", R), M: ("554 5.5.1", M), T: ("250 2.0.0", T)},
    ),
    (
        b"BDAT 0 LAST",
        {G: ("503 5.5.1", G), R: ("503 5.5.1", R), M: ("554 5.5.1", M), T: ("250 2.0.0", R)},
    ),
    (b"RSET", {G: ("250 2.0.0", G), R: ("250 2.0.0", R), M: ("250 2.0.0", R), T: ("250 2.0.0", R)}),
    (b"NOOP", {s: ("250 2.0.0", s) for s in (G, R, M, T)}),
    (b"NOOP anything", {s: ("250 2.0.0", s) for s in (G, R, M, T)}),
    (b"QUIT", {s: ("221 2.0.0", CLOSED) for s in (G, R, M, T)}),
    (b"VRFY alice", {s: ("252 2.1.5", s) for s in (G, R, M, T)}),
    (b"HELP", {s: ("214 2.0.0", s) for s in (G, R, M, T)}),
    (b"EXPN staff", {s: ("502 5.5.1", s) for s in (G, R, M, T)}),
    (b"STARTTLS", {s: ("502 5.5.1", s) for s in (G, R, M, T)}),
    (b"AUTH PLAIN", {s: ("502 5.5.1", s) for s in (G, R, M, T)}),
    (b"FROB", {s: ("500 5.5.2", s) for s in (G, R, M, T)}),
    (b"", {s: ("500 5.5.2", s) for s in (G, R, M, T)}),
    (b"EHLO", {s: ("501 5.5.4", s) for s in (G, R, M, T)}),
    (b"HELO", {s: ("501 5.5.4", s) for s in (G, R, M, T)}),
    (b"DATA now", {s: ("501 5.5.4", s) for s in (G, R, M, T)}),
    (b"BDAT", {s: ("501 5.5.4", s) for s in (G, R, M, T)}),
    (b"BDAT -1", {s: ("501 5.5.4", s) for s in (G, R, M, T)}),
    (b"BDAT 10 FIRST", {s: ("501 5.5.4", s) for s in (G, R, M, T)}),
    ("BDAT \u00b2".encode(), {s: ("501 5.5.4", s) for s in (G, R, M, T)}),  # a digit, not ASCII
    (b"RSET now", {s: ("501 5.5.4", s) for s in (G, R, M, T)}),
    (b"QUIT now", {s: ("501 5.5.4", s) for s in (G, R, M, T)}),
    (b"VRFY", {s: ("501 5.5.4", s) for s in (G, R, M, T)}),
]


@pytest.mark.parametrize(
    ("state", "command", "expected", "next_state"),
    [
        (state, command, expected, next_state)
        for command, by_state in COMMANDS
        for state, (expected, next_state) in by_state.items()
    ],
    ids=lambda value: value.decode() if isinstance(value, bytes) else str(value),
)
def test_command_in_state(
    state: SessionState, command: bytes, expected: str, next_state: SessionState
) -> None:
    dialogue = in_state(state)
    assert dialogue.statuses(command + b"\r\n") == [expected]
    assert dialogue.session.state is next_state


@pytest.mark.parametrize("verb", [b"ehlo", b"Ehlo", b"EHLO"])
def test_verbs_are_case_insensitive(verb: bytes) -> None:
    assert Dialogue().statuses(verb + b" client.example\r\n") == ["250"]


def test_greeting_names_the_host() -> None:
    assert Dialogue().session.greeting() == b"220 mx.agents.test ESMTP e2a\r\n"


def test_ehlo_lists_the_extensions() -> None:
    assert Dialogue(max_message_bytes=1000).send(EHLO) == [
        b"250-mx.agents.test\r\n"
        b"250-SIZE 1000\r\n"
        b"250-8BITMIME\r\n"
        b"250-PIPELINING\r\n"
        b"250-ENHANCEDSTATUSCODES\r\n"
        b"250-SMTPUTF8\r\n"
        b"250 CHUNKING\r\n"
    ]


def test_helo_replies_with_one_line() -> None:
    dialogue = Dialogue()
    assert dialogue.send(b"HELO client.example\r\n") == [b"250 mx.agents.test\r\n"]
    assert dialogue.session.helo == "client.example"


def test_ehlo_resets_the_transaction() -> None:
    dialogue = in_state(T)
    assert dialogue.statuses(EHLO + b"DATA\r\n") == ["250", "503 5.5.1"]


def test_rset_keeps_the_introduction() -> None:
    dialogue = in_state(T)
    assert dialogue.statuses(b"RSET\r\n" + MAIL + RCPT) == ["250 2.0.0", "250 2.1.0", "250 2.1.5"]


def test_quit_closes_and_the_session_stays_closed() -> None:
    dialogue = in_state(R)
    assert dialogue.send(b"QUIT\r\nNOOP\r\n") == [
        b"221 2.0.0 mx.agents.test closing connection\r\n"
    ]
    assert dialogue.closed
    dialogue.session.receive_data(b"NOOP\r\n")
    assert dialogue.session.next_event() == ConnectionClosed()
    assert dialogue.session.next_event() == ConnectionClosed()


# STARTTLS (RFC 3207)

TLS_COMMANDS: list[tuple[bytes, dict[SessionState, tuple[str, SessionState]]]] = [
    (
        b"STARTTLS",
        {G: ("503 5.5.1", G), R: ("220 2.0.0", G), M: ("503 5.5.1", M), T: ("503 5.5.1", T)},
    ),
    (b"STARTTLS now", {s: ("501 5.5.4", s) for s in (G, R, M, T)}),
    (b"starttls", {G: ("503 5.5.1", G), R: ("220 2.0.0", G)}),
]


@pytest.mark.parametrize(
    ("state", "command", "expected", "next_state"),
    [
        (state, command, expected, next_state)
        for command, by_state in TLS_COMMANDS
        for state, (expected, next_state) in by_state.items()
    ],
    ids=lambda value: value.decode() if isinstance(value, bytes) else str(value),
)
def test_starttls_in_state(
    state: SessionState, command: bytes, expected: str, next_state: SessionState
) -> None:
    dialogue = in_state(state, tls=True)
    assert dialogue.statuses(command + b"\r\n") == [expected]
    assert dialogue.session.state is next_state
    assert dialogue.session.secure is (expected == "220 2.0.0")


def test_ehlo_offers_starttls_only_before_tls() -> None:
    dialogue = Dialogue(tls=True)
    assert dialogue.send(EHLO)[0].endswith(b"250-CHUNKING\r\n250 STARTTLS\r\n")
    assert dialogue.send(b"STARTTLS\r\n") == [b"220 2.0.0 Ready to start TLS\r\n"]
    assert dialogue.handshakes == 1
    assert dialogue.session.secure
    assert b"STARTTLS" not in dialogue.send(EHLO)[0]
    assert dialogue.statuses(b"STARTTLS\r\n") == ["503 5.5.1"]


def test_starttls_after_helo_is_refused() -> None:
    dialogue = Dialogue(tls=True)
    dialogue.send(b"HELO client.example\r\n")
    assert dialogue.statuses(b"STARTTLS\r\n") == ["503 5.5.1"]
    assert not dialogue.session.secure


def test_starttls_is_not_offered_without_tls() -> None:
    dialogue = Dialogue()
    assert b"STARTTLS" not in dialogue.send(EHLO)[0]
    assert dialogue.statuses(b"STARTTLS\r\n") == ["502 5.5.1"]


def test_tls_forgets_the_session_so_far() -> None:
    dialogue = Dialogue(tls=True)
    dialogue.send(b"EHLO before.example\r\nSTARTTLS\r\n")
    assert dialogue.session.helo == ""
    assert dialogue.statuses(MAIL) == ["503 5.5.1"]
    assert dialogue.statuses(b"EHLO after.example\r\n" + MAIL + RCPT + b"DATA\r\nx\r\n.\r\n") == [
        "250",
        "250 2.1.0",
        "250 2.1.5",
        "354",
        "250 2.0.0",
    ]
    assert dialogue.envelopes[0].helo == "after.example"


INJECTED = MAIL + b"RCPT TO:<bob@agents.test>\r\nDATA\r\ninjected\r\n.\r\nQUIT\r\n"


@pytest.mark.parametrize(
    ("pipelined", "during_handshake"),
    [(INJECTED, b""), (b"", INJECTED), (INJECTED[:10], INJECTED[10:]), (b"NOOP\r\n", b"")],
    ids=["pipelined", "before-handshake", "split", "noop"],
)
def test_input_before_the_handshake_is_discarded(pipelined: bytes, during_handshake: bytes) -> None:
    """CVE-2011-0411 / CVE-2024-34083: plaintext after STARTTLS must not run over TLS."""
    dialogue = Dialogue(tls=True, during_handshake=during_handshake)
    replies = dialogue.send(EHLO + b"STARTTLS\r\n" + pipelined)
    assert [status(reply) for reply in replies] == ["250", "220 2.0.0"]
    assert dialogue.session.state is G
    assert dialogue.requested == []
    assert dialogue.statuses(b"NOOP\r\n") == ["250 2.0.0"]
    assert dialogue.requested == []
    assert dialogue.envelopes == []


def test_starttls_discards_a_half_read_long_line() -> None:
    dialogue = Dialogue(tls=True)
    dialogue.send(EHLO)
    dialogue.session.receive_data(b"STARTTLS\r\n")
    assert status(next_reply(dialogue.session)) == "220 2.0.0"
    assert dialogue.session.next_event() == TlsRequested()
    dialogue.session.receive_data(b"x" * 5000)
    assert dialogue.session.next_event() is None
    dialogue.session.tls_started()
    assert dialogue.statuses(b"NOOP\r\n") == ["250 2.0.0"]


def test_client_closing_during_the_handshake_ends_the_session() -> None:
    session = ServerSession(HOST, SessionLimits(), tls_available=True)
    session.receive_data(EHLO + b"STARTTLS\r\n")
    advance_to(session, TlsRequested)
    session.receive_data(b"")
    session.tls_started()
    assert session.next_event() == ConnectionClosed()


def test_tls_started_out_of_turn_is_a_shell_bug() -> None:
    session = ServerSession(HOST, SessionLimits(), tls_available=True)
    with pytest.raises(LocalProtocolError):
        session.tls_started()


# Connection limits and shutdown


def test_decline_turns_the_client_away() -> None:
    session = ServerSession(HOST, SessionLimits())
    assert session.decline("Too many connections") == (
        b"421 4.7.0 mx.agents.test Too many connections\r\n"
    )
    assert session.state is CLOSED
    assert session.next_event() == ConnectionClosed()


SHUTDOWN = b"421 4.3.2 mx.agents.test Service shutting down, closing connection\r\n"


@pytest.mark.parametrize("state", [G, R, M, T])
def test_shutdown_of_a_session_without_a_message_in_flight_is_immediate(
    state: SessionState,
) -> None:
    dialogue = in_state(state)
    dialogue.session.receive_data(b"NOOP\r\n")
    dialogue.session.shut_down()
    assert dialogue.drain() == [SHUTDOWN]
    assert dialogue.closed
    assert not dialogue.session.in_flight


def test_shutdown_lets_the_message_being_sent_finish() -> None:
    dialogue = in_state(T)
    assert dialogue.statuses(b"DATA\r\nfirst half\r\n") == ["354"]
    assert dialogue.session.in_flight
    dialogue.session.shut_down()
    assert dialogue.drain() == []
    replies = dialogue.send(b"second half\r\n.\r\n" + MAIL + RCPT + b"DATA\r\n")
    assert replies == [b"250 2.0.0 Ok: queued as Q1\r\n", SHUTDOWN]
    assert dialogue.envelopes[0].data == b"first half\r\nsecond half\r\n"
    assert dialogue.closed


def test_shutdown_between_bdat_chunks_lets_the_message_finish() -> None:
    dialogue = in_state(T)
    assert dialogue.statuses(b"BDAT 6\r\nfirst ") == ["250 2.0.0"]
    assert dialogue.session.in_flight
    dialogue.session.shut_down()
    assert dialogue.drain() == []
    replies = dialogue.send(b"BDAT 6 LAST\r\nhalf\r\n" + MAIL)
    assert replies == [b"250 2.0.0 Ok: queued as Q1\r\n", SHUTDOWN]
    assert dialogue.envelopes[0].data == b"first half\r\n"
    assert dialogue.closed


@pytest.mark.parametrize("accepted", [True, False])
def test_shutdown_waits_for_the_storage_decision(accepted: bool) -> None:
    session = ServerSession(HOST, SessionLimits())
    session.receive_data(message(b"hi\r\n.\r\n") + MAIL)
    advance_to(session, MessageReceived)
    assert session.in_flight
    session.shut_down()
    assert session.next_event() is None
    if accepted:
        session.message_accepted("Q1")
    else:
        session.message_failed(451, "4.3.0", "Temporary storage failure")
    assert status(next_reply(session)) == ("250 2.0.0" if accepted else "451 4.3.0")
    assert next_reply(session) == SHUTDOWN
    assert session.next_event() == ConnectionClosed()


def test_shutdown_waits_for_the_recipient_decision() -> None:
    session = ServerSession(HOST, SessionLimits())
    session.receive_data(EHLO + MAIL + RCPT + b"DATA\r\n")
    advance_to(session, RecipientRequested)
    session.shut_down()
    assert session.next_event() is None
    session.accept_recipient()
    assert status(next_reply(session)) == "250 2.1.5"
    assert next_reply(session) == SHUTDOWN
    assert session.next_event() == ConnectionClosed()


def test_shutdown_during_the_tls_handshake_follows_it() -> None:
    session = ServerSession(HOST, SessionLimits(), tls_available=True)
    session.receive_data(EHLO + b"STARTTLS\r\n")
    advance_to(session, TlsRequested)
    session.shut_down()
    assert session.next_event() is None
    session.tls_started()
    assert next_reply(session) == SHUTDOWN
    assert session.next_event() == ConnectionClosed()


@pytest.mark.parametrize("stage", ["data", "awaiting message", "awaiting recipient"])
def test_shutdown_immediately_abandons_what_is_in_flight(stage: str) -> None:
    session = ServerSession(HOST, SessionLimits())
    session.receive_data(EHLO + MAIL + RCPT + b"DATA\r\n")
    advance_to(session, RecipientRequested)
    if stage != "awaiting recipient":
        session.accept_recipient()
        session.receive_data(b"hi\r\n.\r\n" if stage == "awaiting message" else b"hi\r\n")
        while session.next_event() is not None:
            pass
    assert session.in_flight
    session.shut_down(immediately=True)
    assert next_reply(session) == SHUTDOWN
    assert session.next_event() == ConnectionClosed()
    with pytest.raises(LocalProtocolError):
        session.message_accepted("Q1")


def test_shutdown_after_close_does_nothing() -> None:
    dialogue = in_state(R)
    dialogue.send(b"QUIT\r\n")
    dialogue.session.shut_down()
    assert dialogue.drain() == []


# MAIL and RCPT parameters


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (b"MAIL FROM:<a@example.org> SIZE=1000", "250 2.1.0"),
        (b"MAIL FROM:<a@example.org> SIZE=1001", "552 5.3.4"),
        (b"MAIL FROM:<a@example.org> SIZE=99999999999999999999999", "552 5.3.4"),
        (b"MAIL FROM:<a@example.org> SIZE=12k", "501 5.5.4"),
        (b"MAIL FROM:<a@example.org> SIZE", "501 5.5.4"),
        (b"MAIL FROM:<a@example.org> SIZE=", "501 5.5.4"),
        (b"MAIL FROM:<a@example.org> BODY=8BITMIME", "250 2.1.0"),
        (b"MAIL FROM:<a@example.org> body=7bit", "250 2.1.0"),
        (b"MAIL FROM:<a@example.org> BODY=BINARYMIME", "501 5.5.4"),
        (b"MAIL FROM:<a@example.org> SMTPUTF8", "250 2.1.0"),
        (b"MAIL FROM:<a@example.org> SMTPUTF8=yes", "501 5.5.4"),
        (b"MAIL FROM:<a@example.org> SIZE=10 SIZE=10", "501 5.5.4"),
        (b"MAIL FROM:<a@example.org> RET=HDRS", "555 5.5.4"),
        (b"MAIL FROM:<a@example.org>  SIZE=10  BODY=8BITMIME ", "250 2.1.0"),
        (b"MAIL FROM:<a@example.org> =x", "501 5.5.4"),
        (b"MAIL FROM:<a@example.org>SIZE=10", "501 5.5.4"),
        (b"MAIL FROM: <a@example.org>", "250 2.1.0"),
        (b"mail from:<a@example.org>", "250 2.1.0"),
        (b"MAIL FROM:<>", "250 2.1.0"),
        (b"MAIL FROM:a@example.org", "501 5.5.4"),
        (b"MAIL FROM:<a@example.org", "501 5.5.4"),
        (b"MAIL TO:<a@example.org>", "501 5.5.4"),
        (b"MAIL", "501 5.5.4"),
        (b"MAIL FROM:<not an address>", "501 5.1.7"),
        (b"MAIL FROM:<a@example..org>", "501 5.1.7"),
        ("MAIL FROM:<j\u00f6rg@example.org>".encode(), "553 5.6.7"),
        ("MAIL FROM:<j\u00f6rg@example.org> SMTPUTF8".encode(), "250 2.1.0"),
    ],
)
def test_mail_command(command: bytes, expected: str) -> None:
    dialogue = in_state(R, max_message_bytes=1000)
    assert dialogue.statuses(command + b"\r\n") == [expected]
    assert dialogue.session.state is (M if expected == "250 2.1.0" else R)


def test_a_size_of_more_digits_than_python_converts_is_too_large() -> None:
    """RFC 1870: 552 for a declared size over the limit, however many digits it has (int()
    refuses strings of more than 4,300 digits; a long command line allows them)."""
    dialogue = in_state(R, max_message_bytes=1000, max_command_length=8_000)
    command = b"MAIL FROM:<a@example.org> SIZE=" + b"9" * 5_000 + b"\r\n"
    assert dialogue.statuses(command) == ["552 5.3.4"]
    assert dialogue.statuses(b"MAIL FROM:<a@example.org> SIZE=" + b"0" * 20 + b"\r\n") == [
        "250 2.1.0"
    ]


def test_mail_parameters_require_ehlo() -> None:
    dialogue = Dialogue()
    dialogue.send(b"HELO client.example\r\n")
    assert dialogue.statuses(b"MAIL FROM:<a@example.org> BODY=8BITMIME\r\n") == ["555 5.5.4"]
    assert dialogue.statuses(b"MAIL FROM:<a@example.org>\r\n") == ["250 2.1.0"]


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (b"RCPT TO:<alice@agents.test> NOTIFY=NEVER", "555 5.5.4"),
        (b"RCPT TO:<alice@agents.test> =", "501 5.5.4"),
        (b"RCPT TO:alice@agents.test", "501 5.5.4"),
        (b"RCPT FROM:<alice@agents.test>", "501 5.5.4"),
        (b"RCPT TO:<alice@agents.test", "501 5.5.4"),
        (b"RCPT TO:<alice@agents.test>x", "501 5.5.4"),
        (b'RCPT TO:<"alice@agents.test>', "501 5.5.4"),
        (b"RCPT TO:<alice@agents.test> ", "250 2.1.5"),
        (b"RCPT TO: <alice@agents.test>", "250 2.1.5"),
        ("RCPT TO:<j\u00f6rg@agents.test>".encode(), "553 5.6.7"),
        ("RCPT TO:<alice@b\u00fccher.example>".encode(), "553 5.6.7"),
    ],
)
def test_rcpt_command(command: bytes, expected: str) -> None:
    assert in_state(M).statuses(command + b"\r\n") == [expected]


def test_smtputf8_transaction_allows_non_ascii_recipients() -> None:
    dialogue = in_state(R)
    dialogue.send(b"MAIL FROM:<a@example.org> SMTPUTF8\r\n")
    assert dialogue.statuses("RCPT TO:<j\u00f6rg@agents.test>\r\n".encode()) == ["250 2.1.5"]
    assert dialogue.requested == [Mailbox("j\u00f6rg", "agents.test")]


def test_too_many_recipients() -> None:
    dialogue = in_state(M, max_recipients=2)
    replies = dialogue.statuses(
        RCPT + b"RCPT TO:<bob@agents.test>\r\nRCPT TO:<carol@agents.test>\r\n"
    )
    assert replies == ["250 2.1.5", "250 2.1.5", "452 4.5.3"]
    assert [mailbox.local for mailbox in dialogue.requested] == ["alice", "bob"]
    assert dialogue.statuses(b"DATA\r\nhi\r\n.\r\n") == ["354", "250 2.0.0"]
    assert [mailbox.local for mailbox in dialogue.envelopes[0].recipients] == ["alice", "bob"]


def test_refused_recipients_are_not_in_the_envelope() -> None:
    dialogue = in_state(M)
    assert dialogue.statuses(b"RCPT TO:<unknown@agents.test>\r\n") == ["550 5.1.1"]
    assert dialogue.session.state is M
    assert dialogue.statuses(b"DATA\r\n") == ["554 5.5.1"]
    assert dialogue.statuses(RCPT + b"RCPT TO:<unknown2@agents.test>\r\n") == [
        "250 2.1.5",
        "550 5.1.1",
    ]
    assert dialogue.session.state is T
    dialogue.send(b"DATA\r\nhi\r\n.\r\n")
    assert dialogue.envelopes[0].recipients == [Mailbox("alice", "agents.test")]


# Addresses


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("Alice@Agents.Test", Mailbox("Alice", "agents.test")),
        ("alice@agents.test.", Mailbox("alice", "agents.test")),
        ('"john doe"@agents.test', Mailbox("john doe", "agents.test")),
        ('"a>b"@agents.test', Mailbox("a>b", "agents.test")),
        ('"a\\"b\\\\c"@agents.test', Mailbox('a"b\\c', "agents.test")),
        ('"evil@elsewhere.test"@agents.test', Mailbox("evil@elsewhere.test", "agents.test")),
        ('""@agents.test', Mailbox("", "agents.test")),
        ("user%elsewhere.test@agents.test", Mailbox("user%elsewhere.test", "agents.test")),
        ("elsewhere.test!user@agents.test", Mailbox("elsewhere.test!user", "agents.test")),
        ("@relay.test:alice@agents.test", Mailbox("alice", "agents.test")),
        ("@relay.test,@other.test:alice@agents.test", Mailbox("alice", "agents.test")),
        ('@relay.test:"x:y"@agents.test', Mailbox("x:y", "agents.test")),
        ("alice@[192.0.2.1]", Mailbox("alice", "[192.0.2.1]")),
        ("alice@[IPv6:2001:DB8:0::1]", Mailbox("alice", "[ipv6:2001:db8::1]")),
        ("alice@b\u00fccher.example", Mailbox("alice", "xn--bcher-kva.example")),
        ("alice@B\u00dcCHER.example", Mailbox("alice", "xn--bcher-kva.example")),
        ("alice@stra\u00dfe.example", Mailbox("alice", "xn--strae-oqa.example")),
        ("alice@xn--bcher-kva.example", Mailbox("alice", "xn--bcher-kva.example")),
        ("alice@agents.test\u3002evil", Mailbox("alice", "agents.xn--testevil-rm3g")),
        ("j\u00f6rg@agents.test", Mailbox("j\u00f6rg", "agents.test")),
        ("Postmaster", Mailbox("postmaster", HOST)),
        ("a.b-c+tag@agents.test", Mailbox("a.b-c+tag", "agents.test")),
    ],
)
def test_recipient_address_is_normalised(path: str, expected: Mailbox) -> None:
    dialogue = in_state(R)
    dialogue.send(b"MAIL FROM:<a@example.org> SMTPUTF8\r\n")
    assert dialogue.statuses(f"RCPT TO:<{path}>\r\n".encode()) == ["250 2.1.5"]
    assert dialogue.requested == [expected]


_PLAIN_ATOM = r"[!#-'*+\-/-9=?A-Z^-~]+"
_PLAIN_PATH = re.compile(rf"{_PLAIN_ATOM}(?:\.{_PLAIN_ATOM})*@[A-Za-z0-9.-]+")
"""What the plain-RCPT shortcut takes, written apart: an ASCII dot-string, "@", a domain."""


def _general_recipient(line: bytes) -> Mailbox | None:
    """The mailbox the general parser reads from a RCPT line without parameters; None when
    it refuses the line."""
    try:
        verb, argument = _split_command_line(line)
        path, parameters = _split_path_argument(argument, "TO:", "RCPT TO:<address>")
        if verb != "RCPT" or parameters or not path.isascii():
            return None
        return _parse_mailbox(path)
    except (_CommandError, _AddressError):
        return None


_LOCAL_CHARACTERS = "aZ09.!#$%&'*+-/=?^_`{|}~\"(),:;<>@[\\] \x7f\u00e9"
_DOMAIN_CHARACTERS = "aZ09.-_[]:\u00e9"


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(
    verb=st.sampled_from([b"RCPT TO:", b"rcpt to:", b"Rcpt tO:", b"RCPT TO: ", b"RCPT  TO:"]),
    local=st.text(st.sampled_from(["a", "Z", "0", ".", "+"]), max_size=8)
    | st.text(_LOCAL_CHARACTERS, max_size=12),
    domain=st.text(st.sampled_from(["a", "Z", "9", ".", "-"]), max_size=10)
    | st.text(_DOMAIN_CHARACTERS, max_size=12),
    tail=st.sampled_from([b"", b"", b" ", b" SIZE=1", b"\r"]),
)
def test_plain_recipients_read_as_the_general_parser_reads_them(
    verb: bytes, local: str, domain: str, tail: bytes
) -> None:
    """The shortcut for plain RCPT lines gives the general parser's mailbox (with the same
    address, which the shortcut makes at once), or leaves the line to it; for a plain line it
    always answers."""
    line = verb + f"<{local}@{domain}>".encode() + tail + b"\r\n"
    plain = _plain_recipient(line)
    general = _general_recipient(line)
    if plain is not None:
        assert plain == general
        assert general is not None and plain.address == general.address
    plain_form = (
        verb.upper() == b"RCPT TO:" and not tail and _PLAIN_PATH.fullmatch(local + "@" + domain)
    )
    if general is not None and plain_form:
        assert plain == general


@pytest.mark.parametrize(
    "path",
    [
        "",
        "alice",
        "alice@",
        "@agents.test",
        "elsewhere.test!user",
        "alice@agents.test..",
        "alice@agents..test",
        "a..b@agents.test",
        ".alice@agents.test",
        "alice.@agents.test",
        "a b@agents.test",
        "a@b@agents.test",
        '"a"b@agents.test',
        '"a"',
        "alice@-agents.test",
        "alice@agents-.test",
        "alice@under_score.test",
        "alice@" + "a" * 64 + ".test",
        "alice@" + "a." * 127 + "test",
        "alice@[192.0.2.256]",
        "alice@[192.0.2.1",
        "alice@[tag:content]",
        "alice@[IPv6:fe80::1%eth0]",
        "alice@[IPv6:192.0.2.1]",
        "@relay.test,alice@agents.test",
        "@relay..test:alice@agents.test",
        "relay.test:alice@agents.test",
        "alice@\u212aelvin.test",
    ],
)
def test_malformed_recipient_is_refused(path: str) -> None:
    dialogue = in_state(R)
    dialogue.send(b"MAIL FROM:<a@example.org> SMTPUTF8\r\n")
    assert dialogue.statuses(f"RCPT TO:<{path}>\r\n".encode()) == ["501 5.1.3"]
    assert dialogue.requested == []


@pytest.mark.parametrize(
    ("path", "mail_from"),
    [
        ("", ""),
        ("Bob@Example.ORG.", "Bob@example.org"),
        ("@relay.test:bob@example.org", "bob@example.org"),
        ('"bob smith"@example.org', '"bob smith"@example.org'),
    ],
)
def test_sender_address_is_normalised(path: str, mail_from: str) -> None:
    dialogue = in_state(R)
    dialogue.send(f"MAIL FROM:<{path}>\r\n".encode() + RCPT + b"DATA\r\nhi\r\n.\r\n")
    assert dialogue.envelopes[0].mail_from == mail_from


@pytest.mark.parametrize(
    ("mailbox", "address"),
    [
        (Mailbox("alice", "agents.test"), "alice@agents.test"),
        (Mailbox("john doe", "agents.test"), '"john doe"@agents.test'),
        (Mailbox('a"b\\c', "agents.test"), '"a\\"b\\\\c"@agents.test'),
        (Mailbox("evil@elsewhere.test", "agents.test"), '"evil@elsewhere.test"@agents.test'),
        (Mailbox("", "agents.test"), '""@agents.test'),
    ],
)
def test_mailbox_address_quotes_when_needed(mailbox: Mailbox, address: str) -> None:
    assert mailbox.address == address


# Pipelining and decisions


def test_pipelined_commands_wait_for_each_decision() -> None:
    session = ServerSession(HOST, SessionLimits())
    session.receive_data(EHLO + MAIL + RCPT + b"RCPT TO:<bob@agents.test>\r\nDATA\r\n")
    assert status(next_reply(session)) == "250"
    assert status(next_reply(session)) == "250 2.1.0"
    assert session.next_event() == RecipientRequested(Mailbox("alice", "agents.test"))
    assert session.next_event() is None
    assert session.next_event() is None
    session.accept_recipient()
    assert status(next_reply(session)) == "250 2.1.5"
    assert session.next_event() == RecipientRequested(Mailbox("bob", "agents.test"))
    session.reject_recipient(450, "4.2.1", "try later")
    assert next_reply(session) == b"450 4.2.1 try later\r\n"
    assert status(next_reply(session)) == "354"
    assert session.next_event() is None


def test_input_is_held_while_a_message_decision_is_pending() -> None:
    session = ServerSession(HOST, SessionLimits())
    session.receive_data(message(b"hi\r\n.\r\nNOOP\r\n"))
    assert isinstance(advance_to(session, MessageReceived), MessageReceived)
    session.receive_data(b"QUIT\r\n")
    assert session.next_event() is None
    assert session.state is SessionState.AWAITING_MESSAGE
    session.message_failed(451, "4.3.0", "Temporary storage failure, try again later")
    assert next_reply(session) == b"451 4.3.0 Temporary storage failure, try again later\r\n"
    assert status(next_reply(session)) == "250 2.0.0"
    assert status(next_reply(session)) == "221 2.0.0"
    assert session.next_event() == ConnectionClosed()


def test_message_accepted_reply_names_the_queue_id() -> None:
    dialogue = Dialogue()
    assert dialogue.send(message(b"hi\r\n.\r\n"))[-1] == b"250 2.0.0 Ok: queued as Q1\r\n"
    assert dialogue.session.state is R


def next_reply(session: ServerSession) -> bytes:
    event = session.next_event()
    assert isinstance(event, Reply), event
    return event.data


def advance_to(session: ServerSession, kind: type[Event]) -> Event:
    """Run the session, accepting every recipient, until it emits an event of `kind`."""
    while not isinstance(event := session.next_event(), kind):
        assert event is not None
        if isinstance(event, RecipientRequested):
            session.accept_recipient()
    return event


@pytest.mark.parametrize(
    "misuse",
    [
        lambda session: session.accept_recipient(),
        lambda session: session.reject_recipient(550, "5.1.1", "no"),
        lambda session: session.message_accepted("Q1"),
        lambda session: session.message_failed(451, "4.3.0", "later"),
    ],
)
def test_decisions_out_of_turn_are_shell_bugs(misuse: Callable[[ServerSession], None]) -> None:
    session = ServerSession(HOST, SessionLimits())
    with pytest.raises(LocalProtocolError):
        misuse(session)


@pytest.mark.parametrize(
    ("code", "enhanced", "text"),
    [
        (250, "2.0.0", "Ok"),
        (550, "4.1.1", "class mismatch"),
        (550, "5.1", "short"),
        (600, "5.1.1", "too high"),
        (550, "5.1.1", "line\r\n250 injected"),
    ],
)
def test_shell_refusals_are_checked(code: int, enhanced: str, text: str) -> None:
    session = ServerSession(HOST, SessionLimits())
    session.receive_data(EHLO + MAIL + RCPT)
    advance_to(session, RecipientRequested)
    with pytest.raises(LocalProtocolError):
        session.reject_recipient(code, enhanced, text)
    session.accept_recipient()


@pytest.mark.parametrize("queue_id", ["", "Q 1\r\n250 injected", "Q\u00e91"])
def test_queue_id_must_fit_in_a_reply(queue_id: str) -> None:
    session = ServerSession(HOST, SessionLimits())
    session.receive_data(message(b"hi\r\n.\r\n"))
    advance_to(session, MessageReceived)
    with pytest.raises(LocalProtocolError):
        session.message_accepted(queue_id)


@pytest.mark.parametrize("hostname", ["", "mx example", "mx\r\n", "m\u00fcx.example"])
def test_hostname_must_fit_in_a_reply(hostname: str) -> None:
    with pytest.raises(ValueError, match="SMTP hostname"):
        ServerSession(hostname, SessionLimits())


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_recipients"):
        SessionLimits(max_recipients=0)


# DATA content


@pytest.mark.parametrize(
    ("body", "data"),
    [
        (b".\r\n", b""),
        (b"hi\r\n.\r\n", b"hi\r\n"),
        (b"..\r\n.\r\n", b".\r\n"),
        (b"...\r\n.\r\n", b"..\r\n"),
        (b"..leading dot\r\n.\r\n", b".leading dot\r\n"),
        (b"a.b\r\n.a\r\n.\r\n", b"a.b\r\na\r\n"),
        (b"\r\n\r\n.\r\n", b"\r\n\r\n"),
        (b"trailing spaces  \r\n\tTab\r\n.\r\n", b"trailing spaces  \r\n\tTab\r\n"),
        (b"\x00\x80\xff 8-bit\r\n.\r\n", b"\x00\x80\xff 8-bit\r\n"),
        (b"no dot . \r\n. \r\n.\r\n", b"no dot . \r\n \r\n"),
        (b"QUIT\r\nMAIL FROM:<x@example.org>\r\n.\r\n", b"QUIT\r\nMAIL FROM:<x@example.org>\r\n"),
    ],
)
def test_data_is_unstuffed_and_byte_exact(body: bytes, data: bytes) -> None:
    dialogue = Dialogue()
    assert dialogue.statuses(message(body))[-2:] == ["354", "250 2.0.0"]
    assert dialogue.envelopes == [
        Envelope("client.example", "sender@example.org", [Mailbox("alice", "agents.test")], data)
    ]


def test_terminator_split_at_every_byte() -> None:
    stream = message(b"Subject: x\r\n\r\n..dot\r\nbody\r\n.\r\nQUIT\r\n")
    whole = Dialogue()
    expected = whole.send(stream)
    for split in range(len(stream) + 1):
        dialogue = Dialogue()
        replies = [reply for chunk in split_at(stream, [split]) for reply in dialogue.send(chunk)]
        assert replies == expected, split
        assert dialogue.envelopes == whole.envelopes, split


def test_data_fed_byte_by_byte() -> None:
    dialogue = Dialogue()
    replies = []
    for byte in message(b"a\r\n..b\r\n\r\n.\r\n"):
        replies += dialogue.send(bytes([byte]))
    assert [status(reply) for reply in replies][-2:] == ["354", "250 2.0.0"]
    assert dialogue.envelopes[0].data == b"a\r\n.b\r\n\r\n"


def test_two_messages_in_one_session() -> None:
    dialogue = Dialogue()
    dialogue.send(message(b"one\r\n.\r\n") + MAIL + RCPT + b"DATA\r\ntwo\r\n.\r\n")
    assert [envelope.data for envelope in dialogue.envelopes] == [b"one\r\n", b"two\r\n"]


def test_large_message_is_received_intact() -> None:
    body = b"".join(b"line %06d " % n + b"x" * 60 + b"\r\n" for n in range(20_000))
    dialogue = Dialogue()
    stream = message(body + b".\r\n")
    for start in range(0, len(stream), 65536):
        dialogue.send(stream[start : start + 65536])
    assert dialogue.envelopes[0].data == body


SMUGGLING = [b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r\n.\r", b"\r\n\n.\r\n"]


@pytest.mark.parametrize("ending", SMUGGLING, ids=repr)
@pytest.mark.parametrize("chunked", [False, True], ids=["whole", "bytewise"])
def test_smuggled_end_of_data_never_ends_the_message(ending: bytes, chunked: bool) -> None:
    smuggled = b"MAIL FROM:<evil@example.org>\r\nRCPT TO:<bob@agents.test>\r\nDATA\r\nforged\r\n"
    stream = message(b"Subject: real\r\n\r\nbody" + ending + smuggled + b".\r\nQUIT\r\n")
    dialogue = Dialogue()
    if chunked:
        replies = [reply for byte in stream for reply in dialogue.send(bytes([byte]))]
    else:
        replies = dialogue.send(stream)
    assert [status(reply) for reply in replies][-3:] == ["354", "550 5.6.11", "221 2.0.0"]
    assert dialogue.envelopes == []
    assert [mailbox.local for mailbox in dialogue.requested] == ["alice"]


@pytest.mark.parametrize(
    "body", [b"bare\nLF\r\n", b"bare\rCR\r\n", b"ends with CR\r\r\n", b"..\n\r\n", b"\n\r\n"]
)
def test_bare_line_endings_refuse_the_message(body: bytes) -> None:
    dialogue = Dialogue()
    assert dialogue.statuses(message(body + b".\r\n"))[-1] == "550 5.6.11"
    assert dialogue.envelopes == []
    assert dialogue.session.state is R
    assert dialogue.statuses(MAIL + RCPT + b"DATA\r\nclean\r\n.\r\n")[-1] == "250 2.0.0"


def test_message_size_limit() -> None:
    dialogue = Dialogue(max_message_bytes=20)
    assert dialogue.statuses(message(b"x" * 18 + b"\r\n.\r\n"))[-1] == "250 2.0.0"
    assert dialogue.statuses(MAIL + RCPT + b"DATA\r\n" + b"x" * 19 + b"\r\n.\r\n") == [
        "250 2.1.0",
        "250 2.1.5",
        "354",
        "552 5.3.4",
    ]
    assert [len(envelope.data) for envelope in dialogue.envelopes] == [20]


def test_oversized_message_is_discarded_as_it_arrives() -> None:
    dialogue = Dialogue(max_message_bytes=1000)
    dialogue.send(message(b""))
    for _ in range(100):
        assert dialogue.send(b"y" * 500 + b"\r\n") == []
        assert len(dialogue.session._buffer) < 2
    assert dialogue.statuses(b".\r\nNOOP\r\n") == ["552 5.3.4", "250 2.0.0"]


def test_dot_stuffing_does_not_count_towards_limits() -> None:
    dialogue = Dialogue(max_line_length=6, max_message_bytes=6)
    assert dialogue.statuses(message(b"..abc\r\n.\r\n"))[-1] == "250 2.0.0"
    assert dialogue.envelopes[0].data == b".abc\r\n"


def test_line_length_limit() -> None:
    dialogue = Dialogue(max_line_length=10)
    assert dialogue.statuses(message(b"12345678\r\n.\r\n"))[-1] == "250 2.0.0"
    assert dialogue.statuses(MAIL + RCPT + b"DATA\r\n123456789\r\nok\r\n.\r\n")[-1] == "500 5.5.2"
    assert len(dialogue.envelopes) == 1


def test_bare_line_endings_then_size_then_line_length_decide_the_reply() -> None:
    dialogue = Dialogue(max_line_length=10, max_message_bytes=30)
    long_line, bare, big = b"x" * 20 + b"\r\n", b"bare\n\r\n", b"y\r\n" * 10
    transaction = MAIL + RCPT + b"DATA\r\n"
    dialogue.send(EHLO)
    assert dialogue.statuses(transaction + long_line + bare + b".\r\n")[-1] == "550 5.6.11"
    assert dialogue.statuses(transaction + long_line + big + b".\r\n")[-1] == "552 5.3.4"
    assert dialogue.statuses(transaction + long_line + b".\r\n")[-1] == "500 5.5.2"
    assert dialogue.envelopes == []


FOLDED = b"Subject: folded\r\n" + b"\tx\r\n" * 5 + b"\r\nbody\r\n"
HEADER_REFUSALS = [
    ({"max_header_continuation_lines": 4}, "554 5.6.0", b"Header field folded over too many lines"),
    (
        {"max_header_fields": 0 + 1, "max_header_bytes": 10_000},
        "552 5.3.4",
        b"Too many header fields",
    ),
    (
        {"max_header_bytes": len(FOLDED) - 9},
        "552 5.3.4",
        b"Header section exceeds fixed maximum size",
    ),
]


def two_fields(content: bytes) -> bytes:
    return b"From: a@b.test\r\n" + content


@pytest.mark.parametrize(("limits", "expected", "text"), HEADER_REFUSALS)
def test_a_header_over_a_limit_is_read_to_the_end_and_refused(
    limits: dict[str, int], expected: str, text: bytes
) -> None:
    dialogue = Dialogue(**limits)
    content = two_fields(FOLDED)
    replies = dialogue.send(message(content + b".\r\nNOOP\r\n"))
    assert [status(reply) for reply in replies[-2:]] == [expected, "250 2.0.0"]
    assert text in replies[-2]
    assert dialogue.envelopes == []
    assert dialogue.statuses(MAIL + RCPT + b"DATA\r\nSubject: ok\r\n\r\n.\r\n")[-1] == ("250 2.0.0")


@pytest.mark.parametrize(("limits", "expected", "text"), HEADER_REFUSALS)
def test_chunked_content_meets_the_same_header_limits(
    limits: dict[str, int], expected: str, text: bytes
) -> None:
    dialogue = in_state(T, **limits)
    content = two_fields(FOLDED)
    middle = len(content) // 2
    assert dialogue.statuses(b"BDAT %d\r\n" % middle + content[:middle]) == ["250 2.0.0"]
    rest = content[middle:]
    assert dialogue.statuses(b"BDAT %d LAST\r\n" % len(rest) + rest) == [expected]
    assert dialogue.envelopes == []


def test_a_header_within_the_limits_is_accepted() -> None:
    dialogue = Dialogue(
        max_header_fields=2, max_header_continuation_lines=5, max_header_bytes=len(FOLDED) + 16
    )
    assert dialogue.statuses(message(two_fields(FOLDED) + b".\r\n"))[-1] == "250 2.0.0"
    assert dialogue.envelopes[0].data == two_fields(FOLDED)


def test_line_rules_decide_before_the_header_limits() -> None:
    dialogue = Dialogue(max_line_length=20, max_header_continuation_lines=1)
    dialogue.send(EHLO)
    transaction = MAIL + RCPT + b"DATA\r\n"
    assert dialogue.statuses(transaction + FOLDED + b"x" * 30 + b"\r\n.\r\n")[-1] == "500 5.5.2"
    assert dialogue.statuses(transaction + FOLDED + b".\r\n")[-1] == "554 5.6.0"


def test_a_header_flood_is_not_kept_while_it_is_read() -> None:
    memory = MessageMemory(2**40)
    dialogue = Dialogue(memory=memory)
    dialogue.send(message(b"X-Flood: start\r\n"))
    for _ in range(200):
        assert dialogue.send(b"\ta\r\n" * 4096) == []
    assert memory.held == 0
    assert dialogue.statuses(b"\r\nbody\r\n.\r\n") == ["554 5.6.0"]


# The memory for messages being received, shared by sessions


def events_until_idle(session: ServerSession, data: bytes | None = None) -> list[Event]:
    """Feed `data` (b"": the client closed); every event up to the next one needing the
    shell, or none left."""
    if data is not None:
        session.receive_data(data)
    events = []
    while (event := session.next_event()) is not None:
        events.append(event)
        if isinstance(event, RecipientRequested):
            session.accept_recipient()
        elif isinstance(event, MessageReceived | ConnectionClosed):
            break
    return events


def statuses_of(events: list[Event]) -> list[str]:
    return [status(event.data) for event in events if isinstance(event, Reply)]


FILLER = b"".join(b"line %05d of a message that fills memory\r\n" % n for n in range(2000))
"""2000 well-formed message lines, 86,000 octets."""
QUARTER = FILLER[: len(FILLER) // 4]
"""500 of them."""


def test_a_message_holds_what_its_buffer_takes_until_it_is_answered() -> None:
    memory = MessageMemory(10**6)
    session = ServerSession(HOST, SessionLimits(), memory=memory)
    events_until_idle(session, message(b""))
    for start in range(0, len(FILLER), 5000):
        end = min(start + 5000, len(FILLER))
        events_until_idle(session, FILLER[start:end])
        assert end - 2 <= memory.held <= memory_for_message(end)  # a CR may wait for its LF
    [received] = events_until_idle(session, b".\r\n")
    assert isinstance(received, MessageReceived)
    assert memory.held == len(FILLER)  # handed over: held until answered
    session.message_accepted("Q1")
    assert memory.held == 0


def test_a_message_that_outgrows_the_memory_left_is_refused_452_and_the_session_goes_on() -> None:
    memory = MessageMemory(50_000)
    dialogue = Dialogue(memory=memory)
    dialogue.send(message(b""))
    events = events_until_idle(dialogue.session, FILLER + b".\r\n")
    [refusal] = events
    assert isinstance(refusal, MessageRefusal) and refusal.out_of_memory
    assert refusal.data == b"452 4.3.1 Insufficient system storage, try again later\r\n"
    assert refusal.recipients == (Mailbox("alice", "agents.test"),)
    assert memory.held == 0
    assert dialogue.statuses(MAIL + RCPT + b"DATA\r\n" + QUARTER + b".\r\n") == [
        "250 2.1.0",
        "250 2.1.5",
        "354",
        "250 2.0.0",
    ]
    assert dialogue.envelopes[0].data == QUARTER


def test_a_message_refused_for_what_it_holds_is_told_so_rather_than_to_retry() -> None:
    dialogue = Dialogue(memory=MessageMemory(10_000))
    assert dialogue.statuses(message(FILLER + b"bare\nline\r\n.\r\n"))[-1] == "550 5.6.11"


def test_data_is_refused_452_when_the_declared_size_does_not_fit() -> None:
    memory = MessageMemory(50_000)
    dialogue = Dialogue(memory=memory)
    dialogue.send(EHLO)
    sized = b"MAIL FROM:<sender@example.org> SIZE=60000\r\n"
    assert dialogue.statuses(sized + RCPT + b"DATA\r\n") == ["250 2.1.0", "250 2.1.5", "452 4.3.1"]
    assert dialogue.session.state is R  # the transaction is over; no content follows
    assert dialogue.statuses(MAIL + RCPT + b"DATA\r\nsmall\r\n.\r\n")[-1] == "250 2.0.0"
    assert memory.held == 0


def test_sessions_sharing_the_memory_wait_for_each_other() -> None:
    memory = MessageMemory(120_000)
    first = Dialogue(memory=memory)
    second = Dialogue(memory=memory)
    first.send(message(FILLER))
    assert second.statuses(message(FILLER + b".\r\n"))[-1] == "452 4.3.1"
    assert first.statuses(b".\r\n") == ["250 2.0.0"]
    assert second.statuses(MAIL + RCPT + b"DATA\r\n" + FILLER + b".\r\n")[-1] == "250 2.0.0"
    assert first.envelopes[0].data == second.envelopes[0].data == FILLER
    assert memory.held == 0


def test_a_bdat_chunk_that_does_not_fit_is_refused_452_after_its_octets() -> None:
    memory = MessageMemory(50_000)
    dialogue = Dialogue(memory=memory)
    chunk = QUARTER + QUARTER
    bdat = b"BDAT %d" % len(chunk)
    replies = dialogue.statuses(
        EHLO + MAIL + RCPT + bdat + b"\r\n" + chunk + bdat + b" LAST\r\n" + chunk
    )
    assert replies[-2:] == ["250 2.0.0", "452 4.3.1"]
    assert memory.held == 0
    assert dialogue.session.state is R
    assert dialogue.statuses(b"NOOP\r\n") == ["250 2.0.0"]
    replies = dialogue.statuses(MAIL + RCPT + bdat + b" LAST\r\n" + chunk)
    assert replies[-1] == "250 2.0.0"
    assert dialogue.envelopes[0].data == chunk


def in_data(memory: MessageMemory) -> ServerSession:
    session = ServerSession(HOST, SessionLimits(), memory=memory)
    events_until_idle(session, message(FILLER))
    assert memory.held >= len(FILLER)
    return session


def awaiting_answer(memory: MessageMemory) -> ServerSession:
    session = ServerSession(HOST, SessionLimits(), memory=memory)
    assert isinstance(events_until_idle(session, message(FILLER + b".\r\n"))[-1], MessageReceived)
    return session


def between_chunks(memory: MessageMemory) -> ServerSession:
    session = ServerSession(HOST, SessionLimits(), memory=memory)
    events_until_idle(session, EHLO + MAIL + RCPT + b"BDAT %d\r\n" % len(FILLER) + FILLER)
    assert session.state is T
    return session


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (in_data, lambda session: session.close()),
        (in_data, lambda session: session.time_out(Timeout.MESSAGE)),
        (in_data, lambda session: events_until_idle(session, b"")),  # the client closed
        (in_data, lambda session: session.shut_down(immediately=True)),
        (awaiting_answer, lambda session: session.message_failed(451, "4.3.0", "Try later")),
        (awaiting_answer, lambda session: session.close()),
        (awaiting_answer, lambda session: session.shut_down(immediately=True)),
        (between_chunks, lambda session: events_until_idle(session, b"RSET\r\n")),
        (between_chunks, lambda session: events_until_idle(session, EHLO)),
        (between_chunks, lambda session: session.close()),
    ],
)
def test_every_end_of_a_message_gives_its_memory_back(
    start: Callable[[MessageMemory], ServerSession], end: Callable[[ServerSession], object]
) -> None:
    memory = MessageMemory(10**6)
    session = start(memory)
    end(session)
    assert memory.held == 0
    session.close()
    assert memory.held == 0


# Command lines


@pytest.mark.parametrize(
    "line",
    [
        b"NOOP\n",
        b"NO\rOP\r\n",
        b"NOOP\r\r\n",
        b"NOOP \xff\xfe\r\n",
        b"\xc3\r\n",
        b"NOOP\x00\r\n",
        b"NOOP\tx\r\n",
        "NO\u0085OP\r\n".encode(),
        "R\u017fET\r\n".encode(),
        b"\r\n",
        b" NOOP\r\n",
    ],
    ids=repr,
)
def test_malformed_command_line_is_refused_and_not_executed(line: bytes) -> None:
    dialogue = in_state(T)
    assert dialogue.statuses(line) == ["500 5.5.2"]
    assert dialogue.session.state is T


def test_command_length_limit() -> None:
    dialogue = in_state(R)
    longest = b"NOOP " + b"x" * (512 - 7) + b"\r\n"
    assert len(longest) == 512
    assert dialogue.statuses(longest) == ["250 2.0.0"]
    assert dialogue.statuses(b"NOOP " + b"x" * (512 - 6) + b"\r\n") == ["500 5.5.2"]
    assert dialogue.statuses(b"NOOP\r\n") == ["250 2.0.0"]


def test_endless_command_line_is_discarded_as_it_arrives() -> None:
    dialogue = in_state(R)
    for _ in range(100):
        assert dialogue.send(b"x" * 1000) == []
        assert len(dialogue.session._buffer) == 0
    assert dialogue.statuses(b"yyy\r\nNOOP\r\n") == ["500 5.5.2", "250 2.0.0"]


def test_too_many_errors_close_the_session() -> None:
    dialogue = Dialogue(max_errors=3)
    replies = dialogue.send(b"FOO\r\nMAIL FROM:<a@b.test>\r\nBAR\r\nNOOP\r\n")
    assert [status(reply) for reply in replies] == [
        "500 5.5.2",
        "503 5.5.1",
        "500 5.5.2",
        "421 4.7.0",
    ]
    assert replies[-1] == b"421 4.7.0 mx.agents.test Too many errors, closing connection\r\n"
    assert dialogue.closed
    assert dialogue.session.state is CLOSED


def unknown_recipients(count: int) -> bytes:
    return b"".join(b"RCPT TO:<unknown%d@agents.test>\r\n" % number for number in range(count))


def test_refused_recipients_and_messages_count_as_errors() -> None:
    """Every error reply counts, a refused recipient and a refused message too."""
    dialogue = in_state(M, max_errors=4, max_message_bytes=10)
    assert dialogue.statuses(unknown_recipients(2)) == ["550 5.1.1", "550 5.1.1"]
    assert dialogue.statuses(RCPT + b"DATA\r\n" + b"x" * 20 + b"\r\n.\r\n") == [
        "250 2.1.5",
        "354",
        "552 5.3.4",
    ]
    assert dialogue.statuses(b"FOO\r\n") == ["500 5.5.2", "421 4.7.0"]
    assert dialogue.closed


def test_a_harvester_is_slowed_then_cut_off_and_its_other_recipients_are_never_looked_up() -> None:
    dialogue = in_state(M)  # 10 errors answered at once, 10 after a pause each, then 421
    statuses = dialogue.statuses(unknown_recipients(5000))
    assert statuses == ["550 5.1.1"] * 10 + ["pause", "550 5.1.1"] * 10 + ["421 4.7.0"]
    assert dialogue.closed
    assert len(dialogue.requested) == 20


def test_an_accepted_message_starts_the_count_over() -> None:
    dialogue = in_state(M, max_errors=3, errors_before_delay=1, max_junk_commands=2)
    delivery = unknown_recipients(2) + RCPT + b"NOOP\r\nNOOP\r\nDATA\r\nhi\r\n.\r\n"
    assert dialogue.statuses(delivery) == [
        *["550 5.1.1", "pause", "550 5.1.1"],
        *["250 2.1.5", "250 2.0.0", "250 2.0.0", "354", "250 2.0.0"],
    ]
    assert dialogue.statuses(MAIL + delivery) == [
        *["250 2.1.0", "550 5.1.1", "pause", "550 5.1.1"],
        *["250 2.1.5", "250 2.0.0", "250 2.0.0", "354", "250 2.0.0"],
    ]
    assert dialogue.statuses(MAIL + unknown_recipients(3)) == [
        *["250 2.1.0", "550 5.1.1", "pause", "550 5.1.1", "pause", "550 5.1.1", "421 4.7.0"]
    ]


def test_recipients_past_max_recipients_do_not_count_as_errors() -> None:
    """`452 4.5.3` is what a client pipelining a long list must expect, not its error."""
    dialogue = in_state(M, max_recipients=1, max_errors=2)
    assert dialogue.statuses(RCPT * 5 + b"DATA\r\nhi\r\n.\r\n") == [
        *["250 2.1.5", "452 4.5.3", "452 4.5.3", "452 4.5.3", "452 4.5.3", "354", "250 2.0.0"]
    ]
    assert not dialogue.closed


def test_no_pause_without_an_error_delay() -> None:
    dialogue = in_state(M, error_delay=0, errors_before_delay=0, max_errors=3)
    assert dialogue.statuses(unknown_recipients(3)) == ["550 5.1.1"] * 3 + ["421 4.7.0"]


@pytest.mark.parametrize("junk", [b"NOOP", b"RSET", b"VRFY alice", b"HELP", b"EXPN staff"])
def test_too_many_junk_commands_close_the_session(junk: bytes) -> None:
    dialogue = in_state(R, max_junk_commands=3, max_errors=1000)
    replies = dialogue.send((junk + b"\r\n") * 4 + b"NOOP\r\n")
    assert len(replies) == 4
    assert replies[-1] == (
        b"421 4.7.0 mx.agents.test Too many commands without mail, closing connection\r\n"
    )
    assert dialogue.closed


def test_junk_commands_count_from_the_last_accepted_message() -> None:
    dialogue = in_state(R, max_junk_commands=2)
    for _ in range(3):
        assert dialogue.statuses(b"NOOP\r\nRSET\r\n" + MAIL + RCPT + b"DATA\r\nhi\r\n.\r\n") == [
            *["250 2.0.0", "250 2.0.0", "250 2.1.0", "250 2.1.5", "354", "250 2.0.0"]
        ]
    assert dialogue.statuses(b"NOOP\r\nNOOP\r\nNOOP\r\n") == ["250 2.0.0"] * 2 + ["421 4.7.0"]


def test_session_limits_name_a_bad_value() -> None:
    with pytest.raises(ValueError, match=r"SessionLimits\.error_delay must be at least 0"):
        SessionLimits(error_delay=-1)
    with pytest.raises(ValueError, match=r"SessionLimits\.max_junk_commands must be at least 1"):
        SessionLimits(max_junk_commands=0)


# End of the connection


def test_client_closing_ends_the_session() -> None:
    dialogue = in_state(R)
    assert dialogue.send(b"") == []
    assert dialogue.closed


def test_client_closing_mid_message_loses_nothing_it_was_told_was_stored() -> None:
    dialogue = Dialogue()
    dialogue.send(message(b"half a message\r\n"))
    assert dialogue.send(b"") == []
    assert dialogue.closed
    assert dialogue.envelopes == []


def test_client_closing_after_pipelined_commands_runs_them_first() -> None:
    dialogue = Dialogue()
    dialogue.session.receive_data(message(b"hi\r\n.\r\n") + b"NOOP\r\nincomplete")
    dialogue.session.receive_data(b"")
    assert [status(reply) for reply in dialogue.drain()][-2:] == ["250 2.0.0", "250 2.0.0"]
    assert len(dialogue.envelopes) == 1
    assert dialogue.closed


def test_time_out() -> None:
    dialogue = in_state(M)
    dialogue.session.time_out()
    assert dialogue.drain() == [b"421 4.4.2 mx.agents.test Idle timeout, closing connection\r\n"]
    assert dialogue.closed


@pytest.mark.parametrize(
    ("timeout", "text"),
    [
        (Timeout.COMMAND, b"Command not received in time"),
        (Timeout.MESSAGE, b"Message not received in time"),
    ],
)
def test_time_out_says_which_deadline_passed(timeout: Timeout, text: bytes) -> None:
    dialogue = Dialogue()
    dialogue.send(message(b"half a message\r\n"))
    dialogue.session.time_out(timeout)
    assert dialogue.drain() == [b"421 4.4.2 mx.agents.test " + text + b", closing connection\r\n"]
    assert dialogue.closed and dialogue.envelopes == []


# What the session is reading, for the shell's deadlines


def test_each_command_line_is_awaited_afresh() -> None:
    dialogue = Dialogue()
    first = dialogue.session.awaiting
    assert first[0] is Awaiting.COMMAND
    dialogue.send(b"EHLO client.exa")
    assert dialogue.session.awaiting == first  # the same line, still arriving
    dialogue.send(b"mple\r\n")
    second = dialogue.session.awaiting
    assert second[0] is Awaiting.COMMAND and second != first
    dialogue.send(b"FOO\r\n" + b"x" * 600)  # a refused command and an endless line
    third = dialogue.session.awaiting
    assert third[0] is Awaiting.COMMAND and third != second
    dialogue.send(b"x" * 600)
    assert dialogue.session.awaiting == third


def test_a_message_is_awaited_as_a_whole_from_data_to_its_terminator() -> None:
    dialogue = in_state(T)
    dialogue.send(b"DATA\r\n")
    reading = dialogue.session.awaiting
    assert reading[0] is Awaiting.MESSAGE
    dialogue.send(b"Subject: x\r\n\r\nline\r\n")
    assert dialogue.session.awaiting == reading
    dialogue.send(b".\r\n")
    assert dialogue.session.awaiting[0] is Awaiting.COMMAND
    dialogue.send(MAIL + RCPT + b"DATA\r\n")
    assert dialogue.session.awaiting[0] is Awaiting.MESSAGE
    assert dialogue.session.awaiting != reading


def test_bdat_chunks_and_the_commands_between_them_are_one_message() -> None:
    dialogue = in_state(T)
    dialogue.send(b"BDAT 10\r\nHello")
    reading = dialogue.session.awaiting
    assert reading[0] is Awaiting.MESSAGE
    dialogue.send(b" worl")
    assert dialogue.session.awaiting == reading  # between chunks
    dialogue.send(b"BDAT 3 LA")
    assert dialogue.session.awaiting == reading  # the next BDAT command, still arriving
    dialogue.send(b"ST\r\nd\r\n")
    assert dialogue.session.awaiting[0] is Awaiting.COMMAND
    assert [envelope.data for envelope in dialogue.envelopes] == [b"Hello world\r\n"]


def test_a_refused_chunk_is_read_as_part_of_its_command() -> None:
    dialogue = in_state(M)
    dialogue.send(b"BDAT 100\r\nsome")
    assert dialogue.session.awaiting[0] is Awaiting.COMMAND


# CHUNKING (RFC 3030): BDAT


def test_a_message_in_chunks_is_assembled_and_each_chunk_answered() -> None:
    dialogue = in_state(T)
    assert dialogue.statuses(b"BDAT 5\r\nHello") == ["250 2.0.0"]
    assert dialogue.send(b"BDAT 8 LAST\r\n world\r\n") == [b"250 2.0.0 Ok: queued as Q1\r\n"]
    (envelope,) = dialogue.envelopes
    assert envelope.data == b"Hello world\r\n"
    assert envelope.recipients == [Mailbox("alice", "agents.test")]
    assert dialogue.session.state is R


def test_chunk_replies_count_the_octets_so_far() -> None:
    dialogue = in_state(T)
    assert dialogue.send(b"BDAT 3\r\nabcBDAT 4\r\ndefg") == [
        b"250 2.0.0 3 octets received\r\n",
        b"250 2.0.0 7 octets received\r\n",
    ]


@given(st.lists(st.integers(0, 120), max_size=6))
def test_chunks_read_the_same_however_the_input_is_split(points: list[int]) -> None:
    stream = EHLO + MAIL + RCPT + b"BDAT 10\r\nline one\r\nBDAT 10 LAST\r\nline two\r\n"
    dialogue = Dialogue()
    for piece in split_at(stream, points):
        dialogue.send(piece)
    assert [envelope.data for envelope in dialogue.envelopes] == [b"line one\r\nline two\r\n"]


def test_chunk_octets_are_data_never_commands_and_never_end_the_message() -> None:
    """What would end DATA (CRLF.CRLF) or smuggle a second message is just content here."""
    inner = b"x\r\n.\r\nMAIL FROM:<evil@example.org>\r\nRCPT TO:<bob@agents.test>\r\nDATA\r\n"
    dialogue = in_state(T)
    replies = dialogue.statuses(b"BDAT %d LAST\r\n" % len(inner) + inner)
    assert replies == ["250 2.0.0"]
    assert [envelope.data for envelope in dialogue.envelopes] == [inner]
    assert dialogue.requested == [Mailbox("alice", "agents.test")]


def test_a_refused_chunk_is_still_read_so_its_octets_are_not_taken_for_commands() -> None:
    dialogue = in_state(R)
    assert dialogue.statuses(b"BDAT 6\r\nNOOP\r\nRSET\r\n") == ["503 5.5.1", "250 2.0.0"]
    dialogue = in_state(M)
    assert dialogue.statuses(b"BDAT 12 LAST\r\nQUIT\r\nQUIT\r\n") == ["554 5.5.1"]
    assert dialogue.session.state is M and not dialogue.closed


def test_bdat_needs_ehlo() -> None:
    dialogue = Dialogue()
    dialogue.send(b"HELO client.example\r\n" + MAIL + RCPT)
    assert dialogue.statuses(b"BDAT 2 LAST\r\nhi") == ["503 5.5.1"]
    assert dialogue.envelopes == []


def test_a_chunk_beyond_the_size_limit_ends_the_transaction() -> None:
    dialogue = in_state(T, max_message_bytes=10)
    assert dialogue.statuses(b"BDAT 6\r\n123456") == ["250 2.0.0"]
    assert dialogue.statuses(b"BDAT 6\r\n789012") == ["552 5.3.4"]
    assert dialogue.session.state is R
    assert dialogue.statuses(b"BDAT 1 LAST\r\nx") == ["503 5.5.1"]
    assert dialogue.envelopes == []


def test_chunks_pipelined_after_a_refused_chunk_are_dropped_without_counting_as_errors() -> None:
    """RFC 3030 section 2: a client may pipeline its chunks, and after a refused one the server
    must take and discard those already sent. Their 503s are what the client must expect, so
    they neither slow it down nor cut it off as errors would: they count as junk commands."""
    dialogue = in_state(T, max_message_bytes=10, errors_before_delay=1, max_errors=3)
    chunks = b"BDAT 6\r\n123456" * 6 + b"BDAT 0 LAST\r\n"
    replies = dialogue.statuses(chunks + b"NOOP\r\n")
    assert replies == ["250 2.0.0", "552 5.3.4", *["503 5.5.1"] * 5, "250 2.0.0"]
    assert not dialogue.closed
    assert dialogue.statuses(MAIL + RCPT + b"BDAT 2 LAST\r\nhi") == [
        *["250 2.1.0", "250 2.1.5", "250 2.0.0"]
    ]
    assert [envelope.data for envelope in dialogue.envelopes] == [b"hi"]


def test_chunks_pipelined_after_all_recipients_were_refused_count_as_one_error() -> None:
    dialogue = in_state(M, errors_before_delay=2, max_errors=3)
    unknown = b"RCPT TO:<unknown@agents.test>\r\n"
    replies = dialogue.statuses(unknown + b"BDAT 1\r\nx" * 4 + b"BDAT 1 LAST\r\nx")
    assert replies == ["550 5.1.1", "554 5.5.1", *["554 5.5.1"] * 4]
    assert not dialogue.closed


def test_endless_chunks_after_a_refused_one_meet_the_junk_limit() -> None:
    dialogue = in_state(R, max_junk_commands=3)
    replies = dialogue.statuses(b"BDAT 0\r\n" * 5)
    assert replies == ["503 5.5.1"] * 4 + ["421 4.7.0"]
    assert dialogue.closed


def test_a_command_between_refused_chunks_ends_their_allowance() -> None:
    dialogue = in_state(R, errors_before_delay=100, max_errors=3)
    replies = dialogue.statuses(b"BDAT 0\r\nBDAT 0\r\nNOOP\r\nBDAT 0\r\nXYZ\r\n")
    assert replies == ["503 5.5.1", "503 5.5.1", "250 2.0.0", "503 5.5.1", "500 5.5.2", "421 4.7.0"]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"bare\nline feed\r\n", "550 5.6.11"),
        (b"bare\rcarriage return\r\n", "550 5.6.11"),
        (b"x" * 1001 + b"\r\n", "500 5.5.2"),
        (b"no line ending at the end", "250 2.0.0"),
        (b"", "250 2.0.0"),
    ],
)
def test_chunked_content_is_held_to_the_rules_of_data(content: bytes, expected: str) -> None:
    dialogue = in_state(T)
    assert dialogue.statuses(b"BDAT %d LAST\r\n" % len(content) + content) == [expected]
    assert len(dialogue.envelopes) == (1 if expected == "250 2.0.0" else 0)


def test_data_cannot_follow_bdat_in_one_transaction() -> None:
    dialogue = in_state(T)
    assert dialogue.statuses(b"BDAT 2\r\nhiDATA\r\n") == ["250 2.0.0", "503 5.5.1"]
    assert dialogue.statuses(b"BDAT 1 LAST\r\n!") == ["250 2.0.0"]
    assert [envelope.data for envelope in dialogue.envelopes] == [b"hi!"]


def test_recipients_cannot_be_added_between_bdat_chunks() -> None:
    """RFC 3030: the recipients are settled before the first chunk; a RCPT between chunks
    is out of sequence and the message goes to those accepted before it."""
    dialogue = in_state(T)
    late = b"RCPT TO:<bob@agents.test>\r\n"
    assert dialogue.statuses(b"BDAT 2\r\nhi" + late) == ["250 2.0.0", "503 5.5.1"]
    assert dialogue.statuses(b"BDAT 1 LAST\r\n!") == ["250 2.0.0"]
    (envelope,) = dialogue.envelopes
    assert envelope.recipients == [Mailbox("alice", "agents.test")]
    assert envelope.data == b"hi!"


def test_a_chunk_in_progress_is_in_flight_and_finishes_before_shutdown() -> None:
    dialogue = in_state(T)
    assert dialogue.send(b"BDAT 11 LAST\r\nhalf ") == []
    assert dialogue.session.in_flight
    dialogue.session.shut_down()
    assert dialogue.statuses(b"done\r\n") == ["250 2.0.0", "421 4.3.2"]
    assert [envelope.data for envelope in dialogue.envelopes] == [b"half done\r\n"]


def test_the_client_leaving_mid_chunk_stores_nothing() -> None:
    dialogue = in_state(T)
    dialogue.send(b"BDAT 10 LAST\r\nhalf ")
    dialogue.session.receive_data(b"")
    assert dialogue.drain() == []
    assert dialogue.closed and dialogue.envelopes == []


# Nothing a client sends can break the session

ATOMS = [
    EHLO,
    b"HELO client.example\r\n",
    MAIL,
    b"MAIL FROM:<>\r\n",
    b"MAIL FROM:<a@example.org> SIZE=99999999999 BODY=8BITMIME SMTPUTF8\r\n",
    RCPT,
    b"RCPT TO:<unknown@agents.test>\r\n",
    b"RCPT TO:<x@[192.0.2.1]>\r\n",
    b'RCPT TO:<@a.test:"q\\"x"@agents.test>\r\n',
    b"DATA\r\n",
    b"BDAT 5\r\nHello",
    b"BDAT 12 LAST\r\n world\r\n",
    b"BDAT 3 LAST\r\n",
    "BDAT \u0663 LAST\r\n".encode(),
    b"RSET\r\n",
    b"NOOP\r\n",
    b"QUIT\r\n",
    b"VRFY x\r\n",
    b"HELP\r\n",
    b"STARTTLS\r\n",
    b".\r\n",
    b"..x\r\n",
    b"line of text\r\n",
    b"\r\n.\r\n",
    *SMUGGLING,
    b"\r\n",
    b"\n",
    b"\r",
    b".",
    b"\xff\xfe\xc3",
    b"x" * 70,
]


@st.composite
def mutated(draw: st.DrawFn, pieces: st.SearchStrategy[bytes]) -> bytes:
    """A piece with one byte inserted, replaced or deleted."""
    piece = bytearray(draw(pieces))
    position = draw(st.integers(0, len(piece)))
    byte = draw(st.integers(0, 255))
    match draw(st.sampled_from(["insert", "replace", "delete"])):
        case "insert":
            piece.insert(position, byte)
        case "replace" if position < len(piece):
            piece[position] = byte
        case "delete" if position < len(piece):
            del piece[position]
    return bytes(piece)


PIECES = st.one_of(st.sampled_from(ATOMS), st.binary(max_size=30))
TRANSACTIONS = st.lists(PIECES, max_size=8).map(
    lambda body: EHLO + MAIL + RCPT + b"DATA\r\n" + b"".join(body) + b".\r\n"
)
STREAMS = st.lists(
    st.one_of(PIECES, TRANSACTIONS, mutated(PIECES), mutated(TRANSACTIONS)), max_size=20
).map(b"".join)
LIMITS = st.builds(
    SessionLimits,
    max_message_bytes=st.integers(1, 200),
    max_recipients=st.integers(1, 3),
    max_line_length=st.integers(1, 40),
    max_command_length=st.integers(1, 80),
    max_errors=st.integers(1, 12),
    max_header_fields=st.integers(1, 4),
    max_header_bytes=st.integers(1, 100),
    max_header_continuation_lines=st.integers(1, 3),
)
REPLY = re.compile(rb"(?:([2-5]\d\d)-[^\r\n]*\r\n)*([2-5]\d\d) [^\r\n]*\r\n")


def check_reply(data: bytes) -> None:
    match = REPLY.fullmatch(data)
    assert match is not None, data
    codes = set(re.findall(rb"^(\d{3})[ -]", data, re.MULTILINE))
    assert len(codes) == 1, data


def check_message(envelope: Envelope, limits: SessionLimits) -> None:
    data = envelope.data
    assert len(data) <= limits.max_message_bytes
    assert 1 <= len(envelope.recipients) <= limits.max_recipients
    lines = data.split(b"\r\n") if data else []  # BDAT 0 LAST alone carries no line
    if data.endswith(b"\r\n"):  # DATA content always does; BDAT content need not
        lines.pop()
    assert not any(b"\r" in line or b"\n" in line for line in lines)
    assert all(len(line) + 2 <= limits.max_line_length for line in lines)
    headers = HeaderSectionCheck(
        max_fields=limits.max_header_fields,
        max_bytes=limits.max_header_bytes,
        max_continuation_lines=limits.max_header_continuation_lines,
    )
    headers.feed(data)
    assert headers.problem is None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=STREAMS, limits=LIMITS, choices=st.data())
def test_any_input_gives_well_formed_replies(
    stream: bytes, limits: SessionLimits, choices: st.DataObject
) -> None:
    session = ServerSession(HOST, limits, tls_available=choices.draw(st.booleans()))
    split_points = choices.draw(st.lists(st.integers(0, len(stream)), max_size=8))
    chunks = split_at(stream, split_points)
    shutdown_at = choices.draw(st.one_of(st.none(), st.integers(0, len(chunks))))
    closed = False
    for index, chunk in enumerate([*chunks, b""]):
        if index == shutdown_at:
            session.shut_down(immediately=choices.draw(st.booleans()))
        session.receive_data(chunk)
        while (event := session.next_event()) is not None:
            if closed:
                assert event == ConnectionClosed()
                break
            closed = answer(session, event, limits, choices)
    assert closed


def answer(
    session: ServerSession, event: Event, limits: SessionLimits, choices: st.DataObject
) -> bool:
    """Check one event and answer it at random; True once the session closed."""
    match event:
        case Reply(data=data):
            check_reply(data)
        case RecipientRequested():
            if choices.draw(st.booleans()):
                session.accept_recipient()
            else:
                session.reject_recipient(550, "5.1.1", "no such agent here")
        case MessageReceived(envelope=envelope):
            check_message(envelope, limits)
            if choices.draw(st.booleans()):
                session.message_accepted("Q1")
            else:
                session.message_failed(451, "4.3.0", "Temporary storage failure")
        case TlsRequested():
            assert session.state is SessionState.STARTING_TLS
            session.tls_started()
        case ConnectionClosed():
            assert session.state is CLOSED
            return True
    return False


@settings(max_examples=200, deadline=None)
@given(stream=STREAMS, split_points=st.lists(st.integers(0, 2000), max_size=10))
def test_chunking_never_changes_the_outcome(stream: bytes, split_points: list[int]) -> None:
    limits = {
        "max_line_length": 30,
        "max_message_bytes": 150,
        "max_errors": 50,
        "max_header_fields": 3,
        "max_header_bytes": 60,
        "max_header_continuation_lines": 2,
    }
    whole = Dialogue(**limits)
    expected = whole.send(stream)
    chunked = Dialogue(**limits)
    replies = [reply for chunk in split_at(stream, split_points) for reply in chunked.send(chunk)]
    assert replies == expected
    assert chunked.envelopes == whole.envelopes


LINES = st.lists(
    st.one_of(
        st.sampled_from(
            [b".", b"..", b".x", b"", b"x" * 40, b"\r", b"\n", b"a\rb", b"a\nb", b"A: b", b"\tc"]
        ),
        st.binary(max_size=50),
    ),
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(lines=LINES, split_points=st.lists(st.integers(0, 3000), max_size=6))
def test_whole_lines_taken_at_once_agree_with_the_line_by_line_path(
    lines: list[bytes], split_points: list[int], monkeypatch_context: pytest.MonkeyPatch
) -> None:
    stream = message(b"".join(line + b"\r\n" for line in lines) + b".\r\nNOOP\r\n")
    limits = {
        "max_line_length": 40,
        "max_message_bytes": 400,
        "max_header_fields": 4,
        "max_header_bytes": 80,
        "max_header_continuation_lines": 2,
    }
    fast = Dialogue(**limits)
    fast_replies = [reply for chunk in split_at(stream, split_points) for reply in fast.send(chunk)]
    with monkeypatch_context.context() as patch:
        patch.setattr(_MessageReader, "_take_whole_lines", take_one_line)
        slow = Dialogue(**limits)
        slow_replies = slow.send(stream)
    assert fast_replies == slow_replies
    assert fast.envelopes == slow.envelopes


def take_one_line(reader: _MessageReader, buffer: bytearray, start: int) -> int:
    """`_MessageReader._take_whole_lines` the slow way: one line, as a split line is taken."""
    stop = buffer.find(b"\r\n", start) + 2
    reader._take(buffer, start, stop, line_ends=True)
    return stop


@pytest.fixture(scope="module")
def monkeypatch_context() -> Iterator[pytest.MonkeyPatch]:
    """A MonkeyPatch usable inside a Hypothesis test (the function-scoped one is not)."""
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def old_chunk_rules(content: bytes, limits: SessionLimits) -> str | None:
    """The rules BDAT content was held to after its last chunk, read from the whole content at
    once (before they were checked as the chunks arrive)."""
    if len(content) > limits.max_message_bytes:
        return "TOO_BIG"
    crlf = content.count(b"\r\n")
    if content.count(b"\r") != crlf or content.count(b"\n") != crlf:
        return "BARE_LINE_ENDING"
    if max(map(len, content.split(b"\r\n"))) + 2 > limits.max_line_length:
        return "LINE_TOO_LONG"
    return None


@settings(max_examples=300, deadline=None)
@given(
    content=st.lists(
        st.sampled_from([b"\r", b"\n", b"\r\n", b"x", b"y" * 7, b"\r\r\n"]), max_size=30
    ).map(b"".join),
    points=st.lists(st.integers(0, 120), max_size=8),
)
def test_chunk_line_rules_checked_as_octets_arrive_agree_with_the_whole_content(
    content: bytes, points: list[int]
) -> None:
    limits = SessionLimits(max_line_length=12, max_message_bytes=100)
    chunked = _ChunkedContent(limits, MessageMemory(2**40))
    for piece in split_at(content, points):
        chunked.add(piece)
    problem = chunked.problem(final=True)
    assert (problem.name if problem else None) == old_chunk_rules(content, limits)
