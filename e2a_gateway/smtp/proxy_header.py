"""Sans-IO reader of the PROXY protocol header (HAProxy's proxy-protocol.txt, versions 1 and 2).

A layer-4 load balancer (HAProxy's `send-proxy`, an AWS Network Load Balancer, Fly.io's
`proxy_proto`) opens its own connection to the gateway and writes this header before the
client's first byte, naming the client it accepted. `parse_proxy_header` takes the bytes read
so far and says whether they begin with a whole header (and whom it names), need more bytes,
or cannot be one. It must not do I/O nor decide whose header to believe: the listener
(`server.py`) reads one only from the peers in `smtp.proxy_trusted_cidrs`.

Choices:

* Version 1 is one text line of at most 107 octets with its CRLF, `TCP4`, `TCP6` or `UNKNOWN`;
  version 2 a binary block after its 12-octet signature, of at most `V2_MAX_BYTES` in all
  (its length field would allow 64 KiB; balancers send a few hundred at most). Anything else
  that starts like a header (a bad address, port, family, command or version, a bare LF) is
  an error: the connection is closed.
* Input that does not start like either signature is no header at all (`NO_HEADER`): a peer
  of the balancer's network talking SMTP directly, as upstream e2a allows.
* `LOCAL` (version 2), `UNKNOWN` (version 1), and the `AF_UNSPEC` and `AF_UNIX` families name no
  client: the connection's own peer is the client (a balancer's health check).
* Version 2's TLVs are skipped, unread and unchecked (CRC32C included): nothing here uses them.
* An IPv4 address written in IPv6 (`::ffff:192.0.2.1`) is the IPv4 address; an IPv6 address
  with a zone (`%eth0`) is refused, since no client on the Internet has one.
"""

from __future__ import annotations

import dataclasses
import ipaddress

__all__ = [
    "NO_HEADER",
    "V1_MAX_BYTES",
    "V2_MAX_BYTES",
    "ProxyHeader",
    "ProxyHeaderError",
    "parse_proxy_header",
]

V1_SIGNATURE = b"PROXY "
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_MAX_BYTES = 107
"""The longest version 1 line, CRLF included (the specification's own bound)."""
V2_MAX_BYTES = 4096
"""The longest version 2 header accepted, its 16 fixed octets included."""

_V2_FIXED_BYTES = 16
_V2_LOCAL, _V2_PROXY = 0x0, 0x1
_AF_UNSPEC, _AF_INET, _AF_INET6, _AF_UNIX = 0x0, 0x1, 0x2, 0x3
_V2_ADDRESS_BYTES = {_AF_UNSPEC: 0, _AF_INET: 12, _AF_INET6: 36, _AF_UNIX: 216}
"""Octets of the address block each family takes (both addresses and ports)."""
_LAST_TRANSPORT = 0x2  # UNSPEC, STREAM, DGRAM


@dataclasses.dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A whole header at the start of the input."""

    length: int
    """Octets the header takes; what follows it is the client's (0: no header at all)."""
    client: str | None
    """The client's IP address as the balancer saw it; None when the header names none (the
    connection's own peer is the client)."""


NO_HEADER = ProxyHeader(0, None)
"""The input does not start with a PROXY header."""


class ProxyHeaderError(ValueError):
    """The input starts like a PROXY header but is none; the message says why, without the
    input's bytes."""


def parse_proxy_header(data: bytes | bytearray) -> ProxyHeader | None:
    """The header `data` starts with; None while more bytes are needed to tell; `NO_HEADER`
    when `data` starts with something else. Raise ProxyHeaderError for a malformed or
    over-long header (the check can be made before the input is complete: an over-long one
    is refused as soon as its length shows)."""
    if not data:
        return None
    for signature, parse in ((V1_SIGNATURE, _parse_v1), (V2_SIGNATURE, _parse_v2)):
        start = bytes(data[: len(signature)])
        if start == signature:
            return parse(data)
        if signature.startswith(start):
            return None
    return NO_HEADER


def _parse_v1(data: bytes | bytearray) -> ProxyHeader | None:
    end = data.find(b"\n", 0, V1_MAX_BYTES)
    if end == -1:
        if len(data) >= V1_MAX_BYTES:
            raise ProxyHeaderError(f"PROXY v1 line longer than {V1_MAX_BYTES} octets")
        return None
    if data[end - 1 : end] != b"\r":
        raise ProxyHeaderError("PROXY v1 line ends in a bare LF")
    fields = bytes(data[len(V1_SIGNATURE) : end - 1]).split(b" ")
    if fields[0] == b"UNKNOWN":
        return ProxyHeader(end + 1, None)
    if fields[0] not in (b"TCP4", b"TCP6"):
        raise ProxyHeaderError("PROXY v1 protocol is not TCP4, TCP6 or UNKNOWN")
    version = 4 if fields[0] == b"TCP4" else 6
    if len(fields) != 5:
        raise ProxyHeaderError("PROXY v1 line does not have two addresses and two ports")
    addresses = []
    for field in fields[1:3]:
        try:
            address = ipaddress.ip_address(field.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            address = None
        if address is None or address.version != version:
            raise ProxyHeaderError(f"PROXY v1 TCP{version} address is no IPv{version} address")
        addresses.append(address)
    for port in fields[3:5]:
        if not (port.isdigit() and len(port) <= 5 and int(port) <= 65535):
            raise ProxyHeaderError("PROXY v1 port is not a number from 0 to 65535")
    return ProxyHeader(end + 1, _client(addresses[0]))


def _parse_v2(data: bytes | bytearray) -> ProxyHeader | None:
    if len(data) < _V2_FIXED_BYTES:
        return None
    version_command, family_transport = data[12], data[13]
    length = _V2_FIXED_BYTES + int.from_bytes(data[14:16], "big")
    if version_command >> 4 != 2:
        raise ProxyHeaderError(f"PROXY v2 header of version {version_command >> 4}")
    command = version_command & 0xF
    if command not in (_V2_LOCAL, _V2_PROXY):
        raise ProxyHeaderError(f"PROXY v2 command {command} is neither LOCAL nor PROXY")
    if length > V2_MAX_BYTES:
        raise ProxyHeaderError(f"PROXY v2 header of {length} octets, over {V2_MAX_BYTES}")
    family, transport = family_transport >> 4, family_transport & 0xF
    if command == _V2_PROXY:
        # LOCAL's family is to be ignored (the specification): only PROXY's is checked.
        needed = _V2_ADDRESS_BYTES.get(family)
        if needed is None or transport > _LAST_TRANSPORT:
            raise ProxyHeaderError(
                f"PROXY v2 address family {family} or transport {transport} is unknown"
            )
        if length - _V2_FIXED_BYTES < needed:
            raise ProxyHeaderError("PROXY v2 header too short for its addresses")
    if len(data) < length:
        return None
    if command == _V2_LOCAL or family in (_AF_UNSPEC, _AF_UNIX):
        return ProxyHeader(length, None)
    source = bytes(data[16:20]) if family == _AF_INET else bytes(data[16:32])
    return ProxyHeader(length, _client(ipaddress.ip_address(source)))


def _client(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """`address` as the gateway writes a client's address: an IPv4-mapped one as IPv4."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id is not None:
            raise ProxyHeaderError("PROXY header names an IPv6 address with a zone")
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
    return str(address)
