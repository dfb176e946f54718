"""A small authoritative DNS server for tests: serves a zone dict on loopback, UDP and TCP.

The zone has the shape `FixtureResolver.from_zone` takes, so one dict can drive both. It
answers every name it knows (following CNAMEs inside the zone), NXDOMAIN for the rest, and
sets TC on UDP answers too large for the client so the client retries over TCP. Names given
as `servfail` are answered SERVFAIL, and queries for names given as `silent` are dropped, as a
broken or stalled nameserver of a sender's domain would. For tests only: no recursion, no
wildcards, no DNSSEC.
"""

from __future__ import annotations

import socket
from collections.abc import Collection
from dataclasses import dataclass
from functools import partial

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rrset
import trio

from e2a_gateway.mailauth.resolver import Zone, ZoneEntry

TTL = 300
_MAX_CNAME_CHAIN = 8


@dataclass(frozen=True)
class _Zone:
    entries: dict[str, ZoneEntry]
    servfail: frozenset[str] = frozenset()
    silent: frozenset[str] = frozenset()


def _names(names: Collection[str]) -> frozenset[str]:
    return frozenset(name.lower().rstrip(".") for name in names)


async def serve_dns(
    zone: Zone,
    *,
    host: str = "127.0.0.1",
    servfail: Collection[str] = (),
    silent: Collection[str] = (),
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `zone` on `host` (IPv4 or IPv6) at an OS-chosen port, UDP and TCP, until cancelled;
    SERVFAIL for the names in `servfail`, no answer at all for those in `silent`.

    `await nursery.start(serve_dns, zone)` returns the port.
    """
    entries = _Zone(
        {name.lower().rstrip("."): entry for name, entry in zone.items()},
        _names(servfail),
        _names(silent),
    )
    udp, tcp = await _bind_pair(host)
    with udp, tcp:
        tcp.listen()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_serve_udp, udp, entries)
            nursery.start_soon(
                partial(
                    trio.serve_listeners,
                    partial(_serve_tcp, entries),
                    [trio.SocketListener(tcp)],
                )
            )
            task_status.started(udp.getsockname()[1])


def answer(query_wire: bytes, zone: _Zone, *, max_size: int = 65535) -> bytes | None:
    """The wire-format response to one query (None: none is sent); TC set when it would
    exceed `max_size`."""
    query = dns.message.from_wire(query_wire)
    response = dns.message.make_response(query)
    response.flags |= dns.flags.AA
    question = query.question[0]
    name = question.name.to_text(omit_final_dot=True).lower()
    entries = zone.entries
    if name in zone.silent:
        return None
    if name in zone.servfail:
        response.flags &= ~dns.flags.AA
        response.set_rcode(dns.rcode.SERVFAIL)
        return response.to_wire()
    if name not in entries:
        response.set_rcode(dns.rcode.NXDOMAIN)
    for _ in range(_MAX_CNAME_CHAIN):
        entry = entries.get(name, ZoneEntry())
        rdatas = _rdatas(entry, question.rdtype)
        owner = dns.name.from_text(name)
        if rdatas:
            response.answer.append(dns.rrset.from_rdata_list(owner, TTL, rdatas))
        if rdatas or "CNAME" not in entry:
            break
        target = entry["CNAME"].lower().rstrip(".")
        response.answer.append(dns.rrset.from_text(owner, TTL, "IN", "CNAME", target + "."))
        name = target
    try:
        return response.to_wire(max_size=max_size)
    except dns.exception.TooBig:
        truncated = dns.message.make_response(query)
        truncated.flags |= dns.flags.AA | dns.flags.TC
        return truncated.to_wire()


def _rdatas(entry: ZoneEntry, rdtype: dns.rdatatype.RdataType) -> list[dns.rdata.Rdata]:
    IN, kind = dns.rdataclass.IN, rdtype
    if rdtype == dns.rdatatype.TXT:
        return [dns.rdtypes.ANY.TXT.TXT(IN, kind, _chunks(text)) for text in entry.get("TXT", [])]
    if rdtype == dns.rdatatype.A:
        return [dns.rdata.from_text(IN, kind, address) for address in entry.get("A", [])]
    if rdtype == dns.rdatatype.AAAA:
        return [dns.rdata.from_text(IN, kind, address) for address in entry.get("AAAA", [])]
    if rdtype == dns.rdatatype.MX:
        return [
            dns.rdata.from_text(IN, kind, f"{pref} {host}.") for pref, host in entry.get("MX", [])
        ]
    if rdtype == dns.rdatatype.PTR:
        return [dns.rdata.from_text(IN, kind, f"{target}.") for target in entry.get("PTR", [])]
    return []


def _chunks(text: str) -> list[bytes]:
    """A TXT string as the <=255-byte character-strings DNS carries."""
    data = text.encode("utf-8")
    return [data[start : start + 255] for start in range(0, len(data), 255)] or [b""]


async def _bind_pair(host: str) -> tuple[trio.socket.SocketType, trio.socket.SocketType]:
    """A UDP and a TCP socket bound to the same free port (retrying if TCP's is taken)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(10):
        udp = trio.socket.socket(family, socket.SOCK_DGRAM)
        await udp.bind((host, 0))
        tcp = trio.socket.socket(family, socket.SOCK_STREAM)
        try:
            await tcp.bind((host, udp.getsockname()[1]))
        except OSError:
            udp.close()
            tcp.close()
            continue
        return udp, tcp
    raise OSError("no port free for both UDP and TCP")


async def _serve_udp(sock: trio.socket.SocketType, zone: _Zone) -> None:
    while True:
        data, peer = await sock.recvfrom(65535)
        query = dns.message.from_wire(data)
        limit = query.payload if query.edns >= 0 else 512
        response = answer(data, zone, max_size=max(limit, 512))
        if response is not None:
            await sock.sendto(response, peer)


async def _serve_tcp(zone: _Zone, stream: trio.SocketStream) -> None:
    async with stream:
        buffer = b""
        while True:
            chunk = await stream.receive_some()
            if not chunk:
                return
            buffer += chunk
            while len(buffer) >= 2 and len(buffer) >= 2 + int.from_bytes(buffer[:2], "big"):
                size = int.from_bytes(buffer[:2], "big")
                query, buffer = buffer[2 : 2 + size], buffer[2 + size :]
                response = answer(query, zone)
                if response is not None:
                    await stream.send_all(len(response).to_bytes(2, "big") + response)
