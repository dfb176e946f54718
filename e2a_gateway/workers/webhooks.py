"""The webhook worker: claims due delivery jobs from storage and POSTs them to cloud agents.

Every attempt is recorded and its outcome committed together with the job's next state, so a
crash or restart resumes the schedule. Concurrency is bounded overall and per destination
host, so one slow receiver cannot starve the others. A job's POST starts only under a lease
that outlasts it (renewed when waiting for the host's slot wore it down) and only if the job is
still due when it starts (its agent or account not deleted, trashed or moved meanwhile), and
its record is written only while the job still holds that lease. Targets are re-checked against
SSRF rules at each attempt and the connection is pinned to the address that was checked.
"""

from __future__ import annotations

import logging
import ssl
import time
from abc import abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic, TypeVar
from urllib.parse import SplitResult, urlsplit

import httpx
import trio

from e2a_gateway.clock import format_timestamp
from e2a_gateway.gateway import Gateway
from e2a_gateway.operations.trust import reading_of
from e2a_gateway.signing.credentials import derive_signing_secret
from e2a_gateway.storage.base import (
    DeliveryOutcome,
    FinishedAttempt,
    Job,
    StorageUnavailable,
    WebhookAttempt,
    WebhookDelivery,
)
from e2a_gateway.storage.group_commit import GroupCommit
from e2a_gateway.storage.vocabulary import WEBHOOK_JOB
from e2a_gateway.webhook_targets import (
    TargetRefused,
    WebhookTargetError,
    check_webhook_url,
    pinned_addresses,
)
from e2a_gateway.workers.claim_loop import ClaimLoop
from e2a_gateway.workers.leases import HeldLease
from e2a_gateway.workers.retry_schedules import WEBHOOK_DELIVERY
from e2a_gateway.workers.webhook_connections import WebhookConnections
from e2a_gateway.workers.webhook_policy import build_request, judge_answer, parse_retry_after

log = logging.getLogger("e2a.webhooks")

POLL_SECONDS = 1.0
MAX_IN_FLIGHT = 64
MAX_PER_HOST = 8
MAX_QUEUED_PER_HOST = 2 * MAX_PER_HOST
MAX_RESPONSE_BYTES = 1024
MAX_ERROR_CHARS = 500
LEASE_MARGIN = 1.0
"""Seconds a lease must last beyond an attempt's timeout: to prepare the POST and commit its
record."""

A = TypeVar("A")


@dataclass(frozen=True)
class Answer:
    """What came back from one POST: a status code, or an error when nothing usable did.

    `final` marks errors that no retry can mend (the target is refused or gone)."""

    status_code: int | None
    retry_after: str | None = None
    error: str | None = None
    final: bool = False


@dataclass
class Lease(HeldLease):
    """The lease a claim took on one job or delivery (`HeldLease`), with the storage calls that
    keep it: `renew(until, now, seconds)` moves it on to `seconds` from now and answers the new
    `until`, or None once the job holds it no longer (another claim has taken it).
    `still_due(until)` answers whether the job, under that lease, is still to be sent as claimed
    (False once it, or its agent, account or webhook, was deleted, disabled, trashed or pointed
    elsewhere)."""

    renew: Callable[[float, float, float], Awaitable[float | None]]
    still_due: Callable[[float], Awaitable[bool]]


class HostQueue:
    """The attempts of one destination host: at most MAX_PER_HOST at once, the rest wait."""

    def __init__(self) -> None:
        self.limiter = trio.CapacityLimiter(MAX_PER_HOST)
        self.queued = 0
        """Attempts holding or waiting for a slot."""
        self.urls: set[str] = set()
        """The webhook URLs on this host seen in claimed jobs."""

    @property
    def full(self) -> bool:
        """True when no more attempts may queue for this host."""
        return self.queued >= MAX_QUEUED_PER_HOST


class HostPacedWorker(ClaimLoop, Generic[A]):
    """A webhook worker: POSTs with at most MAX_PER_HOST at once per destination host and
    MAX_IN_FLIGHT in all, the records of finished attempts committed together (`_finish`).

    `clock` gives the wall-clock time used to claim, sign and schedule retries (tests pass a
    fake one); `attempt_timeout` bounds each POST, connection included (default:
    `webhooks.timeout_seconds`). Claimed work is leased for `webhooks.lease_seconds`. With
    nothing to do, it looks again after `poll_seconds`, or as soon as its jobs are committed.
    """

    max_in_flight = MAX_IN_FLIGHT

    records_named: str
    """What the attempt log commits, for its errors ("webhook attempts")."""

    def __init__(
        self,
        gateway: Gateway,
        connections: WebhookConnections,
        clock: Callable[[], float] = time.time,
        attempt_timeout: float | None = None,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        super().__init__(gateway, clock, poll_seconds)
        settings = gateway.settings.webhooks
        self._connections = connections
        self._attempt_timeout = attempt_timeout or settings.timeout_seconds
        self._lease_seconds = max(settings.lease_seconds, self._attempt_timeout + LEASE_MARGIN)
        self._hosts: dict[str, HostQueue] = {}
        self._attempt_log = GroupCommit(self._finish, what=self.records_named)
        self._active = 0

    def _in_flight(self) -> int:
        return self._active

    @abstractmethod
    async def _finish(self, records: list[A]) -> None:
        """Commit the records of finished attempts, each with its work's next state."""

    @abstractmethod
    async def _dispatch(self, nursery: trio.Nursery, now: float, limit: int | None) -> int:
        """Claim due work within each host's room (looking at up to `limit`, None: all) and
        start an attempt for each; return how much was claimed."""

    async def deliver_due(self, now: float) -> int:
        """Claim the work due at `now` (a host's backlog beyond its room stays queued), attempt
        each once and wait for them all; return how much was claimed."""
        async with trio.open_nursery() as nursery:
            return await self._dispatch(nursery, now, None)

    def _room(self) -> dict[str, int]:
        """How many more attempts each webhook URL's host may queue."""
        return {
            url: MAX_QUEUED_PER_HOST - queue.queued
            for queue in self._hosts.values()
            for url in queue.urls
        }

    async def _hold(self, lease: Lease, what: str) -> bool:
        """Whether the POST of `what` may start now under `lease`: a lease that would not outlast
        the attempt (worn down by the wait for the host's slot) is renewed first, and the job is
        read again, so that one deleted, trashed, disabled or moved while it waited is not sent.
        False when it is not due any more, has passed to another claim meanwhile, or storage
        failed the renewal or the read; the POST is then not made here (the job, if any is
        left, is left to its lease)."""
        now = self._clock()
        if lease.ends - now < self._attempt_timeout + LEASE_MARGIN:
            try:
                renewed = await lease.renew(lease.until, now, self._lease_seconds)
            except StorageUnavailable as exc:
                log.warning("%s: lease not renewed (%s); not sent, left to its lease", what, exc)
                return False
            if renewed is None:
                log.info("%s: its lease passed to another claim while it waited; not sent", what)
                return False
            lease.until, lease.ends = renewed, now + self._lease_seconds
        try:
            due = await lease.still_due(lease.until)
        except StorageUnavailable as exc:
            log.warning("%s: not read again (%s); not sent, left to its lease", what, exc)
            return False
        if not due:
            log.info("%s: deleted, disabled or moved while it waited; not sent", what)
        return due

    async def _record(self, record: A, what: str) -> bool:
        """Commit the record of an attempt of `what`; False when storage failed it. The job then
        keeps its lease, and is attempted again once the lease has run out; the other attempts
        go on."""
        try:
            await self._attempt_log.submit(record)
        except StorageUnavailable as exc:
            log.error("%s: attempt not recorded (%s); tried again after its lease", what, exc)
            return False
        return True

    def _leave(self, host: str, queue: HostQueue) -> None:
        """An attempt on `host` has its answer: give its slot back, forget an empty host, and
        look for more once the host has room for a batch (one claim per few attempts)."""
        queue.queued -= 1
        if queue.queued == 0:
            self._hosts.pop(host, None)
        if queue.queued <= MAX_PER_HOST:
            self._wake.set()


class WebhookWorker(HostPacedWorker[FinishedAttempt]):
    """Delivers webhook jobs to cloud agents. `deliver_due(now)` does one round; `run()` loops
    forever (see HostPacedWorker for the arguments)."""

    job_kind = WEBHOOK_JOB
    records_named = "webhook attempts"

    async def _finish(self, records: list[FinishedAttempt]) -> None:
        await self._gateway.storage.finish_webhook_attempts(records)

    async def _dispatch(self, nursery: trio.Nursery, now: float, limit: int | None) -> int:
        """Claim due jobs (looking at up to `limit`, None: all) and start an attempt for each.

        A host takes at most MAX_QUEUED_PER_HOST attempts (MAX_PER_HOST at once, the rest
        waiting), and the claim takes no more for it than it has room for, so a slow or busy
        host keeps only its share of the worker and its backlog keeps its place in the queue.
        Should two URLs on one host overfill it, the extra jobs are given back untouched."""
        storage = self._gateway.storage
        jobs = await storage.claim_webhook_jobs(
            now, limit, self._lease_seconds, self._room(), MAX_QUEUED_PER_HOST
        )
        if not jobs:
            return 0
        deliveries = await storage.webhook_deliveries([job.message_id for job in jobs])
        given_back: list[Job] = []
        for job in jobs:
            delivery = deliveries.get(job.message_id)
            if delivery is None:
                continue  # the message was deleted, and its job with it
            url = delivery.webhook_url or ""
            host = host_of(url)
            queue = self._hosts.setdefault(host, HostQueue())
            queue.urls.add(url)
            if queue.full:
                given_back.append(job)
                continue
            queue.queued += 1
            self._active += 1
            lease = Lease(
                job.leased_until,
                now + self._lease_seconds,
                partial(storage.renew_job_lease, job.id),
                partial(storage.webhook_job_due, job.id, url=url),
            )
            nursery.start_soon(self._attempt_in_turn, job, delivery, lease, host, queue)
        if given_back:
            await storage.release_jobs(given_back)
        return len(jobs)

    async def _attempt_in_turn(
        self, job: Job, delivery: WebhookDelivery, lease: Lease, host: str, queue: HostQueue
    ) -> None:
        """Attempt `job` once its host has a free slot, then record the attempt. The slot is
        given back as soon as the answer is in, so the host's next POST does not wait for the
        disk; the job stays leased until its record is committed."""
        try:
            try:
                async with queue.limiter:
                    finished = await self._attempt(job, delivery, lease)
            finally:
                self._leave(host, queue)
            if finished is None or not await self._record(finished, f"webhook {job.message_id}"):
                return
            self._gateway.metrics.delivered("webhook", finished.outcome)
        finally:
            self._active -= 1
        log.info(
            "webhook %s attempt %d -> %s (%s)",
            finished.message_id,
            finished.attempt.attempt,
            finished.outcome,
            finished.attempt.status_code or finished.attempt.error,
        )

    async def _attempt(
        self, job: Job, delivery: WebhookDelivery, lease: Lease
    ) -> FinishedAttempt | None:
        """POST once under `lease` and judge the answer: the attempt to record with the job's
        next state, or None when the job passed to another claim before its POST. The attempt
        is numbered on from those of earlier jobs (a dead letter's redelivery goes on from its
        last attempt), and retried on the schedule of this job's own attempts, from its start.

        Whatever a job's data does to the attempt, the worker goes on: an unexpected error is
        logged and recorded as this attempt's error, and the job is retried on the usual
        schedule like an attempt that got no answer. A failure of the database before the POST
        (keeping the message's reading) is none of the attempt's: nothing is posted or recorded
        (the error would show the database's address to the account), and the job is left to
        its lease."""
        message = delivery.message
        attempt_number = job.earlier_attempts + job.attempts + 1
        started, started_monotonic = self._clock(), trio.current_time()
        try:
            answer = await self._post(delivery, attempt_number, started, lease)
        except StorageUnavailable as exc:
            log.warning(
                "webhook %s: the database failed (%s); not sent, left to its lease", message.id, exc
            )
            return None
        except Exception as exc:
            log.exception("webhook %s: attempt failed unexpectedly", message.id)
            reason = f"internal error: {type(exc).__name__}: {exc}"
            answer = Answer(None, error=reason[:MAX_ERROR_CHARS])
        if answer is None:
            return None
        finished = self._clock()
        verdict = "failed" if answer.final else judge_answer(answer.status_code)
        outcome: DeliveryOutcome = "delivered" if verdict == "delivered" else "failed"
        retry_at = None
        if verdict == "retry":
            retry_after = parse_retry_after(answer.retry_after, finished)
            retry_at = WEBHOOK_DELIVERY.next_attempt_at(
                job.attempts + 1, now=finished, first_at=job.created_at, retry_after=retry_after
            )
            outcome = "retrying" if retry_at is not None else "failed"
        record = WebhookAttempt(
            attempt=attempt_number,
            attempted_at=format_timestamp(started),
            status_code=answer.status_code,
            error=answer.error,
            duration_ms=round((trio.current_time() - started_monotonic) * 1000),
        )
        return FinishedAttempt(job.id, message.id, record, outcome, retry_at, lease.until)

    async def _post(
        self, delivery: WebhookDelivery, attempt_number: int, now: float, lease: Lease
    ) -> Answer | None:
        """One signed POST to the agent's webhook, pinned to a checked address, made while
        `lease` holds (None when it is not)."""
        if delivery.webhook_url is None:
            return Answer(
                None,
                error="agent is no longer a cloud agent with a webhook_url; "
                "its messages are served over REST and the WebSocket",
                final=True,
            )
        if delivery.signing_seed is None:
            return Answer(None, error="the agent's owner has no signing secret; create one")
        secret = derive_signing_secret(self._gateway.server_key, delivery.signing_seed)
        reading = await reading_of(self._gateway, delivery.message)
        request = build_request(delivery.message, reading, secret, attempt_number, now)
        if not await self._hold(lease, f"webhook {delivery.message.id}"):
            return None
        return await post_pinned(
            self._gateway,
            self._connections,
            delivery.webhook_url,
            request.body,
            request.headers,
            self._attempt_timeout,
        )


async def post_pinned(
    gateway: Gateway,
    connections: WebhookConnections,
    target: str,
    body: bytes,
    headers: Mapping[str, bytes],
    seconds: float,
) -> Answer:
    """POST `body` to the webhook URL `target` once: the URL and every address of its host are
    checked against the SSRF rules, the connection goes to an address checked (reused when one
    is idle), and the answer is judged by its status alone; it gives up after `seconds`,
    resolving and connection included. An address that cannot be connected to (refused,
    unreachable, or silent for its share of the time left) gives way to the next one, as
    browsers and Go's dialer do. Once the status line is in, the answer stands: at most a few
    bytes of its body are read, and a body that stalls or breaks off before the deadline only
    costs the connection."""
    settings = gateway.settings
    deadline = trio.current_time() + seconds
    timed_out = Answer(None, error=f"timeout after {seconds:g} s")
    allow_private = settings.webhooks.allow_private
    try:
        url = check_webhook_url(
            target, require_https=settings.is_production, allow_private=allow_private
        )
        parts = urlsplit(url)
        with trio.fail_at(deadline):
            addresses = await pinned_addresses(gateway.resolver, parts, allow_private)
    except (WebhookTargetError, TargetRefused) as exc:
        return Answer(None, error=f"target refused: {exc}"[:MAX_ERROR_CHARS], final=True)
    except ConnectionError as exc:
        return Answer(None, error=str(exc))
    except trio.TooSlowError:
        return timed_out
    answer = timed_out
    for left, address in zip(range(len(addresses), 0, -1), addresses, strict=True):
        connect_seconds = max(0.0, deadline - trio.current_time()) / left if left > 1 else None
        answer, connected = await _post_to(
            connections, parts, address, body, headers, deadline, timed_out, connect_seconds
        )
        if connected:
            break
    return answer


async def _post_to(
    connections: WebhookConnections,
    parts: SplitResult,
    address: str,
    body: bytes,
    headers: Mapping[str, bytes],
    deadline: float,
    timed_out: Answer,
    connect_seconds: float | None,
) -> tuple[Answer, bool]:
    """POST to the webhook URL `parts` at `address` by `deadline` (else answer `timed_out`),
    a new connection given `connect_seconds` (None: until the deadline) to be made: the answer,
    and whether a connection was made (else the next address may be tried)."""
    host_for_url = f"[{address}]" if ":" in address else address
    netloc = host_for_url + (f":{parts.port}" if parts.port else "")
    pinned_url = parts._replace(netloc=netloc).geturl()
    pairs = [(name.encode("ascii"), value) for name, value in headers.items()]
    pairs.append((b"Host", parts.netloc.encode("ascii")))
    extensions: dict[str, Any] = {"timeout": {"connect": connect_seconds}}
    if parts.scheme == "https":
        extensions["sni_hostname"] = parts.hostname
    origin = (parts.scheme, address, parts.port, parts.hostname or "")
    connection = connections.borrow(origin)
    post = httpx.Request("POST", pinned_url, content=body, headers=pairs, extensions=extensions)
    try:
        with trio.fail_at(deadline):
            response = await connection.handle_async_request(post)
    except trio.TooSlowError:
        await connections.discard(connection)
        return timed_out, True
    except httpx.HTTPError as exc:
        await connections.discard(connection)
        error = Answer(None, error=describe_failure(exc, parts.hostname or "")[:MAX_ERROR_CHARS])
        return error, not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
    except BaseException:  # cancelled mid-attempt (shutdown): close it, then go
        with trio.CancelScope(shield=True):
            await connections.discard(connection)
        raise
    answer = Answer(response.status_code, response.headers.get("Retry-After"))
    try:
        with trio.fail_at(deadline):
            try:
                await _read_at_most(response, MAX_RESPONSE_BYTES)
            finally:
                await response.aclose()
    except (trio.TooSlowError, httpx.HTTPError):  # the answer stands; the connection does not
        await connections.discard(connection)
        return answer, True
    except BaseException:
        with trio.CancelScope(shield=True):
            await connections.discard(connection)
        raise
    await connections.give_back(origin, connection)
    return answer, True


def describe_failure(exc: httpx.HTTPError, host: str) -> str:
    """What went wrong with a POST to `host`, for the attempt's record and the log: the verdict
    on the receiver's TLS certificate or handshake when that was it (httpx's own message is
    empty then), else the error's type and the first message along its causes."""
    message = ""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ssl.SSLCertVerificationError):
            return (
                f"the TLS certificate of {host} was not accepted (certificate verify failed: "
                f"{cause.verify_message}); the receiver must serve a certificate for {host} "
                "from a public certificate authority, with its intermediate certificates"
            )
        if isinstance(cause, ssl.SSLError):
            return f"the TLS handshake with {host} failed ({cause.reason or cause})"
        message = message or str(cause)
        cause = cause.__cause__ or cause.__context__
    return f"{type(exc).__name__}: {message}"


def host_of(url: str) -> str:
    """The host part of a stored webhook URL, lowercased ("" when the URL cannot be read; the
    attempt then fails with the reason)."""
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


async def _read_at_most(response: httpx.Response, limit: int) -> None:
    """Read (and discard) at most `limit` bytes of the body, so a huge answer costs nothing."""
    received = 0
    async for chunk in response.stream:  # type: ignore[union-attr]
        received += len(chunk)
        if received >= limit:
            break
