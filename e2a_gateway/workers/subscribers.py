"""The `/v1` webhook delivery worker: claims due deliveries to webhook subscribers and POSTs the
stored event envelope, signed `X-E2A-Signature: t=…,v1=…` with each secret the webhook signs
with (two during a rotation's grace).

It shares the legacy webhook worker's pieces: the SSRF-checked, address-pinned POST over reused
connections (`post_pinned`) and the per-host queues that keep one slow receiver to its share.
Every attempt and the delivery's next state (retry on e2a's frozen schedule, delivered, failed)
commit together, so a restart resumes the schedule.
"""

from __future__ import annotations

import json
import logging
from functools import partial

import trio

from e2a_gateway.signing.webhook_signatures import signature_header, webhook_secret
from e2a_gateway.storage.base import ClaimedDelivery, SubscriberAttempt, SubscriberStatus
from e2a_gateway.storage.vocabulary import (
    DELIVERY_DONE,
    DELIVERY_FAILED,
    DELIVERY_WAITING,
    SUBSCRIBER_JOB,
)
from e2a_gateway.workers.retry_schedules import SUBSCRIBER_DELIVERY
from e2a_gateway.workers.webhook_policy import parse_retry_after
from e2a_gateway.workers.webhooks import (
    MAX_ERROR_CHARS,
    MAX_QUEUED_PER_HOST,
    Answer,
    HostPacedWorker,
    HostQueue,
    Lease,
    host_of,
    post_pinned,
)

log = logging.getLogger("e2a.webhooks.v1")

USER_AGENT = b"e2a-webhooks/1"


def delivery_headers(envelope: bytes, secrets: list[str], timestamp: int) -> dict[str, bytes]:
    """The frozen headers of a delivery of `envelope` signed at `timestamp`."""
    document = json.loads(envelope)
    return {
        "Content-Type": b"application/json",
        "X-E2A-Signature": signature_header(secrets, timestamp, envelope).encode("ascii"),
        "X-E2A-Event-Type": str(document.get("type", "")).encode("utf-8"),
        "X-E2A-Schema-Version": str(document.get("schema_version", "")).encode("utf-8"),
        "User-Agent": USER_AGENT,
    }


class SubscriberWorker(HostPacedWorker[SubscriberAttempt]):
    """Delivers `/v1` webhook deliveries. `deliver_due(now)` does one round; `run()` loops
    (see HostPacedWorker for the arguments)."""

    job_kind = SUBSCRIBER_JOB
    records_named = "webhook deliveries"

    async def _finish(self, records: list[SubscriberAttempt]) -> None:
        await self._gateway.storage.finish_subscriber_attempts(records)

    async def _dispatch(self, nursery: trio.Nursery, now: float, limit: int | None) -> int:
        """Claim due deliveries within each host's room and start an attempt for each; those
        that overfill a host (two URLs on it) are given back untouched."""
        storage = self._gateway.storage
        claimed = await storage.claim_subscriber_deliveries(
            now, limit, self._lease_seconds, self._room(), MAX_QUEUED_PER_HOST
        )
        given_back: list[ClaimedDelivery] = []
        for item in claimed:
            host = host_of(item.url)
            queue = self._hosts.setdefault(host, HostQueue())
            queue.urls.add(item.url)
            if queue.full:
                given_back.append(item)
                continue
            queue.queued += 1
            self._active += 1
            lease = Lease(
                item.leased_until,
                now + self._lease_seconds,
                partial(storage.renew_delivery_lease, item.delivery.id),
                partial(storage.subscriber_delivery_due, item.delivery.id, url=item.url),
            )
            nursery.start_soon(self._attempt_in_turn, item, lease, host, queue)
        if given_back:
            await storage.release_subscriber_deliveries(given_back)
        return len(claimed)

    async def _attempt_in_turn(
        self, item: ClaimedDelivery, lease: Lease, host: str, queue: HostQueue
    ) -> None:
        """Attempt `item` once its host has a free slot, then record the attempt (the slot is
        given back as soon as the answer is in)."""
        try:
            try:
                async with queue.limiter:
                    finished = await self._attempt(item, lease)
            finally:
                self._leave(host, queue)
            what = f"webhook delivery {item.delivery.id}"
            if finished is None or not await self._record(finished, what):
                return
            self._gateway.metrics.webhook_attempted(
                finished.status, finished.status_code, finished.latency_ms / 1000
            )
        finally:
            self._active -= 1
        log.info(
            "webhook delivery %s attempt %d -> %s (%s)",
            finished.delivery_id,
            finished.attempt,
            finished.status,
            finished.status_code or finished.error,
        )

    async def _attempt(self, item: ClaimedDelivery, lease: Lease) -> SubscriberAttempt | None:
        """POST once under `lease` (None when the delivery passed to another claim first); any
        2xx delivers, anything else is retried on the frozen schedule (a refused target fails
        for good). Whatever a delivery's data does to the attempt (a seed that cannot be read),
        the worker goes on: the error is logged and recorded as this attempt's, and retried."""
        delivery = item.delivery
        number = delivery.attempts + 1
        started, started_monotonic = self._clock(), trio.current_time()
        try:
            answer = await self._post(item, lease, started)
        except Exception as exc:
            log.exception("webhook delivery %s: attempt failed unexpectedly", delivery.id)
            answer = Answer(None, error=f"internal error: {type(exc).__name__}"[:MAX_ERROR_CHARS])
        if answer is None:
            return None
        finished = self._clock()
        latency = round((trio.current_time() - started_monotonic) * 1000)
        code = answer.status_code
        status: SubscriberStatus = DELIVERY_DONE
        retry_at = None
        if code is None or not 200 <= code < 300:
            if not answer.final:
                retry_at = SUBSCRIBER_DELIVERY.next_attempt_at(
                    number,
                    now=finished,
                    first_at=delivery.created_epoch,
                    retry_after=parse_retry_after(answer.retry_after, finished),
                )
            status = DELIVERY_WAITING if retry_at is not None else DELIVERY_FAILED
        error = answer.error
        if error is None and status != DELIVERY_DONE:
            error = f"HTTP {code}"
        return SubscriberAttempt(
            delivery.id, number, started, code, error, latency, status, retry_at, lease.until
        )

    async def _post(self, item: ClaimedDelivery, lease: Lease, now: float) -> Answer | None:
        """The delivery's envelope, signed at `now` with each of the webhook's secrets, POSTed
        once while `lease` holds (None when it is not)."""
        delivery = item.delivery
        secrets = [webhook_secret(self._gateway.server_key, seed) for seed in item.seeds]
        headers = delivery_headers(delivery.envelope, secrets, int(now))
        if not await self._hold(lease, f"webhook delivery {delivery.id}"):
            return None
        return await post_pinned(
            self._gateway,
            self._connections,
            item.url,
            delivery.envelope,
            headers,
            self._attempt_timeout,
        )
