"""The one door to DNS: the network `Resolver` (`DnsResolver`, over dnspython in
dnspython_resolver.py) and a fixture one; the protocol itself is in dns_answers.py.

Lookups are synchronous (pyspf and dkimpy call them from their own code); trio callers use
`lookup_txt`, which runs the lookup in a worker thread. Missing names answer an empty list;
trouble reaching DNS raises DnsTemporaryError so callers can report `temperror`. Nothing in
the gateway may query DNS any other way.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, TypedDict, TypeVar

import trio

from e2a_gateway.config import DnsSettings, nameserver_address
from e2a_gateway.mailauth.dns_answers import DnsTemporaryError, MxRecord, Resolver

if TYPE_CHECKING:
    from e2a_gateway.mailauth.dnspython_resolver import DnspythonResolver

_T = TypeVar("_T")

# A chain of CNAMEs longer than this is treated like a loop (no data), as resolvers do.
_MAX_CNAME_CHAIN = 8
DNS_CACHE_BYTES = 32 << 20
"""The memory the cache of DNS answers may take: some nine thousand ordinary answers, or
170 of the largest (64 KB) a sender's domain can serve."""


class DnsResolver:
    """Resolver over the network with dnspython, with its own cache (within `cache_bytes` of
    memory, the least recently used answers going first) and the configured nameservers
    (`host`, `host:port`, `[v6]:port` or a bare IPv6 address, tried in order; none means the
    system's resolv.conf). `timeout` bounds each lookup as a whole, retries and failover
    included; a lookup given a `timeout` of its own takes at most that.

    dnspython is imported, and its resolver built, on the first lookup (about a tenth of a
    second of CPU): lookups run in worker threads, so neither start-up nor the event loop
    waits for it.
    """

    def __init__(
        self,
        nameservers: list[str],
        timeout: float,
        *,
        cache: bool = True,
        cache_bytes: int = DNS_CACHE_BYTES,
    ):
        # Parsed here, so a bad entry fails at once rather than on the first lookup.
        addresses = [nameserver_address(server) for server in nameservers]
        self._nameservers = nameservers
        self._options = (addresses, timeout, cache_bytes if cache else 0)
        self._built: DnspythonResolver | None = None
        self._building = threading.Lock()
        self._uncached: DnsResolver | None = None

    @classmethod
    def from_settings(cls, settings: DnsSettings) -> DnsResolver:
        """Build from the `dns.*` settings."""
        return cls(settings.nameservers, settings.timeout_seconds)

    def txt(self, name: str, *, timeout: float | None = None) -> list[str]:
        """TXT strings at `name`, each record's chunks joined, decoded as UTF-8."""
        return self._resolver().txt(name, timeout=timeout)

    def a(self, name: str, *, timeout: float | None = None) -> list[str]:
        """IPv4 addresses at `name`."""
        return self._resolver().a(name, timeout=timeout)

    def aaaa(self, name: str, *, timeout: float | None = None) -> list[str]:
        """IPv6 addresses at `name`."""
        return self._resolver().aaaa(name, timeout=timeout)

    def mx(self, name: str, *, timeout: float | None = None) -> list[MxRecord]:
        """MX records at `name`."""
        return self._resolver().mx(name, timeout=timeout)

    def ptr(self, name: str, *, timeout: float | None = None) -> list[str]:
        """PTR targets at `name`."""
        return self._resolver().ptr(name, timeout=timeout)

    def uncached(self) -> DnsResolver:
        """This resolver without its cache (the same nameservers and timeout): for look-ups
        that must answer what DNS says now, not what it said within the last TTL."""
        _, timeout, cache_bytes = self._options
        if not cache_bytes:
            return self
        if self._uncached is None:
            self._uncached = DnsResolver(self._nameservers, timeout, cache=False)
        return self._uncached

    def _resolver(self) -> DnspythonResolver:
        if self._built is None:
            with self._building:
                if self._built is None:
                    from e2a_gateway.mailauth.dnspython_resolver import DnspythonResolver

                    nameservers, timeout, cache_bytes = self._options
                    self._built = DnspythonResolver(nameservers, timeout, cache_bytes=cache_bytes)
        return self._built


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


def fresh_answers(resolver: Resolver) -> Resolver:
    """`resolver` asking the nameservers each time rather than its cache of answers (a
    DnsResolver's `uncached`); any other resolver (a fixture) as it is. For a domain's records
    being verified: a user publishes them, then verifies at once."""
    return resolver.uncached() if isinstance(resolver, DnsResolver) else resolver


class _Until:
    """A DnsResolver's lookups for work due by `deadline` (`time.monotonic()`)."""

    def __init__(self, resolver: DnsResolver, deadline: float):
        self._resolver = resolver
        self._deadline = deadline

    def txt(self, name: str) -> list[str]:
        """TXT strings at `name`, within what is left of the time."""
        return self._resolver.txt(name, timeout=self._left("TXT", name))

    def a(self, name: str) -> list[str]:
        """IPv4 addresses at `name`, within what is left of the time."""
        return self._resolver.a(name, timeout=self._left("A", name))

    def aaaa(self, name: str) -> list[str]:
        """IPv6 addresses at `name`, within what is left of the time."""
        return self._resolver.aaaa(name, timeout=self._left("AAAA", name))

    def mx(self, name: str) -> list[MxRecord]:
        """MX records at `name`, within what is left of the time."""
        return self._resolver.mx(name, timeout=self._left("MX", name))

    def ptr(self, name: str) -> list[str]:
        """PTR targets at `name`, within what is left of the time."""
        return self._resolver.ptr(name, timeout=self._left("PTR", name))

    def _left(self, rdtype: str, name: str) -> float:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise DnsTemporaryError(f"{rdtype} {name}: no time left to ask")
        return left


def until(resolver: Resolver, deadline: float) -> Resolver:
    """`resolver` for work due by `deadline` (a `time.monotonic()` time), such as the checks of
    one message: each lookup waits at most for what is left of the time, and one asked after
    it fails at once (DnsTemporaryError) without querying DNS. Work given up on at its deadline
    in a worker thread thus ends then too, rather than one timeout per lookup later. A fixture
    resolver, which answers at once, as it is."""
    return _Until(resolver, deadline) if isinstance(resolver, DnsResolver) else resolver


async def lookup_txt(resolver: Resolver, name: str) -> list[str]:
    """Run `resolver.txt(name)` in a worker thread so the trio loop never blocks on DNS."""
    return await trio.to_thread.run_sync(resolver.txt, name, abandon_on_cancel=True)


def _key(name: str) -> str:
    return name.lower().rstrip(".")
