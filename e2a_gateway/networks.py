"""Client addresses: the network one belongs to, for limits that count clients by network
rather than by address (one IPv6 client usually holds a whole /64, so counted per address it
would never meet a per-address limit), and the client behind trusted reverse proxies. Pure,
no I/O."""

from __future__ import annotations

import collections
import functools
import ipaddress
from collections.abc import Iterable, Sequence

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def release(counts: collections.Counter[str], key: str) -> None:
    """One connection fewer for the client `key` in `counts`, forgetting a key that has none
    left (a client that came once holds no entry for good)."""
    counts[key] -= 1
    if not counts[key]:
        del counts[key]


@functools.lru_cache(maxsize=4096)
def network_of(peer: str, ipv4_prefix: int, ipv6_prefix: int) -> str:
    """The network of `peer` under these prefix lengths, e.g. `192.0.2.0/24`, `2001:db8::/64`.

    An IPv4 address mapped into IPv6 (a dual-stack listener) counts as IPv4, and a zone index
    is dropped. A peer that is no IP address is a network of its own. Remembered: clients
    come back, and parsing costs more than a look-up."""
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return peer
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is None:
            unscoped = ipaddress.IPv6Address(int(address))
            return str(ipaddress.IPv6Network((unscoped, ipv6_prefix), strict=False))
        address = address.ipv4_mapped
    return str(ipaddress.IPv4Network((address, ipv4_prefix), strict=False))


def _address(text: str) -> str | None:
    """`text` as a canonical IP address, also when written `a.b.c.d:port` or `[v6]:port` as
    some proxies do, and an IPv4 address as itself when written in IPv6 (`::ffff:a.b.c.d`, as
    a dual-stack listener sees IPv4 peers); None when it is no address."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def _trusted(address: str, networks: Sequence[IpNetwork]) -> bool:
    ip = ipaddress.ip_address(address)
    return any(ip in network for network in networks)


def is_loopback(address: str) -> bool:
    """Whether `address` is this machine's loopback (`127.0.0.1`, `::1`, also as a dual-stack
    listener sees the IPv4 one: `::ffff:127.0.0.1`); False for anything that is no address."""
    canonical = _address(address)
    return canonical is not None and ipaddress.ip_address(canonical).is_loopback


def is_trusted_proxy(peer: str, trusted: Sequence[IpNetwork]) -> bool:
    """Whether the connection's peer address `peer` is one of the `trusted` proxies."""
    address = _address(peer)
    return address is not None and _trusted(address, trusted)


def client_address(peer: str, forwarded_for: Iterable[str], trusted: Sequence[IpNetwork]) -> str:
    """The address of the client: `peer` unless it is a trusted proxy, in which case the
    address that proxy reports (the last `X-Forwarded-For` entry), and so on while the hop
    reached is trusted too. An entry that is no address ends the walk at the proxy before it."""
    address = _address(peer)
    if address is None:
        return peer
    hops = [entry for header in forwarded_for for entry in header.split(",")]
    while hops and _trusted(address, trusted):
        reported = _address(hops.pop())
        if reported is None:
            break
        address = reported
    return address
