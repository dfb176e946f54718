"""The auto-disable sweep of `/v1` webhook subscribers: every five minutes, e2a's rule turns off
each webhook failing chronically (operations.webhooks.disable_failing_webhooks).

It only changes webhooks' state, in one idempotent UPDATE, so every replica may run it; it
never touches a delivery, and the delivery worker simply stops claiming those of a webhook
once it is off.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import trio

from e2a_gateway.gateway import Gateway
from e2a_gateway.operations.webhooks import disable_failing_webhooks
from e2a_gateway.storage.base import Webhook
from e2a_gateway.workers.rounds import Rounds

log = logging.getLogger("e2a.webhooks.v1")

SWEEP_INTERVAL_SECONDS = 5 * 60.0
"""e2a's cadence (webhookdelivery maintenanceInterval); its first sweep is one interval after
the start, as here."""


class AutoDisableSweep:
    """Turns off chronically failing webhooks. `sweep(now)` does one round (tests pass their
    own time); `run()` sweeps every `interval_seconds` (SWEEP_INTERVAL_SECONDS), the first
    after one interval."""

    def __init__(
        self,
        gateway: Gateway,
        clock: Callable[[], float] = time.time,
        interval_seconds: float = SWEEP_INTERVAL_SECONDS,
    ) -> None:
        self._gateway = gateway
        self._clock = clock
        self._interval_seconds = interval_seconds
        self._rounds = Rounds(log)

    async def run(self) -> None:
        """Sweep every `interval_seconds` until cancelled; a sweep the database fails is said
        once in the log and made again at the next (`Rounds`)."""
        while True:
            await trio.sleep(self._interval_seconds)
            await self._rounds.run("webhook auto-disable", self.sweep(self._clock()))

    async def sweep(self, now: float) -> list[Webhook]:
        """Turn off, as of `now`, each webhook that e2a's rule finds failing; those turned
        off, each logged."""
        disabled = await disable_failing_webhooks(self._gateway, now)
        for webhook in disabled:
            log.warning(
                "webhook %s of user %s auto-disabled: its deliveries keep failing; "
                "it can be enabled again in 5 minutes",
                webhook.id,
                webhook.user_id,
            )
        return disabled
