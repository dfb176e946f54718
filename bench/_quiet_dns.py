"""A loopback DNS server that answers NXDOMAIN to every query, in a thread.

Benchmarks and crash tests point `dns.nameservers` at it so that SPF/DKIM/DMARC lookups
answer at once and never leave the machine. Standard library only; UDP only (the answers
are tiny, so no client falls back to TCP).
"""

from __future__ import annotations

import select
import socket
import threading
from types import TracebackType

_POLL_SECONDS = 0.1


def nxdomain_answer(query: bytes) -> bytes | None:
    """The NXDOMAIN response to one wire-format query, or None when it is not a query."""
    if len(query) < 12 or query[2] & 0x80 or int.from_bytes(query[4:6], "big") != 1:
        return None
    position = 12
    while position < len(query) and query[position] != 0:
        position += query[position] + 1
    end = position + 5  # the root label, QTYPE, QCLASS
    if end > len(query):
        return None
    flags = bytes([0x80 | (query[2] & 0x79), 0x80 | 3])  # QR, opcode, RD; RA, NXDOMAIN
    return query[:2] + flags + b"\x00\x01\x00\x00\x00\x00\x00\x00" + query[12:end]


class QuietDns:
    """`with QuietDns() as dns: ... dns.address` ("127.0.0.1:port") until the block ends."""

    def __init__(self) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind(("127.0.0.1", 0))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="quiet-dns", daemon=True)

    @property
    def address(self) -> str:
        """Where it listens, as `dns.nameservers` takes it."""
        host, port = self._socket.getsockname()
        return f"{host}:{port}"

    def __enter__(self) -> QuietDns:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._socket.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            readable, _, _ = select.select([self._socket], [], [], _POLL_SECONDS)
            if not readable:
                continue
            query, client = self._socket.recvfrom(4096)
            answer = nxdomain_answer(query)
            if answer is not None:
                self._socket.sendto(answer, client)
