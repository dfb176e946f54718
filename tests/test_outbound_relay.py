"""Handing mail to a real relay: an aiosmtpd sink on 127.0.0.1 (test-only) as `outbound_smtp`."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from e2a_gateway.config import OutboundSmtpSettings
from e2a_gateway.outbound.relay import hand_off
from e2a_gateway.smtp.client import Outgoing
from tests.relay_support import Sink, free_port

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


def settings(port: int, **overrides: Any) -> OutboundSmtpSettings:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "tls": "none",
        "timeout_seconds": 10,
    }
    values.update(overrides)
    return OutboundSmtpSettings.model_validate(values)


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


async def test_starttls_with_auth(
    tls_relay: int, sink: Sink, ca: trustme.CA, tmp_path: Path
) -> None:
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    relay = settings(
        tls_relay, tls="starttls", ca_file=ca_file, username="agent", password="s3cret"
    )
    relay_localhost = relay.model_copy(update={"host": "localhost"})
    outcome = await hand_off(
        relay_localhost, "mx.agents.test", Outgoing("bot@agents.test", ("a@example.org",), DATA)
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


async def test_wrong_password_is_refused(
    tls_relay: int, sink: Sink, ca: trustme.CA, tmp_path: Path
) -> None:
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    outcome = await hand_off(
        settings(
            tls_relay,
            host="localhost",
            tls="starttls",
            ca_file=ca_file,
            username="agent",
            password="nope",
        ),
        "mx.agents.test",
        Outgoing("bot@agents.test", ("a@example.org",), DATA),
    )
    assert "a@example.org" in outcome.refused and "535" in (outcome.error or ""), outcome
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
