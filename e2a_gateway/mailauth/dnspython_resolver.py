"""`DnsResolver`'s lookups over dnspython: imported on the first lookup, not at start-up."""

from __future__ import annotations

from typing import TypeVar

import dns.exception
import dns.name
import dns.nameserver
import dns.rdtypes.ANY.MX
import dns.rdtypes.ANY.PTR
import dns.rdtypes.ANY.TXT
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.resolver

from e2a_gateway.mailauth.dns_answers import DnsTemporaryError, MxRecord

_T = TypeVar("_T")

_EDNS_PAYLOAD = 1232


class DnspythonResolver:
    """The Resolver over dnspython that `DnsResolver` builds on its first lookup, for
    nameservers given as (address, port); none means the system's resolv.conf."""

    def __init__(self, nameservers: list[tuple[str, int]], timeout: float, *, cache: bool = True):
        self._resolver = dns.resolver.Resolver(configure=not nameservers)
        if nameservers:
            self._resolver.nameservers = [
                dns.nameserver.Do53Nameserver(address, port) for address, port in nameservers
            ]
        # `lifetime` bounds the whole lookup; each nameserver gets a fair share of it to answer
        # before the next is tried.
        self._resolver.lifetime = timeout
        self._resolver.timeout = timeout / max(1, len(self._resolver.nameservers))
        # EDNS0 with the DNS Flag Day 2020 payload: large DKIM keys fit without a TCP retry.
        self._resolver.use_edns(0, 0, _EDNS_PAYLOAD)
        if cache:
            self._resolver.cache = dns.resolver.LRUCache()

    def txt(self, name: str) -> list[str]:
        """TXT strings at `name`, each record's chunks joined, decoded as UTF-8."""
        return [
            b"".join(record.strings).decode("utf-8", "replace")
            for record in self._records(name, "TXT", dns.rdtypes.ANY.TXT.TXT)
        ]

    def a(self, name: str) -> list[str]:
        """IPv4 addresses at `name`."""
        return [record.address for record in self._records(name, "A", dns.rdtypes.IN.A.A)]

    def aaaa(self, name: str) -> list[str]:
        """IPv6 addresses at `name`."""
        return [record.address for record in self._records(name, "AAAA", dns.rdtypes.IN.AAAA.AAAA)]

    def mx(self, name: str) -> list[MxRecord]:
        """MX records at `name`."""
        return [
            (record.preference, record.exchange.to_text(omit_final_dot=True))
            for record in self._records(name, "MX", dns.rdtypes.ANY.MX.MX)
        ]

    def ptr(self, name: str) -> list[str]:
        """PTR targets at `name`."""
        return [
            record.target.to_text(omit_final_dot=True)
            for record in self._records(name, "PTR", dns.rdtypes.ANY.PTR.PTR)
        ]

    def _records(self, name: str, rdtype: str, kind: type[_T]) -> list[_T]:
        """The answer's records of `rdtype` (CNAMEs followed by dnspython); [] for none."""
        try:
            qname = dns.name.from_text(name)
            answer = self._resolver.resolve(qname, rdtype, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except (
            dns.name.EmptyLabel,
            dns.name.LabelTooLong,
            dns.name.NameTooLong,
            dns.name.BadEscape,
            dns.name.IDNAException,
        ):
            return []  # a name that cannot be written in DNS has no records
        except dns.exception.DNSException as exc:
            raise DnsTemporaryError(f"{rdtype} {name}: {exc}") from exc
        return [record for record in answer if isinstance(record, kind)]
