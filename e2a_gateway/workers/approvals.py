"""The human-in-the-loop worker: emails owners about messages awaiting their approval (and
the answers to replies it did not act on), and applies each agent's `hitl_expiration_action`
once a message's approval TTL has passed.

Notices carry recipients, subject, expiry and two magic links — never the body. The worker
decides nothing about a message itself: approving and rejecting happen in storage, once.
"""

from __future__ import annotations

import logging
import time
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import trio

from e2a_gateway.addresses import AddressError, normalise_address
from e2a_gateway.clock import format_timestamp
from e2a_gateway.config import Settings
from e2a_gateway.gateway import Gateway
from e2a_gateway.inbound.postmaster import OPERATOR_MAILBOXES, is_own_hostname
from e2a_gateway.local_delivery import agent_here
from e2a_gateway.operations import lifecycle
from e2a_gateway.outbound.dkim_signing import sign_as_sender
from e2a_gateway.outbound.mime import Draft, InvalidDraft, build_message, new_message_id
from e2a_gateway.outbound.notice_sender import notice_sender
from e2a_gateway.outbound.relay import hand_off
from e2a_gateway.rate_windows import RateLimit
from e2a_gateway.rfc5322 import address_list
from e2a_gateway.signing.magic_links import Action, issue_token, link_key
from e2a_gateway.signing.reply_tokens import generate_reply_token, reply_address
from e2a_gateway.smtp.client import Outcome, Outgoing
from e2a_gateway.storage.base import (
    Agent,
    Job,
    OutboundMessage,
    ReplyToken,
    StorageError,
    User,
)
from e2a_gateway.storage.vocabulary import APPROVAL_ANSWER_JOB, APPROVAL_NOTICE_JOB
from e2a_gateway.workers.leases import JOB_LEASE_SECONDS, HeldLease, lease_kept
from e2a_gateway.workers.retry_schedules import APPROVAL_NOTICE, attempt_ended
from e2a_gateway.workers.rounds import Rounds
from e2a_gateway.workers.stop_grace import StopGrace

log = logging.getLogger("e2a.approvals")

EXPIRY_INTERVAL_SECONDS = 15.0
NOTICE_POLL_SECONDS = 5.0
NOTICE_BATCH = 16
MAX_NOTICES_IN_FLIGHT = 8
EXPIRE_BATCH = 500
"""`expire_outbound` handles at most this many messages per call; a full batch means more."""
NOTICE_WINDOW_SECONDS = 3600
"""The window `limits.approval_notices_per_user_per_hour` counts an owner's notices in."""


@dataclass(frozen=True)
class Notice:
    """One approval notice, ready to hand to the relay."""

    sender: str
    recipient: str
    data: bytes
    message_id: str
    """The notice's own Message-ID, which a reply must quote to act."""


def magic_link(public_url: str, action: Action, token: str) -> str:
    """`{public_url}/api/v1/<action>?token=<token>` (tokens are base64url: no escaping)."""
    return f"{public_url.rstrip('/')}/api/v1/{action}?token={token}"


def _one_line(text: str) -> str:
    """Agent-written `text` as one plain line: every control or format character (line breaks,
    bidirectional overrides, zero-width spaces) a space, and every run of white space one
    space. It can then neither break a header or the layout, reorder what follows it, nor pad
    itself out until a mail client wraps part of it onto a line that looks like the notice's
    own (a link of the attacker's under a heading of ours)."""
    visible = "".join(" " if unicodedata.category(char)[0] == "C" else char for char in text)
    return " ".join(visible.split())


def notice_text(
    message: OutboundMessage,
    expiration_action: str,
    approve_url: str,
    reject_url: str,
    *,
    by_reply: bool = False,
) -> str:
    """The plain-text summary a reviewer reads: who, what subject, until when — no body."""
    deadline = format_timestamp(message.approval_expires_at or 0.0)
    fate = "sent anyway" if expiration_action == "approve" else "discarded"
    lines = [
        f"Your agent {message.agent_email} wants to send an email that needs your approval.",
        "",
        f"To:       {_one_line(', '.join(message.to)) or '(none)'}",
    ]
    if message.cc:
        lines.append(f"Cc:       {_one_line(', '.join(message.cc))}")
    if message.bcc:
        lines.append(f"Bcc:      {_one_line(', '.join(message.bcc))}")
    if message.reply_to:  # where the recipients' answers go: the agent's choice
        lines.append(f"Reply-To: {_one_line(', '.join(address_list(message.reply_to)))}")
    lines += [
        f"Subject:  {_one_line(message.subject)}",
        f"Expires:  {deadline} (if nobody decides by then, it is {fate})",
        f"Message:  {message.id}",
        "",
        "Approve (opens a confirmation page):",
        approve_url,
        "",
        "Reject (opens a confirmation page):",
        reject_url,
        "",
    ]
    if by_reply:
        lines += [
            "Or reply to this email with a first line of `approve`, `reject`, or",
            "`reject: <reason>`, above any quoted text (from this address only).",
            "",
        ]
    lines += [
        "To read the body or edit the message before approving, use the API",
        f"(GET /api/v1/messages/{message.id}) or the e2a CLI.",
        "",
        "Anyone holding these links can act on this message; do not forward this email.",
    ]
    return "\n".join(lines) + "\n"


def build_notice(
    settings: Settings,
    message: OutboundMessage,
    owner: User,
    agent: Agent | None,
    key: bytes,
    now: float,
    reply_to: str | None = None,
) -> Notice:
    """The notice email about `message` for its owner, with magic links freshly issued under
    `key` (`link_key` of the server key); with `reply_to` (the notice's reply address) the
    owner may also answer it (`e2a_gateway.inbound.approval_replies`)."""
    deadline = int(message.approval_expires_at or now)
    approve = magic_link(
        settings.http.public_url, "approve", issue_token(key, message.id, "approve", deadline)
    )
    reject = magic_link(
        settings.http.public_url, "reject", issue_token(key, message.id, "reject", deadline)
    )
    action = agent.hitl_expiration_action if agent is not None else "reject"
    sender = notice_sender(settings)
    draft = Draft(
        from_addr=sender,
        to=[owner.email],
        subject=f"Approval needed: {_one_line(message.subject)}"[:200],
        text=notice_text(message, action, approve, reject, by_reply=reply_to is not None),
        reply_to=reply_to,
        auto_submitted="auto-generated",
    )
    domain = sender.rpartition("@")[2]
    message_id = new_message_id(domain)
    data = build_message(draft, message_id=message_id, date=now)
    return Notice(sender, owner.email, data, message_id)


async def lands_in_an_inbox_here(gateway: Gateway, address: str) -> bool:
    """Whether mail to `address` would come back to this gateway and be stored for one of its
    agents: an address on the shared domain or at `smtp.hostname` (the gateway is their MX,
    whatever agent holds them now or later), an agent's address, or postmaster or abuse at a domain
    the gateway serves (the postmaster inbox). A reviewer's address must never be one: the agent
    reading that inbox would hold the notice's links and reply address, and could approve held
    mail itself — its own included."""
    try:
        normalised = normalise_address(address)
    except AddressError:
        normalised = address.strip().lower()
    local, _, domain = normalised.rpartition("@")
    if gateway.is_shared_domain(domain) or is_own_hostname(gateway.settings, domain):
        return True
    if await agent_here(gateway, normalised) is not None:  # a tag reaches its agent too
        return True
    return local in OPERATOR_MAILBOXES and await gateway.storage.is_served_domain(domain)


@contextmanager
def _left_to_its_lease(what: str, job: Job) -> Iterator[None]:
    """Log a storage failure of the block handling `job` instead of raising it: the job keeps
    its lease and is claimed again once the lease runs out, and the work beside it goes on."""
    try:
        yield
    except StorageError as exc:
        log.warning(
            "%s for %s: the database failed (%s); tried again after its lease",
            what,
            job.message_id,
            exc,
        )


class ApprovalWorker:
    """Sends approval notices and applies expiry. `send_due_notices(now)` and
    `expire_due(now)` each do one round (tests pass their own clock); `run()` loops forever,
    sweeping for expiry every `expiry_seconds`.

    A round the database fails (a lost connection, a lock wait cancelled, a database that
    takes no writes) is logged and made again at the next tick, and a notice or answer it
    fails is left to its job's lease: ending the worker would cut short the hand-offs in flight
    beside it, which a restart mails again.
    """

    def __init__(
        self,
        gateway: Gateway,
        clock: Callable[[], float] = time.time,
        poll_seconds: float = NOTICE_POLL_SECONDS,
        expiry_seconds: float = EXPIRY_INTERVAL_SECONDS,
    ) -> None:
        self._gateway = gateway
        self._clock = clock
        self._poll_seconds = poll_seconds
        self._expiry_seconds = expiry_seconds
        self._rounds = Rounds(log)
        self._warned_no_relay = False
        self._signer = gateway.dkim_signer
        self._grace = StopGrace(gateway.settings.smtp.shutdown_grace_seconds, "approval mails")

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Expire overdue messages every EXPIRY_INTERVAL_SECONDS (at once on start, so a
        restart catches up) and send notices as their jobs are committed (looking again every
        `poll_seconds` regardless), until cancelled; report started once the first look at
        the queue is done. Once cancelled, the notices and answers being handed to the relay get
        `smtp.shutdown_grace_seconds` to finish, so a restart does not mail them twice."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self._grace.stop_when_cancelled)
            nursery.start_soon(self._expire_forever)
            await nursery.start(self._answer_forever)
            added, claimed = await self._look()
            task_status.started()
            while True:
                if claimed < NOTICE_BATCH:
                    with trio.move_on_after(self._poll_seconds):
                        await added.wait()
                added, claimed = await self._look()

    async def _look(self) -> tuple[trio.Event, int]:
        """Send the notices due now: the wake-up for notices added meanwhile (armed before
        looking) and how many were claimed (none when the database failed the claim)."""
        added = self._gateway.jobs.added(APPROVAL_NOTICE_JOB)
        claimed = await self._rounds.run("approval notices", self.send_due_notices(self._clock()))
        return added, claimed or 0

    async def _answer_forever(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Send reply answers as their jobs are committed (looking again every `poll_seconds`
        regardless), until cancelled."""
        started = False
        while True:
            added = self._gateway.jobs.added(APPROVAL_ANSWER_JOB)
            claimed = await self._rounds.run(
                "approval answers", self.send_due_answers(self._clock())
            )
            if not started:
                started = True
                task_status.started()
            if (claimed or 0) < NOTICE_BATCH:
                with trio.move_on_after(self._poll_seconds):
                    await added.wait()

    async def _renewed(self, job: Job, what: str) -> HeldLease | None:
        """The lease on `job`, renewed as its turn comes (it may have waited for a slot behind
        slow hand-offs); None (logged) when the lease passed to another claim meanwhile, or the
        job is gone: that claim mails it, this one must not mail it again."""
        now = self._clock()
        until = await self._gateway.storage.renew_job_lease(
            job.id, job.leased_until, now, JOB_LEASE_SECONDS
        )
        if until is None:
            log.info(
                "%s for %s: taken by another claim while it waited; not mailed here",
                what,
                job.message_id,
            )
            return None
        return HeldLease(until, now + JOB_LEASE_SECONDS)

    async def _hand_off(
        self, job: Job, held: HeldLease, message: Outgoing, what: str, now: float
    ) -> tuple[Outcome, float]:
        """Hand `message` to the relay, renewing the lease `held` on `job` every third of it
        meanwhile (`lease_kept`): a slow link may make the hand-off outlast any lease, and
        another replica must not mail it again. Should the lease pass to another claim all the
        same (the database failing every renewal), finishing the job is left to that claim.
        Returns the outcome and when the hand-off ended (`attempt_ended`, `now` being when its
        job was claimed), which a retry is timed from."""
        settings = self._gateway.settings
        began = self._clock()
        async with lease_kept(
            self._gateway.storage,
            job.id,
            lambda: held,
            JOB_LEASE_SECONDS,
            self._clock,
            f"{what} for {job.message_id}",
        ):
            outcome = await hand_off(settings.outbound_smtp, settings.smtp.hostname, message)
        return outcome, attempt_ended(now, began, self._clock())

    @staticmethod
    def _passed(done: bool, what: str, job: Job) -> None:
        """Log that `job` was not finished (`done` False): its lease ran out and passed to
        another claim, whose outcome stands."""
        if not done:
            log.warning(
                "%s for %s: the lease ran out during the attempt and another claim took the "
                "job; this attempt's outcome is not recorded",
                what,
                job.message_id,
            )

    async def _finish(self, job: Job, held: HeldLease, retry_at: float | None, what: str) -> None:
        """Drop `job`, or put it back due at `retry_at`, under the lease `held` it was handled
        under."""
        done = await self._gateway.storage.finish_job(job.id, retry_at, held.until)
        self._passed(done, what, job)

    async def _finish_answer(self, job: Job, held: HeldLease, answer_id: int) -> None:
        """Drop an answer handed on (or given up) and its job, under the lease `held` on it."""
        storage = self._gateway.storage
        done = await storage.finish_approval_answer(job.id, answer_id, held.until)
        self._passed(done, "approval answer", job)

    async def send_due_answers(self, now: float) -> int:
        """Claim up to NOTICE_BATCH due reply-answer jobs and hand each answer to the relay,
        one held message's answers at a time, each under its job's lease renewed as its turn
        comes (`_renewed`); return how many jobs were claimed."""
        jobs = await self._gateway.storage.claim_jobs(
            APPROVAL_ANSWER_JOB, now, NOTICE_BATCH, JOB_LEASE_SECONDS
        )
        by_message: dict[str, list[Job]] = {}
        for job in jobs:
            by_message.setdefault(job.message_id, []).append(job)
        limiter = trio.CapacityLimiter(MAX_NOTICES_IN_FLIGHT)

        async def handle(batch: list[Job]) -> None:
            async with limiter:
                for job in batch:
                    with self._grace.shielded(), _left_to_its_lease("approval answer", job):
                        held = await self._renewed(job, "approval answer")
                        if held is not None:
                            await self._answer(job, held, now)

        async with trio.open_nursery() as nursery:
            for batch in by_message.values():
                nursery.start_soon(handle, batch)
        return len(jobs)

    async def _answer(self, job: Job, held: HeldLease, now: float) -> None:
        """Hand one answer to the relay: dropped with its job once sent or refused for good,
        else retried on the APPROVAL_NOTICE schedule until it gives up."""
        storage = self._gateway.storage
        settings = self._gateway.settings
        answer = await storage.next_approval_answer(job.message_id, job.id)
        if answer is None:
            await self._finish(job, held, None, "approval answer")
            return
        if not settings.outbound_smtp.host:
            log.warning("answer to an approval reply not mailed: outbound_smtp.host is not set")
            await self._finish_answer(job, held, answer.id)
            return
        outgoing = Outgoing(
            answer.sender,
            (answer.recipient,),
            sign_as_sender(self._signer, answer.data, answer.sender),
        )
        outcome, now = await self._hand_off(job, held, outgoing, "approval answer", now)
        if answer.recipient in outcome.accepted or answer.recipient in outcome.refused:
            log.info("answer to an approval reply about %s handed on", job.message_id)
            await self._finish_answer(job, held, answer.id)
            return
        retry_at = APPROVAL_NOTICE.next_attempt_at(
            job.attempts + 1, now=now, first_at=job.created_at
        )
        if retry_at is None:
            log.warning("answer to an approval reply about %s abandoned", job.message_id)
            await self._finish_answer(job, held, answer.id)
        else:
            await self._finish(job, held, retry_at, "approval answer")

    async def _expire_forever(self) -> None:
        """Sweep for expiry every `expiry_seconds` (at once on start), until cancelled."""
        while True:
            await self._rounds.run("approval expiry", self.expire_due(self._clock()))
            await trio.sleep(self._expiry_seconds)

    async def expire_due(self, now: float) -> list[OutboundMessage]:
        """Apply the expiration action to every message overdue at `now` (the commit of an
        auto-approval queues its send and wakes the send worker), and to every inbound message
        held past its hold (approved: delivered). Returns the outbound messages expired."""
        storage = self._gateway.storage
        expired: list[OutboundMessage] = []
        while True:
            batch = await storage.expire_outbound(now)
            expired += batch
            if len(batch) < EXPIRE_BATCH:
                break
        for message in expired:
            log.info("outbound %s approval expired -> %s", message.id, message.status)
        while True:  # inbound holds: the same agents' expiration action, batch by batch
            holds = await storage.expire_inbound_holds(now)
            for agent_id, released in holds.delivered:  # delivered now: as on arrival
                self._gateway.hub.publish_message(agent_id, released)
            if holds.resolved < EXPIRE_BATCH:
                break
        return expired

    async def send_due_notices(self, now: float) -> int:
        """Claim up to NOTICE_BATCH due notice jobs and handle each, MAX_NOTICES_IN_FLIGHT at
        once, under its job's lease renewed as its turn comes (`_renewed`); return how many."""
        jobs = await self._gateway.storage.claim_jobs(
            APPROVAL_NOTICE_JOB, now, NOTICE_BATCH, JOB_LEASE_SECONDS
        )
        limiter = trio.CapacityLimiter(MAX_NOTICES_IN_FLIGHT)

        async def handle(job: Job) -> None:
            async with limiter:
                with self._grace.shielded(), _left_to_its_lease("approval notice", job):
                    held = await self._renewed(job, "approval notice")
                    if held is not None:
                        await self._notify(job, held, now)

        async with trio.open_nursery() as nursery:
            for job in jobs:
                nursery.start_soon(handle, job)
        return len(jobs)

    async def _notify(self, job: Job, held: HeldLease, now: float) -> None:
        """Send one notice; drop its job when sent or pointless (the message resolved, or its
        agent in the trash: its links would lead nowhere), else reschedule it."""
        storage = self._gateway.storage
        settings = self._gateway.settings
        message = await storage.get_outbound(None, job.message_id, live=True)
        if message is None or not lifecycle.awaits_review(message.status):
            await self._finish(job, held, None, "approval notice")
            return
        if not settings.outbound_smtp.host:
            if not self._warned_no_relay:
                self._warned_no_relay = True
                log.warning(
                    "outbound_smtp.host is not set: approval notices are not emailed; review "
                    "pending messages over the API or the CLI"
                )
            await self._finish(job, held, None, "approval notice")
            return
        reviewer = await self._reviewer(message)
        if reviewer is None:
            await self._finish(job, held, None, "approval notice")
            return
        room_at = await self._notice_room(job, message, now)
        if room_at is not None:
            await self._wait_for_room(job, held, message, room_at)
            return
        notice = await self._prepare(message, *reviewer, now)
        if notice is None:
            await self._finish(job, held, None, "approval notice")
            return
        outgoing = Outgoing(
            notice.sender,
            (notice.recipient,),
            sign_as_sender(self._signer, notice.data, notice.sender),
        )
        outcome, now = await self._hand_off(job, held, outgoing, "approval notice", now)
        if notice.recipient in outcome.accepted:
            log.info("approval notice for %s sent to %s", message.id, notice.recipient)
            await self._finish(job, held, None, "approval notice")
        elif notice.recipient in outcome.refused:
            log.warning(
                "approval notice for %s refused by the relay: %s",
                message.id,
                outcome.refused[notice.recipient],
            )
            await self._finish(job, held, None, "approval notice")
        else:
            await self._retry_later(job, held, message, now, outcome.error or str(outcome.deferred))

    async def _reviewer(self, message: OutboundMessage) -> tuple[User, Agent | None] | None:
        """The owner to notify about `message` and its agent, or None (logged) when the owner
        cannot be reached or has turned the agent's approval notifications off."""
        storage = self._gateway.storage
        owner = await storage.get_user(message.user_id)
        if owner is None:
            log.warning("approval notice for %s not sent: its owner is gone", message.id)
            return None
        if await lands_in_an_inbox_here(self._gateway, owner.email):
            log.warning(
                "approval notice for %s not sent: the account's address %s is served by this "
                "gateway, so an agent's inbox would receive the approval links and the agent "
                "could approve held mail itself; review it over the API, the CLI or the dashboard",
                message.id,
                owner.email,
            )
            return None
        agent = await storage.get_agent(message.user_id, message.agent_email)
        if agent is not None and not agent.approval_notifications:
            log.info(
                "approval notice for %s not sent: %s has approval notifications off",
                message.id,
                agent.email,
            )
            return None
        return owner, agent

    async def _notice_room(self, job: Job, message: OutboundMessage, now: float) -> float | None:
        """None when the owner's notices of the last hour leave room for this one (then
        counted), else when they will (`limits.approval_notices_per_user_per_hour`). A notice
        is counted once, at its first hand-off: one the relay deferred was counted then."""
        if job.attempts > 0:
            return None
        limit = RateLimit(
            f"approval_notice:user:{message.user_id}",
            NOTICE_WINDOW_SECONDS,
            self._gateway.settings.limits.approval_notices_per_user_per_hour,
        )
        (count,) = await self._gateway.storage.hit_rate_limits([limit], now)
        return None if count.allowed else count.oldest_leaves_at

    async def _wait_for_room(
        self, job: Job, held: HeldLease, message: OutboundMessage, room_at: float
    ) -> None:
        """Put a notice the owner's hourly limit holds back until `room_at`, or drop it when
        the message's deadline comes first (it stays in the review queue)."""
        deadline = message.approval_expires_at
        if deadline is not None and room_at >= deadline:
            log.warning(
                "approval notice for %s not sent: the reviewer was mailed %d notices in the "
                "last hour (limits.approval_notices_per_user_per_hour), and the message's "
                "deadline comes first; it waits in the review queue (API, CLI, dashboard)",
                message.id,
                self._gateway.settings.limits.approval_notices_per_user_per_hour,
            )
            await self._finish(job, held, None, "approval notice")
            return
        log.info("approval notice for %s waits for the reviewer's hourly limit", message.id)
        done = await self._gateway.storage.postpone_job(job.id, room_at, held.until)
        self._passed(done, "approval notice", job)

    async def _prepare(
        self, message: OutboundMessage, owner: User, agent: Agent | None, now: float
    ) -> Notice | None:
        """The notice for `message` to `owner`, its reply token stored; None (logged) when it
        cannot be written. A gateway whose `smtp.hostname` is one label (the machine's name
        by default: `localhost`, `vm`) has no address a reply could reach: its notice offers
        the magic links alone."""
        storage = self._gateway.storage
        key = link_key(self._gateway.server_key)
        settings = self._gateway.settings
        token = generate_reply_token() if "." in settings.smtp.hostname else None
        reply_to = reply_address(token.plaintext, settings.smtp.hostname) if token else None
        try:
            notice = build_notice(settings, message, owner, agent, key, now, reply_to)
        except InvalidDraft as exc:
            log.warning("approval notice for %s not sent: %s", message.id, exc)
            return None
        if token is not None:
            await storage.add_reply_token(
                ReplyToken(token.token_hash, message.id, owner.email, notice.message_id, now)
            )
        return notice

    async def _retry_later(
        self, job: Job, held: HeldLease, message: OutboundMessage, now: float, error: str
    ) -> None:
        """Reschedule on the APPROVAL_NOTICE schedule, or give up once the retry would come
        after the approval deadline (a notice is useless then)."""
        retry_at = APPROVAL_NOTICE.next_attempt_at(
            job.attempts + 1, now=now, first_at=job.created_at
        )
        deadline = message.approval_expires_at
        if retry_at is None or (deadline is not None and retry_at >= deadline):
            log.warning("approval notice for %s abandoned (deadline near): %s", message.id, error)
            await self._finish(job, held, None, "approval notice")
            return
        log.info("approval notice for %s deferred: %s", message.id, error)
        await self._finish(job, held, retry_at, "approval notice")
