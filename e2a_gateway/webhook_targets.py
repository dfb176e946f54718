"""Which webhook URLs the gateway will POST to: URL syntax, scheme, host and address checks
(SSRF guard).

The same rules apply at registration and again at each delivery: the URL text is checked and
normalised, then every address its host resolves to (through the gateway's resolver) must be
public. An IPv6 address that carries an IPv4 one (mapped, compatible, translated, NAT64, 6to4)
is judged by the IPv4 address it reaches.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import unicodedata
from urllib.parse import SplitResult, urlsplit, urlunsplit

import trio

from e2a_gateway.addresses import a_label_domain
from e2a_gateway.mailauth.dns_answers import DnsTemporaryError, Resolver

MAX_URL_LENGTH = 2048
NAT64_PREFIX = ipaddress.IPv6Network("64:ff9b::/96")
"""RFC 6052 well-known NAT64 prefix: the last 32 bits are the IPv4 address reached."""
NAT64_LOCAL_PREFIX = ipaddress.IPv6Network("64:ff9b:1::/48")
"""RFC 8215 local-use NAT64 prefix: translates into the operator's own network."""
IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
"""RFC 4291 §2.5.5.1 IPv4-compatible addresses (deprecated): `::a.b.c.d`; `::` and `::1`
(unspecified, loopback) are IPv6's own, not of this form."""
SITE_LOCAL = ipaddress.IPv6Network("fec0::/10")
"""RFC 3879 site-local addresses: deprecated, yet still routed inside networks that kept them;
Python counts them as global."""
IPV4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
"""RFC 2765 §2.1 IPv4-translated addresses (SIIT): `::ffff:0:a.b.c.d`, which a stateless
translator turns into the IPv4 address."""
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Zs"})
_DECIMAL = re.compile(r"[0-9]+")
_OCTAL = re.compile(r"0[0-7]+")
_HEX = re.compile(r"0[xX][0-9a-fA-F]*")
log = logging.getLogger("e2a.webhooks")
_PRIVATE_HINT = "operators can allow private targets with webhooks.allow_private = true"


class WebhookTargetError(ValueError):
    """The URL may not be used as a webhook target; the message says why and how to fix it."""


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address that `ip` reaches when it is IPv4-mapped (`::ffff:a.b.c.d`),
    IPv4-compatible (`::a.b.c.d`), IPv4-translated (`::ffff:0:a.b.c.d`), NAT64 (`64:ff9b::/96`)
    or 6to4 (`2002::/16`); else None."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.is_loopback or ip.is_unspecified:
        return None
    if ip in NAT64_PREFIX or ip in IPV4_COMPATIBLE or ip in IPV4_TRANSLATED:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public_address(address: str) -> bool:
    """True unless `address` is loopback, private, link-local, reserved or multicast — or an
    IPv6 form of such an IPv4 address, site-local, or in the local-use NAT64 prefix."""
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in NAT64_LOCAL_PREFIX or ip in SITE_LOCAL:
            return False
        ip = embedded_ipv4(ip) or ip
    return ip.is_global and not ip.is_multicast


def describe_address(address: str) -> str:
    """`address`, followed by the IPv4 address it reaches when it is an IPv6 form of one."""
    ip = ipaddress.ip_address(address)
    embedded = embedded_ipv4(ip) if isinstance(ip, ipaddress.IPv6Address) else None
    return f"{ip} (which reaches {embedded})" if embedded is not None else str(ip)


def ends_in_a_number(host: str) -> bool:
    """Whether `host`'s last label (a trailing dot aside) is a number, decimal or 0x-hex: such
    a host is an IPv4 address to browsers and resolvers, never a domain name."""
    last = host.removesuffix(".").rpartition(".")[2]
    return bool(_DECIMAL.fullmatch(last) or _HEX.fullmatch(last))


def ipv4_spelling(host: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address a host written as numbers denotes, read as browsers and inet_aton()
    read it (`127.1`, `0x7f000001`, `0177.0.0.1`, `2130706433`); None for a host name.

    A host whose last label is a number is an address (WHATWG URL "ends in a number"); one that
    cannot be read as an address raises WebhookTargetError."""
    if not ends_in_a_number(host):
        return None
    parts = host.split(".")
    if len(parts) > 1 and parts[-1] == "":
        parts.pop()
    invalid = WebhookTargetError(f"webhook_url host {host!r} is not a valid IPv4 address")
    if len(parts) > 4:
        raise invalid
    try:
        numbers = [_ipv4_number(part) for part in parts]
    except ValueError:
        raise invalid from None
    *leading, last = numbers
    if any(number > 255 for number in leading) or last >= 256 ** (5 - len(numbers)):
        raise invalid
    value = last
    for index, number in enumerate(leading):
        value += number << (8 * (3 - index))
    return ipaddress.IPv4Address(value)


def _ipv4_number(part: str) -> int:
    if _HEX.fullmatch(part):
        return int(part[2:] or "0", 16)
    if _OCTAL.fullmatch(part):
        return int(part[1:], 8)
    if _DECIMAL.fullmatch(part) and (part == "0" or not part.startswith("0")):
        return int(part)
    raise ValueError(part)


def _check_text(url: str) -> None:
    if len(url) > MAX_URL_LENGTH:
        raise WebhookTargetError(f"webhook_url is longer than {MAX_URL_LENGTH} characters")
    for position, char in enumerate(url):
        if unicodedata.category(char) in _FORBIDDEN_CATEGORIES:
            raise WebhookTargetError(
                f"webhook_url must not contain spaces or control characters (found "
                f"U+{ord(char):04X} at position {position}); percent-encode them"
            )


def _port(parts: SplitResult) -> int | None:
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise WebhookTargetError("webhook_url port must be a number from 1 to 65535")
    return port


def _host(parts: SplitResult, allow_private: bool) -> str:
    """The URL's host as it is stored and looked up: an address in its canonical form, or a
    host name as lowercase A-labels without a trailing dot."""
    hostname = parts.hostname or ""
    if not hostname:
        raise WebhookTargetError("webhook_url must name a host, as in https://hooks.example.com/")
    literal: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    if "[" in parts.netloc:
        try:
            literal = ipaddress.IPv6Address(hostname)
        except ValueError:
            raise WebhookTargetError(
                f"webhook_url host [{hostname}] is not a valid IPv6 address"
            ) from None
    else:
        literal = ipv4_spelling(hostname)
    if literal is not None:
        if not allow_private and not is_public_address(str(literal)):
            raise WebhookTargetError(
                f"webhook_url points at {describe_address(str(literal))}, a private, loopback or "
                "link-local address; "
                f"use a public host ({_PRIVATE_HINT})"
            )
        return f"[{literal}]" if literal.version == 6 else str(literal)
    try:
        name = a_label_domain(hostname)
    except ValueError as exc:
        raise WebhookTargetError(
            f"webhook_url host {hostname!r} is not a valid host name ({exc})"
        ) from None
    local = "." not in name or name == "localhost" or name.endswith(".localhost")
    if local and not allow_private:
        raise WebhookTargetError(
            f"webhook_url points at {name}, a local host name; use a public host name "
            f"({_PRIVATE_HINT})"
        )
    return name


def check_webhook_url(url: str, *, require_https: bool, allow_private: bool) -> str:
    """Return `url` normalised (scheme and host lowercased, the host's address in canonical
    form) if it is an acceptable webhook target, else raise WebhookTargetError.

    A host given as an IP address is judged here; host names are judged once resolved."""
    _check_text(url)
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise WebhookTargetError(f"webhook_url is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise WebhookTargetError("webhook_url must be an absolute http:// or https:// URL")
    if require_https and parts.scheme != "https":
        raise WebhookTargetError("webhook_url must use https:// in production")
    if parts.username is not None or parts.password is not None:
        raise WebhookTargetError("webhook_url must not contain credentials")
    port = _port(parts)
    host = _host(parts, allow_private)
    netloc = host if port is None else f"{host}:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class TargetRefused(Exception):
    """The webhook host resolves to an address the gateway will not call. The message names
    the host, never the address: it reaches API callers, and the address would map the
    operator's internal DNS for them (the operator's log has it)."""


def _resolve_now(resolver: Resolver, host: str) -> list[str]:
    """The host's A then AAAA addresses. A lookup that fails while the other one finds addresses
    is passed over (some nameservers never answer AAAA queries); only the addresses found are
    connected to, so none goes unchecked. With nothing found, its DnsTemporaryError is raised."""
    found: list[str] = []
    failure: DnsTemporaryError | None = None
    for lookup in (resolver.a, resolver.aaaa):
        try:
            found += lookup(host)
        except DnsTemporaryError as exc:
            failure = exc
    if failure is not None and not found:
        raise failure
    return found


async def pinned_addresses(
    resolver: Resolver, parts: SplitResult, allow_private: bool
) -> list[str]:
    """Resolve the URL's host through the gateway's resolver and return the addresses to connect
    to, in the order to try them, after the SSRF check.

    `parts` is a URL that check_webhook_url returned. Every address the name resolves to must be
    public (unless private targets are allowed), so a name that mixes public and private answers
    cannot be used for rebinding. Raises TargetRefused for a forbidden address (logged for the
    operator with the address), ConnectionError when DNS gives no usable answer."""
    host = parts.hostname or ""
    try:
        addresses = [str(ipaddress.ip_address(host))]
    except ValueError:
        try:
            addresses = await trio.to_thread.run_sync(
                _resolve_now, resolver, host, abandon_on_cancel=True
            )
        except DnsTemporaryError as exc:
            raise ConnectionError(f"cannot resolve {host}: {exc}") from exc
    if not addresses:
        raise ConnectionError(f"{host} has no address")
    if not allow_private:
        refused = [address for address in addresses if not is_public_address(address)]
        if refused:
            log.warning(
                "webhook target %s refused: it resolves to %s", host, describe_address(refused[0])
            )
            raise TargetRefused(
                f"webhook_url host {host} resolves to a private, loopback or link-local "
                f"address; use a host that resolves to public addresses only ({_PRIVATE_HINT})"
            )
    return list(dict.fromkeys(addresses))
