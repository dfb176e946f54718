"""Approval notices are DKIM-signed like the mail agents send: a gateway with a DKIM key and
a sending domain mails a notice through an aiosmtpd sink on 127.0.0.1, and dkimpy verifies it
against the key's public half (a DNS fixture)."""

from __future__ import annotations

import time
from pathlib import Path

import dkim
import pytest

from e2a_gateway.app import RunningGateway
from e2a_gateway.config import Settings
from tests.conftest import SHARED_DOMAIN, make_settings
from tests.delivery_support import wait_until
from tests.test_approvals import (  # noqa: F401 (fixtures)
    OWNER,
    MakeAccount,
    Sink,
    add_pending,
    hitl_owner,
    relay_port,
    sink,
)
from tests.test_dkim_signing import write_rsa_key


@pytest.fixture
def key_record(tmp_path: Path) -> bytes:
    return write_rsa_key(tmp_path / "dkim.pem")


@pytest.fixture
def settings(
    tmp_path: Path,
    relay_port: int,  # noqa: F811 (the fixture imported above)
    key_record: bytes,
) -> Settings:
    return make_settings(
        tmp_path,
        outbound_smtp={
            "host": "127.0.0.1",
            "port": relay_port,
            "tls": "none",
            "timeout_seconds": 10,
            "from_domain": SHARED_DOMAIN,
        },
        dkim={"selector": "e2a", "private_key_path": str(tmp_path / "dkim.pem")},
    )


async def test_an_approval_notice_is_dkim_signed_for_its_sending_domain(
    running: RunningGateway,
    make_account: MakeAccount,
    sink: Sink,  # noqa: F811 (the fixture imported above)
    key_record: bytes,
) -> None:
    """Unsigned, a notice from no-reply@<from_domain> failed DMARC wherever the relay's SPF
    does not align (most relay services), so a domain with p=reject had it refused."""
    owner = await hitl_owner(running.gateway, await make_account(OWNER))
    await add_pending(running.gateway, owner, time.time() + 3600)
    await wait_until(lambda: bool(sink.notices()))
    [(mail_from, _, raw)] = [mail for mail in sink.received if OWNER in mail[1]]
    assert mail_from == f"no-reply@{SHARED_DOMAIN}"
    assert raw.startswith(b"DKIM-Signature:")

    def dns(name: bytes, timeout: int = 5) -> bytes:
        return key_record if name == f"e2a._domainkey.{SHARED_DOMAIN}.".encode() else b""

    assert dkim.verify(raw, dnsfunc=dns)
