"""Replies to approval notices, received over SMTP: the reply address's RCPT check, and the review a
reply makes or the answer explaining why it made none (`e2a_gateway.inbound.reply_commands`).

Only `approvals+<token>@<smtp.hostname>` with a token of a stored notice is accepted (any other
token is refused at RCPT, so nothing is ever mailed to a forged sender). Whatever a reply
leads to is committed before `handle` returns, so the client hears 250 only after it.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import trio

from e2a_gateway.automatic_mail import automatic_mail_reason, header_fields
from e2a_gateway.gateway import Gateway
from e2a_gateway.inbound.not_stored import not_stored
from e2a_gateway.inbound.parse import parse_body, summarise_headers
from e2a_gateway.inbound.postmaster import is_own_hostname
from e2a_gateway.inbound.reply_commands import (
    Refusal,
    ReplyFacts,
    answer_text,
    parse_command,
    refusal_of,
)
from e2a_gateway.mailauth.results import AuthResults
from e2a_gateway.mime_parse import parse_message, text_flow
from e2a_gateway.operations import lifecycle, reviews
from e2a_gateway.outbound.mime import Draft, InvalidDraft, build_message, new_message_id
from e2a_gateway.outbound.notice_sender import notice_sender
from e2a_gateway.signing.reply_tokens import hash_reply_token, token_in_local_part
from e2a_gateway.smtp.protocol import Envelope, Mailbox
from e2a_gateway.smtp.server import RecipientVerdict, SenderNotYetAuthenticated
from e2a_gateway.storage.base import (
    PAST_DEADLINE,
    AgentInTrash,
    ApprovalAnswer,
    NotPending,
    OutboundMessage,
    RecipientsSuppressed,
    ReplyToken,
    StorageUnavailable,
)

log = logging.getLogger("e2a.approvals")

MAX_ANSWERS = 5
"""At most this many answers are mailed about replies to one notice: someone holding a leaked
notice cannot flood its reviewer."""


def reply_facts(data: bytes, auth: AuthResults, mail_from: str, own: str) -> ReplyFacts:
    """The facts `refusal_of` judges a reply by, from its bytes, its authentication, its
    envelope sender (`mail_from`, '' for the null sender) and the address notices come from
    (`own`): whether it is automatic mail is judged as everywhere in e2a (`automatic_mail`)."""
    headers = summarise_headers(data)
    automatic = automatic_mail_reason(
        header_fields(data), mail_from.lower(), headers.from_addr, own
    )
    return ReplyFacts(
        from_addr=headers.from_addr,
        dmarc=auth.dmarc,
        dmarc_domain=auth.from_domain,
        referenced=tuple(headers.referenced_ids()),
        automatic=automatic,
        message_id=headers.message_id,
    )


def standing(message: OutboundMessage | None) -> str:
    """How a decided message stands, in a few words: `rejected by x@y (reply) at …`."""
    if message is None:
        return "it no longer exists"
    words: list[str] = [message.status]
    if message.reviewed_by:
        words.append(f"by {message.reviewed_by}")
    if message.review_method:
        words.append(f"({message.review_method})")
    if message.reviewed_at:
        words.append(f"at {message.reviewed_at}")
    return " ".join(words)


def _text_flow(data: bytes) -> tuple[bool, bool]:
    """`mime_parse.text_flow` of the message `data`; not flowed when it cannot be parsed."""
    try:
        return text_flow(parse_message(data))
    except (RecursionError, IndexError, ValueError):
        return False, False


class ApprovalReplies:
    """The approval-reply side of the SMTP sink."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    def token_of(self, mailbox: Mailbox) -> str | None:
        """The token of `approvals+<token>@<smtp.hostname>`, or None for any other address."""
        if not is_own_hostname(self._gateway.settings, mailbox.domain):
            return None
        return token_in_local_part(mailbox.local)

    async def check_recipient(self, mailbox: Mailbox) -> RecipientVerdict | None:
        """None for an address that is no reply address; else ACCEPT when its token is a
        stored notice's, UNKNOWN_USER (550) when not."""
        token = self.token_of(mailbox)
        if token is None:
            if mailbox.local.lower().startswith("approvals+") and is_own_hostname(
                self._gateway.settings, mailbox.domain
            ):
                return RecipientVerdict.UNKNOWN_USER
            return None
        stored = await self._gateway.storage.find_reply_token(hash_reply_token(token))
        return RecipientVerdict.ACCEPT if stored is not None else RecipientVerdict.UNKNOWN_USER

    async def handle(self, token: str, envelope: Envelope, auth: AuthResults, now: float) -> None:
        """Act on one reply to a notice, or commit the answer saying why not (none for
        automatic mail); MessageNotStored when storage could not commit either, and
        SenderNotYetAuthenticated (451 4.7.0, nothing done) when the reply is refused only for
        a DMARC check DNS trouble left undecided (temperror): the sender's retry may pass."""
        try:
            await self._handle(token, envelope, auth, now)
        except StorageUnavailable as exc:
            log.error("approval reply not handled: %s", exc)
            raise not_stored(exc) from exc

    async def _handle(self, token: str, envelope: Envelope, auth: AuthResults, now: float) -> None:
        storage = self._gateway.storage
        token_hash = hash_reply_token(token)
        stored = await storage.find_reply_token(token_hash)
        if stored is None:
            log.info("approval reply dropped: its held message was deleted since RCPT")
            return
        own = notice_sender(self._gateway.settings)
        facts = await trio.to_thread.run_sync(
            reply_facts, envelope.data, auth, envelope.mail_from, own
        )
        if stored.used_by is not None and stored.used_by == facts.message_id:
            # the sender's retry of the reply that acted (its copies for agents failed): done
            log.info("approval reply for %s acted on already", stored.message_id)
            return
        standing_now = ""
        refusal = refusal_of(
            facts, stored.reviewer, stored.notice_message_id, stored.used_at is not None
        )
        if refusal == "no_dmarc_pass" and facts.dmarc == "temperror":
            # DNS could not answer for the reviewer's domain: a retry may pass, so the reply
            # is deferred rather than refused for good (the reviewer told to fix their DNS)
            raise SenderNotYetAuthenticated(
                f"the reply's From could not be authenticated for now (DMARC temperror) for "
                f"held message {stored.message_id}"
            )
        message = await storage.get_outbound(None, stored.message_id)
        if refusal is None and (message is None or not lifecycle.awaits_review(message.status)):
            refusal = "already_decided"
        if refusal is None:
            body = await trio.to_thread.run_sync(parse_body, envelope.data)
            flowed, delsp = await trio.to_thread.run_sync(_text_flow, envelope.data)
            command = parse_command(body.text, body.html, flowed=flowed, delsp=delsp)
            if command is None:
                refusal = "no_command"
            else:
                try:
                    reviewed = await storage.review_by_reply(
                        token_hash, command.approve, command.reason, now, facts.message_id
                    )
                except AgentInTrash as exc:
                    refusal, standing_now = "agent_in_trash", exc.agent_email
                except NotPending as exc:
                    message = await storage.get_outbound(None, stored.message_id)
                    refusal, standing_now = await self._not_pending(exc, message)
                except RecipientsSuppressed as exc:
                    refusal, standing_now = "recipient_suppressed", ", ".join(exc.addresses)
                else:
                    log.info(
                        "outbound %s %s by reply",
                        stored.message_id,
                        reviewed.status if reviewed else "gone",
                    )
                    return
        await self._answer(stored, refusal, facts, message, envelope.data, now, standing_now)

    async def _not_pending(
        self, refused: NotPending, message: OutboundMessage | None
    ) -> tuple[Refusal, str]:
        """Why a reply's review was refused as not pending, and what to say of the message:
        decided already, or past its deadline (which its agent's expiration action decides)."""
        if str(refused) != PAST_DEADLINE or message is None:
            return "already_decided", ""
        action = await reviews.expiration_action(self._gateway, message)
        return "past_deadline", "sent anyway" if action == "approve" else "discarded"

    async def _answer(
        self,
        stored: ReplyToken,
        refusal: Refusal,
        facts: ReplyFacts,
        message: OutboundMessage | None,
        data: bytes,
        now: float,
        standing_now: str = "",
    ) -> None:
        """Commit the mail telling the reviewer (only them) why the reply did nothing (none for
        automatic mail);
        `standing_now` says more where the refusal needs it (`answer_text`), else how the
        message stands is said."""
        log.info("approval reply for %s not acted on: %s", stored.message_id, refusal)
        if refusal == "automatic" or message is None:
            return  # never answer an automatic reply (RFC 3834); a deleted message has no one
        sender = notice_sender(self._gateway.settings)
        text = answer_text(
            refusal, facts, stored.reviewer, stored.message_id, standing_now or standing(message)
        )
        reply_id = summarise_headers(data).message_id
        draft = Draft(
            from_addr=sender,
            to=[stored.reviewer],
            subject=f"Not done: your reply about held message {stored.message_id}",
            text=text,
            in_reply_to=reply_id,
            references=[reply_id] if reply_id else [],
            auto_submitted="auto-replied",
        )
        domain = sender.rpartition("@")[2]
        try:
            built = build_message(draft, message_id=new_message_id(domain), date=time.time())
        except InvalidDraft:
            plain = dataclasses.replace(draft, in_reply_to=None, references=[])
            built = build_message(plain, message_id=new_message_id(domain), date=time.time())
        answer = ApprovalAnswer(stored.message_id, sender, stored.reviewer, built)
        storage = self._gateway.storage
        if not await storage.add_approval_answer(answer, stored.token_hash, MAX_ANSWERS, now):
            log.warning(
                "approval reply for %s not answered: the notice had %d answers already",
                stored.message_id,
                MAX_ANSWERS,
            )
