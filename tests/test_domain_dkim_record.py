"""A custom domain lists the DKIM key record its agents' mail needs, on every face that lists
records (`/api/v1`, `/v1`, the dashboard, the MCP tools), when the gateway signs outbound
mail: a gateway with `dkim.*` and an aiosmtpd relay on loopback, whose signed mail verifies
(dkimpy) against a DNS fixture serving exactly the record listed, and nothing else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from e2a_gateway.app import RunningGateway
from e2a_gateway.config import Settings
from tests.conftest import Account, make_settings
from tests.delivery_support import wait_until
from tests.relay_support import Sink, relay_port, sink
from tests.test_dashboard import browser, session_csrf, sign_in
from tests.test_mcp_ports import both_ports, run

__all__ = ["browser", "relay_port", "sink"]  # fixtures

DOMAIN = "example.net"
SELECTOR = "e2a2026"


def write_key(path: Path, form: serialization.PrivateFormat) -> None:
    """A new 2048-bit RSA key in PEM at `path`."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, form, serialization.NoEncryption())
    )


@pytest.fixture
def settings(tmp_path: Path, relay_port: int) -> Settings:
    """A gateway that DKIM-signs (a PKCS#8 key) and relays to the loopback sink."""
    write_key(tmp_path / "dkim.pem", serialization.PrivateFormat.PKCS8)
    return make_settings(
        tmp_path,
        dkim={"selector": SELECTOR, "private_key_path": str(tmp_path / "dkim.pem")},
        outbound_smtp={"host": "127.0.0.1", "port": relay_port, "tls": "none"},
    )


async def test_the_listed_dkim_record_verifies_the_mail_the_gateway_signs(
    running: RunningGateway, make_account: Any, sink: Sink
) -> None:
    alice: Account = await make_account("alice@example.com")
    registered = await alice.http.post("/api/v1/domains", json={"domain": DOMAIN})
    assert registered.status_code == 201, registered.text
    listed = registered.json()["dns_records"]
    assert set(listed) == {"mx", "txt", "dkim"}
    assert listed["dkim"]["host"] == f"{SELECTOR}._domainkey"
    assert listed["dkim"]["value"].startswith("v=DKIM1; k=rsa; p=MIIBIjAN")

    on_v1 = (await alice.http.get(f"/v1/domains/{DOMAIN}")).json()["dns_records"]
    by_purpose = {record["purpose"]: record for record in on_v1}
    assert set(by_purpose) == {"ownership", "inbound_mx", "dkim"}
    assert by_purpose["dkim"] == {
        "type": "TXT",
        "name": f"{SELECTOR}._domainkey.{DOMAIN}",
        "value": listed["dkim"]["value"],
        "priority": None,
        "purpose": "dkim",
        "status": "pending",  # the gateway never probes it: no claim that it is published
    }
    assert (await alice.http.get("/api/v1/domains")).json()["domains"][0]["dns_records"] == listed

    assert (await alice.http.post(f"/v1/domains/{DOMAIN}/verify")).json()["verified"] is True
    made = await alice.http.post(
        "/api/v1/agents", json={"email": f"bot@{DOMAIN}", "agent_mode": "local"}
    )
    assert made.status_code == 201, made.text
    sent = await alice.http.post(
        "/api/v1/send",
        json={
            "from": f"bot@{DOMAIN}",
            "to": ["carol@example.org"],
            "subject": "Signed",
            "body": "Numbers attached.",
        },
    )
    assert sent.status_code in (200, 202), sent.text
    await wait_until(lambda: len(sink.received) == 1)
    raw = sink.received[0][2]

    zone = {f"{listed['dkim']['host']}.{DOMAIN}.".encode(): listed["dkim"]["value"].encode()}

    def dns(name: bytes, timeout: int = 5) -> bytes:
        return zone.get(name, b"")

    assert f"d={DOMAIN}".encode() in raw and f"s={SELECTOR}".encode() in raw
    assert dkim.verify(raw, dnsfunc=dns)
    assert not dkim.verify(raw.replace(b"Numbers attached.", b"Numbers altered!!"), dnsfunc=dns)


async def test_the_dashboard_and_the_mcp_tools_list_the_same_record(
    running: RunningGateway, make_account: Any, browser: Any
) -> None:
    alice: Account = await make_account("alice@example.com")
    client = browser()
    assert (await sign_in(client, alice.key)).status_code == 303
    token = await session_csrf(client)
    added = await client.post("/domains", data={"domain": DOMAIN, "csrf_token": token})
    assert added.status_code == 303
    listed = (await alice.http.get("/api/v1/domains")).json()["domains"][0]["dns_records"]["dkim"]
    page = (await client.get(added.headers["location"])).text
    assert f"{SELECTOR}._domainkey" in page and listed["value"] in page

    made = await alice.http.post("/api/v1/agents", json={"slug": "dkim-mcp", "agent_mode": "local"})
    async with both_ports(running, alice.key, made.json()["email"]) as ports:
        for port in ports:
            answer = await run(port, "get_domain", {"domain": DOMAIN})
            assert answer["dns_records"]["dkim"] == listed
