"""Mail that comes back to our return paths (`bounces+<token>@…`, the envelope sender of every
hand-off): a delivery status notification, a non-standard bounce or an RFC 5965 feedback report
(a complaint) is read (`e2a_gateway.outbound.bounces`) and recorded against the outbound message
its authenticated token names, before the SMTP server answers 250. Return paths are never
agents' inboxes: such mail is not stored as mail.
"""

from __future__ import annotations

import logging

import trio

from e2a_gateway.gateway import Gateway
from e2a_gateway.outbound.bounces import SOLE_ADDRESSEE, Bounce, Complaint, read_returned_mail
from e2a_gateway.outbound.return_path import (
    LOCAL_PART_PREFIX,
    ReturnPath,
    parse_return_path,
    return_path_key,
)
from e2a_gateway.smtp.protocol import Mailbox
from e2a_gateway.smtp.server import MessageNotStored
from e2a_gateway.storage.base import BouncedRecipient, StorageUnavailable

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

    async def record(self, paths: list[ReturnPath], data: bytes, now: float) -> None:
        """Read `data` and record a bounce or a complaint against each message of `paths`;
        anything else that comes back (an auto-reply, a report of success or of a delay, mail
        we cannot read) is dropped with a log line: a recipient a report says is still being
        tried (`Action: delayed`) has not bounced, and may yet receive the message.
        MessageNotStored when storage cannot commit it, so the sender retries."""
        verdict = await trio.to_thread.run_sync(read_returned_mail, data)
        if isinstance(verdict, Complaint):
            await self._record_complaint(paths, verdict, now)
            return
        if not isinstance(verdict, Bounce):
            log.info("returned mail that is no bounce (%s): not recorded", type(verdict).__name__)
            return
        bounced = [
            BouncedRecipient(item.address, item.bounce_type, item.diagnostic or item.status)
            for item in verdict.recipients
            if item.action != "delayed"  # still being tried: no bounce (yet)
        ]
        if not bounced:
            log.info("delay report (still being tried): not recorded")
            return
        for path in paths:
            if verdict.source == SOLE_ADDRESSEE and not await self._sent_to_one(path.message_id):
                log.info(
                    "bounce for %s names no recipient of several: not recorded", path.message_id
                )
                continue
            try:
                matched = await self._gateway.storage.record_bounce(path.message_id, bounced, now)
            except StorageUnavailable as exc:
                raise MessageNotStored(str(exc)) from exc
            log.info(
                "bounce for %s (%s): %s",
                path.message_id,
                ", ".join(f"{item.bounce_type}" for item in bounced),
                "recorded" if matched else "names none of its recipients",
            )

    async def _sent_to_one(self, message_id: str) -> bool:
        """Whether the outbound message was sent to one recipient only (To, Cc and Bcc), so a
        notice about its returned copy's sole addressee can be about nobody else."""
        try:
            message = await self._gateway.storage.get_outbound(None, message_id)
        except StorageUnavailable as exc:
            raise MessageNotStored(str(exc)) from exc
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
            try:
                recorded = await self._gateway.storage.record_complaint(
                    path.message_id, list(complaint.recipients), reason[:MAX_REASON_CHARS], now
                )
            except StorageUnavailable as exc:
                raise MessageNotStored(str(exc)) from exc
            log.info(
                "complaint (%s) about %s: %s",
                complaint.feedback_type,
                path.message_id,
                f"{len(recorded)} recipient(s) suppressed" if recorded else "names no recipient",
            )
