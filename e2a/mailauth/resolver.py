"""The one door to DNS: a `Resolver` protocol, a dnspython implementation and a fixture one.

Lookups are synchronous (pyspf and dkimpy call them from their own code); trio callers use
`lookup_txt`, which runs the lookup in a worker thread. Missing names answer an empty list;
trouble reaching DNS raises DnsTemporaryError so callers can report `temperror`. Nothing in
the gateway may query DNS any other way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol, TypedDict, TypeVar

import dns.exception
import dns.name
import dns.nameserver
import dns.rdtypes.ANY.MX
import dns.rdtypes.ANY.PTR
import dns.rdtypes.ANY.TXT
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.resolver
import trio

from e2a.config import DnsSettings

MxRecord = tuple[int, str]
"""An MX record: (preference, exchange host name without the trailing dot)."""

_T = TypeVar("_T")

_EDNS_PAYLOAD = 1232

# A chain of CNAMEs longer than this is treated like a loop (no data), as resolvers do.
_MAX_CNAME_CHAIN = 8


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


class DnsResolver:
    """Resolver backed by dnspython, with its own cache and the configured nameservers.

    Nameservers are `host`, `host:port`, `[v6]:port` or a bare IPv6 address, tried in order;
    none means the system's resolv.conf. `timeout` bounds each lookup as a whole, retries
    and failover included.
    """

    def __init__(self, nameservers: list[str], timeout: float, *, cache: bool = True):
        self._resolver = dns.resolver.Resolver(configure=not nameservers)
        if nameservers:
            self._resolver.nameservers = [
                dns.nameserver.Do53Nameserver(_host(server), _port(server))
                for server in nameservers
            ]
        # `lifetime` bounds the whole lookup; each nameserver gets a fair share of it to answer
        # before the next is tried.
        self._resolver.lifetime = timeout
        self._resolver.timeout = timeout / max(1, len(self._resolver.nameservers))
        # EDNS0 with the DNS Flag Day 2020 payload: large DKIM keys fit without a TCP retry.
        self._resolver.use_edns(0, 0, _EDNS_PAYLOAD)
        if cache:
            self._resolver.cache = dns.resolver.LRUCache()

    @classmethod
    def from_settings(cls, settings: DnsSettings) -> DnsResolver:
        """Build from the `dns.*` settings."""
        return cls(settings.nameservers, settings.timeout_seconds)

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


class ZoneEntry(TypedDict, total=False):
    """The records at one name of a fixture zone. CNAME is a single target name."""

    TXT: list[str]
    A: list[str]
    AAAA: list[str]
    MX: list[MxRecord]
    PTR: list[str]
    CNAME: str


Zone = Mapping[str, ZoneEntry]
"""Zone data as plain dicts: `{"example.com": {"TXT": [...], "MX": [(10, "mx.example.com")]}}`."""


class FixtureResolver:
    """Resolver answering from an in-memory zone, for tests. Names are case-insensitive.

    CNAMEs are followed as a recursive resolver would; a loop or an over-long chain answers
    no data. Names in `failing`, and (name, type) pairs in `failing_lookups`, raise
    DnsTemporaryError as a timing-out nameserver would.
    """

    def __init__(self, txt_records: Mapping[str, list[str]] | None = None):
        self._zone: dict[str, ZoneEntry] = {}
        self.failing: set[str] = set()
        self.failing_lookups: set[tuple[str, str]] = set()
        for name, values in (txt_records or {}).items():
            self.set_txt(name, values)

    @classmethod
    def from_zone(cls, zone: Zone) -> FixtureResolver:
        """A resolver serving `zone`."""
        resolver = cls()
        resolver.load_zone(zone)
        return resolver

    def load_zone(self, zone: Zone) -> None:
        """Add `zone`'s names, replacing the records of any name already present."""
        for name, entry in zone.items():
            self._zone[_key(name)] = entry.copy()

    def set_txt(self, name: str, values: list[str]) -> None:
        """Replace the TXT records at `name`."""
        self._zone.setdefault(_key(name), ZoneEntry())["TXT"] = list(values)

    def txt(self, name: str) -> list[str]:
        """TXT strings at `name`."""
        return self._answer(name, "TXT", lambda entry: entry.get("TXT", []))

    def a(self, name: str) -> list[str]:
        """IPv4 addresses at `name`."""
        return self._answer(name, "A", lambda entry: entry.get("A", []))

    def aaaa(self, name: str) -> list[str]:
        """IPv6 addresses at `name`."""
        return self._answer(name, "AAAA", lambda entry: entry.get("AAAA", []))

    def mx(self, name: str) -> list[MxRecord]:
        """MX records at `name`."""
        return self._answer(name, "MX", lambda entry: entry.get("MX", []))

    def ptr(self, name: str) -> list[str]:
        """PTR targets at `name`."""
        return self._answer(name, "PTR", lambda entry: entry.get("PTR", []))

    def _answer(self, name: str, rdtype: str, pick: Callable[[ZoneEntry], list[_T]]) -> list[_T]:
        key = _key(name)
        for _ in range(_MAX_CNAME_CHAIN):
            if key in self.failing or (key, rdtype) in self.failing_lookups:
                raise DnsTemporaryError(f"{rdtype} {name}: simulated failure")
            entry = self._zone.get(key, ZoneEntry())
            records = pick(entry)
            if records or "CNAME" not in entry:
                return list(records)
            key = _key(entry["CNAME"])
        return []


async def lookup_txt(resolver: Resolver, name: str) -> list[str]:
    """Run `resolver.txt(name)` in a worker thread so the trio loop never blocks on DNS."""
    return await trio.to_thread.run_sync(resolver.txt, name, abandon_on_cancel=True)


def _key(name: str) -> str:
    return name.lower().rstrip(".")


def _host(server: str) -> str:
    if server.startswith("["):
        return server[1 : server.index("]")]
    return server.rsplit(":", 1)[0] if server.count(":") == 1 else server


def _port(server: str) -> int:
    if server.startswith("[") and "]:" in server:
        return int(server.rsplit(":", 1)[1])
    if server.count(":") == 1:
        return int(server.rsplit(":", 1)[1])
    return 53
