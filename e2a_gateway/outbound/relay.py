"""Handing one message to the configured relay (`outbound_smtp`): the trio shell around the
sans-IO `ClientSession`. Plain, STARTTLS or implicit TLS; AUTH when credentials are set."""

from __future__ import annotations

import ssl

import trio

from e2a_gateway.config import OutboundSmtpSettings
from e2a_gateway.smtp.client import (
    ClientProtocolError,
    ClientSession,
    Credentials,
    Finished,
    Outcome,
    Outgoing,
    ReplyReader,
    SendBytes,
    StartTls,
)

RECEIVE_BYTES = 65536


def tls_context(settings: OutboundSmtpSettings) -> ssl.SSLContext:
    """A verifying client context (the system CAs, or `outbound_smtp.ca_file`)."""
    context = ssl.create_default_context(cafile=str(settings.ca_file) if settings.ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


async def hand_off(settings: OutboundSmtpSettings, hostname: str, message: Outgoing) -> Outcome:
    """Deliver `message` to the relay; every failure ends up in the returned Outcome."""
    host = settings.host
    if not host:
        return Outcome(
            deferred=dict.fromkeys(message.recipients, "outbound_smtp.host is not set"),
            error="outbound_smtp.host is not set",
        )
    credentials = (
        Credentials(settings.username, settings.password or "") if settings.username else None
    )
    session = ClientSession(hostname, message, tls=settings.tls, credentials=credentials)
    try:
        with trio.fail_after(settings.timeout_seconds):
            return await _converse(settings, host, session)
    except trio.TooSlowError:
        outcome = session.connection_lost()
        outcome.error = (
            f"relay {host}:{settings.port} timed out after {settings.timeout_seconds:.0f} s"
        )
        return outcome
    except (OSError, trio.BrokenResourceError, ssl.SSLError, ClientProtocolError) as exc:
        outcome = session.connection_lost()
        cause = _first_cause(exc)
        outcome.error = f"relay {host}:{settings.port}: {type(cause).__name__}: {cause}"[:500]
        return outcome


def _first_cause(exc: BaseException) -> BaseException:
    """What went wrong, told plainly: the cause trio's connect error wraps, and the first
    attempt's error rather than the group of them ("ConnectionRefusedError: …")."""
    cause = exc.__cause__ or exc
    while isinstance(cause, BaseExceptionGroup) and cause.exceptions:
        cause = cause.exceptions[0]
    return cause


async def _converse(settings: OutboundSmtpSettings, host: str, session: ClientSession) -> Outcome:
    stream: trio.abc.Stream = await trio.open_tcp_stream(host, settings.port)
    if settings.tls == "implicit":
        stream = trio.SSLStream(stream, tls_context(settings), server_hostname=host)
    reader = ReplyReader()
    try:
        while True:
            data = await stream.receive_some(RECEIVE_BYTES)
            if not data:
                return session.connection_lost()
            for reply in reader.feed(bytes(data)):
                action = session.receive_reply(reply)
                if isinstance(action, StartTls):
                    stream = trio.SSLStream(stream, tls_context(settings), server_hostname=host)
                    await stream.do_handshake()
                    # Anything the relay sent before the handshake is discarded, never trusted.
                    reader = ReplyReader()
                    await stream.send_all(_sent(session.tls_started()))
                    break
                if isinstance(action, Finished):
                    return action.outcome
                await stream.send_all(_sent(action))
    finally:
        await trio.aclose_forcefully(stream)


def _sent(action: SendBytes | StartTls | Finished) -> bytes:
    assert isinstance(action, SendBytes), action
    return action.data
