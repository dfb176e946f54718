"""The trace fields (RFC 5321 section 4.4) prepended to every message the gateway stores:
`Return-Path:` with the envelope sender and a `Received:` line for the hop into e2a.

Building them is pure (the caller supplies names, ids and time); `confirmed_host_name` asks
the injected resolver and blocks, so callers run it in a worker thread with a deadline, and
keep its answers for a while in `ClientNames`.
"""

from __future__ import annotations

import functools
import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime

from e2a_gateway.addresses import a_label_domain
from e2a_gateway.mailauth.dns_answers import Resolver


@dataclass(frozen=True)
class Hop:
    """What the Received line says about one SMTP transaction.

    `client_name` is the client's forward-confirmed reverse DNS name, None when it has none;
    `recipient` is named in the `for` clause only when the message has exactly one.
    """

    helo: str
    client_ip: str
    client_name: str | None
    hostname: str
    protocol: str
    queue_id: str
    recipient: str | None
    when: float


def transmission_type(*, extended: bool, tls: bool, smtputf8: bool) -> str:
    """The WITH keyword: SMTP after HELO, ESMTP after EHLO (RFC 3848), UTF8SMTP for a
    transaction that used SMTPUTF8 (RFC 6531 section 3.7.3), with `S` appended after STARTTLS.
    Nothing authenticates on the MX port, so the `A` forms never apply."""
    if not extended:
        return "SMTP"
    return ("UTF8SMTP" if smtputf8 else "ESMTP") + ("S" if tls else "")


def client_address(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The client's IP address (an IPv4-mapped IPv6 address as the IPv4 one it maps, a
    link-local one without the zone the socket names it with, `fe80::1%eth0`: that is this
    host's interface, no part of the client's address), None when `ip` is not an address."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.scope_id is not None:
            return ipaddress.IPv6Address(int(address))
    return address


def address_literal(ip: str) -> str:
    """`[192.0.2.1]` or `[IPv6:2001:db8::1]` (RFC 5321 section 4.1.3)."""
    address = client_address(ip)
    if address is None:
        return "[unknown]"
    return f"[IPv6:{address.compressed}]" if address.version == 6 else f"[{address}]"


def _from_domain(helo: str, client_ip: str) -> str:
    """The HELO name when it is a domain or an address literal, in A-label form when it is an
    internationalised name; else the client's address literal (the HELO stays in the log).
    An address literal holds an address alone: Python reads anything after `%` as an IPv6
    scope, which RFC 5321 has not, and would let the client write clauses into our line."""
    if helo.startswith("[") and helo.endswith("]"):
        literal = helo[1:-1]
        if literal[:5].lower() == "ipv6:":
            literal = literal[5:]
        try:
            address = ipaddress.ip_address(literal)
        except ValueError:
            return address_literal(client_ip)
        if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
            return address_literal(client_ip)
        return helo
    try:
        ascii_form = a_label_domain(helo)
    except ValueError:
        return address_literal(client_ip)
    return helo if helo.isascii() else ascii_form


def received_field(hop: Hop) -> bytes:
    """`Received: from <helo> (<name> [<ip>]) by <host> (e2a) with <type> id <id>
    [for <recipient>]; <date>`, folded before each clause."""
    tcp_info = address_literal(hop.client_ip)
    if hop.client_name:
        tcp_info = f"{hop.client_name} {tcp_info}"
    date = _date(hop.when)
    clauses = [
        f"Received: from {_from_domain(hop.helo, hop.client_ip)} ({tcp_info})",
        f"by {hop.hostname} (e2a) with {hop.protocol} id {hop.queue_id}",
    ]
    if hop.recipient:
        clauses.append(f"for <{hop.recipient}>")
    return ("\r\n\t".join(clauses) + f"; {date}\r\n").encode()


def local_received_field(
    hostname: str, sender: str, queue_id: str, recipient: str | None, when: float
) -> bytes:
    """`Received: by <host> (e2a local delivery from <sender>) id <id> [for <recipient>];
    <date>` for mail one agent of this gateway sent another: it crossed no network, so the line
    has no `from` and no `with` clause (RFC 5322 section 3.6.7 allows any received-token)."""
    clauses = [f"Received: by {hostname} (e2a local delivery from {sender}) id {queue_id}"]
    if recipient:
        clauses.append(f"for <{recipient}>")
    date = _date(when)
    return ("\r\n\t".join(clauses) + f"; {date}\r\n").encode()


def _date(when: float) -> str:
    """The RFC 5322 date-time of Unix time `when` (whole seconds, UTC)."""
    return _date_of_second(int(when))


@functools.lru_cache(maxsize=64)
def _date_of_second(second: int) -> str:
    """`_date`, remembered: a busy gateway writes the same second into many Received lines."""
    return format_datetime(datetime.fromtimestamp(second, UTC))


def return_path_field(sender: str) -> bytes:
    """`Return-Path: <sender>` (`<>` for the null sender), as the final delivery adds it."""
    return f"Return-Path: <{sender}>\r\n".encode()


def trace_fields(sender: str, hop: Hop) -> bytes:
    """Return-Path, then Received: what goes on top of the stored message."""
    return return_path_field(sender) + received_field(hop)


MAX_PTR_NAMES = 10
"""At most this many PTR names are checked (as SPF's `ptr` mechanism bounds them)."""


NAME_SECONDS = 300.0
"""How long a client's name (or that it has none) is kept before DNS is asked again."""
NAME_CAPACITY = 10_000
"""At most this many clients' names are kept; the least recently used goes first."""


def confirmed_host_name(resolver: Resolver, ip: str) -> str | None:
    """The name the client's address points back to (PTR) whose own A or AAAA records hold
    that address again — forward-confirmed reverse DNS — or None. Blocks on DNS; raises
    DnsTemporaryError when DNS could not answer."""
    address = client_address(ip)
    if address is None:
        return None
    for name in resolver.ptr(address.reverse_pointer)[:MAX_PTR_NAMES]:
        name = name.rstrip(".").lower()
        if not _is_host_name(name):
            continue
        found = resolver.a(name) if address.version == 4 else resolver.aaaa(name)
        if any(client_address(candidate) == address for candidate in found):
            return name
    return None


@dataclass(frozen=True)
class KnownName:
    """A client's confirmed name (None: it has none), known until `expires`."""

    name: str | None
    expires: float


class ClientNames:
    """Recent clients' confirmed names, so that a busy sender's messages do not each wait
    for a DNS lookup in a worker thread. Not thread-safe: use it from the event loop only."""

    def __init__(
        self,
        *,
        seconds: float = NAME_SECONDS,
        capacity: int = NAME_CAPACITY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._seconds = seconds
        self._capacity = capacity
        self._clock = clock
        self._names: OrderedDict[str, KnownName] = OrderedDict()

    def get(self, ip: str) -> KnownName | None:
        """What is known of the client at `ip`, if it is still fresh."""
        known = self._names.get(ip)
        if known is None:
            return None
        if known.expires <= self._clock():
            del self._names[ip]
            return None
        self._names.move_to_end(ip)
        return known

    def remember(self, ip: str, name: str | None) -> None:
        """Keep the client's `name` (None: it has none)."""
        self._names[ip] = KnownName(name, self._clock() + self._seconds)
        self._names.move_to_end(ip)
        while len(self._names) > self._capacity:
            self._names.popitem(last=False)


def _is_host_name(name: str) -> bool:
    """True for a name of LDH labels (what a Received line may carry unquoted)."""
    try:
        return name.isascii() and a_label_domain(name) == name
    except ValueError:
        return False
