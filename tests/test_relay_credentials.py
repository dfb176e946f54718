"""The relay's password (`outbound_smtp.password`) crosses the network only over TLS: in clear
(`tls = "none"`) it goes only to a relay on the loopback, against relays on this machine."""

from __future__ import annotations

import base64
import logging
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio

from e2a_gateway.config import OutboundSmtpSettings, load_settings
from e2a_gateway.outbound.relay import hand_off
from e2a_gateway.smtp.client import Outgoing
from tests.relay_support import line_reader, scripted_relay

pytestmark = pytest.mark.backend_independent

MESSAGE = Outgoing("bot@agents.test", ("a@example.org",), b"Subject: hi\r\n\r\nbody\r\n")
PASSWORD = "s3cret-relay-password"


def settings(port: int, host: str) -> OutboundSmtpSettings:
    values: dict[str, Any] = {
        "host": host,
        "port": port,
        "tls": "none",
        "username": "agent",
        "password": PASSWORD,
        "timeout_seconds": 5,
    }
    return OutboundSmtpSettings.model_validate(values)


def own_address() -> str | None:
    """An address of this machine off the loopback (None when it has none)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this picks the route
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith("127.") else address


@dataclass
class PlainRelay:
    """A relay without TLS offering AUTH; records every line."""

    auth_answer: bytes = b"235 ok\r\n"
    lines: list[bytes] = field(default_factory=list)

    async def serve(self, stream: trio.SocketStream) -> None:
        line = line_reader(stream)
        try:
            await stream.send_all(b"220 relay.test\r\n")
            while True:
                command = await line()
                self.lines.append(command)
                verb = command.split(b" ", 1)[0].strip().upper()
                if verb == b"EHLO":
                    await stream.send_all(b"250-relay.test\r\n250 AUTH PLAIN LOGIN\r\n")
                elif verb == b"AUTH":
                    await stream.send_all(self.auth_answer)
                elif verb == b"DATA":
                    await stream.send_all(b"354 go\r\n")
                    while await line(True) != b".\r\n":
                        pass
                    await stream.send_all(b"250 queued\r\n")
                elif verb == b"QUIT":
                    await stream.send_all(b"221 bye\r\n")
                    return
                else:
                    await stream.send_all(b"250 ok\r\n")
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


def password_seen(lines: list[bytes]) -> bool:
    """Whether the password crossed the wire, in any encoding AUTH uses."""
    wire = b"".join(lines)
    encodings = [
        PASSWORD.encode(),
        base64.b64encode(PASSWORD.encode()),
        base64.b64encode(f"\0agent\0{PASSWORD}".encode()),
    ]
    return any(encoded in wire for encoded in encodings)


async def test_credentials_go_in_clear_to_a_relay_on_the_loopback_only_with_tls_none() -> None:
    """`tls = "none"` is the operator's explicit choice for a relay on this machine."""
    relay = PlainRelay()
    async with scripted_relay(relay.serve) as port:
        with trio.fail_after(10):
            outcome = await hand_off(settings(port, "127.0.0.1"), "mx.agents.test", MESSAGE)
    assert outcome.accepted == ["a@example.org"], outcome
    assert password_seen(relay.lines)


async def test_credentials_never_go_in_clear_to_a_relay_off_the_loopback() -> None:
    """`tls = "none"` with a username to a relay on another machine (production refuses the
    settings; development must not send the password in clear either): the message is
    deferred with a reason that says what to set, and the password never leaves."""
    address = own_address()
    if address is None:
        pytest.skip("this machine has no address off the loopback")
    relay = PlainRelay()
    async with scripted_relay(relay.serve, host=address) as port:
        with trio.fail_after(10):
            outcome = await hand_off(settings(port, address), "mx.agents.test", MESSAGE)
    assert outcome.accepted == [] and list(outcome.deferred) == ["a@example.org"], outcome
    assert 'outbound_smtp.tls = "none"' in (outcome.error or "")
    assert "loopback" in (outcome.error or "")
    assert not password_seen(relay.lines)
    assert not any(line.upper().startswith((b"AUTH", b"MAIL")) for line in relay.lines)


async def test_a_refused_password_defers_and_is_never_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """535: the message waits for a retry (the worker's schedule spaces them), the error
    names the relay's reply, and neither it nor the log carries the password."""
    caplog.set_level(logging.DEBUG)
    relay = PlainRelay(auth_answer=b"535 5.7.8 authentication failed\r\n")
    async with scripted_relay(relay.serve) as port:
        with trio.fail_after(10):
            outcome = await hand_off(settings(port, "127.0.0.1"), "mx.agents.test", MESSAGE)
    assert list(outcome.deferred) == ["a@example.org"] and outcome.refused == {}, outcome
    assert "AUTH: 535 5.7.8 authentication failed" in (outcome.error or "")
    said = [caplog.text, outcome.error or "", *outcome.deferred.values()]
    assert not password_seen([text.encode() for text in said])


async def test_a_password_read_from_a_file_is_the_one_auth_sends(tmp_path: Path) -> None:
    """`outbound_smtp.password_file` (a Docker secret, a systemd credential) gives the relay
    the file's text without its trailing newline."""
    password_file = tmp_path / "relay-password"
    password_file.write_text(PASSWORD + "\n", encoding="utf-8")
    password_file.chmod(0o400)
    relay = PlainRelay()
    async with scripted_relay(relay.serve) as port:
        config = tmp_path / "e2a.toml"
        config.write_text(
            f'[outbound_smtp]\nhost = "127.0.0.1"\nport = {port}\ntls = "none"\n'
            f'username = "agent"\npassword_file = "{password_file}"\ntimeout_seconds = 5\n',
            encoding="utf-8",
        )
        relay_settings = load_settings(config, environ={}).outbound_smtp
        with trio.fail_after(10):
            outcome = await hand_off(relay_settings, "mx.agents.test", MESSAGE)
    assert outcome.accepted == ["a@example.org"], outcome
    assert base64.b64encode(f"\0agent\0{PASSWORD}".encode()) in b"".join(relay.lines)
