"""The sans-IO SMTP client session, driven by scripted server replies (no sockets)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from e2a_gateway.smtp.client import (
    MAX_REPLY_LINE,
    MAX_REPLY_LINES,
    Action,
    ClientProtocolError,
    ClientSession,
    Credentials,
    Delivered,
    Finished,
    NeedMore,
    Outgoing,
    Ready,
    ReplyReader,
    SendBytes,
    ServerReply,
    StartTls,
    TlsMode,
    dot_stuff,
)

pytestmark = pytest.mark.backend_independent

MESSAGE = Outgoing(
    "bot@agents.test", ("a@example.org", "b@example.org"), b"Subject: x\r\n\r\nhi\r\n"
)
EHLO_AUTH = ServerReply(
    250, ("relay.test", "SIZE 1000000", "8BITMIME", "STARTTLS", "AUTH LOGIN PLAIN")
)


def session_for(
    message: Outgoing = MESSAGE, *, tls: TlsMode = "none", credentials: Credentials | None = None
) -> ClientSession:
    """A session to which `message` was given before the greeting."""
    session = ClientSession("mx.agents.test", tls=tls, credentials=credentials)
    assert session.begin(message) is None
    return session


def reply(code: int, *lines: str) -> ServerReply:
    return ServerReply(code, lines or ("ok",))


def sent(action: Action | None) -> bytes:
    assert isinstance(action, SendBytes), action
    return action.data


def run_to_rcpt(session: ClientSession) -> None:
    assert sent(session.receive_reply(reply(220))) == b"EHLO mx.agents.test\r\n"
    assert sent(session.receive_reply(reply(250, "relay.test", "SIZE 1000"))).startswith(
        b"MAIL FROM:<bot@agents.test> SIZE="
    )
    assert sent(session.receive_reply(reply(250))) == b"RCPT TO:<a@example.org>\r\n"


def test_starttls_then_auth_plain_then_delivery() -> None:
    session = session_for(tls="starttls", credentials=Credentials("user", "pässword"))
    assert sent(session.receive_reply(reply(220))) == b"EHLO mx.agents.test\r\n"
    assert sent(session.receive_reply(EHLO_AUTH)) == b"STARTTLS\r\n"
    assert isinstance(session.receive_reply(reply(220)), StartTls)
    assert sent(session.tls_started()) == b"EHLO mx.agents.test\r\n"
    auth = sent(session.receive_reply(EHLO_AUTH))
    token = base64.b64encode("\0user\0pässword".encode()).decode()
    assert auth == f"AUTH PLAIN {token}\r\n".encode()
    mail = sent(session.receive_reply(reply(235)))
    assert mail == f"MAIL FROM:<bot@agents.test> SIZE={len(MESSAGE.data)}\r\n".encode()
    assert sent(session.receive_reply(reply(250))) == b"RCPT TO:<a@example.org>\r\n"
    assert sent(session.receive_reply(reply(250))) == b"RCPT TO:<b@example.org>\r\n"
    assert sent(session.receive_reply(reply(250))) == b"DATA\r\n"
    assert sent(session.receive_reply(reply(354))) == dot_stuff(MESSAGE.data)
    delivered = session.receive_reply(reply(250))
    assert isinstance(delivered, Delivered) and session.idle
    assert delivered.outcome.accepted == ["a@example.org", "b@example.org"]
    assert not delivered.outcome.refused and not delivered.outcome.deferred
    assert sent(session.quit()) == b"QUIT\r\n"
    finished = session.receive_reply(reply(221))
    assert isinstance(finished, Finished) and not session.idle


def test_auth_login() -> None:
    session = session_for(credentials=Credentials("user", "secret"))
    session.receive_reply(reply(220))
    assert sent(session.receive_reply(reply(250, "relay.test", "AUTH LOGIN"))) == b"AUTH LOGIN\r\n"
    assert sent(session.receive_reply(reply(334, "VXNlcm5hbWU6"))) == b"dXNlcg==\r\n"
    assert sent(session.receive_reply(reply(334, "UGFzc3dvcmQ6"))) == b"c2VjcmV0\r\n"
    assert sent(session.receive_reply(reply(235))).startswith(b"MAIL FROM:")


@pytest.mark.parametrize(
    ("offered", "first"),
    [
        (("AUTH=LOGIN",), b"AUTH LOGIN\r\n"),
        (("AUTH=LOGIN PLAIN",), b"AUTH PLAIN "),
        (("AUTH=PLAIN", "AUTH LOGIN"), b"AUTH PLAIN "),
        (("AUTH LOGIN", "AUTH=PLAIN LOGIN"), b"AUTH PLAIN "),
    ],
)
def test_auth_offered_in_the_old_form_with_an_equals_sign(
    offered: tuple[str, ...], first: bytes
) -> None:
    """Relays of Outlook's time (Exchange among them) list their mechanisms as `AUTH=LOGIN`,
    alone or beside `AUTH LOGIN`: either names what the relay takes."""
    session = session_for(credentials=Credentials("user", "secret"))
    session.receive_reply(reply(220))
    assert sent(session.receive_reply(reply(250, "relay.test", *offered))).startswith(first)


@pytest.mark.parametrize(
    ("ehlo", "auth_reply", "expect"),
    [
        (reply(250, "relay.test"), None, "neither AUTH PLAIN nor AUTH LOGIN"),
        (reply(250, "relay.test", "AUTH PLAIN"), reply(535, "bad credentials"), "535"),
        (reply(250, "relay.test", "AUTH LOGIN"), reply(504, "not now"), "504"),
    ],
)
def test_auth_failures_defer_everything(
    ehlo: ServerReply, auth_reply: ServerReply | None, expect: str
) -> None:
    """A wrong password or a relay without a usable mechanism is the gateway's settings at
    fault, not the message: every recipient waits for a retry, even after a 5xx."""
    session = session_for(credentials=Credentials("u", "p"))
    session.receive_reply(reply(220))
    action = session.receive_reply(ehlo)
    if auth_reply is not None:
        action = session.receive_reply(auth_reply)
    assert sent(action) == b"QUIT\r\n"
    assert expect in (session.outcome.error or "")
    assert set(session.outcome.deferred) == set(MESSAGE.recipients)
    assert session.outcome.refused == {}


def test_starttls_required_but_not_offered() -> None:
    session = session_for(tls="starttls")
    session.receive_reply(reply(220))
    assert sent(session.receive_reply(reply(250, "relay.test"))) == b"QUIT\r\n"
    assert "STARTTLS" in (session.outcome.error or "")
    assert set(session.outcome.deferred) == set(MESSAGE.recipients)


def test_mixed_recipient_answers() -> None:
    session = session_for()
    run_to_rcpt(session)
    assert sent(session.receive_reply(reply(550, "no such user"))) == b"RCPT TO:<b@example.org>\r\n"
    assert sent(session.receive_reply(reply(250))) == b"DATA\r\n"
    session.receive_reply(reply(354))
    session.receive_reply(reply(250))
    outcome = session.outcome
    assert outcome.accepted == ["b@example.org"]
    assert "550" in outcome.refused["a@example.org"]


def test_all_recipients_deferred_skips_data() -> None:
    session = session_for()
    run_to_rcpt(session)
    session.receive_reply(reply(451, "try later"))
    # MAIL was accepted: the open transaction is reset before the connection carries another.
    assert sent(session.receive_reply(reply(452, "full"))) == b"RSET\r\n"
    delivered = session.receive_reply(reply(250))
    assert isinstance(delivered, Delivered) and session.idle
    assert set(delivered.outcome.deferred) == set(MESSAGE.recipients)
    assert not delivered.outcome.accepted


def test_a_relay_refusing_rset_is_not_trusted_again() -> None:
    session = session_for()
    run_to_rcpt(session)
    session.receive_reply(reply(550, "no"))
    assert sent(session.receive_reply(reply(550, "no"))) == b"RSET\r\n"
    assert sent(session.receive_reply(reply(500, "what?"))) == b"QUIT\r\n"
    assert not session.idle
    assert set(session.outcome.refused) == set(MESSAGE.recipients)


@pytest.mark.parametrize(("code", "bucket"), [(451, "deferred"), (554, "refused")])
def test_failure_at_end_of_data(code: int, bucket: str) -> None:
    session = session_for()
    run_to_rcpt(session)
    session.receive_reply(reply(250))
    session.receive_reply(reply(250))
    session.receive_reply(reply(354))
    # The transaction ended with the refusal: the connection can carry the next message.
    delivered = session.receive_reply(reply(code, "no"))
    assert isinstance(delivered, Delivered) and session.idle
    assert delivered.outcome.accepted == []
    assert set(getattr(delivered.outcome, bucket)) == set(MESSAGE.recipients)


@pytest.mark.parametrize("code", [421, 554])
def test_bad_greeting(code: int) -> None:
    """A relay refusing the session says nothing of the message: it waits, whatever the code."""
    session = session_for()
    assert sent(session.receive_reply(reply(code, "go away"))) == b"QUIT\r\n"
    assert set(session.outcome.deferred) == set(MESSAGE.recipients)
    assert not session.outcome.refused


def test_connection_lost_defers_everything_not_accepted() -> None:
    session = session_for()
    run_to_rcpt(session)
    outcome = session.connection_lost()
    assert set(outcome.deferred) == set(MESSAGE.recipients)
    assert outcome.error == "connection lost"


def test_reply_reader_joins_multiline_replies_across_chunks() -> None:
    reader = ReplyReader()
    assert reader.feed(b"250-relay.test\r\n250-SIZE 10") == []
    (first,) = reader.feed(b"00\r\n250 8BITMIME\r\n")
    assert first == ServerReply(250, ("relay.test", "SIZE 1000", "8BITMIME"))
    assert reader.feed(b"354 go\r\n221 bye\r\n") == [reply(354, "go"), reply(221, "bye")]
    with pytest.raises(ClientProtocolError):
        reader.feed(b"HTTP/1.1 400 Bad Request\r\n")


def test_reply_reader_bounds_a_reply_however_it_arrives() -> None:
    """A reply is at most MAX_REPLY_LINES lines of at most MAX_REPLY_LINE octets, whether a
    long line comes in one read or many."""
    reader = ReplyReader()
    line = b"250-" + b"x" * 100 + b"\r\n"
    assert reader.feed(line * (MAX_REPLY_LINES - 1)) == []
    with pytest.raises(ClientProtocolError, match="reply too long"):
        reader.feed(line)
    for chunks in ([b"250 " + b"x" * MAX_REPLY_LINE + b"\r\n"], [b"250 ", b"x" * MAX_REPLY_LINE]):
        reader = ReplyReader()
        with pytest.raises(ClientProtocolError, match="reply line too long"):
            for chunk in chunks:
                reader.feed(chunk)


@pytest.mark.parametrize("line", [b"100 go on", b"999 what", b"650 no", b"0 ok"])
def test_reply_reader_refuses_codes_smtp_does_not_have(line: bytes) -> None:
    with pytest.raises(ClientProtocolError, match="not an SMTP reply"):
        ReplyReader().feed(line + b"\r\n")


@pytest.mark.parametrize(
    ("data", "wire"),
    [
        (b"a\r\n.b\r\n", b"a\r\n..b\r\n.\r\n"),
        (b".start\nbare lf", b"..start\r\nbare lf\r\n.\r\n"),
        (b"", b"\r\n.\r\n"),
        (b"x\r\n.\r\ny", b"x\r\n..\r\ny\r\n.\r\n"),
        # a bare CR ends a line too: `\r.\r` never reaches a relay as a lone dot (smuggling)
        (b"a\r.\rb", b"a\r\n..\r\nb\r\n.\r\n"),
        (b"x\r", b"x\r\n.\r\n"),
        (b".\r\r\n\n\r", b"..\r\n\r\n\r\n\r\n.\r\n"),
    ],
)
def test_dot_stuffing(data: bytes, wire: bytes) -> None:
    assert dot_stuff(data) == wire


@given(st.lists(st.sampled_from([b"\r", b"\n", b".", b"x", b"\r\n"])).map(b"".join))
def test_dot_stuffed_data_has_only_crlf_line_ends_and_one_end_of_data(data: bytes) -> None:
    """Whatever the message holds, the relay sees CRLF line ends only and a single CRLF.CRLF,
    the last five octets: no lenient reading of CR or LF can end the data early."""
    wire = dot_stuff(data)
    assert wire.count(b"\r") == wire.count(b"\n") == wire.count(b"\r\n")
    assert wire.find(b"\r\n.\r\n") == len(wire) - 5
    assert not wire.startswith(b".\r\n")
    lines = wire[:-3].split(b"\r\n")[:-1]
    unstuffed = [line[1:] if line.startswith(b".") else line for line in lines]
    assert unstuffed == (data.splitlines() or [b""])  # splitlines: a line ends at CRLF, CR or LF


SECOND = Outgoing("bot@agents.test", ("c@example.org",), b"Subject: y\r\n\r\nagain\r\n")


def deliver_first(session: ClientSession) -> None:
    run_to_rcpt(session)
    session.receive_reply(reply(250))
    session.receive_reply(reply(250))
    session.receive_reply(reply(354))
    assert isinstance(session.receive_reply(reply(250)), Delivered)


def test_a_second_message_goes_out_on_the_same_session() -> None:
    session = session_for()
    deliver_first(session)
    mail = sent(session.begin(SECOND))
    assert mail.startswith(b"MAIL FROM:<bot@agents.test> SIZE=")  # no second greeting
    assert sent(session.receive_reply(reply(250))) == b"RCPT TO:<c@example.org>\r\n"
    assert sent(session.receive_reply(reply(250))) == b"DATA\r\n"
    assert sent(session.receive_reply(reply(354))) == dot_stuff(SECOND.data)
    delivered = session.receive_reply(reply(250))
    assert isinstance(delivered, Delivered)
    assert delivered.outcome.accepted == ["c@example.org"]  # the first message's are not in it


def test_a_refused_sender_leaves_the_session_usable() -> None:
    session = session_for()
    deliver_first(session)
    session.begin(SECOND)
    delivered = session.receive_reply(reply(553, "sender not allowed"))
    assert isinstance(delivered, Delivered) and session.idle
    assert "MAIL FROM: 553" in delivered.outcome.refused["c@example.org"]


@pytest.mark.parametrize("stage", ["MAIL", "RCPT", "end of DATA"])
def test_service_closing_defers_and_ends_the_session(stage: str) -> None:
    session = session_for()
    deliver_first(session)
    session.begin(SECOND)
    if stage != "MAIL":
        session.receive_reply(reply(250))
    if stage == "end of DATA":
        session.receive_reply(reply(250))
        session.receive_reply(reply(354))
    assert sent(session.receive_reply(reply(421, "closing"))) == b"QUIT\r\n"
    assert "421" in session.outcome.deferred["c@example.org"]
    assert not session.outcome.accepted and not session.idle
    assert isinstance(session.receive_reply(reply(221)), Finished)


def test_a_session_set_up_without_a_message_waits_for_one() -> None:
    session = ClientSession("mx.agents.test")
    session.receive_reply(reply(220))
    assert isinstance(session.receive_reply(reply(250, "relay.test")), Ready)
    assert session.idle
    assert sent(session.begin(MESSAGE)) == b"MAIL FROM:<bot@agents.test>\r\n"


def test_begin_is_refused_while_a_message_is_in_progress() -> None:
    session = session_for()
    run_to_rcpt(session)
    with pytest.raises(RuntimeError, match="state rcpt"):
        session.begin(SECOND)


def test_connection_lost_while_idle_changes_no_outcome() -> None:
    session = session_for()
    deliver_first(session)
    outcome = session.connection_lost()
    assert outcome.accepted == ["a@example.org", "b@example.org"] and not outcome.deferred
    assert not session.idle


PIPELINING = reply(250, "relay.test", "PIPELINING", "SIZE 1000000")


def pipelined_group(session: ClientSession) -> bytes:
    """Greet a relay that offers PIPELINING; the envelope the session sends in one write."""
    session.receive_reply(reply(220))
    return sent(session.receive_reply(PIPELINING))


def test_pipelining_sends_the_envelope_and_data_in_one_write() -> None:
    session = session_for()
    size = len(MESSAGE.data)
    assert (
        pipelined_group(session)
        == (
            f"MAIL FROM:<bot@agents.test> SIZE={size}\r\n"
            "RCPT TO:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n"
        ).encode()
    )
    assert isinstance(session.receive_reply(reply(250)), NeedMore)
    assert isinstance(session.receive_reply(reply(250)), NeedMore)
    assert isinstance(session.receive_reply(reply(550, "no such user")), NeedMore)
    assert sent(session.receive_reply(reply(354))) == dot_stuff(MESSAGE.data)
    delivered = session.receive_reply(reply(250))
    assert isinstance(delivered, Delivered) and session.idle
    assert delivered.outcome.accepted == ["a@example.org"]
    assert "550" in delivered.outcome.refused["b@example.org"]


def test_pipelined_sender_refused_reads_past_the_other_replies() -> None:
    session = session_for()
    pipelined_group(session)
    assert isinstance(session.receive_reply(reply(553, "sender not allowed")), NeedMore)
    assert isinstance(session.receive_reply(reply(503, "need MAIL")), NeedMore)
    assert isinstance(session.receive_reply(reply(503, "need MAIL")), NeedMore)
    delivered = session.receive_reply(reply(503, "need RCPT"))
    assert isinstance(delivered, Delivered) and session.idle
    assert set(delivered.outcome.refused) == set(MESSAGE.recipients)
    assert all("MAIL FROM: 553" in why for why in delivered.outcome.refused.values())


def test_pipelined_recipients_all_refused_then_data_refused_resets() -> None:
    session = session_for()
    pipelined_group(session)
    session.receive_reply(reply(250))
    session.receive_reply(reply(550, "no"))
    session.receive_reply(reply(450, "later"))
    assert sent(session.receive_reply(reply(554, "no valid recipients"))) == b"RSET\r\n"
    delivered = session.receive_reply(reply(250))
    assert isinstance(delivered, Delivered) and session.idle
    assert list(delivered.outcome.refused) == ["a@example.org"]
    assert list(delivered.outcome.deferred) == ["b@example.org"]


def test_pipelined_data_accepted_without_recipients_ends_an_empty_message() -> None:
    session = session_for()
    pipelined_group(session)
    session.receive_reply(reply(250))
    session.receive_reply(reply(550, "no"))
    session.receive_reply(reply(550, "no"))
    assert sent(session.receive_reply(reply(354))) == b".\r\n"  # never the message's body
    delivered = session.receive_reply(reply(554, "no valid recipients"))
    assert isinstance(delivered, Delivered) and session.idle
    assert set(delivered.outcome.refused) == set(MESSAGE.recipients)
    assert not delivered.outcome.accepted


EAI_MESSAGE = Outgoing(
    "bounces+x@agents.test",
    ("josé@example.com",),
    "To: josé@example.com\r\nSubject: x\r\n\r\nhi\r\n".encode(),
)
"""A message that needs SMTPUTF8 (RFC 6531): its envelope and its To field name an address
beyond ASCII."""


def test_a_message_needs_smtputf8_for_utf8_in_its_envelope_or_header_fields_only() -> None:
    assert EAI_MESSAGE.needs_smtputf8
    assert not MESSAGE.needs_smtputf8
    header_only = Outgoing("a@agents.test", ("b@example.org",), "Cc: zoë@x.org\r\n\r\n".encode())
    assert header_only.needs_smtputf8
    body_only = Outgoing("a@agents.test", ("b@example.org",), "To: b@x.org\r\n\r\nZoë\r\n".encode())
    assert not body_only.needs_smtputf8


def test_smtputf8_and_8bitmime_are_asked_for_when_the_relay_offers_them() -> None:
    session = session_for(EAI_MESSAGE)
    session.receive_reply(reply(220))
    mail = sent(session.receive_reply(reply(250, "relay.test", "8BITMIME", "SMTPUTF8")))
    assert mail == b"MAIL FROM:<bounces+x@agents.test> BODY=8BITMIME SMTPUTF8\r\n"
    assert sent(session.receive_reply(reply(250))) == "RCPT TO:<josé@example.com>\r\n".encode()


def test_a_message_that_needs_smtputf8_fails_for_good_where_the_relay_does_not_offer_it() -> None:
    """RFC 6531 section 3.2: never sent to a server without SMTPUTF8, nor downgraded; every
    recipient fails for good (553 5.6.7) without a word to the relay, which stays usable."""
    session = session_for(EAI_MESSAGE)
    session.receive_reply(reply(220))
    delivered = session.receive_reply(reply(250, "relay.test", "8BITMIME", "PIPELINING"))
    assert isinstance(delivered, Delivered) and session.idle
    (reason,) = delivered.outcome.refused.values()
    assert list(delivered.outcome.refused) == ["josé@example.com"]
    assert "553 5.6.7" in reason and "does not support internationalised mail" in reason
    assert not delivered.outcome.accepted and not delivered.outcome.deferred
    assert sent(session.begin(MESSAGE)).startswith(b"MAIL FROM:<bot@agents.test>")


def test_a_message_that_needs_no_smtputf8_never_asks_for_it() -> None:
    session = session_for(Outgoing("a@agents.test", ("bob@xn--bcher-kva.example",), b"x\r\n"))
    session.receive_reply(reply(220))
    mail = sent(session.receive_reply(reply(250, "relay.test", "SMTPUTF8")))
    assert mail == b"MAIL FROM:<a@agents.test>\r\n"
