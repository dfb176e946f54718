"""Delivering an agent's outbound mail to other agents of this deployment, without SMTP: where
one agent's sending becomes another's receiving, so it belongs to neither direction.

The gateway itself vouches for the sender (it authenticated the agent's API key), so the
message is stored as inbound mail with entity type `agent` and `Verified: true`, signed per
recipient owner exactly like mail that arrived over SMTP (inbound's pure pieces: the delivered
form, the identity claim, the trace fields). It must not touch the relay. Mail to the
operator's mailboxes here (postmaster and abuse at the shared domain and `smtp.hostname`) is
local too:
it reaches the agent that takes postmaster mail, as it would over SMTP.

Each recipient's copy has an id derived from the sent message's and the recipient's address,
so delivering again what was delivered (the worker's retry after a crash that came between
storing the copies and recording the outcome) stores nothing twice: the copies found stored
are reported delivered as they are.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from e2a_gateway.attachments import Attachment
from e2a_gateway.clock import format_timestamp
from e2a_gateway.gateway import Gateway
from e2a_gateway.ids import derived_id
from e2a_gateway.inbound.gate import PASSED, gate_verdict
from e2a_gateway.inbound.identity import delivered_message, identity_claim
from e2a_gateway.inbound.parse import HeaderSummary, summarise_headers
from e2a_gateway.inbound.pipeline import announce_stored, attachments_off_loop
from e2a_gateway.inbound.postmaster import OPERATOR_MAILBOXES, is_own_hostname, postmaster_agent
from e2a_gateway.inbound.subaddresses import agent_at
from e2a_gateway.inbound.trace import local_received_field, return_path_field
from e2a_gateway.mailauth.results import AuthResults
from e2a_gateway.signing.credentials import derive_signing_secret
from e2a_gateway.signing.identity import body_hash
from e2a_gateway.storage.base import Agent, ConversationClaim
from e2a_gateway.storage.new_inbound import NewInboundMessage

log = logging.getLogger("e2a.inbound")

MAX_REFERENCES = 100


def local_auth(sender: Agent) -> AuthResults:
    """What is known about a local agent's mail: no SPF, DKIM or DMARC was evaluated
    (`none`, honestly), yet it is verified because the gateway authenticated the agent."""
    return AuthResults(
        spf="none",
        spf_domain="",
        spf_scope="mailfrom",
        dkim="none",
        dkim_signatures=(),
        dmarc="none",
        dmarc_policy=None,
        from_domain=sender.domain,
        verified=True,
    )


def local_authentication_results(hostname: str, sender: str) -> bytes:
    """The RFC 8601 field for local delivery: the registered `auth` method (the sender
    authenticated to this gateway), with a comment naming the path the mail took."""
    return (
        f"Authentication-Results: {hostname};\r\n"
        f" auth=pass (local delivery by {hostname}) smtp.auth={sender}\r\n"
    ).encode()


def is_operator_mailbox_here(gateway: Gateway, address: str) -> bool:
    """Whether `address` (normalised) is postmaster or abuse at the gateway's own names — its
    shared domain or `smtp.hostname` — whose mail the SMTP listener takes for the agent that
    receives postmaster mail. Not at a user's verified domain: its TXT record made it one the
    gateway serves, but its postmaster and abuse desk are that user's, and its MX may take
    their mail elsewhere, so an agent's mail to them goes to the relay."""
    local_part, _, domain = address.rpartition("@")
    if local_part.lower() not in OPERATOR_MAILBOXES:
        return False
    return gateway.is_shared_domain(domain) or is_own_hostname(gateway.settings, domain)


async def agent_here(gateway: Gateway, address: str) -> Agent | None:
    """The agent of this deployment mail to `address` (normalised) reaches by its address,
    a subaddress's tag cut by `smtp.recipient_delimiter` (`agent_at`); None when none does."""
    delimiters = gateway.settings.smtp.recipient_delimiter
    return await agent_at(gateway.storage, address, delimiters)


async def local_recipient(gateway: Gateway, address: str) -> Agent | None:
    """The agent of this deployment that mail to `address` (normalised) is delivered to, as
    the SMTP listener would deliver it: the agent at the address (or at the address without
    its tag, `agent_at`), else for an operator mailbox here the agent that takes postmaster
    mail (the postmaster inbox is created if need be). None: no agent here takes it.

    Raises NoPostmaster when no user could own the postmaster inbox."""
    agent = await agent_here(gateway, address)
    if agent is not None or not is_operator_mailbox_here(gateway, address):
        return agent
    return await postmaster_agent(gateway.settings, gateway.storage)


def copy_id(sent_id: str, recipient: str) -> str:
    """The id of the copy of sent message `sent_id` stored for the agent at `recipient`."""
    return derived_id("msg", sent_id, recipient)


async def deliver_locally(
    gateway: Gateway,
    sent_id: str,
    raw: bytes,
    sender: Agent,
    recipients: list[Agent],
    conversation_id: str | None,
    now: float,
) -> dict[str, str]:
    """Store `raw`, the bytes of sent message `sent_id`, for each recipient agent in one
    transaction, then notify them: through its inbound gate, as mail over SMTP goes (held for
    review, flagged or blocked as it says). A copy stored already (an earlier attempt) is
    neither stored nor announced again.

    Returns recipient address → stored message id. A recipient whose owner has no signing
    secret is left out (nothing can be signed for it); the caller decides what to do."""
    recipients = list({agent.email: agent for agent in recipients}.values())  # one copy each
    if not recipients:
        return {}
    copies = {agent.email: copy_id(sent_id, agent.email) for agent in recipients}
    stored = await gateway.storage.stored_copies(list(copies.items()))
    already = {email: message_id for email, message_id in copies.items() if message_id in stored}
    recipients = [agent for agent in recipients if agent.email not in already]
    if not recipients:
        return already
    hostname = gateway.settings.smtp.hostname
    auth = local_auth(sender)
    message_ids = [copies[agent.email] for agent in recipients]
    only = recipients[0].email if len(recipients) == 1 else None
    trace = return_path_field(sender.email) + local_received_field(
        hostname, sender.email, message_ids[0], only, now
    )
    delivered = delivered_message(raw, local_authentication_results(hostname, sender.email), trace)
    headers = summarise_headers(delivered)
    digest = body_hash(delivered)
    attachments = await attachments_off_loop(delivered, headers)
    received_at = format_timestamp(now)
    prepared: list[tuple[Agent, NewInboundMessage]] = []
    for agent, message_id in zip(recipients, message_ids, strict=True):
        message = await _signed_copy(
            gateway,
            agent,
            message_id,
            sender,
            auth,
            (delivered, digest, attachments),
            headers,
            conversation_id,
            received_at,
        )
        if message is None:
            log.warning(
                "local delivery to %s skipped: its owner has no signing secret", agent.email
            )
            continue
        # the gateway vouches for the From; an agent's note to itself passes its own gate
        verdict = PASSED if agent.email == sender.email else gate_verdict(agent, sender.email)
        held_until, reason, blocked = verdict.applied(agent.hitl_ttl_seconds, now)
        screened = replace(message, hold_expires_at=held_until, flag_reason=reason, blocked=blocked)
        prepared.append((agent, screened))
    if prepared:
        await gateway.storage.store_inbound([message for _, message in prepared], now)
        announce_stored(gateway.hub, prepared)
    return already | {agent.email: message.id for agent, message in prepared}


async def _conversation(
    gateway: Gateway,
    agent: Agent,
    sender: Agent,
    headers: HeaderSummary,
    conversation_id: str | None,
) -> str | None:
    """The recipient's conversation: the sender's id among one owner's agents; from another
    owner's agent, the id only where Storage.conversation_for allows it (it may not thread into
    this agent's conversations); without an id, threaded like any inbound mail."""
    if conversation_id and sender.user_id == agent.user_id:
        return conversation_id
    given = ConversationClaim(conversation_id, sender.email) if conversation_id else None
    return await gateway.storage.conversation_for(
        agent.user_id, agent.email, headers.referenced_ids()[:MAX_REFERENCES], given
    )


async def _signed_copy(
    gateway: Gateway,
    agent: Agent,
    message_id: str,
    sender: Agent,
    auth: AuthResults,
    delivered: tuple[bytes, str, tuple[Attachment, ...]],
    headers: HeaderSummary,
    conversation_id: str | None,
    received_at: str,
) -> NewInboundMessage | None:
    """The stored form for one recipient agent, signed for its owner (None: no secret);
    `delivered` is the bytes, their body hash and their attachments."""
    raw, digest, attachments = delivered
    storage = gateway.storage
    seed = await storage.newest_signing_seed(agent.user_id)
    if seed is None:
        return None
    claim = identity_claim(
        auth=auth,
        sender=sender.email,
        sender_is_agent=True,
        message_id=message_id,
        body_hash=digest,
        timestamp=received_at,
    )
    conversation = await _conversation(gateway, agent, sender, headers, conversation_id)
    return NewInboundMessage(
        id=message_id,
        agent_email=agent.email,
        envelope_from=sender.email,
        from_addr=sender.email,
        reply_to=headers.reply_to,
        to=headers.to,
        cc=headers.cc,
        subject=headers.subject,
        conversation_id=conversation,
        rfc_message_id=headers.message_id,
        raw_message=raw,
        attachments=attachments,
        auth_headers=claim.signed_headers(derive_signing_secret(gateway.server_key, seed)),
        authentication_results={**auth.as_dict(), "auth": "pass"},
        received_at=received_at,
        helo=gateway.settings.smtp.hostname,
    )
