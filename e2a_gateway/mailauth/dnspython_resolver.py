"""`DnsResolver`'s lookups over dnspython: imported on the first lookup, not at start-up."""

from __future__ import annotations

import time
from collections import OrderedDict
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
_ANSWER_OVERHEAD_BYTES = 3072
"""What a cached answer takes beyond its message: dnspython's answer, message, name and
rdataset objects (about 3 KB for an empty answer, as measured)."""
_BYTES_PER_WIRE_BYTE = 3
"""What a cached answer takes per byte of its message: the bytes as received, kept by the
message, and the records parsed from them (about 2.9, as measured for 60 KB of TXT)."""


class AnswerCache(dns.resolver.CacheBase):
    """dnspython's answer cache, bounded by the memory its answers take rather than by their
    number: senders choose the names looked up (DKIM selectors, SPF includes, DMARC domains),
    and one answer can be 64 KB. The least recently used answers go first; an answer past its
    TTL is dropped when next asked for. Thread-safe, as lookups run in worker threads."""

    def __init__(self, budget: int) -> None:
        super().__init__()
        self._budget = budget
        self._answers: OrderedDict[dns.resolver.CacheKey, tuple[dns.resolver.Answer, int]] = (
            OrderedDict()
        )
        self._held = 0

    @property
    def held(self) -> int:
        """The bytes the cached answers are reckoned to take."""
        return self._held

    def get(self, key: dns.resolver.CacheKey) -> dns.resolver.Answer | None:
        """The answer cached for `key` while within its TTL, else None."""
        with self.lock:
            kept = self._answers.get(key)
            if kept is not None and kept[0].expiration <= time.time():
                self._drop(key)
                kept = None
            if kept is None:
                self.statistics.misses += 1
                return None
            self._answers.move_to_end(key)
            self.statistics.hits += 1
            return kept[0]

    def put(self, key: dns.resolver.CacheKey, value: dns.resolver.Answer) -> None:
        """Cache `value` for `key`, making room by dropping the least recently used."""
        weight = _ANSWER_OVERHEAD_BYTES + _BYTES_PER_WIRE_BYTE * len(value.response.wire or b"")
        with self.lock:
            self._drop(key)
            self._answers[key] = (value, weight)
            self._held += weight
            while self._held > self._budget:
                self._drop(next(iter(self._answers)))

    def flush(self, key: dns.resolver.CacheKey | None = None) -> None:
        """Forget the answer for `key`, or every answer when None."""
        with self.lock:
            if key is not None:
                self._drop(key)
            else:
                self._answers.clear()
                self._held = 0

    def _drop(self, key: dns.resolver.CacheKey) -> None:
        kept = self._answers.pop(key, None)
        if kept is not None:
            self._held -= kept[1]


class DnspythonResolver:
    """The Resolver over dnspython that `DnsResolver` builds on its first lookup, for
    nameservers given as (address, port); none means the system's resolv.conf. Its answers
    are cached within `cache_bytes` (none when 0). Each lookup takes at most `timeout`
    seconds, or the `timeout` it is given."""

    def __init__(self, nameservers: list[tuple[str, int]], timeout: float, *, cache_bytes: int):
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
        if cache_bytes:
            self._resolver.cache = AnswerCache(cache_bytes)

    def txt(self, name: str, *, timeout: float | None = None) -> list[str]:
        """TXT strings at `name`, each record's chunks joined, decoded as UTF-8."""
        return [
            b"".join(record.strings).decode("utf-8", "replace")
            for record in self._records(name, "TXT", dns.rdtypes.ANY.TXT.TXT, timeout)
        ]

    def a(self, name: str, *, timeout: float | None = None) -> list[str]:
        """IPv4 addresses at `name`."""
        return [record.address for record in self._records(name, "A", dns.rdtypes.IN.A.A, timeout)]

    def aaaa(self, name: str, *, timeout: float | None = None) -> list[str]:
        """IPv6 addresses at `name`."""
        return [
            record.address
            for record in self._records(name, "AAAA", dns.rdtypes.IN.AAAA.AAAA, timeout)
        ]

    def mx(self, name: str, *, timeout: float | None = None) -> list[MxRecord]:
        """MX records at `name`."""
        return [
            (record.preference, record.exchange.to_text(omit_final_dot=True))
            for record in self._records(name, "MX", dns.rdtypes.ANY.MX.MX, timeout)
        ]

    def ptr(self, name: str, *, timeout: float | None = None) -> list[str]:
        """PTR targets at `name`."""
        return [
            record.target.to_text(omit_final_dot=True)
            for record in self._records(name, "PTR", dns.rdtypes.ANY.PTR.PTR, timeout)
        ]

    def _records(self, name: str, rdtype: str, kind: type[_T], timeout: float | None) -> list[_T]:
        """The answer's records of `rdtype` (CNAMEs followed by dnspython); [] for none. The
        lookup takes at most `timeout` seconds (None: the resolver's own timeout)."""
        try:
            qname = dns.name.from_text(name)
            answer = self._resolver.resolve(qname, rdtype, search=False, lifetime=timeout)
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
            raise DnsTemporaryError(f"{rdtype} {name}: {_trouble(exc)}") from exc
        return [record for record in answer if isinstance(record, kind)]


def _trouble(exc: dns.exception.DNSException) -> str:
    """What kept DNS from answering, in words that name no nameserver: the words reach a
    stored message's `Authentication-Results` (a DKIM key's temperror) and API errors, where
    the gateway's resolver addresses have no business."""
    if isinstance(exc, dns.exception.Timeout):
        return "timed out"
    if isinstance(exc, dns.resolver.NoNameservers):
        answers = sorted({str(error[3]) for error in exc.kwargs.get("errors", [])})
        return f"no nameserver answered ({', '.join(answers) or 'none to ask'})"
    return str(exc)
