"""Rotating the DKIM key without a gap: while `dkim.next_selector` and
`dkim.next_private_key_path` are set, every face that lists a domain's records lists the next
key's record beside the signing one (`/api/v1` `dkim_next`, `/v1` purpose `dkim_next`), mail
is still signed with the signing key alone, and once the operator makes the next key the
signing one and restarts, mail verifies against the record published beforehand. A gateway
relaying to an aiosmtpd sink on loopback; signatures checked by dkimpy against DNS fixtures
that serve one record or the other."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import dkim
import httpx
import pytest
import trio
from cryptography.hazmat.primitives import serialization

from e2a_gateway.app import RunningGateway, run_gateway
from e2a_gateway.config import DkimSettings, Settings
from e2a_gateway.mailauth.resolver import FixtureResolver
from e2a_gateway.outbound.dkim_signing import DkimKeyError, public_key_record_value
from e2a_gateway.startup import StartupError, check_dkim_pair
from tests.conftest import make_settings
from tests.delivery_support import open_account, wait_until
from tests.relay_support import Sink, relay_port, sink
from tests.test_dkim_signing import SHORT_KEY
from tests.test_domain_dkim_record import write_key

__all__ = ["relay_port", "sink"]  # fixtures

DOMAIN = "example.net"
OTHER_DOMAIN = "example.org"
CURRENT = "e2a202606"
NEXT = "e2a202607"


@asynccontextmanager
async def serving(settings: Settings, resolver: FixtureResolver) -> AsyncIterator[RunningGateway]:
    """The whole gateway running on `settings` until the block ends (a stop and a restart)."""
    async with trio.open_nursery() as nursery:
        running: RunningGateway = await nursery.start(
            partial(run_gateway, settings, resolver=resolver)
        )
        yield running
        nursery.cancel_scope.cancel()


def record_of(path: Path) -> str:
    """The `v=DKIM1; k=rsa; p=…` record of the key at `path`."""
    return public_key_record_value(path.read_bytes())


async def send_signed(http: httpx.AsyncClient, sink: Sink, count: int) -> bytes:
    """Send one message from bot@DOMAIN; the bytes the relay received (its `count`th)."""
    sent = await http.post(
        "/api/v1/send",
        json={
            "from": f"bot@{DOMAIN}",
            "to": ["carol@example.com"],
            "subject": "Rotation",
            "body": "Numbers attached.",
        },
    )
    assert sent.status_code in (200, 202), sent.text
    await wait_until(lambda: len(sink.received) == count)
    return sink.received[count - 1][2]


async def listed_on_api_v1(http: httpx.AsyncClient) -> dict[str, object]:
    """The records `GET /api/v1/domains` lists for DOMAIN."""
    domains = (await http.get("/api/v1/domains")).json()["domains"]
    return dict(next(d for d in domains if d["domain"] == DOMAIN)["dns_records"])


def verifies(raw: bytes, zone: dict[str, str]) -> bool:
    """Whether dkimpy verifies `raw` against DNS serving `zone` (TXT name → value) alone."""
    served = {f"{name}.".encode(): value.encode() for name, value in zone.items()}

    def dns(name: bytes, timeout: int = 5) -> bytes:
        return served.get(name, b"")

    return bool(dkim.verify(raw, dnsfunc=dns))


async def test_the_next_key_is_listed_before_the_switch_and_signs_only_after_it(
    tmp_path: Path, relay_port: int, sink: Sink
) -> None:
    write_key(tmp_path / "current.pem", serialization.PrivateFormat.PKCS8)
    write_key(tmp_path / "next.pem", serialization.PrivateFormat.TraditionalOpenSSL)
    current, upcoming = record_of(tmp_path / "current.pem"), record_of(tmp_path / "next.pem")
    current_name, next_name = f"{CURRENT}._domainkey.{DOMAIN}", f"{NEXT}._domainkey.{DOMAIN}"
    rotating = make_settings(
        tmp_path,
        dkim={
            "selector": CURRENT,
            "private_key_path": str(tmp_path / "current.pem"),
            "next_selector": NEXT,
            "next_private_key_path": str(tmp_path / "next.pem"),
        },
        outbound_smtp={"host": "127.0.0.1", "port": relay_port, "tls": "none"},
    )
    resolver = FixtureResolver({current_name: [current]})

    async with serving(rotating, resolver) as running:
        alice = await open_account(running.gateway, running.addresses.http_url, "alice@x.test")
        async with alice.http:
            registered = await alice.http.post("/api/v1/domains", json={"domain": DOMAIN})
            assert registered.status_code == 201, registered.text
            listed = registered.json()["dns_records"]
            assert listed["dkim"] == {"host": f"{CURRENT}._domainkey", "value": current}
            assert listed["dkim_next"] == {"host": f"{NEXT}._domainkey", "value": upcoming}
            assert await listed_on_api_v1(alice.http) == listed

            on_v1 = await alice.http.post("/v1/domains", json={"domain": OTHER_DOMAIN})
            assert on_v1.status_code == 201, on_v1.text
            for answer in (on_v1.json(), (await alice.http.get(f"/v1/domains/{DOMAIN}")).json()):
                name = answer["domain"]
                dkim_records = {
                    r["purpose"]: r for r in answer["dns_records"] if r["type"] == "TXT"
                }
                assert dkim_records["dkim"]["name"] == f"{CURRENT}._domainkey.{name}"
                assert dkim_records["dkim"]["value"] == current
                assert dkim_records["dkim_next"] == {
                    "type": "TXT",
                    "name": f"{NEXT}._domainkey.{name}",
                    "value": upcoming,
                    "priority": None,
                    "purpose": "dkim_next",
                    "status": "pending",
                }

            probe = (await alice.http.post(f"/v1/domains/{DOMAIN}/verify")).json()
            assert probe["verified"] is True  # development mode: the TXT proof is waived
            assert (probe["dkim"], probe["dkim_next"]) == ("found", "missing")
            resolver.set_txt(next_name, [upcoming])
            probe = (await alice.http.post(f"/v1/domains/{DOMAIN}/verify")).json()
            assert (probe["dkim"], probe["dkim_next"]) == ("found", "found")

            made = await alice.http.post(
                "/api/v1/agents", json={"email": f"bot@{DOMAIN}", "agent_mode": "local"}
            )
            assert made.status_code == 201, made.text
            before = await send_signed(alice.http, sink, 1)

    assert f"s={CURRENT}".encode() in before and f"s={NEXT}".encode() not in before
    assert verifies(before, {current_name: current})
    assert not verifies(before, {next_name: upcoming})

    swapped = rotating.model_copy(
        update={
            "dkim": DkimSettings(selector=NEXT, private_key_path=tmp_path / "next.pem"),
        }
    )
    async with serving(swapped, resolver) as running:
        alice = await open_account(running.gateway, running.addresses.http_url, "alice@x.test")
        async with alice.http:
            listed = await listed_on_api_v1(alice.http)
            assert listed["dkim"] == {"host": f"{NEXT}._domainkey", "value": upcoming}
            assert "dkim_next" not in listed
            after = await send_signed(alice.http, sink, 2)

    assert f"s={NEXT}".encode() in after
    assert verifies(after, {next_name: upcoming})
    assert not verifies(after, {current_name: current})


def dkim_settings(tmp_path: Path, **dkim: object) -> Settings:
    return make_settings(tmp_path, dkim=dkim)


SIGNING = {"selector": CURRENT, "private_key_path": "current.pem"}


@pytest.mark.parametrize(
    ("dkim", "refusal"),
    [
        (SIGNING | {"next_selector": NEXT}, r"^dkim\.next_private_key_path: .* needs both"),
        (SIGNING | {"next_private_key_path": "n.pem"}, r"^dkim\.next_selector: .* needs both"),
        (
            SIGNING | {"next_selector": CURRENT.upper(), "next_private_key_path": "n.pem"},
            r"^dkim\.next_selector: .* is the signing key's selector",
        ),
    ],
)
def test_a_half_set_or_same_selector_next_key_is_refused(
    tmp_path: Path, dkim: dict[str, str], refusal: str
) -> None:
    with pytest.raises(StartupError, match=refusal):
        check_dkim_pair(dkim_settings(tmp_path, **dkim))


def test_a_next_key_without_a_signing_key_is_refused(tmp_path: Path) -> None:
    settings = dkim_settings(tmp_path, next_selector=NEXT, next_private_key_path="next.pem")
    with pytest.raises(StartupError, match=r"^dkim\.next_selector: .* signs with none"):
        check_dkim_pair(settings)


async def test_a_next_key_too_short_to_verify_stops_the_start_naming_its_setting(
    tmp_path: Path,
) -> None:
    write_key(tmp_path / "current.pem", serialization.PrivateFormat.PKCS8)
    (tmp_path / "next.pem").write_bytes(SHORT_KEY)
    settings = dkim_settings(
        tmp_path,
        selector=CURRENT,
        private_key_path=str(tmp_path / "current.pem"),
        next_selector=NEXT,
        next_private_key_path=str(tmp_path / "next.pem"),
    )
    refusal = pytest.RaisesExc(
        DkimKeyError, match=r"^dkim\.next_private_key_path: .* 512-bit .*openssl genrsa"
    )
    with pytest.RaisesGroup(refusal, flatten_subgroups=True):
        async with serving(settings, FixtureResolver()):
            pass
