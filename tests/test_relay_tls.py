"""TLS to the relay (`outbound_smtp`), against a relay on 127.0.0.1 that really speaks it:
STARTTLS stripped or refused, replies injected before the handshake (the STARTTLS injection
class of CVE-2011-0411), the capabilities the relay offers after TLS, the certificate's name,
SNI and the TLS version floor."""

from __future__ import annotations

import socket
import ssl
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme

from e2a_gateway.config import OutboundSmtpSettings
from e2a_gateway.outbound.relay import hand_off, tls_context
from e2a_gateway.smtp.client import Outgoing
from tests.relay_support import LineReader, line_reader, scripted_relay

pytestmark = pytest.mark.backend_independent

DATA = b"From: bot@agents.test\r\nSubject: hi\r\n\r\nbody\r\n"
MESSAGE = Outgoing("bot@agents.test", ("a@example.org",), DATA)
PASSWORD = "s3cret-relay-password"


@dataclass
class TlsRelay:
    """A relay offering STARTTLS with a real handshake (`server_context`). `before_tls` and
    `after_tls` are its EHLO capabilities on each side of the handshake; `injected` is sent
    right after the 220 to STARTTLS, in the same write, before the handshake (a man in the
    middle's replies). `commands` records each line the client sent with whether it came over
    TLS; `early` whatever the client sent after STARTTLS before the handshake; `server_names`
    the SNI of each handshake."""

    server_context: ssl.SSLContext
    before_tls: tuple[str, ...] = ("PIPELINING", "STARTTLS")
    after_tls: tuple[str, ...] = ("PIPELINING", "AUTH PLAIN LOGIN")
    injected: bytes = b""
    starttls_answer: bytes = b"220 2.0.0 ready\r\n"
    commands: list[tuple[bool, bytes]] = field(default_factory=list)
    early: bytes = b""
    received: list[bytes] = field(default_factory=list)
    server_names: list[str | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        def record(ssl_object: Any, name: str | None, context: Any) -> None:
            self.server_names.append(name)

        self.server_context.sni_callback = record

    async def serve(self, plain: trio.SocketStream) -> None:
        """Speak to one client until it quits or leaves."""
        stream: trio.abc.Stream = plain
        line: LineReader = line_reader(plain)
        secure = False
        try:
            await stream.send_all(b"220 relay.test ESMTP\r\n")
            while True:
                command = await line()
                self.commands.append((secure, command))
                verb = command.split(b" ", 1)[0].strip().upper()
                if verb == b"EHLO":
                    offered = self.after_tls if secure else self.before_tls
                    lines = ["relay.test", *offered]
                    text = "".join(
                        f"250{' ' if n == len(lines) - 1 else '-'}{item}\r\n"
                        for n, item in enumerate(lines)
                    )
                    await stream.send_all(text.encode())
                elif verb == b"STARTTLS" and not secure:
                    await stream.send_all(self.starttls_answer + self.injected)
                    if not self.starttls_answer.startswith(b"220"):
                        continue
                    self.early = bytes(line._buffer)
                    stream = trio.SSLStream(plain, self.server_context, server_side=True)
                    await stream.do_handshake()
                    line = LineReader(lambda _in_data, s=stream: s.receive_some(65536))
                    secure = True
                elif verb == b"AUTH":
                    if command.upper().startswith(b"AUTH LOGIN"):
                        for prompt in (b"334 VXNlcm5hbWU6\r\n", b"334 UGFzc3dvcmQ6\r\n"):
                            await stream.send_all(prompt)
                            self.commands.append((secure, await line()))
                    await stream.send_all(b"235 2.7.0 ok\r\n")
                elif verb == b"DATA":
                    await stream.send_all(b"354 go\r\n")
                    body = bytearray()
                    while (text := await line(True)) != b".\r\n":
                        body += text
                    self.received.append(bytes(body))
                    await stream.send_all(b"250 2.0.0 queued\r\n")
                elif verb == b"QUIT":
                    await stream.send_all(b"221 bye\r\n")
                    return
                else:
                    await stream.send_all(b"250 ok\r\n")
        except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError):
            pass

    def sent_in_clear(self, verb: bytes) -> bool:
        return any(not secure and c.upper().startswith(verb) for secure, c in self.commands)

    def sent(self, verb: bytes) -> list[bytes]:
        return [c for _, c in self.commands if c.upper().startswith(verb)]


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


def server_context(ca: trustme.CA, name: str = "localhost") -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(name).configure_cert(context)
    return context


def settings(port: int, ca_file: Path | None, **overrides: Any) -> OutboundSmtpSettings:
    values: dict[str, Any] = {
        "host": "localhost",
        "port": port,
        "tls": "starttls",
        "ca_file": ca_file,
        "username": "agent",
        "password": PASSWORD,
        "timeout_seconds": 5,
    }
    values.update(overrides)
    return OutboundSmtpSettings.model_validate(values)


async def send_through(relay: TlsRelay, config: OutboundSmtpSettings) -> Any:
    async with scripted_relay(relay.serve) as port:
        with trio.fail_after(10):
            return await hand_off(
                config.model_copy(update={"port": port}), "mx.agents.test", MESSAGE
            )


async def test_starttls_greets_again_and_uses_only_what_the_relay_offers_over_tls(
    ca: trustme.CA, ca_file: Path
) -> None:
    """RFC 3207 section 4.2: what the relay offered before TLS is forgotten. Before the
    handshake it offers AUTH PLAIN (a man in the middle could add it), after it only LOGIN:
    the client says EHLO again and uses LOGIN; nothing but EHLO and STARTTLS goes in clear,
    and nothing follows STARTTLS before the handshake."""
    relay = TlsRelay(
        server_context(ca),
        before_tls=("PIPELINING", "STARTTLS", "AUTH PLAIN"),
        after_tls=("AUTH LOGIN",),
    )
    outcome = await send_through(relay, settings(1, ca_file))
    assert outcome.accepted == ["a@example.org"], outcome
    assert [c.split(b" ")[0].strip() for s, c in relay.commands if not s] == [b"EHLO", b"STARTTLS"]
    assert relay.early == b""
    assert len(relay.sent(b"EHLO")) == 2
    assert relay.sent(b"AUTH") == [b"AUTH LOGIN\r\n"]
    assert relay.received == [DATA]


async def test_replies_injected_before_the_handshake_abort_the_session(
    ca: trustme.CA, ca_file: Path
) -> None:
    """A man in the middle appends replies to the relay's 220 to STARTTLS; read after the
    handshake they would answer the client's first commands over TLS (a forged EHLO, a fake
    235 to AUTH). Bytes after the 220 before TLS starts end the session: the message is
    deferred, sent neither in clear nor over that TLS."""
    relay = TlsRelay(
        server_context(ca), injected=b"250-relay.test\r\n250 AUTH PLAIN\r\n235 2.7.0 ok\r\n"
    )
    outcome = await send_through(relay, settings(1, ca_file))
    assert outcome.accepted == [] and outcome.refused == {}, outcome
    assert list(outcome.deferred) == ["a@example.org"]
    assert "after its 220 to STARTTLS" in (outcome.error or "")
    assert relay.sent(b"MAIL") == [] and relay.sent(b"AUTH") == []
    assert relay.received == []


async def test_a_partial_line_injected_before_the_handshake_aborts_too(
    ca: trustme.CA, ca_file: Path
) -> None:
    relay = TlsRelay(server_context(ca), injected=b"235 2.7.0")
    outcome = await send_through(relay, settings(1, ca_file))
    assert list(outcome.deferred) == ["a@example.org"], outcome
    assert "after its 220 to STARTTLS" in (outcome.error or "")
    assert relay.sent(b"MAIL") == []


@pytest.mark.parametrize(
    "answer", [b"454 4.7.0 TLS not available due to temporary reason\r\n", b"502 5.5.1 no\r\n"]
)
async def test_a_relay_refusing_starttls_defers_and_nothing_goes_in_clear(
    ca: trustme.CA, ca_file: Path, answer: bytes
) -> None:
    relay = TlsRelay(server_context(ca), starttls_answer=answer)
    outcome = await send_through(relay, settings(1, ca_file))
    assert list(outcome.deferred) == ["a@example.org"] and outcome.refused == {}, outcome
    assert f"STARTTLS: {answer[:3].decode()}" in (outcome.error or "")
    assert not relay.sent_in_clear(b"AUTH") and relay.sent(b"MAIL") == []


async def test_stripped_starttls_sends_nothing_in_clear(ca: trustme.CA, ca_file: Path) -> None:
    relay = TlsRelay(server_context(ca), before_tls=("PIPELINING", "AUTH PLAIN LOGIN"))
    outcome = await send_through(relay, settings(1, ca_file))
    assert list(outcome.deferred) == ["a@example.org"], outcome
    assert "relay does not offer STARTTLS" in (outcome.error or "")
    assert [c.split(b" ")[0].strip() for _, c in relay.commands] == [b"EHLO", b"QUIT"]


async def test_a_certificate_for_another_name_defers(ca: trustme.CA, ca_file: Path) -> None:
    """The certificate is signed by a trusted CA but names another host: refused (the name
    is verified, not only the chain)."""
    relay = TlsRelay(server_context(ca, "relay.elsewhere.test"))
    outcome = await send_through(relay, settings(1, ca_file))
    assert list(outcome.deferred) == ["a@example.org"], outcome
    assert "CERTIFICATE_VERIFY_FAILED" in (outcome.error or "")
    assert "localhost" in (outcome.error or "")
    assert relay.sent(b"AUTH") == [] and relay.sent(b"MAIL") == []


async def test_sni_names_the_relay(ca: trustme.CA, ca_file: Path) -> None:
    relay = TlsRelay(server_context(ca))
    outcome = await send_through(relay, settings(1, ca_file))
    assert outcome.accepted == ["a@example.org"], outcome
    assert relay.server_names == ["localhost"]


class LoopbackResolver(trio.abc.HostnameResolver):
    """DNS faked: every name resolves to 127.0.0.1; `asked` records the names looked up."""

    def __init__(self) -> None:
        self.asked: list[bytes | str] = []

    async def getaddrinfo(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        self.asked.append(host)
        return socket.getaddrinfo("127.0.0.1", port, *args, **kwargs)

    async def getnameinfo(self, sockaddr: Any, flags: int) -> Any:
        raise NotImplementedError


async def test_a_relay_written_with_its_trailing_dot_is_verified_by_its_name(
    ca: trustme.CA, ca_file: Path
) -> None:
    """`smtp.example.com.`, the absolute form zone files and `dig` print, names the same host:
    its certificate for `smtp.example.com` is taken, and SNI names it without the dot (RFC
    6066 section 3), rather than every message deferred for a day on a name mismatch."""
    resolver = LoopbackResolver()
    trio.socket.set_custom_hostname_resolver(resolver)
    relay = TlsRelay(server_context(ca, "smtp.example.com"))
    outcome = await send_through(relay, settings(1, ca_file, host="smtp.example.com."))
    assert outcome.accepted == ["a@example.org"], outcome
    assert relay.server_names == ["smtp.example.com"]
    assert resolver.asked == [b"smtp.example.com"]


async def test_a_relay_offering_only_tls_1_1_is_refused(ca: trustme.CA, ca_file: Path) -> None:
    """TLS 1.2 is the floor (RFC 8996 deprecates 1.0 and 1.1)."""
    assert tls_context(settings(1, ca_file)).minimum_version == ssl.TLSVersion.TLSv1_2
    context = server_context(ca)
    with warnings.catch_warnings():  # the versions are named to be refused
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    relay = TlsRelay(context)
    outcome = await send_through(relay, settings(1, ca_file))
    assert list(outcome.deferred) == ["a@example.org"], outcome
    assert "SSL" in (outcome.error or "")
    assert relay.sent(b"AUTH") == [] and relay.sent(b"MAIL") == []
