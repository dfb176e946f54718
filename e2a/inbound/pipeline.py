"""From accepted DATA to stored messages: route each recipient, index headers, commit.

`InboundMailSink` is what the SMTP listener talks to. It answers RCPT checks from storage and
turns one DATA into one stored message per recipient agent, committed in one transaction
before the listener may answer 250.
"""

from __future__ import annotations

import logging
import time

from e2a.addresses import AddressError, normalise_address
from e2a.clock import format_timestamp
from e2a.gateway import Gateway
from e2a.ids import new_id
from e2a.inbound.parse import summarise_headers
from e2a.smtp.protocol import Envelope, Mailbox
from e2a.smtp.server import MessageNotStored, RecipientVerdict
from e2a.storage.base import NewInboundMessage, StorageUnavailable

log = logging.getLogger("e2a.inbound")


class InboundMailSink:
    """The gateway's side of the SMTP listener: routing and durable acceptance."""

    def __init__(self, gateway: Gateway):
        self._gateway = gateway

    async def _serves_domain(self, domain: str) -> bool:
        if self._gateway.is_shared_domain(domain):
            return True
        return await self._gateway.storage.is_served_domain(domain)

    async def check_recipient(self, mailbox: Mailbox) -> RecipientVerdict:
        """ACCEPT a registered agent, UNKNOWN_USER on our domains, RELAY_DENIED elsewhere."""
        if not await self._serves_domain(mailbox.domain):
            return RecipientVerdict.RELAY_DENIED
        try:
            address = normalise_address(mailbox.address)
        except AddressError:
            return RecipientVerdict.UNKNOWN_USER
        agent = await self._gateway.storage.find_agent(address)
        return RecipientVerdict.ACCEPT if agent is not None else RecipientVerdict.UNKNOWN_USER

    async def accept_message(self, envelope: Envelope, peer: str) -> str:
        """Store one message per recipient agent in one transaction; return the first id."""
        now = time.time()
        received_at = format_timestamp(now)
        headers = summarise_headers(envelope.data)
        messages = [
            NewInboundMessage(
                id=new_id("msg"),
                agent_email=normalise_address(recipient.address),
                envelope_from=envelope.mail_from,
                from_addr=headers.from_addr or envelope.mail_from.lower(),
                reply_to=headers.reply_to,
                to=headers.to,
                cc=headers.cc,
                subject=headers.subject,
                conversation_id=None,
                rfc_message_id=headers.message_id,
                raw_message=envelope.data,
                auth_headers={},
                authentication_results={},
                received_at=received_at,
                client_ip=peer,
                helo=envelope.helo,
            )
            for recipient in _unique(envelope.recipients)
        ]
        try:
            await self._gateway.storage.store_inbound(messages, now)
        except StorageUnavailable as exc:
            log.error("could not store message from %s: %s", peer, exc)
            raise MessageNotStored(str(exc)) from exc
        return messages[0].id


def _unique(recipients: list[Mailbox]) -> list[Mailbox]:
    """Recipients without repeats (the same agent named twice gets one copy)."""
    seen: set[str] = set()
    unique = []
    for mailbox in recipients:
        key = mailbox.address.lower()
        if key not in seen:
            seen.add(key)
            unique.append(mailbox)
    return unique
