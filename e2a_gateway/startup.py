"""What a whole gateway process does to start: the SMTP listener's options checked from
settings (a StartupError says what to fix), and the libraries the first mail needs loaded
before the heap is settled. `e2a serve` and its SMTP acceptor processes share these.
"""

from __future__ import annotations

import gc
import importlib
import ssl

import trio

from e2a_gateway.config import Settings
from e2a_gateway.mailauth.dkim import dkimpy
from e2a_gateway.mailauth.dmarc import load_public_suffix_list
from e2a_gateway.mailauth.spf import pyspf
from e2a_gateway.outbound.relay import tls_context
from e2a_gateway.smtp.message_memory import memory_for_message
from e2a_gateway.smtp.protocol import SessionLimits, check_hostname
from e2a_gateway.smtp.server import ListenerLimits, TlsFileError, server_tls_context


class StartupError(Exception):
    """The gateway cannot start; the message is one line saying why and what to do."""


TLS_SETTINGS = {"certificate": "smtp.tls_cert", "private key": "smtp.tls_key"}
"""The setting that names each STARTTLS file (`TlsFileError.role`)."""


def smtp_options(
    settings: Settings,
) -> tuple[SessionLimits, ListenerLimits, ssl.SSLContext | None]:
    """The SMTP listener's limits and STARTTLS context from settings, checked before start."""
    smtp = settings.smtp
    try:
        check_hostname(smtp.hostname)
    except ValueError as exc:
        raise StartupError(
            f"smtp.hostname: {exc} — set smtp.hostname to this host's name"
        ) from None
    tls: ssl.SSLContext | None = None
    if (smtp.tls_cert is None) != (smtp.tls_key is None):
        missing = "smtp.tls_key" if smtp.tls_key is None else "smtp.tls_cert"
        raise StartupError(f"{missing}: STARTTLS needs both smtp.tls_cert and smtp.tls_key")
    if smtp.tls_cert is not None and smtp.tls_key is not None:
        try:
            tls = server_tls_context(smtp.tls_cert, smtp.tls_key)
        except TlsFileError as exc:
            setting = TLS_SETTINGS.get(exc.role or "", "smtp.tls_cert/smtp.tls_key")
            raise StartupError(f"{setting}: {exc}") from None
    check_message_memory(smtp.max_message_memory_bytes, smtp.max_message_bytes)
    limits = SessionLimits(
        max_message_bytes=smtp.max_message_bytes,
        max_recipients=smtp.max_recipients,
        max_line_length=smtp.max_line_length,
        max_command_length=smtp.max_command_length,
        max_errors=smtp.max_errors,
        errors_before_delay=smtp.errors_before_delay,
        error_delay=smtp.error_delay_seconds,
        max_junk_commands=smtp.max_junk_commands,
        max_header_fields=smtp.max_header_fields,
        max_header_bytes=smtp.max_header_bytes,
        max_header_continuation_lines=smtp.max_header_continuation_lines,
    )
    listener_limits = ListenerLimits(
        max_sessions=smtp.max_sessions,
        max_sessions_per_ip=smtp.max_sessions_per_ip,
        max_sessions_per_network=smtp.max_sessions_per_network,
        ipv4_network_prefix=smtp.ipv4_network_prefix,
        ipv6_network_prefix=smtp.ipv6_network_prefix,
        idle_timeout=smtp.idle_timeout_seconds,
        command_timeout=smtp.command_timeout_seconds,
        data_timeout=smtp.data_timeout_seconds,
        shutdown_grace_period=smtp.shutdown_grace_seconds,
        max_message_memory=smtp.max_message_memory_bytes,
    )
    return limits, listener_limits, tls


def check_message_memory(memory: int, max_message_bytes: int) -> None:
    """StartupError unless an SMTP process's memory for messages takes one message of the
    largest size: such a message would be answered 452 4.3.1 every time the client retried,
    until it gave up days later."""
    needed = memory_for_message(max_message_bytes)
    if memory < needed:
        raise StartupError(
            f"smtp.max_message_memory_bytes: {memory} cannot hold one message of "
            f"smtp.max_message_bytes ({max_message_bytes}), which takes up to {needed} octets "
            f"while it is read — set it to at least {needed}, or lower smtp.max_message_bytes"
        )


def check_dkim_pair(settings: Settings) -> None:
    """StartupError when only one of `dkim.selector` and `dkim.private_key_path` is set (mail
    would go out unsigned while the operator believes it signed), or only one of
    `dkim.next_selector` and `dkim.next_private_key_path`, or a next key without a signing one
    or under the signing key's selector."""
    dkim = settings.dkim
    if bool(dkim.selector) != (dkim.private_key_path is not None):
        missing = "dkim.selector" if not dkim.selector else "dkim.private_key_path"
        raise StartupError(
            f"{missing}: DKIM signing needs both dkim.selector and dkim.private_key_path — set "
            "the other one too, or neither to send unsigned"
        )
    if not dkim.next_selector and dkim.next_private_key_path is None:
        return
    if bool(dkim.next_selector) != (dkim.next_private_key_path is not None):
        missing = "dkim.next_selector" if not dkim.next_selector else "dkim.next_private_key_path"
        raise StartupError(
            f"{missing}: the next DKIM key needs both dkim.next_selector and "
            "dkim.next_private_key_path — set the other one too, or neither"
        )
    if not dkim.selector:
        raise StartupError(
            "dkim.next_selector: a next key is for rotating the signing key, and the gateway "
            "signs with none — set dkim.selector and dkim.private_key_path to these values "
            "instead, and leave the next_ settings unset"
        )
    if (dkim.next_selector or "").lower() == dkim.selector.lower():
        raise StartupError(
            f"dkim.next_selector: {dkim.next_selector!r} is the signing key's selector — give "
            "the next key a new one (e.g. the month, e2a202607), so that both records can be "
            "published side by side"
        )


def check_relay_trust(settings: Settings) -> None:
    """StartupError when `outbound_smtp.ca_file` is set but cannot be loaded: every hand-off
    to the relay would fail on it, retried for a day, instead of the start saying so."""
    relay = settings.outbound_smtp
    if relay.ca_file is None:
        return
    try:
        tls_context(relay)
    except OSError as exc:  # a missing file, or one without PEM certificates (ssl.SSLError)
        raise StartupError(
            f"outbound_smtp.ca_file: cannot load {relay.ca_file}: {exc.strerror or exc} — set it "
            "to a PEM bundle of the CA certificates the relay's certificate chains to, or "
            "leave it unset to trust the system CAs"
        ) from None


YOUNG_COLLECTION_THRESHOLD = 20_000
"""Allocations between two collections of the youngest generation (Python's default: 700)."""


def settle_heap() -> None:
    """Once start-up has loaded everything: keep what exists now (modules, settings, the Public
    Suffix List, never garbage) out of the cycle collector's sight, and collect the youngest
    generation every YOUNG_COLLECTION_THRESHOLD allocations. A mail or a request allocates
    hundreds of objects that reference counting frees; with the defaults the collector ran
    every few messages and walked the whole heap, about 7 % of the CPU time per message
    (bench/smtp_ingest.py)."""
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, middle, oldest)


async def load_then_settle() -> None:
    """`load_for_first_mail` in a worker thread, then `settle_heap` (for a whole process:
    `e2a serve` and its SMTP acceptors, not a gateway inside another program)."""
    await trio.to_thread.run_sync(load_for_first_mail, abandon_on_cancel=True)
    settle_heap()


def load_for_first_mail() -> None:
    """Load what checking mail needs and answering HTTP does not: the Public Suffix List
    (about 0.4 s of CPU to parse) and the mail-authentication libraries (dnspython, pyspf,
    dkimpy: about 0.1 s to import). Each would otherwise load on first use."""
    load_public_suffix_list()
    importlib.import_module("e2a_gateway.mailauth.dnspython_resolver")
    pyspf()
    dkimpy()
