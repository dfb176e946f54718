"""The certificate watch: warns in the log before the STARTTLS certificate expires, errs once it
has, and keeps its expiry in `/metrics`, at start and then every CHECK_INTERVAL_SECONDS.

It watches the certificate the SMTP listener serves, read when the gateway started (a renewed
file is served only after a restart); it reads the file again only to say so. It never reads
the key. At start it also warns when the certificate does not name smtp.hostname.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import trio

from e2a_gateway.certificate_expiry import (
    CertificateFacts,
    expiry_notice,
    name_notice,
    read_certificate,
)
from e2a_gateway.config import Settings
from e2a_gateway.gateway import Gateway

log = logging.getLogger("e2a.smtp")

CHECK_INTERVAL_SECONDS = 86_400.0


def served_certificate(settings: Settings) -> CertificateFacts | None:
    """The facts of the STARTTLS certificate `smtp.tls_cert` names, read as the listener loads
    it; None when there is none, or when its expiry cannot be read (logged: the gateway serves
    it all the same). A certificate that does not name smtp.hostname is warned about here,
    once: its names do not change until a restart."""
    path = settings.smtp.tls_cert
    if path is None:
        return None
    try:
        facts = read_certificate(path)
    except (ValueError, OSError) as exc:
        log.warning(
            "smtp.tls_cert %s: cannot read the certificate's expiry (%s) — it will not be "
            "warned about before it expires",
            path,
            exc,
        )
        return None
    mismatch = name_notice(facts, settings.smtp.hostname)
    if mismatch is not None:
        log.warning("%s", mismatch)
    return facts


class CertificateWatch:
    """Reports the expiry of the certificate `served`. `check(now)` does one round (tests pass
    their own time); `run()` checks at start and then every CHECK_INTERVAL_SECONDS."""

    def __init__(
        self,
        gateway: Gateway,
        served: CertificateFacts,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._gateway = gateway
        self._served = served
        self._clock = clock

    async def run(self) -> None:
        """Check until cancelled."""
        while True:
            await self.check(self._clock())
            await trio.sleep(CHECK_INTERVAL_SECONDS)

    async def check(self, now: float) -> None:
        """Set the expiry gauge, and log a WARNING when the certificate expires within
        `certificate_expiry.WARNING_SECONDS` of `now`, an ERROR when it has expired."""
        self._gateway.metrics.certificate_served("smtp", self._served.not_after)
        if expiry_notice(self._served, now) is None:
            return
        on_disk = await trio.to_thread.run_sync(self._on_disk)
        notice = expiry_notice(self._served, now, on_disk)
        if notice is not None:
            level, message = notice
            log.log(level, "%s", message)

    def _on_disk(self) -> CertificateFacts | None:
        """What the certificate file holds now; None when it cannot be read."""
        try:
            return read_certificate(self._served.path)
        except (ValueError, OSError):
            return None
