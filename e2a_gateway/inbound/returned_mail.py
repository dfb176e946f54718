"""Mail that comes back to our return paths (`bounces+<token>@…`, the envelope sender of every
hand-off): a delivery status notification, a non-standard bounce or an RFC 5965 feedback report
(a complaint) is read (`e2a_gateway.outbound.bounces`) and recorded against the outbound message
its authenticated token names, before the SMTP server answers 250; a return path made for one
recipient records what the report says of that recipient alone. What is no report — an
auto-reply (RFC 3834 responders answer the envelope sender) or a person's letter (their client
answered the `Return-Path`) — is never recorded against the message: it is inbound mail for the
agent that sent the message, which the pipeline delivers as it delivers any other.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import trio

from e2a_gateway.addresses import AddressError, normalise_address
from e2a_gateway.gateway import Gateway
from e2a_gateway.inbound.not_stored import not_stored
from e2a_gateway.outbound.bounces import (
    SOLE_ADDRESSEE,
    AutoReply,
    Bounce,
    Complaint,
    Letter,
    read_returned_mail,
)
from e2a_gateway.outbound.return_path import (
    LOCAL_PART_PREFIX,
    ReturnPath,
    parse_return_path,
    return_path_key,
)
from e2a_gateway.smtp.protocol import Mailbox
from e2a_gateway.storage.base import BouncedRecipient, OutboundMessage, StorageUnavailable

log = logging.getLogger("e2a.inbound.bounces")

MAX_REASON_CHARS = 500
"""The most of a complaint's description kept as its suppression's reason."""


class ReturnedMail:
    """Recognises our return paths among recipients and records what comes back to them."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway
        self._key = return_path_key(gateway.server_key)

    def return_path(self, mailbox: Mailbox) -> ReturnPath | None:
        """The outbound message `mailbox` is the authentic return path of, or None (at once
        for a local part that does not start like one: every recipient is asked)."""
        if mailbox.local[: len(LOCAL_PART_PREFIX)].lower() != LOCAL_PART_PREFIX:
            return None
        return parse_return_path(mailbox.address, self._key)

    async def receive(
        self, paths: list[ReturnPath], data: bytes, now: float
    ) -> list[OutboundMessage]:
        """Read `data` and record a bounce or a complaint against each message of `paths`; a
        machine's report that records nothing (of success or of a delay, or naming no failure
        we can read) is dropped with a log line: a recipient a report says is still being
        tried (`Action: delayed`) has not bounced, and may yet receive the message. An
        auto-reply or a letter records nothing: the messages of `paths` that exist are
        returned, whose agents it is inbound mail for (none for anything else).
        MessageNotStored when storage cannot commit or read, so the sender retries."""
        verdict = await trio.to_thread.run_sync(read_returned_mail, data)
        if isinstance(verdict, AutoReply | Letter):
            return await self._answered(paths)
        if isinstance(verdict, Complaint):
            await self._record_complaint(paths, verdict, now)
        elif isinstance(verdict, Bounce):
            await self._record_bounce(paths, verdict, now)
        else:
            log.info("returned report that names no failure: not recorded")
        return []

    async def _record_bounce(self, paths: list[ReturnPath], verdict: Bounce, now: float) -> None:
        """Record what a bounce says against each message of `paths` (of the recipient alone
        that a per-recipient return path names); a recipient still being tried has not
        bounced."""
        bounced = [
            BouncedRecipient(item.address, item.bounce_type, item.detail)
            for item in verdict.recipients
            if item.action != "delayed"  # still being tried: no bounce (yet)
        ]
        if not bounced:
            log.info("delay report (still being tried): not recorded")
            return
        for path in paths:
            about = bounced
            if path.recipient_tag is not None:
                recipient = await self._recipient_of(path)
                about = [] if recipient is None else _bounce_of(recipient, bounced, verdict)
                if not about:
                    log.info("bounce for %s names not its return path's recipient", path.message_id)
                    continue
            elif verdict.source == SOLE_ADDRESSEE and not await self._sent_to_one(path.message_id):
                log.info(
                    "bounce for %s names no recipient of several: not recorded", path.message_id
                )
                continue
            try:
                matched = await self._gateway.storage.record_bounce(path.message_id, about, now)
            except StorageUnavailable as exc:
                raise not_stored(exc) from exc
            log.info(
                "bounce for %s (%s): %s",
                path.message_id,
                ", ".join(f"{item.bounce_type}" for item in about),
                "recorded" if matched else "names none of its recipients",
            )

    async def _answered(self, paths: list[ReturnPath]) -> list[OutboundMessage]:
        """The stored messages `paths` name: those a reply to them answers (an authentic return
        path of a message no longer stored delivers nowhere)."""
        answered: list[OutboundMessage] = []
        for path in paths:
            message = await self._outbound(path.message_id)
            if message is None:
                log.info("reply at the return path of %s, which is gone: dropped", path.message_id)
            else:
                answered.append(message)
        return answered

    async def _outbound(self, message_id: str) -> OutboundMessage | None:
        """The outbound message `message_id`, None when it is not stored; MessageNotStored
        when storage cannot say."""
        try:
            return await self._gateway.storage.get_outbound(None, message_id)
        except StorageUnavailable as exc:
            raise not_stored(exc) from exc

    async def _recipient_of(self, path: ReturnPath) -> str | None:
        """The recipient of the outbound message (as the message names it) a per-recipient
        return path was made for; None when there is no such message or it names none."""
        message = await self._outbound(path.message_id)
        if message is None:
            return None
        for address in [*message.to, *message.cc, *message.bcc]:
            # tagged as the relay was given it: normalised (see workers.outbound.recipients_of)
            if path.recipient_among([address, _normalised(address)]) is not None:
                return address
        return None

    async def _sent_to_one(self, message_id: str) -> bool:
        """Whether the outbound message was sent to one recipient only (To, Cc and Bcc), so a
        notice about its returned copy's sole addressee can be about nobody else."""
        message = await self._outbound(message_id)
        if message is None:
            return False
        return len({a.lower() for a in [*message.to, *message.cc, *message.bcc]}) == 1

    async def _record_complaint(
        self, paths: list[ReturnPath], complaint: Complaint, now: float
    ) -> None:
        """Record a feedback report against each message of `paths` (the authentic return
        path it came back to names the message; the report names the recipient)."""
        reason = f"complaint: feedback report ({complaint.feedback_type})"
        if complaint.user_agent:
            reason += f" from {complaint.user_agent}"
        for path in paths:
            named = list(complaint.recipients)
            if path.recipient_tag is not None:
                recipient = await self._recipient_of(path)
                if recipient is None or not _complaint_by(recipient, named):
                    log.info(
                        "complaint about %s names not its return path's recipient",
                        path.message_id,
                    )
                    continue
                named = [recipient]
            try:
                recorded = await self._gateway.storage.record_complaint(
                    path.message_id, named, reason[:MAX_REASON_CHARS], now
                )
            except StorageUnavailable as exc:
                raise not_stored(exc) from exc
            log.info(
                "complaint (%s) about %s: %s",
                complaint.feedback_type,
                path.message_id,
                f"{len(recorded)} recipient(s) suppressed" if recorded else "names no recipient",
            )


def _normalised(address: str) -> str:
    try:
        return normalise_address(address)
    except AddressError:
        return address.strip().lower()


def _bounce_of(
    recipient: str, bounced: list[BouncedRecipient], verdict: Bounce
) -> list[BouncedRecipient]:
    """What a report that came back to `recipient`'s own return path says of them: its entries
    naming them (never another address: that recipient could have written the report), or,
    for a notice naming nobody, its one entry (the returned copy's addressee, which a Bcc
    recipient's copy does not show)."""
    if verdict.source == SOLE_ADDRESSEE:
        return [replace(item, address=recipient) for item in bounced[:1]]
    wanted = {recipient.casefold(), _normalised(recipient)}
    return [
        replace(item, address=recipient)
        for item in bounced
        if item.address.casefold() in wanted or _normalised(item.address) in wanted
    ]


def _complaint_by(recipient: str, named: list[str]) -> bool:
    """Whether a feedback report naming `named` (none: redacted) that came back to
    `recipient`'s own return path is their complaint."""
    wanted = {recipient.casefold(), _normalised(recipient)}
    return not named or any(
        address.casefold() in wanted or _normalised(address) in wanted for address in named
    )
