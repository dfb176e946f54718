"""Which webhook URLs the gateway will POST to: scheme, host and address checks (SSRF guard).

The same rules apply at registration and again at each delivery: the URL text is checked,
then every address its host resolves to (through the gateway's resolver) must be public.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import SplitResult, urlsplit

import trio

from e2a.mailauth.resolver import DnsTemporaryError, Resolver


class WebhookTargetError(ValueError):
    """The URL may not be used as a webhook target; the message says why and how to fix it."""


def is_public_address(address: str) -> bool:
    """True unless `address` is loopback, private, link-local, reserved or multicast."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def check_webhook_url(url: str, *, require_https: bool, allow_private: bool) -> str:
    """Return `url` if it is an acceptable webhook target, else raise WebhookTargetError.

    A host given as an IP literal is checked here; host names are checked again once resolved.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookTargetError("webhook_url must be an absolute http:// or https:// URL")
    if require_https and parts.scheme != "https":
        raise WebhookTargetError("webhook_url must use https:// in production")
    if parts.username or parts.password:
        raise WebhookTargetError("webhook_url must not contain credentials")
    try:
        literal = ipaddress.ip_address(parts.hostname)
    except ValueError:
        literal = None
    if literal is not None and not allow_private and not is_public_address(str(literal)):
        raise WebhookTargetError(
            "webhook_url points at a private, loopback or link-local address; use a public "
            "host (operators can allow private targets with webhooks.allow_private = true)"
        )
    if not allow_private and parts.hostname.lower() in ("localhost", "localhost.localdomain"):
        raise WebhookTargetError(
            "webhook_url points at localhost; use a public host (or set "
            "webhooks.allow_private = true)"
        )
    return url


class TargetRefused(Exception):
    """The webhook host resolves to an address the gateway will not call."""


def _resolve_now(resolver: Resolver, host: str) -> list[str]:
    return resolver.a(host) + resolver.aaaa(host)


async def pinned_address(resolver: Resolver, parts: SplitResult, allow_private: bool) -> str:
    """Resolve the URL's host through the gateway's resolver and return one address to connect
    to, after the SSRF check.

    Every address the name resolves to must be public (unless private targets are allowed),
    so a name that mixes public and private answers cannot be used for rebinding. Raises
    TargetRefused for a forbidden address, ConnectionError when DNS gives no usable answer."""
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
            raise TargetRefused(f"{host} resolves to non-public address {refused[0]}")
    return addresses[0]
