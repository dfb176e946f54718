"""The STARTTLS certificate's expiry: a running gateway warns in its log before it comes, errs
once it has passed, and keeps it in /metrics; the notice itself is checked on plain data."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from e2a_gateway.app import RunningGateway, run_gateway
from e2a_gateway.certificate_expiry import (
    WARNING_SECONDS,
    CertificateFacts,
    expiry_notice,
    name_notice,
    read_certificate,
)
from e2a_gateway.clock import format_timestamp
from e2a_gateway.config import Settings
from e2a_gateway.workers.certificate_watch import CertificateWatch
from tests.conftest import make_settings
from tests.delivery_support import wait_until
from tests.test_metrics import samples_of

HOST = "mx.agents.test"
GAUGE = "e2a_tls_certificate_expiry_timestamp_seconds"
DAY = 86_400


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def issue(ca: trustme.CA, directory: Path, not_after: datetime) -> tuple[Path, Path, bytes]:
    """A certificate chain for HOST valid until `not_after` and its key, written as the gateway
    reads them; (certificate file, key file, the key's PEM)."""
    issued = ca.issue_cert(
        HOST,
        "127.0.0.1",
        not_before=not_after - timedelta(days=90),
        not_after=not_after,
    )
    directory.mkdir(exist_ok=True)
    cert, key = directory / "fullchain.pem", directory / "privkey.pem"
    cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(key))
    return cert, key, issued.private_key_pem.bytes()


def tls_settings(tmp_path: Path, cert: Path, key: Path) -> Settings:
    return make_settings(
        tmp_path,
        metrics={"enabled": True},
        smtp={
            "listen": "127.0.0.1:0",
            "hostname": HOST,
            "tls_cert": str(cert),
            "tls_key": str(key),
        },
    )


def in_days(days: float) -> datetime:
    """Now plus `days`, to the second (as a certificate holds it)."""
    return datetime.now(UTC).replace(microsecond=0) + timedelta(days=days)


async def start(nursery: trio.Nursery, settings: Settings) -> RunningGateway:
    started: RunningGateway = await nursery.start(partial(run_gateway, settings))
    return started


async def gauge(running: RunningGateway) -> float | None:
    async with httpx.AsyncClient(base_url=running.addresses.http_url) as client:
        response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    return samples_of(response.text).get((GAUGE, (("listener", "smtp"),)))


def logged(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    """The records about the certificate at `level`."""
    return [
        record
        for record in caplog.records
        if record.levelno == level and "smtp.tls_cert" in record.getMessage()
    ]


async def gauge_is(running: RunningGateway, wanted: float) -> bool:
    return await gauge(running) == wanted


async def test_a_certificate_expiring_soon_is_warned_about_and_its_expiry_is_a_metric(
    tmp_path: Path, ca: trustme.CA, caplog: pytest.LogCaptureFixture, nursery: trio.Nursery
) -> None:
    caplog.set_level(logging.INFO, logger="e2a")
    not_after = in_days(5)
    cert, key, key_pem = issue(ca, tmp_path / "tls", not_after)
    running = await start(nursery, tls_settings(tmp_path, cert, key))

    await wait_until(lambda: logged(caplog, logging.WARNING))
    [warning] = logged(caplog, logging.WARNING)
    message = warning.getMessage()
    assert str(cert) in message
    assert HOST in message and "127.0.0.1" in message
    assert f"expires at {format_timestamp(not_after.timestamp())} (in 4 days)" in message
    assert "renew it and restart e2a" in message
    assert await gauge(running) == not_after.timestamp()
    body = key_pem.decode().splitlines()[1]
    assert not any(body in record.getMessage() for record in caplog.records)
    assert not any(record.levelno >= logging.ERROR for record in caplog.records)


async def test_an_expired_certificate_is_an_error(
    tmp_path: Path, ca: trustme.CA, caplog: pytest.LogCaptureFixture, nursery: trio.Nursery
) -> None:
    caplog.set_level(logging.INFO, logger="e2a")
    not_after = in_days(-2)
    cert, key, _ = issue(ca, tmp_path / "tls", not_after)
    running = await start(nursery, tls_settings(tmp_path, cert, key))

    await wait_until(lambda: logged(caplog, logging.ERROR))
    [error] = logged(caplog, logging.ERROR)
    message = error.getMessage()
    assert f"smtp.tls_cert {cert}: the STARTTLS certificate for {HOST}, 127.0.0.1" in message
    assert f"expired at {format_timestamp(not_after.timestamp())}" in message
    assert await gauge(running) == not_after.timestamp()


async def test_a_certificate_far_from_expiry_is_only_a_metric(
    tmp_path: Path, ca: trustme.CA, caplog: pytest.LogCaptureFixture, nursery: trio.Nursery
) -> None:
    caplog.set_level(logging.INFO, logger="e2a")
    not_after = in_days(60)
    cert, key, _ = issue(ca, tmp_path / "tls", not_after)
    running = await start(nursery, tls_settings(tmp_path, cert, key))

    # The watch sets the gauge first, then decides what to log without waiting for anything.
    await wait_until(partial(gauge_is, running, not_after.timestamp()))
    assert logged(caplog, logging.WARNING) == []


async def test_without_a_certificate_there_is_no_expiry_series(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    running = await start(nursery, make_settings(tmp_path, metrics={"enabled": True}))
    await trio.sleep(0.1)
    assert await gauge(running) is None


async def test_a_renewed_file_is_served_after_a_restart_and_the_warning_says_so(
    tmp_path: Path, ca: trustme.CA, caplog: pytest.LogCaptureFixture
) -> None:
    """The listener keeps the certificate it loaded at start: a file renewed under it changes
    nothing served until a restart, which the warning says; the restarted gateway reports the
    new certificate."""
    caplog.set_level(logging.INFO, logger="e2a")
    old = in_days(3)
    cert, key, _ = issue(ca, tmp_path / "tls", old)
    settings = tls_settings(tmp_path, cert, key)
    async with trio.open_nursery() as nursery:
        running = await start(nursery, settings)
        await wait_until(lambda: logged(caplog, logging.WARNING))
        renewed = in_days(90)
        issue(ca, tmp_path / "tls", renewed)
        caplog.clear()
        watch = CertificateWatch(running.gateway, _facts(cert, old))
        await watch.check(time.time())
        [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert (
            f"the file now holds one valid until {format_timestamp(renewed.timestamp())}, which "
            "e2a serves once restarted: restart e2a"
        ) in warning.getMessage()
        assert await gauge(running) == old.timestamp()
        nursery.cancel_scope.cancel()

    caplog.clear()
    async with trio.open_nursery() as nursery:
        running = await start(nursery, settings)
        await wait_until(partial(gauge_is, running, renewed.timestamp()))
        assert logged(caplog, logging.WARNING) == []
        nursery.cancel_scope.cancel()


async def test_a_certificate_that_does_not_name_the_mx_host_is_warned_about_at_start(
    tmp_path: Path, ca: trustme.CA, caplog: pytest.LogCaptureFixture, nursery: trio.Nursery
) -> None:
    """A certificate for another name (the web site's, say) is served all the same, but a
    sending server that checks it (MTA-STS, DANE) refuses it and does not deliver: the start
    says which names it holds and which one it should."""
    caplog.set_level(logging.INFO, logger="e2a")
    issued = ca.issue_cert("www.agents.test", "agents.test")
    cert, key = tmp_path / "fullchain.pem", tmp_path / "privkey.pem"
    cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(key))
    await start(nursery, tls_settings(tmp_path, cert, key))

    [warning] = logged(caplog, logging.WARNING)
    message = warning.getMessage()
    assert message.startswith(
        f"smtp.tls_cert {cert}: the STARTTLS certificate is for www.agents.test, agents.test, "
        f"not for smtp.hostname {HOST}"
    )
    assert "MTA-STS" in message


@pytest.mark.backend_independent
@pytest.mark.parametrize(
    ("names", "hostname", "matches"),
    [
        (("mx.agents.test",), "mx.agents.test", True),
        (("MX.Agents.Test",), "mx.agents.test", True),
        (("other.test", "mx.agents.test"), "MX.agents.test", True),
        (("*.agents.test",), "mx.agents.test", True),
        (("*.agents.test",), "agents.test", False),
        (("*.agents.test",), "a.mx.agents.test", False),
        (("agents.test",), "mx.agents.test", False),
        (("192.0.2.1",), "mx.agents.test", False),
        (("xn--bcher-kva.test",), "b\u00fccher.test", True),
    ],
)
def test_the_mx_host_must_be_among_the_certificate_names(
    names: tuple[str, ...], hostname: str, matches: bool
) -> None:
    notice = name_notice(_facts(Path("/etc/e2a/cert.pem"), NOW, names), hostname)
    assert (notice is None) is matches
    if notice is not None:
        assert f"not for smtp.hostname {hostname}" in notice


def _facts(path: Path, not_after: datetime, names: tuple[str, ...] = (HOST,)) -> CertificateFacts:
    return CertificateFacts(path, names, not_after.timestamp())


NOW = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.mark.backend_independent
@pytest.mark.parametrize(
    ("left", "level", "when"),
    [
        (timedelta(days=30), None, None),
        (timedelta(seconds=WARNING_SECONDS + 1), None, None),
        (timedelta(seconds=WARNING_SECONDS), logging.WARNING, "(in 14 days)"),
        (timedelta(days=1, hours=2), logging.WARNING, "(in 1 day)"),
        (timedelta(hours=5, minutes=30), logging.WARNING, "(in 5 hours)"),
        (timedelta(0), logging.ERROR, "expired at 2026-06-01T00:00:00Z"),
        (timedelta(days=-40), logging.ERROR, "expired at 2026-04-22T00:00:00Z"),
    ],
)
def test_the_notice_warns_within_fourteen_days_and_errs_once_expired(
    left: timedelta, level: int | None, when: str | None
) -> None:
    notice = expiry_notice(_facts(Path("/etc/e2a/cert.pem"), NOW + left), NOW.timestamp())
    if level is None:
        assert notice is None
        return
    assert notice is not None
    assert notice[0] == level
    assert when is not None and when in notice[1]
    assert notice[1].startswith(
        f"smtp.tls_cert /etc/e2a/cert.pem: the STARTTLS certificate for {HOST}"
    )


@pytest.mark.backend_independent
def test_an_older_file_does_not_claim_a_restart_helps() -> None:
    served = _facts(Path("c.pem"), NOW + timedelta(days=2))
    same = expiry_notice(served, NOW.timestamp(), served)
    assert same is not None and same[1].endswith("renew it and restart e2a")


@pytest.mark.backend_independent
def test_the_names_are_the_alternative_names(tmp_path: Path, ca: trustme.CA) -> None:
    path = tmp_path / "cert.pem"
    ca.issue_cert("a.test", "b.test", "192.0.2.1").cert_chain_pems[0].write_to_path(str(path))
    assert read_certificate(path).names == ("a.test", "b.test", "192.0.2.1")


@pytest.mark.backend_independent
def test_without_alternative_names_the_common_name_names_it(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "legacy.test")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    path = tmp_path / "cert.pem"
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    facts = read_certificate(path)
    assert facts.names == ("legacy.test",)
    assert facts.not_after == (NOW + timedelta(days=1)).timestamp()


@pytest.mark.backend_independent
def test_a_file_without_a_certificate_is_a_value_error(tmp_path: Path) -> None:
    path = tmp_path / "cert.pem"
    path.write_text("not a certificate\n")
    with pytest.raises(ValueError):
        read_certificate(path)
