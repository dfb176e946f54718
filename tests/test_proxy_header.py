"""The PROXY protocol header reader (sans-IO): versions 1 and 2, bounds, and what is no header."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from e2a_gateway.smtp.proxy_header import (
    NO_HEADER,
    V1_MAX_BYTES,
    V2_MAX_BYTES,
    ProxyHeader,
    ProxyHeaderError,
    parse_proxy_header,
)

pytestmark = pytest.mark.backend_independent

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v2(
    command: int = 1, family: int = 1, transport: int = 1, body: bytes = b"", version: int = 2
) -> bytes:
    """A version 2 header with `body` (addresses and TLVs) as given."""
    fixed = struct.pack("!BBH", version << 4 | command, family << 4 | transport, len(body))
    return V2_SIGNATURE + fixed + body


def v2_inet(source: str, destination: str = "10.0.0.2", tlvs: bytes = b"") -> bytes:
    """A PROXY command over TCP from `source` (IPv4 or IPv6, as the address is)."""
    client, server = ipaddress.ip_address(source), ipaddress.ip_address(destination)
    family = 1 if client.version == 4 else 2
    return v2(family=family, body=client.packed + server.packed + b"\x9c\x40\x00\x19" + tlvs)


SMTP = b"EHLO client.example\r\n"


@pytest.mark.parametrize(
    ("header", "client"),
    [
        (b"PROXY TCP4 203.0.113.7 10.0.0.2 40000 25\r\n", "203.0.113.7"),
        (b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 25\r\n", "2001:db8::7"),
        (b"PROXY TCP6 ::ffff:203.0.113.7 ::ffff:10.0.0.2 40000 25\r\n", "203.0.113.7"),
        (b"PROXY UNKNOWN\r\n", None),
        (b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n", None),
        (v2_inet("203.0.113.7"), "203.0.113.7"),
        (v2_inet("2001:db8::7", "2001:db8::1"), "2001:db8::7"),
        (v2_inet("203.0.113.7", tlvs=b"\x05\x00\x03abc\x04\x00\x00"), "203.0.113.7"),
        (v2(command=0), None),  # LOCAL: a health check
        (v2(command=0, family=9, body=b"ignored"), None),  # LOCAL's family is ignored
        (v2(family=0, transport=0), None),  # AF_UNSPEC
        (v2(family=3, body=b"/run/a".ljust(108, b"\0") + b"/run/b".ljust(108, b"\0")), None),
    ],
)
def test_a_whole_header_names_the_client_and_keeps_what_follows(
    header: bytes, client: str | None
) -> None:
    assert parse_proxy_header(header + SMTP) == ProxyHeader(len(header), client)
    for cut in range(len(header)):  # the same header, read a little at a time
        assert parse_proxy_header(header[:cut]) is None


@pytest.mark.parametrize(
    "data", [SMTP, b"QUIT\r\n", b"PROXZ", b"\r\nEHLO x\r\n", b"\r\n\r\n\x00\r\nQUITX", b"proxy "]
)
def test_input_that_does_not_start_like_a_header_is_no_header(data: bytes) -> None:
    assert parse_proxy_header(data) is NO_HEADER


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"PROXY TCP4 203.0.113.7 10.0.0.2 40000 25\n", "bare LF"),
        (b"PROXY TCP5 203.0.113.7 10.0.0.2 40000 25\r\n", "TCP4, TCP6 or UNKNOWN"),
        (b"PROXY TCP4 2001:db8::7 10.0.0.2 40000 25\r\n", "no IPv4 address"),
        (b"PROXY TCP6 203.0.113.7 2001:db8::1 40000 25\r\n", "no IPv6 address"),
        (b"PROXY TCP4 203.0.113.07 10.0.0.2 40000 25\r\n", "no IPv4 address"),
        (b"PROXY TCP6 fe80::1%eth0 fe80::2 40000 25\r\n", "zone"),
        (b"PROXY TCP4 203.0.113.7 10.0.0.2 70000 25\r\n", "port"),
        (b"PROXY TCP4 203.0.113.7 10.0.0.2 -1 25\r\n", "port"),
        (b"PROXY TCP4  203.0.113.7 10.0.0.2 40000 25\r\n", "two addresses"),
        (b"PROXY TCP4 203.0.113.7 10.0.0.2 40000\r\n", "two addresses"),
        (b"PROXY TCP4 \xff.0.113.7 10.0.0.2 40000 25\r\n", "no IPv4 address"),
        (b"PROXY UNKNOWN " + b"x" * V1_MAX_BYTES, f"longer than {V1_MAX_BYTES}"),
        (v2(version=1), "version 1"),
        (v2(command=2), "neither LOCAL nor PROXY"),
        (v2(family=4, body=bytes(12)), "family 4"),
        (v2(transport=3, body=bytes(12)), "transport 3"),
        (v2(family=1, body=bytes(11)), "too short"),
        (v2(family=2, body=bytes(35)), "too short"),
        (v2(family=3, body=bytes(215)), "too short"),
    ],
)
def test_a_malformed_header_is_refused_saying_why(data: bytes, reason: str) -> None:
    with pytest.raises(ProxyHeaderError, match=reason):
        parse_proxy_header(data)


def test_an_over_long_v2_header_is_refused_before_its_body_arrives() -> None:
    fixed = v2(body=bytes(V2_MAX_BYTES - 16 + 1))[:16]
    with pytest.raises(ProxyHeaderError, match=f"over {V2_MAX_BYTES}"):
        parse_proxy_header(fixed)
    longest = v2_inet("203.0.113.7", tlvs=bytes(V2_MAX_BYTES - 16 - 12))
    assert parse_proxy_header(longest) == ProxyHeader(V2_MAX_BYTES, "203.0.113.7")


def test_a_v1_line_is_read_to_107_octets_and_no_further() -> None:
    longest = b"PROXY UNKNOWN " + b"x" * (V1_MAX_BYTES - 16) + b"\r\n"
    assert len(longest) == V1_MAX_BYTES
    assert parse_proxy_header(longest + SMTP) == ProxyHeader(V1_MAX_BYTES, None)
    assert parse_proxy_header(longest[:-1]) is None
    with pytest.raises(ProxyHeaderError, match="longer than"):
        parse_proxy_header(longest[:-2] + b"x\r\n")


def test_a_header_reads_from_a_bytearray_as_from_bytes() -> None:
    header = v2_inet("198.51.100.9")
    assert parse_proxy_header(bytearray(header)) == ProxyHeader(len(header), "198.51.100.9")
    assert parse_proxy_header(b"") is None
