"""The outbound send worker: claims `outbound` jobs, builds and DKIM-signs the message
(`e2a_gateway.outbound`), delivers it locally to agents of this deployment and hands the rest to the
relay (`outbound_smtp`).

Every recipient is settled once: results are stored per recipient before the message's state
changes, so a retry hands off only the recipients that were deferred; a message goes to the
relay only while its job still holds this worker's lease, so a replica that stalled past it
never sends what another claim sends. It never holds mail that storage does not also hold.
The outcomes of the attempts that end meanwhile are committed together (`GroupCommit`): one
transaction, one sync of the disk, for all of them.
"""

from __future__ import annotations

import logging
import random
import time
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

import trio

from e2a_gateway.addresses import (
    Mailbox,
    envelope_recipients,
    format_mailbox,
    unsendable,
)
from e2a_gateway.clock import parse_timestamp
from e2a_gateway.gateway import Gateway
from e2a_gateway.inbound.postmaster import is_own_hostname
from e2a_gateway.local_delivery import deliver_locally, local_recipient
from e2a_gateway.operations import lifecycle
from e2a_gateway.operations.drafts import suppressed_text
from e2a_gateway.outbound.dkim_signing import sign_as_sender
from e2a_gateway.outbound.list_unsubscribe import MANAGED, unsubscribe_url, with_unsubscribe
from e2a_gateway.outbound.mime import Draft, InvalidDraft, build_message, decode_attachment
from e2a_gateway.outbound.relay import RelayConnections
from e2a_gateway.outbound.return_path import (
    LOCAL_PART_PREFIX as RETURN_PATH_PREFIX,
)
from e2a_gateway.outbound.return_path import return_path_for, return_path_key
from e2a_gateway.outbound.rollup import refusal_bounce_type
from e2a_gateway.relay_ids import relay_message_id
from e2a_gateway.signing.unsubscribe_tokens import (
    hash_unsubscribe_token,
    unsubscribe_key,
    unsubscribe_token,
)
from e2a_gateway.smtp.client import Outcome, Outgoing
from e2a_gateway.storage.base import (
    Agent,
    BouncedRecipient,
    Job,
    OutboundMessage,
    SendAttempt,
    SendOutcome,
    StorageUnavailable,
)
from e2a_gateway.storage.group_commit import GroupCommit
from e2a_gateway.storage.rows import (
    AGENT_DELETED_ERROR,
    RECIPIENT_ACCEPTED,
    RECIPIENT_LOCAL_PREFIX,
    RECIPIENT_REFUSED_PREFIX,
)
from e2a_gateway.storage.vocabulary import OUTBOUND_JOB
from e2a_gateway.workers.claim_loop import ClaimLoop
from e2a_gateway.workers.leases import JOB_LEASE_SECONDS, HeldLease, lease_kept
from e2a_gateway.workers.retry_schedules import (
    OUTBOUND_HAND_OFF,
    OUTBOUND_INTERNAL_ERROR,
    attempt_ended,
)
from e2a_gateway.workers.stop_grace import StopGrace

log = logging.getLogger("e2a.outbound")

POLL_SECONDS = 1.0
MAX_IN_FLIGHT = 32
MAX_ERROR_CHARS = 1000
NO_RELAY = (
    "outbound_smtp.host is not set — configure outbound_smtp to send mail beyond this deployment"
)
ACCEPTED = RECIPIENT_ACCEPTED
LOCAL_PREFIX = RECIPIENT_LOCAL_PREFIX
REFUSED_PREFIX = RECIPIENT_REFUSED_PREFIX
GAVE_UP_PREFIX = "gave up: "
NO_AGENT = "no agent at {address} on this gateway (deleted, in the trash, or never registered)"
UNSENDABLE = "not handed to the relay: {reason}"
"""Why a recipient a reply-all carried (`unsendable`) was refused here."""
SUPPRESSED = "recipient_suppressed: not handed on: {reason}"
"""Why a recipient suppressed since the message was accepted was refused here."""
LEASE_LOST = "not handed off: the send's lease passed to another claim, which sends it"
"""Why an attempt whose lease ran out before its hand-off left the relay's recipients alone."""


@dataclass(frozen=True)
class Verdict:
    """What becomes of a message after an attempt: terminal or due again at `retry_at`."""

    outcome: SendOutcome
    method: Literal["smtp", "local"]
    error: str | None
    retry_at: float | None = None
    gave_up: dict[str, str] = field(default_factory=dict)

    @property
    def terminal_outcome(self) -> str | None:
        """e2a's `e2a_outbound_terminal_total` outcome of a settled message (None while it is
        retried): `sent` when a recipient got it, else `failed_local_retries` when the retry
        window ran out for a recipient, else `failed_provider` (refused for good)."""
        if self.outcome == "retry":
            return None
        if self.outcome == "sent":
            return "sent"
        return "failed_local_retries" if self.gave_up else "failed_provider"


def recipients_of(message: OutboundMessage) -> list[str]:
    """To, Cc and Bcc, normalised (`normalise_recipient`; lowercased where not a valid address),
    each once."""
    return envelope_recipients(message.to, message.cc, message.bcc)


def sender_mailbox(address: str, name: str | None) -> str:
    """The From field of mail an agent at `address` named `name` sends, as e2a writes it: its
    name as the display name (control characters and runs of white space made single spaces),
    unless the name is empty or the address's own local part (the name an agent gets by
    default, which would add nothing); else the address alone."""
    shown = " ".join(
        "".join(" " if unicodedata.category(c)[0] == "C" else c for c in name or "").split()
    )
    if not shown or shown.lower() in (address, address.partition("@")[0]):
        return address
    return format_mailbox(Mailbox(shown, address))


def draft_of(message: OutboundMessage, sender_name: str | None = None) -> Draft:
    """The stored message as a Draft, from its agent, named `sender_name` (`sender_mailbox`);
    InvalidDraft when it cannot be built safely. Recipients a reply-all carried and the
    hand-off refuses (`unsendable`) are named as the message it answers named them; an address
    beyond ASCII (RFC 6531) is named as it is, in a header field of UTF-8 (RFC 6532)."""
    attachments = [
        decode_attachment(
            index,
            item.get("filename", ""),
            item.get("content_type", ""),
            item.get("data", ""),
            item.get("content_id"),
        )
        for index, item in enumerate(message.attachments or [])
    ]
    return Draft(
        from_addr=sender_mailbox(message.agent_email, sender_name),
        to=list(message.to),
        cc=list(message.cc),
        subject=message.subject,
        text=message.body_text or "",
        html=message.body_html,
        attachments=attachments,
        conversation_id=message.conversation_id,
        in_reply_to=message.in_reply_to,
        references=message.references,
        reply_to=message.reply_to,
    )


def relay_ids(outcomes: list[Outcome]) -> dict[str, str]:
    """The id the relay named for each recipient it took (`relay_message_id`), of
    transactions of one recipient each; a recipient whose reply named none is left out."""
    named: dict[str, str] = {}
    for outcome in outcomes:
        relay_id = relay_message_id(outcome.taken) if outcome.taken else None
        if relay_id is not None:
            named.update(dict.fromkeys(outcome.accepted, relay_id))
    return named


def relay_results(outcome: Outcome) -> tuple[dict[str, str], dict[str, str]]:
    """Settled recipients (accepted or refused) and deferred ones (address → reason)."""
    settled = dict.fromkeys(outcome.accepted, ACCEPTED)
    settled.update({rcpt: REFUSED_PREFIX + reason for rcpt, reason in outcome.refused.items()})
    # A session-wide error ("relay host:port: connection refused") explains more than the
    # per-recipient "connection lost" (and is not said twice when it is the same).
    deferred = {
        rcpt: f"{reason} ({outcome.error})" if outcome.error not in (None, reason) else reason
        for rcpt, reason in outcome.deferred.items()
    }
    return settled, deferred


def settle(
    results: Mapping[str, str],
    deferred: Mapping[str, str],
    *,
    attempt: int,
    queued_at: float,
    now: float,
    uniform: Callable[[float, float], float] = random.uniform,
) -> Verdict:
    """Decide the message's state from every recipient's result so far.

    Deferred recipients are retried on the OUTBOUND_HAND_OFF schedule (30 s doubling to 1 h,
    jittered) until 24 h after the message was queued for sending (`queued_at`: when it was
    sent, or approved — a draft may wait days for that); then they count as failed. A settled
    message is `sent` when at least one recipient got it (the others are named in `error`),
    `failed` when none did."""
    method: Literal["smtp", "local"] = (
        "local"
        if results and not deferred and all(r.startswith(LOCAL_PREFIX) for r in results.values())
        else "smtp"
    )
    gave_up: dict[str, str] = {}
    if deferred:
        retry_at = OUTBOUND_HAND_OFF.next_attempt_at(
            attempt, now=now, first_at=queued_at, uniform=uniform
        )
        if retry_at is not None:
            return Verdict("retry", method, _describe(deferred), retry_at)
        gave_up = {rcpt: GAVE_UP_PREFIX + reason for rcpt, reason in deferred.items()}
    final = {**results, **gave_up}
    failures = {
        rcpt: result
        for rcpt, result in final.items()
        if result != ACCEPTED and not result.startswith(LOCAL_PREFIX)
    }
    delivered = len(final) - len(failures)
    outcome: SendOutcome = "sent" if delivered else "failed"
    return Verdict(outcome, method, _describe(failures) or None, None, gave_up)


def dated(message: OutboundMessage) -> float:
    """The `Date:` of `message`: when it was let into the mail system — its approval (by a
    reviewer or by expiry) for a draft that waited for one, else its creation, or its
    `scheduled_at` when that comes later (a receiver's client sorts by Date: a send scheduled
    for Monday is not filed under the Friday it was written). The same on every attempt, so a
    retry sends the same bytes."""
    released = (
        parse_timestamp(message.reviewed_at).timestamp()
        if message.reviewed_at is not None
        else message.created_epoch
    )
    return max(released, message.scheduled_at or released)


def relay_bounces(results: Mapping[str, str]) -> list[BouncedRecipient]:
    """The recipients the relay refused with a 5xx reply to their RCPT: bounces, as a report
    would say (`refusal_bounce_type`)."""
    return [
        BouncedRecipient(recipient, kind, result.removeprefix(REFUSED_PREFIX))
        for recipient, result in results.items()
        if (kind := refusal_bounce_type(result)) is not None
    ]


def unreached(results: Mapping[str, str], gave_up: Mapping[str, str]) -> list[BouncedRecipient]:
    """The recipients an attempt settled without reaching, each told of by an `email.bounced`
    with the reason: one the relay refused at RCPT as `relay_bounces` reads it, one refused
    otherwise (the relay's refusal of the session, the sender or the message, or a refusal
    here) `undetermined`, which says nothing of the address, and one given up on after its
    retries (`gave_up`) `transient`."""
    bounced = {item.address: item for item in relay_bounces(results)}
    for recipient, result in results.items():
        if recipient not in bounced and result.startswith(REFUSED_PREFIX):
            reason = result.removeprefix(REFUSED_PREFIX)
            bounced[recipient] = BouncedRecipient(recipient, "undetermined", reason)
    for recipient, result in gave_up.items():
        reason = result.removeprefix(GAVE_UP_PREFIX)
        bounced[recipient] = BouncedRecipient(recipient, "transient", reason)
    return list(bounced.values())


def _describe(reasons: Mapping[str, str]) -> str:
    return "; ".join(f"{rcpt}: {reason}" for rcpt, reason in reasons.items())[:MAX_ERROR_CHARS]


class OutboundWorker(ClaimLoop):
    """Sends `outbound` jobs. `deliver_due(now)` does one round; `run()` loops forever.

    `clock` gives the wall-clock time used to claim jobs and schedule retries (tests pass a
    fake one); `uniform` is the jitter source. With nothing to do, it looks again after
    `poll_seconds`, or as soon as outbound jobs are committed."""

    job_kind = OUTBOUND_JOB
    max_in_flight = MAX_IN_FLIGHT

    def __init__(
        self,
        gateway: Gateway,
        clock: Callable[[], float] = time.time,
        uniform: Callable[[float, float], float] = random.uniform,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        super().__init__(gateway, clock, poll_seconds)
        self._uniform = uniform
        self._return_path_key = return_path_key(gateway.server_key)
        self._unsubscribe_key = unsubscribe_key(gateway.server_key)
        self._signer = gateway.dkim_signer
        self._lease = JOB_LEASE_SECONDS
        """A send's lease, renewed every third of it while the send is handed off, which takes
        as long as it takes (`lease_kept`)."""
        self._in_flight_ids: set[str] = set()
        self._leases: dict[int, HeldLease] = {}
        """The lease this worker holds on each job it is attempting (by job id)."""
        self._passed: set[str] = set()
        """Messages whose outcome storage did not write: their job had passed to another
        claim (taken out by the attempt that submitted it)."""
        self._grace = StopGrace(gateway.settings.smtp.shutdown_grace_seconds, "sends")
        self._outcomes = GroupCommit(self._commit_outcomes, what="send outcomes")
        self._relay_connections = RelayConnections(
            gateway.settings.outbound_smtp,
            gateway.settings.smtp.hostname,
            gateway.metrics.relay_connection_opened,
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Work on due jobs until cancelled (see `ClaimLoop.run`), keeping connections to the
        relay open between messages meanwhile.

        Once cancelled it claims nothing more, and the attempts in flight get
        `smtp.shutdown_grace_seconds` to finish: a message the relay already holds is recorded
        as handed off rather than handed off again after a restart (its recipients would get
        it twice)."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self._grace.stop_when_cancelled)
            await nursery.start(self._relay_connections.keep_connections)
            await nursery.start(super().run)
            task_status.started()

    @property
    def relay_connections_opened(self) -> int:
        """Connections opened to the relay so far (for tests and benchmarks)."""
        return self._relay_connections.connections_opened

    def _in_flight(self) -> int:
        return len(self._in_flight_ids)

    @property
    def outcome_commits(self) -> int:
        """Transactions that recorded send outcomes so far (for tests and benchmarks)."""
        return self._outcomes.batches

    async def deliver_due(self, now: float, limit: int = 1000) -> int:
        """Claim up to `limit` jobs due at `now`, attempt each once and wait for them all;
        return how many were claimed."""
        async with trio.open_nursery() as nursery:
            return await self._dispatch(nursery, now, limit)

    async def _dispatch(self, nursery: trio.Nursery, now: float, limit: int) -> int:
        """Claim due jobs and start an attempt for each one not already being sent here."""
        jobs = await self._gateway.storage.claim_jobs(OUTBOUND_JOB, now, limit, self._lease)
        for job in jobs:
            # A lease dropped under us (another worker's start-up release) or run out while the
            # attempt goes on must not send twice: the attempt under way holds the new lease.
            held = HeldLease(job.leased_until, now + self._lease)
            if job.message_id in self._in_flight_ids:
                if job.id in self._leases:
                    self._leases[job.id] = held
                continue
            self._in_flight_ids.add(job.message_id)
            self._leases[job.id] = held
            nursery.start_soon(self._attempt_guarded, job, now)
        return len(jobs)

    async def _attempt_guarded(self, job: Job, now: float) -> None:
        """Attempt one job, finishing it when the worker stops (within the grace period); an
        unexpected error is logged and recorded as a retry on the OUTBOUND_INTERNAL_ERROR
        schedule (a failure once it gives up), so a broken message cannot loop forever nor stop
        the other sends. A failure of the database is none of the message's: the job is left to
        its lease, no attempt counted (the internal error's few retries would fail the message
        for good)."""
        try:
            with self._grace.shielded():
                try:
                    await self.attempt(job, now)
                except StorageUnavailable as exc:
                    log.warning(
                        "outbound %s: the database failed (%s); attempted again after its lease",
                        job.message_id,
                        exc,
                    )
                except Exception:
                    log.exception("sending %s failed unexpectedly", job.message_id)
                    await self._record_unexpected_failure(job, now)
        finally:
            self._in_flight_ids.discard(job.message_id)
            self._leases.pop(job.id, None)
            self._wake.set()

    async def _record_unexpected_failure(self, job: Job, now: float) -> None:
        error = "internal error while sending; the gateway log has details"
        retry_at = OUTBOUND_INTERNAL_ERROR.next_attempt_at(
            job.attempts + 1, now=now, first_at=job.created_at, uniform=self._uniform
        )
        outcome: SendOutcome = "failed" if retry_at is None else "retry"
        attempt = SendAttempt(job.id, job.message_id, outcome, "smtp", error, retry_at)
        try:
            recorded = await self._submit(attempt)
        except StorageUnavailable as exc:
            log.error("could not record the failure of %s: %s", job.message_id, exc)
            return
        if recorded and outcome == "failed":
            self._gateway.metrics.outbound_settled("failed_local_retries")

    async def attempt(self, job: Job, now: float) -> None:
        """Send the job's message once to every recipient still pending and record the result,
        `now` being when its job was claimed."""
        began = self._clock()
        storage = self._gateway.storage
        message = await storage.get_outbound(None, job.message_id)
        if message is None:
            return  # deleted, and its job with it
        if message.status not in lifecycle.AWAITING_HAND_OFF:  # settled meanwhile; body scrubbed
            await storage.finish_job(job.id, None)
            return
        sender = await storage.find_agent(message.agent_email)
        if sender is None:  # in the trash (a purged agent's mail went with it)
            cancelled = SendAttempt(job.id, message.id, "failed", "smtp", AGENT_DELETED_ERROR, None)
            if await self._submit(cancelled):
                self._gateway.metrics.outbound_settled("failed_cancelled")
            return
        link = await self._unsubscribe_link(message)
        try:
            raw = self.compose(message, sender, link)
        except Exception as exc:  # the stored message decides: trying again cannot help
            if not isinstance(exc, InvalidDraft):
                log.exception("outbound %s cannot be built", message.id)
            reason = f"cannot build the message: {exc}"[:MAX_ERROR_CHARS]
            if await self._submit(SendAttempt(job.id, message.id, "failed", "smtp", reason, None)):
                self._gateway.metrics.outbound_settled("failed_invalid")
            return
        settled = await storage.recipient_results(message.id)
        pending = [rcpt for rcpt in recipients_of(message) if rcpt not in settled]
        started = trio.current_time()
        results, deferred, named = await self._deliver(job, message, sender, raw, pending, now)
        handed_off = trio.current_time() - started
        finished = attempt_ended(now, began, self._clock())
        verdict = settle(
            {**settled, **results},
            deferred,
            attempt=job.attempts + 1,
            queued_at=job.created_at,
            now=finished,
            uniform=self._uniform,
        )
        if verdict.outcome == "retry" and results:
            # Only a retry needs them (one write fewer per message on the common path).
            await storage.record_recipient_results(
                message.id, results, job.id, self._lease_until(job.id)
            )
        recorded = await self._record(
            SendAttempt(
                job.id,
                message.id,
                verdict.outcome,
                verdict.method,
                verdict.error,
                verdict.retry_at,
                {**settled, **results, **verdict.gave_up},
                finished,
                unreached(results, verdict.gave_up),
                relay_ids=named,
            )
        )
        if not recorded:
            return
        metrics = self._gateway.metrics
        metrics.outbound_attempted(verdict.outcome, now - job.run_at, handed_off)
        if (terminal := verdict.terminal_outcome) is not None:
            metrics.outbound_settled(terminal)
        log.info("outbound %s: %s (%s)", message.id, verdict.outcome, verdict.error or "ok")

    async def _commit_outcomes(self, attempts: list[SendAttempt]) -> None:
        """Write the outcomes of attempts (one transaction), noting those storage did not write
        because their job had passed to another claim."""
        self._passed.update(await self._gateway.storage.finish_outbound(attempts))

    async def _submit(self, attempt: SendAttempt) -> bool:
        """Commit the outcome of an attempt under the lease this worker holds on its job; False
        when storage did not write it because the job had passed to another claim meanwhile
        (its lease ran out during the attempt). That claim's attempt then decides the message,
        and its outcome is not overwritten; the recipients this attempt settled stay settled,
        so it does not hand the message to them again. Raises StorageUnavailable as
        `GroupCommit.submit` does."""
        fenced = replace(attempt, leased_until=self._lease_until(attempt.job_id))
        await self._outcomes.submit(fenced)
        if attempt.message_id not in self._passed:
            return True
        self._passed.discard(attempt.message_id)
        log.warning(
            "outbound %s: the lease ran out during the attempt and another claim took the job; "
            "this attempt's outcome (%s) is not recorded, the other's stands",
            attempt.message_id,
            attempt.outcome,
        )
        return False

    def _lease_until(self, job_id: int) -> float | None:
        """Until when storage leases the job to this worker's attempt (None: not claimed here)."""
        held = self._leases.get(job_id)
        return held.until if held is not None else None

    async def _lease_held(self, job: Job) -> bool:
        """Whether the attempt at `job` may hand its message to the relay now: the
        job still holds this worker's lease (one read), renewed first when a stall since the
        claim (the database's, the process's) left less than two thirds of it, so that it
        lasts until `lease_kept` first renews it. False (logged) once the
        lease has passed to another claim, or the job is gone: that claim sends the message,
        and this attempt must not send it too. Raises StorageUnavailable when storage fails
        the read or the renewal (nothing is sent then either)."""
        held = self._leases.get(job.id)
        if held is None:  # not claimed by this worker's loop: nothing to hold
            return True
        storage = self._gateway.storage
        now = self._clock()
        if held.ends - now < self._lease * 2 / 3:
            until = await storage.renew_job_lease(job.id, held.until, now, self._lease)
            if until is not None:
                held.until, held.ends = until, now + self._lease
                return True
        elif await storage.job_lease_held(job.id, held.until):
            return True
        log.warning(
            "outbound %s: its lease passed to another claim; not handed off", job.message_id
        )
        return False

    async def _record(self, attempt: SendAttempt) -> bool:
        """Commit the outcome of an attempt that handed the message on (or tried to). A commit
        that fails (a deadlock's victim, a statement cancelled, a connection lost) is made once
        more with the same outcome, never recorded as an internal error, whose retry would send
        the message again to those who have it. False when that fails too: the job is then
        left to its lease, and attempted again once it runs out; False too when the job had
        passed to another claim (`_submit`)."""
        try:
            return await self._submit(attempt)
        except StorageUnavailable as exc:
            log.warning("outbound %s: outcome not recorded (%s); again", attempt.message_id, exc)
        try:
            return await self._submit(attempt)
        except StorageUnavailable as exc:
            log.error(
                "outbound %s: outcome not recorded (%s); attempted again after its lease",
                attempt.message_id,
                exc,
            )
            return False

    def return_path(self, message: OutboundMessage, recipient: str) -> str:
        """The envelope sender of the hand-off to `recipient`: `bounces+<token>@<the agent's
        domain>`, which names the message and the recipient, so a report that comes back to it
        is matched to them and can be about nobody else (the agent's address for a message id
        of another shape)."""
        domain = message.agent_email.rpartition("@")[2]
        try:
            return return_path_for(message.id, recipient, self._return_path_key, domain)
        except ValueError:
            return message.agent_email

    def compose(
        self, message: OutboundMessage, sender: Agent | None = None, unsubscribe: str | None = None
    ) -> bytes:
        """The message's bytes as sent: MIME from storage, from its agent `sender` (by name),
        with the footer and the one-click fields of its managed-unsubscribe link `unsubscribe`
        if it has one, DKIM-signed when a key is set.

        Raises InvalidDraft, or whatever the email package or the signer raise, when the stored
        message cannot be built."""
        draft = draft_of(message, sender.name if sender is not None else None)
        if unsubscribe is not None:
            draft = with_unsubscribe(draft, unsubscribe, message.agent_email)
        raw = build_message(draft, message_id=message.email_message_id, date=dated(message))
        return sign_as_sender(self._signer, raw, message.agent_email)

    async def _unsubscribe_link(self, message: OutboundMessage) -> str | None:
        """The managed-unsubscribe link of a message that opted in (None for one that did not),
        its scope stored first, so that it works once the mail arrives. Its token is derived,
        never drawn: each attempt, and each replica, makes the same link for the message's one
        recipient (the request and any review edit were held to one). Raises
        StorageUnavailable when the scope cannot be stored: nothing is sent with a dead link."""
        recipients = recipients_of(message)
        if message.unsubscribe != MANAGED or len(recipients) != 1:
            return None
        (address,) = recipients
        user_id, agent_email = message.user_id, message.agent_email
        token = unsubscribe_token(self._unsubscribe_key, user_id, agent_email, address)
        await self._gateway.storage.add_unsubscribe_token(
            hash_unsubscribe_token(token), user_id, agent_email, address, self._clock()
        )
        return unsubscribe_url(self._gateway.settings.http.public_url, token)

    async def _deliver(
        self,
        job: Job,
        message: OutboundMessage,
        sender: Agent,
        raw: bytes,
        pending: list[str],
        now: float,
    ) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
        """Deliver to the pending recipients of `job`'s message: agents here (and the
        operator's mailboxes, to the agent that takes postmaster mail) locally, the rest via
        the relay. Returns (settled results, deferred reasons, the id the relay named for
        each recipient it took: `relay_ids`)."""
        local: dict[str, Agent] = {}  # recipient → the agent it is delivered to
        remote: list[str] = []
        results: dict[str, str] = await self._suppressed(message, pending)
        deferred: dict[str, str] = {}
        named: dict[str, str] = {}
        for rcpt in pending:
            if rcpt in results:
                continue
            if (reason := unsendable(rcpt)) is not None:
                results[rcpt] = REFUSED_PREFIX + UNSENDABLE.format(reason=reason)
                continue
            agent = await local_recipient(self._gateway, rcpt)
            if agent is not None:
                local[rcpt] = agent
            elif await self._refused_here(rcpt):
                results[rcpt] = REFUSED_PREFIX + NO_AGENT.format(address=rcpt)
            else:
                remote.append(rcpt)
        if local:
            stored = await deliver_locally(
                self._gateway,
                message.id,
                raw,
                sender,
                list(local.values()),
                message.conversation_id,
                now,
            )
            for rcpt, agent in local.items():
                if agent.email in stored:
                    results[rcpt] = LOCAL_PREFIX + stored[agent.email]
                else:
                    deferred[rcpt] = "the recipient's owner has no signing secret yet"
        if remote:
            settled, relay_deferred, named = await self._relay(job, message, remote, raw)
            results.update(settled)
            deferred.update(relay_deferred)
        return results, deferred, named

    async def _suppressed(self, message: OutboundMessage, pending: list[str]) -> dict[str, str]:
        """The recipients among `pending` suppressed for the message's account or agent since it
        was accepted (an unsubscribe, a bounce, a complaint while it waited for its time or its
        retry), each refused here, before anything is handed on, with the way to lift it."""
        lowered = {rcpt.lower(): rcpt for rcpt in pending}
        suppressed = await self._gateway.storage.suppressed_among(
            message.user_id, message.agent_email, list(lowered)
        )
        return {
            lowered[address]: REFUSED_PREFIX
            + SUPPRESSED.format(reason=suppressed_text([address], message.agent_email))
            for address in suppressed
        }

    async def _refused_here(self, address: str) -> bool:
        """Whether `address`, which names no agent in service, is one this gateway's SMTP
        listener refuses (unknown user) and the relay would only bring back here to be refused,
        as a bounce that suppresses the address: any on the shared domain but a return path or
        one at `smtp.hostname`, and on a custom domain served here an agent's in the trash (it
        may be restored). Other addresses on a custom domain still go to the relay: only its TXT
        record made it ours, and its MX may deliver them elsewhere. (Operator mailboxes here
        never come this far: they are delivered locally.)"""
        local_part, _, domain = address.rpartition("@")
        if self._gateway.is_shared_domain(domain):
            return not (
                local_part.lower().startswith(RETURN_PATH_PREFIX)
                or is_own_hostname(self._gateway.settings, domain)
            )
        storage = self._gateway.storage
        return await storage.is_served_domain(domain) and await storage.is_trashed_agent(address)

    async def _relay(
        self, job: Job, message: OutboundMessage, recipients: list[str], raw: bytes
    ) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
        """Hand off to `outbound_smtp`, one transaction per recipient with its own return path
        (a recipient sees only theirs, and a report to it can be about them alone); without a
        relay every remote recipient is refused. Only while `job` still holds this worker's
        lease (`_lease_held`): once another claim has it, every recipient is left to that
        claim (deferred here), so the message is not sent twice. Returns (settled, deferred,
        the id the relay named per recipient it took)."""
        settings = self._gateway.settings
        if not settings.outbound_smtp.host:
            return dict.fromkeys(recipients, REFUSED_PREFIX + NO_RELAY), {}, {}
        if not await self._lease_held(job):
            return {}, dict.fromkeys(recipients, LEASE_LOST), {}
        # Once the lease is lost (passed to another claim, or run out unrenewed: the database
        # failing every renewal), no further recipient is handed off: that claim sends to them.
        async with lease_kept(
            self._gateway.storage,
            job.id,
            lambda: self._leases.get(job.id),
            self._lease,
            self._clock,
            f"outbound {job.message_id}",
        ) as kept:
            outcomes = await self._relay_connections.hand_off_each(
                [Outgoing(self.return_path(message, rcpt), (rcpt,), raw) for rcpt in recipients],
                lambda: self._grace.stopping or kept.lost,
            )
        settled: dict[str, str] = {}
        deferred: dict[str, str] = {}
        for error in dict.fromkeys(outcome.error for outcome in outcomes if outcome.error):
            log.warning("relay hand-off: %s", error)
        for outcome in outcomes:
            one_settled, one_deferred = relay_results(outcome)
            settled.update(one_settled)
            deferred.update(one_deferred)
        return settled, deferred, relay_ids(outcomes)
