"""What a DNS lookup answers: the `Resolver` protocol every resolver meets, the MX record
shape, and the error for DNS that could not answer. No lookups here, and no dnspython.
"""

from __future__ import annotations

from typing import Protocol

MxRecord = tuple[int, str]
"""An MX record: (preference, exchange host name without the trailing dot)."""


class DnsTemporaryError(Exception):
    """DNS could not answer (timeout, SERVFAIL, no nameserver); the answer may exist."""


class Resolver(Protocol):
    """What the gateway asks of DNS. Each method answers [] when the name has no such record."""

    def txt(self, name: str) -> list[str]:
        """The TXT strings at `name` (each record's chunks joined); [] when there are none."""
        ...

    def a(self, name: str) -> list[str]:
        """The IPv4 addresses at `name`, dotted quads."""
        ...

    def aaaa(self, name: str) -> list[str]:
        """The IPv6 addresses at `name`, in text form."""
        ...

    def mx(self, name: str) -> list[MxRecord]:
        """The MX records at `name` as (preference, exchange)."""
        ...

    def ptr(self, name: str) -> list[str]:
        """The PTR targets at `name` (a reverse name such as `4.3.2.1.in-addr.arpa`)."""
        ...
