"""An inbound message's reading — its reply text and trust map — for every face that shows it.

Computed the first time a face asks (REST read, webhook attempt, WebSocket frame, MCP), in a
worker thread since its cost grows with the message, and kept with the message; the earlier
mail it quotes is looked up in the agent's own store (`e2a_gateway.inbound.trust` decides the rest).
"""

from __future__ import annotations

from typing import Any

import trio

from e2a_gateway.gateway import Gateway
from e2a_gateway.inbound.parse import parse_body, summarise_headers
from e2a_gateway.inbound.replies import ReplySplit, split_reply
from e2a_gateway.inbound.trust import EarlierMail, authored_text, reading, sender_verdict
from e2a_gateway.mailauth.evidence import evidence_of
from e2a_gateway.signing.identity import claim_from_headers
from e2a_gateway.storage.base import FiledMessage, InboundMessage, StoredEarlier

MAX_REFERENCES = 20
"""How many of the Message-IDs a message names are looked up: In-Reply-To, then References
newest first. Quotes rarely reach further back, and this bounds the earlier mail read for one
message (an earlier message with no kept reading is read whole)."""


async def reading_of(gateway: Gateway, message: InboundMessage) -> dict[str, Any]:
    """`{"reply_text", "trust"}` of a stored inbound message (docs/replies.md): the kept one,
    else computed now and kept. The fields every message view adds."""
    if message.reading is not None:
        return message.reading
    split, referenced, in_reply_to = await trio.to_thread.run_sync(_split_message, message)
    found = await gateway.storage.earlier_messages(
        message.user_id, message.agent_email, referenced[:MAX_REFERENCES]
    )
    claim = claim_from_headers(message.auth_headers)
    authserv_id = gateway.settings.smtp.hostname

    def judge() -> dict[str, Any]:
        evidence = evidence_of(message.raw_message, authserv_id)
        sender = sender_verdict(
            claim.sender or message.from_addr,
            claim.verified,
            claim.entity_type,
            message.authentication_results,
            evidence.aligned_by if evidence is not None else None,
        )
        earlier = [_earlier_mail(stored) for stored in found if stored.id != message.id]
        return reading(split, sender, earlier, in_reply_to)

    computed = await trio.to_thread.run_sync(judge)
    await gateway.storage.keep_reading(message.user_id, message.agent_email, message.id, computed)
    return computed


def _split_message(message: InboundMessage) -> tuple[ReplySplit, list[str], str | None]:
    """The split of the message's body, the Message-IDs it names and the one it answers."""
    body = parse_body(message.raw_message)
    headers = summarise_headers(message.raw_message)
    return split_reply(body.text, body.html), headers.referenced_ids(), headers.in_reply_to


def _earlier_mail(stored: StoredEarlier) -> EarlierMail:
    """A stored message as quotes are judged against it: its own text, and its verdict."""
    if stored.direction == "outbound":
        own = authored_text(split_reply(stored.body_text)) if stored.body_text else None
        verified = True  # the agent's own mail, sent through e2a
    else:
        verified = claim_from_headers(stored.auth_headers).verified
        if stored.reading is not None:
            own = "\n\n".join(
                part["content"]
                for part in stored.reading["trust"]["parts"]
                if part["kind"] != "quoted" and part["content"]
            )
        elif stored.raw_message is not None:
            body = parse_body(stored.raw_message)
            own = authored_text(split_reply(body.text, body.html))
        else:
            own = None
    return EarlierMail(
        message_id=stored.id,
        rfc_message_id=stored.rfc_message_id,
        direction=stored.direction,
        sender=stored.from_addr.lower(),
        verified=verified,
        authored=own,
    )


async def reading_of_filed(
    gateway: Gateway, user_id: str, filed: FiledMessage
) -> dict[str, Any] | None:
    """The reading of a message as `/v1` files it when it is mail received (None for mail
    sent, which has no reply to split): the fields `/v1`'s message view adds."""
    if filed.direction != "inbound":
        return None
    message = await gateway.storage.peek_inbound(user_id, filed.agent_email, filed.id)
    return None if message is None else await reading_of(gateway, message)
