"""The address e2a's own mail to people — approval notices and its answers to replies — is
sent from, worked out from the settings alone: the send worker writes it, the inbound pipeline
knows a reply to it, and agent registration keeps it from being anyone's inbox."""

from __future__ import annotations

from e2a_gateway.config import Settings


def notice_sender(settings: Settings) -> str:
    """The From of approval notices: `no-reply@<outbound_smtp.from_domain>` when a sending
    domain is configured, else `e2a@<smtp.hostname>`."""
    domain = settings.outbound_smtp.from_domain
    return f"no-reply@{domain}" if domain else f"e2a@{settings.smtp.hostname}"
