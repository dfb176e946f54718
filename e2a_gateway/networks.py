"""The network a client address belongs to, for limits that count clients by network rather
than by address: one IPv6 client usually holds a whole /64, so counted per address it would
never meet a per-address limit. Pure, no I/O."""

from __future__ import annotations

import functools
import ipaddress


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
