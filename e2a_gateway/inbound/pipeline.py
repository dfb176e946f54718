"""From accepted DATA to stored messages: authenticate, route, thread, sign, commit, notify.

`InboundMailSink` is what the SMTP listener talks to. It answers RCPT checks from storage and
turns one DATA into one stored message per recipient agent, committed in one transaction
before the listener may answer 250. Live listeners are told only after the commit. Work whose
cost grows with the message (parsing, rewriting, hashing) runs in worker threads, never on the
event loop that serves every session and HTTP request.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

import trio

from e2a_gateway.addresses import AddressError, normalise_address
from e2a_gateway.attachments import Attachment
from e2a_gateway.clock import format_timestamp
from e2a_gateway.gateway import Gateway
from e2a_gateway.hub import Hub
from e2a_gateway.ids import new_id, new_ids
from e2a_gateway.inbound.approval_replies import ApprovalReplies
from e2a_gateway.inbound.gate import aligned_from, awaits_authentication, gate_verdict
from e2a_gateway.inbound.identity import copies_claim, delivered_message, produced_here
from e2a_gateway.inbound.not_stored import not_stored
from e2a_gateway.inbound.parse import HeaderSummary, attachments_of, summarise_headers
from e2a_gateway.inbound.postmaster import (
    NoPostmaster,
    is_own_hostname,
    names_postmaster,
    postmaster_agent,
)
from e2a_gateway.inbound.returned_mail import ReturnedMail
from e2a_gateway.inbound.subaddresses import agent_of_tagged
from e2a_gateway.inbound.trace import (
    ClientNames,
    Hop,
    confirmed_host_name,
    trace_fields,
    transmission_type,
)
from e2a_gateway.mailauth.authenticate import RecentSenders, authenticate_from_recent, check_sender
from e2a_gateway.mailauth.dmarc import author_of
from e2a_gateway.mailauth.dns_answers import DnsTemporaryError
from e2a_gateway.mailauth.resolver import until
from e2a_gateway.mailauth.results import AuthResults, without_results_of
from e2a_gateway.signing.credentials import derive_signing_secret
from e2a_gateway.signing.identity import body_hash
from e2a_gateway.smtp.protocol import Envelope, Mailbox
from e2a_gateway.smtp.server import (
    MessageNotStored,
    RecipientNotChecked,
    RecipientVerdict,
    SenderNotYetAuthenticated,
)
from e2a_gateway.storage.base import (
    Agent,
    ConversationClaim,
    OutboundMessage,
    StorageUnavailable,
)
from e2a_gateway.storage.group_commit import GroupCommitter
from e2a_gateway.storage.new_inbound import NewInboundMessage

log = logging.getLogger("e2a.inbound")

AUTH_THREADS = 16
COMMIT_SETTLE_SECONDS = 30.0
"""How long a DATA whose commit's outcome is unknown waits for the server to end that commit
before it is checked; past it the client hears 451 (`_stored_all_the_same`)."""
INLINE_MAX_BYTES = 16 * 1024
"""Messages up to this size get their delivered form built on the event loop: for them the
work costs less than handing it to a worker thread and back."""


@dataclass(frozen=True)
class Arrival:
    """One accepted DATA, authenticated and in the form agents receive, with the agents it
    goes to and the id of each one's copy: what is left is per recipient (`deliver`)."""

    envelope: Envelope
    peer: str
    auth: AuthResults
    delivered: bytes
    body_hash: str
    """Of the delivered bytes, for every recipient's identity claim."""
    headers: HeaderSummary
    attachments: tuple[Attachment, ...]
    """Of the delivered bytes, shared by every copy (`email.received` lists them)."""
    from_here: bool
    received_at: str
    now: float
    agents: list[Agent]
    message_ids: list[str]
    answers: tuple[str, ...] = ()
    """The Message-IDs of the sent messages whose return paths it came to (an auto-reply or a
    person's letter): threaded into their conversations, whatever its own header fields say."""

    @functools.cached_property
    def authentication_results(self) -> dict[str, str]:
        """The verdicts as every copy stores them (built once for all of them)."""
        return self.auth.as_dict()


Prepared = list[tuple[Agent, NewInboundMessage]]
"""One DATA's stored form: each recipient agent and the message stored for it."""


class InboundMailSink:
    """The gateway's side of the SMTP listener: routing and durable acceptance.

    Each DATA is authenticated and put in its delivered form here, then handed to `deliver`,
    unless another `deliver` is given: an SMTP acceptor process hands it to the main process
    that way (`e2a_gateway.inbound.acceptors`)."""

    def __init__(
        self,
        gateway: Gateway,
        committer: GroupCommitter | None = None,
        *,
        deliver: Callable[[Arrival], Awaitable[str]] | None = None,
    ):
        self._gateway = gateway
        self._committer = committer
        self._deliver = deliver or self.deliver
        self._auth_threads = trio.CapacityLimiter(AUTH_THREADS)
        self._recent_senders = RecentSenders()
        self._client_names = ClientNames()
        self._approval_replies = ApprovalReplies(gateway)
        self._returned = ReturnedMail(gateway)

    async def check_recipient(self, mailbox: Mailbox) -> RecipientVerdict:
        """ACCEPT a registered agent (or a subaddress of one, `_agent_at`), postmaster on our
        domains and at `smtp.hostname`, and a stored notice's reply address
        (`approvals+<token>@<smtp.hostname>`); UNKNOWN_USER for
        anyone else on our domains and at that host, RELAY_DENIED elsewhere. A database that
        does not answer is RecipientNotChecked (the client hears 451)."""
        try:
            return await self._check_recipient(mailbox)
        except StorageUnavailable as exc:
            raise RecipientNotChecked(str(exc)) from exc

    async def _check_recipient(self, mailbox: Mailbox) -> RecipientVerdict:
        domain = mailbox.domain
        postmaster = names_postmaster(mailbox)
        own_host = is_own_hostname(self._gateway.settings, domain)
        if own_host:  # where reply addresses live
            reply_verdict = await self._approval_replies.check_recipient(mailbox)
            if reply_verdict is not None:
                return reply_verdict
            if postmaster:
                return RecipientVerdict.ACCEPT
        if not (
            self._gateway.is_shared_domain(domain)
            or await self._gateway.storage.is_served_domain(domain)
        ):
            # The host name is ours (not a relay destination) though no agent lives there.
            return RecipientVerdict.UNKNOWN_USER if own_host else RecipientVerdict.RELAY_DENIED
        if postmaster or self._returned.return_path(mailbox) is not None:
            return RecipientVerdict.ACCEPT
        try:
            address = _normalised(mailbox.address)
        except AddressError:
            return RecipientVerdict.UNKNOWN_USER
        agent = await self._agent_at(address)
        return RecipientVerdict.ACCEPT if agent is not None else RecipientVerdict.UNKNOWN_USER

    async def _agent_at(self, address: str) -> Agent | None:
        """`agent_at` the normalised `address`, by `smtp.recipient_delimiter`, written out:
        every RCPT asks it, and an address an agent holds must cost its one lookup only."""
        storage = self._gateway.storage
        agent = await storage.find_agent(address)
        if agent is not None:
            return agent
        delimiters = self._gateway.settings.smtp.recipient_delimiter
        return await agent_of_tagged(storage, address, delimiters)

    async def authenticate(self, envelope: Envelope, peer: str) -> AuthResults:
        """SPF, DKIM, DMARC and ARC of the message, within `dns.timeout_seconds`; temperror
        results when the deadline passes, so neither DNS trouble nor a message that is slow to
        parse holds the session longer (naming the author's domain as a finished check does:
        `author_of`, lowercase A-labels). A check that outlasts the deadline is abandoned in its
        worker thread, where its DNS lookups end at the deadline too (`until`): no sender's
        stalled DNS keeps the authentication threads from the next sender's mail. The SMTP
        header limits bound what the rest of it can still cost.

        Unsigned mail with a small header from a sender judged in the last seconds is answered
        from `RecentSenders` at once; everything else is checked in a worker thread."""
        resolver = self._gateway.resolver
        sender = {"client_ip": peer, "helo": envelope.helo, "mail_from": envelope.mail_from}
        recent = authenticate_from_recent(
            resolver, self._recent_senders, **sender, message=envelope.data
        )
        if recent is not None:
            return recent
        deadline = self._gateway.settings.dns.timeout_seconds
        bounded = until(resolver, time.monotonic() + deadline)
        with trio.move_on_after(deadline):
            checked = await trio.to_thread.run_sync(
                lambda: check_sender(bounded, **sender, message=envelope.data),
                abandon_on_cancel=True,
                limiter=self._auth_threads,
            )
            checked.remember_in(self._recent_senders)
            return checked.results
        log.warning("authentication of mail from %s timed out after %.1f s", peer, deadline)
        author = await trio.to_thread.run_sync(author_of, envelope.data)
        return AuthResults.temporary_failure(author.domain)

    async def _client_name(self, peer: str) -> str | None:
        """The client's forward-confirmed reverse DNS name for the Received line; None when it
        has none, or DNS fails or does not answer within `dns.timeout_seconds` (not kept)."""
        seconds = self._gateway.settings.dns.timeout_seconds
        resolver = until(self._gateway.resolver, time.monotonic() + seconds)
        with trio.move_on_after(seconds):
            try:
                name = await trio.to_thread.run_sync(
                    confirmed_host_name,
                    resolver,
                    peer,
                    abandon_on_cancel=True,
                    limiter=self._auth_threads,
                )
            except DnsTemporaryError:
                return None
            self._client_names.remember(peer, name)
            return name
        return None

    async def _authenticate_and_name(
        self, envelope: Envelope, peer: str
    ) -> tuple[AuthResults, str | None]:
        """`authenticate`, and the client's name: known from a recent message, or looked up
        meanwhile."""
        known = self._client_names.get(peer)
        if known is not None:
            return await self.authenticate(envelope, peer), known.name
        client_name: str | None = None

        async def look_up_name() -> None:
            nonlocal client_name
            client_name = await self._client_name(peer)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(look_up_name)
            auth = await self.authenticate(envelope, peer)
        return auth, client_name

    async def accept_message(self, envelope: Envelope, peer: str) -> str:
        """Store one message per recipient agent in one transaction; return the first id.
        A report that comes back to our return paths is recorded against the sent message
        instead (an auto-reply or a letter there is mail for the agent that sent it), and a
        reply to an approval notice among the recipients is acted on (or answered) first;
        both are committed before this returns. Storage that fails on the way (a lookup, the
        postmaster's inbox created, a bounce recorded) is MessageNotStored, as a failed commit
        is: the client hears 451 (452 for a full disk), the log says why in a line."""
        try:
            return await self._accept_message(envelope, peer)
        except StorageUnavailable as exc:
            log.error("could not store message from %s: %s", peer, exc)
            raise not_stored(exc) from exc

    async def _accept_message(self, envelope: Envelope, peer: str) -> str:
        now = time.time()
        returned = {  # each sent message's return path once, however often it is named
            path.message_id: path
            for mailbox in envelope.recipients
            if (path := self._returned.return_path(mailbox)) is not None
        }
        paths = list(returned.values())
        answered: list[OutboundMessage] = []
        if paths:
            answered = await self._returned.receive(paths, envelope.data, now)
            inboxes = [
                mailbox
                for mailbox in envelope.recipients
                if self._returned.return_path(mailbox) is None
            ]
            if not inboxes and not answered:
                return paths[0].message_id
            envelope = replace(envelope, recipients=inboxes)
        auth, client_name = await self._authenticate_and_name(envelope, peer)
        reply_tokens = [
            token
            for mailbox in envelope.recipients
            if (token := self._approval_replies.token_of(mailbox)) is not None
        ]
        for token in dict.fromkeys(reply_tokens):
            await self._approval_replies.handle(token, envelope, auth, now)
        agents = await self._recipient_agents(envelope.recipients, answered)
        if not agents and reply_tokens:
            return new_id("rpl")
        if not agents and paths:  # the agent that sent the message answered is gone
            return paths[0].message_id
        if not agents:
            raise MessageNotStored("every recipient agent was deleted during the transaction")
        message_ids = new_ids("msg", len(agents))
        hostname = self._gateway.settings.smtp.hostname
        hop = smtp_hop(envelope, peer, client_name, hostname, message_ids[0], agents, now)
        if len(envelope.data) <= INLINE_MAX_BYTES:
            delivered, digest, headers = _delivered_form(envelope, auth, hop)
        else:
            delivered, digest, headers = await trio.to_thread.run_sync(
                _delivered_form, envelope, auth, hop
            )
        attachments = await attachments_off_loop(delivered, headers)
        arrival = Arrival(
            envelope=envelope,
            peer=peer,
            auth=auth,
            delivered=delivered,
            body_hash=digest,
            headers=headers,
            attachments=attachments,
            from_here=produced_here(
                auth, envelope.mail_from, self._gateway.settings.outbound_smtp.from_domain
            ),
            received_at=format_timestamp(now),
            now=now,
            agents=agents,
            message_ids=message_ids,
            answers=tuple(message.email_message_id for message in answered),
        )
        return await self._deliver(arrival)

    async def deliver(self, arrival: Arrival) -> str:
        """Thread and sign each agent's copy, commit them all in one transaction, then tell
        live listeners; the first copy's id."""
        return await self._store_copies(
            arrival, list(zip(arrival.agents, arrival.message_ids, strict=True))
        )

    async def deliver_handed_over(self, arrival: Arrival, addresses: list[str]) -> str:
        """`deliver` an arrival an SMTP acceptor handed over with the addresses of its agents
        (known there a moment ago) in place of the agents: each is looked up again here, and
        one deleted since is left out."""
        storage = self._gateway.storage
        copies = [
            (agent, message_id)
            for address, message_id in zip(addresses, arrival.message_ids, strict=True)
            if (agent := await storage.find_agent(address)) is not None
        ]
        if not copies:
            raise MessageNotStored("every recipient agent was deleted during the transaction")
        return await self._store_copies(arrival, copies)

    async def _store_copies(self, arrival: Arrival, copies: list[tuple[Agent, str]]) -> str:
        from_addr = arrival.headers.from_addr
        waiting = [
            agent.email
            for agent, _ in copies
            if awaits_authentication(agent, from_addr, arrival.auth)
        ]
        if waiting:  # a retry may pass the gate of a listed sender: nothing is stored now
            raise SenderNotYetAuthenticated(
                f"the From could not be authenticated for now (DMARC temperror) and the gates "
                f"of {', '.join(waiting)} pass it only authenticated"
            )
        authenticated = aligned_from(from_addr, arrival.auth)
        verdicts = [gate_verdict(agent, authenticated) for agent, _ in copies]
        sender_is_agent = (
            arrival.from_here and await self._gateway.storage.find_agent(from_addr) is not None
        )
        claim = copies_claim(
            auth=arrival.auth,
            sender=from_addr,
            sender_is_agent=sender_is_agent,
            body_hash=arrival.body_hash,
            timestamp=arrival.received_at,
        )
        secrets = await self._signing_secrets(agent for agent, _ in copies)
        threading = _thread_keys(arrival)
        if threading is None:  # nothing to thread by: new conversations, no query needed
            conversations: list[str | None] = [None] * len(copies)
        else:
            conversations = [await self._conversation(agent, threading) for agent, _ in copies]
        # each agent's copy: threaded, its claim signed with its owner's secret, held or flagged
        # as its gate says; the first made whole, the others from it
        prepared: Prepared = []
        for (agent, message_id), verdict, conversation in zip(
            copies, verdicts, conversations, strict=True
        ):
            held_until, reason, blocked = verdict.applied(agent.hitl_ttl_seconds, arrival.now)
            own = {
                "id": message_id,
                "agent_email": agent.email,
                "conversation_id": conversation,
                "auth_headers": claim.signed_headers(message_id, secrets[agent.user_id]),
                "hold_expires_at": held_until,
                "flag_reason": reason,
                "blocked": blocked,
            }
            message = prepared[0][1].copy_for(**own) if prepared else _first_copy(arrival, own)
            prepared.append((agent, message))
        await self._commit_and_announce(prepared, arrival.now)
        return prepared[0][1].id

    async def _signing_secrets(self, agents: Iterable[Agent]) -> dict[str, str]:
        """The secret each owner's copies are signed with (its newest), asked once per owner;
        MessageNotStored when an owner has none."""
        secrets: dict[str, str] = {}
        for agent in agents:
            if agent.user_id not in secrets:
                seed = await self._gateway.storage.newest_signing_seed(agent.user_id)
                if seed is None:
                    raise MessageNotStored(f"owner of {agent.email} has no signing secret")
                secrets[agent.user_id] = _signing_secret(self._gateway.server_key, seed)
        return secrets

    async def _commit_and_announce(self, prepared: Prepared, now: float) -> None:
        """Commit one DATA's messages (and their jobs) in one transaction, then tell live
        listeners; MessageNotStored when storage could not commit them.

        A commit that failed may have been stored all the same: a connection lost while
        PostgreSQL committed leaves the outcome unknown (and a group commit's retry of the
        DATA on its own then breaks on the ids stored). So a failure is checked against what
        is stored, once the server has ended that commit: the client hears 250 when the
        messages are, and 451 (its retry stores them once) when they are not, or when the
        server did not end the commit within COMMIT_SETTLE_SECONDS."""
        messages = [message for _, message in prepared]
        try:
            await (self._committer or self._gateway.storage).store_inbound(messages, now)
        except Exception as exc:
            if not await self._stored_all_the_same(messages):
                if not isinstance(exc, StorageUnavailable):
                    raise
                log.error("could not store message from %s: %s", messages[0].client_ip, exc)
                raise not_stored(exc) from exc
            log.warning(
                "message from %s is stored though its commit seemed to fail (%s)",
                messages[0].client_ip,
                exc,
            )
        announce_stored(self._gateway.hub, prepared)

    async def _stored_all_the_same(self, messages: list[NewInboundMessage]) -> bool:
        """Whether `messages`, whose commit failed, are stored (all of them, as they were
        committed together); asked on a connection other than the one that failed, once any
        transaction still storing mail of their agents (the lost commit, which the server may
        still be running) has ended. False when storage cannot say either."""
        copies = [(message.agent_email, message.id) for message in messages]
        try:
            stored = await self._gateway.storage.stored_copies(
                copies, settle_within=COMMIT_SETTLE_SECONDS
            )
        except StorageUnavailable as exc:
            log.warning(
                "could not check whether the message from %s was stored after its commit "
                "failed (%s); answering 451",
                messages[0].client_ip,
                exc,
            )
            return False
        return len(stored) == len(copies)

    async def _recipient_agents(
        self, recipients: list[Mailbox], answered: list[OutboundMessage]
    ) -> list[Agent]:
        """The agents behind the accepted recipients, then those that sent the `answered`
        messages (mail came to their return paths), each once, skipping any deleted since."""
        agents: dict[str, Agent] = {}
        for mailbox in recipients:
            agent = await self._recipient_agent(mailbox)
            if agent is not None:
                agents.setdefault(agent.email, agent)
        for message in answered:
            agent = await self._gateway.storage.find_agent(message.agent_email)
            if agent is not None:
                agents.setdefault(agent.email, agent)
        return list(agents.values())

    async def _recipient_agent(self, mailbox: Mailbox) -> Agent | None:
        """The agent at an accepted address (`_agent_at`); for postmaster without one, the
        agent that takes postmaster mail (`e2a_gateway.inbound.postmaster`). None: the agent
        was deleted since RCPT."""
        storage = self._gateway.storage
        try:
            agent = await self._agent_at(_normalised(mailbox.address))
        except AddressError:  # postmaster at a host name of one label: no agent's address
            agent = None
        if agent is not None or not names_postmaster(mailbox):
            return agent
        try:
            return await postmaster_agent(self._gateway.settings, storage)
        except NoPostmaster as exc:
            log.error("postmaster mail not stored: %s", exc)
            raise MessageNotStored(str(exc)) from exc

    async def _conversation(self, agent: Agent, threading: _ThreadKeys) -> str | None:
        """delivery.md threading: our own X-E2A-Conversation-Id, else the conversation of the
        first message named by In-Reply-To, then References (newest first), that this agent
        sent or received, else None. Our own id names a conversation of this agent only when
        the sender is already in it or the references lead to it (another tenant's agent
        cannot thread into it)."""
        return await self._gateway.storage.conversation_for(
            agent.user_id, agent.email, threading.referenced, threading.claim
        )


def _first_copy(arrival: Arrival, own: dict[str, Any]) -> NewInboundMessage:
    """The stored form of `arrival` for its first agent, with that copy's `own` fields (those
    of COPY_OWN_FIELDS: threaded, signed, held or flagged as its agent's gate says); the
    further copies are made from it (`NewInboundMessage.copy_for`)."""
    headers = arrival.headers
    return NewInboundMessage(
        **own,
        envelope_from=arrival.envelope.mail_from,
        from_addr=headers.from_addr or arrival.envelope.mail_from.lower(),
        reply_to=headers.reply_to,
        to=headers.to,
        cc=headers.cc,
        subject=headers.subject,
        rfc_message_id=headers.message_id,
        raw_message=arrival.delivered,
        authentication_results=arrival.authentication_results,
        received_at=arrival.received_at,
        client_ip=arrival.peer,
        helo=arrival.envelope.helo,
        attachments=arrival.attachments,
        raw_digest=arrival.body_hash,
    )


@dataclass(frozen=True)
class _ThreadKeys:
    """What a message is threaded by, the same for every copy: the Message-IDs it refers to
    and our own conversation id when it came from this deployment."""

    referenced: list[str]
    claim: ConversationClaim | None


MAX_REFERENCES = 100
"""Message-IDs looked up when threading, at most: bounds the lookup for mail with absurdly
long References."""


def _thread_keys(arrival: Arrival) -> _ThreadKeys | None:
    """What the arrival is threaded by; None when there is nothing (a new conversation)."""
    headers = arrival.headers
    claim = None
    if arrival.from_here and headers.conversation_id:
        claim = ConversationClaim(headers.conversation_id, headers.from_addr or "")
    referenced = list(dict.fromkeys([*arrival.answers, *headers.referenced_ids()]))
    referenced = referenced[:MAX_REFERENCES]
    if not referenced and claim is None:
        return None
    return _ThreadKeys(referenced, claim)


_normalised = functools.lru_cache(maxsize=4096)(normalise_address)
"""`normalise_address`, remembered: every RCPT and every copy of a message asks it again."""
_signing_secret = functools.lru_cache(maxsize=1024)(derive_signing_secret)
"""`derive_signing_secret`, remembered: the copies for one owner's agents share a secret."""


def smtp_hop(
    envelope: Envelope,
    peer: str,
    client_name: str | None,
    hostname: str,
    queue_id: str,
    agents: list[Agent],
    now: float,
) -> Hop:
    """The Received line's facts for one DATA. It names its recipient (`for`) only when there
    is one agent: the copies for several agents carry the same bytes, and no agent learns of the
    others (Bcc included). The address named is the envelope's sole recipient as it was given
    (normalised, a subaddress's tag kept: where an agent reads the tag it was mailed at, To
    or Bcc), else the agent's own."""
    return Hop(
        helo=envelope.helo,
        client_ip=peer,
        client_name=client_name,
        hostname=hostname,
        protocol=transmission_type(
            extended=envelope.extended, tls=envelope.tls, smtputf8=envelope.smtputf8
        ),
        queue_id=queue_id,
        recipient=_sole_recipient(envelope, agents[0]) if len(agents) == 1 else None,
        when=now,
    )


def _sole_recipient(envelope: Envelope, agent: Agent) -> str:
    """The envelope's one recipient, normalised, when it has one; else `agent`'s address."""
    if len(envelope.recipients) != 1:
        return agent.email
    try:
        return _normalised(envelope.recipients[0].address)
    except AddressError:  # postmaster without a domain
        return agent.email


def _delivered_form(
    envelope: Envelope, auth: AuthResults, hop: Hop
) -> tuple[bytes, str, HeaderSummary]:
    """The bytes agents receive — trace fields, then our Authentication-Results, then the
    message without Authentication-Results fields forged in our name (RFC 8601 section 5) —
    their body hash, and the header fields indexed from them."""
    authserv_id = hop.hostname
    delivered = delivered_message(
        without_results_of(envelope.data, authserv_id),
        auth.header(authserv_id),
        trace_fields(envelope.mail_from, hop),
    )
    return delivered, body_hash(delivered), summarise_headers(delivered)


async def attachments_off_loop(raw: bytes, headers: HeaderSummary) -> tuple[Attachment, ...]:
    """`attachments_of(raw, headers)`: none at once for a single text part, else parsed in a
    worker thread (parsing MIME costs a millisecond and more: not on the event loop)."""
    if headers.single_text_part:
        return ()
    return await trio.to_thread.run_sync(attachments_of, raw, headers)


def announce_stored(hub: Hub, prepared: list[tuple[Agent, NewInboundMessage]]) -> None:
    """After commit: tell live listeners (local agents' WebSockets, open dashboard inboxes of
    any agent) of the copies delivered now: not of one held for review (its agent hears of it
    once it is approved) or blocked. The commit itself woke the webhook worker for cloud
    agents' mail."""
    for agent, message in prepared:
        if message.delivered:
            hub.publish_message(agent.id, message)
