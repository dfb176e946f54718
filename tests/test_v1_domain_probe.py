"""`POST /v1/domains/{domain}/verify` reports, beside `verified`, what DNS answers now for the
records the domain lists (e2a's VerifyDomainView): `mx` for the MX pointing at `smtp.hostname`
and, when the gateway DKIM-signs, `dkim` for the key record at `<selector>._domainkey` — each
`found`, `missing`, `mismatch` or `deferred` (DNS did not answer). Over real HTTP, against a DNS
fixture and a DNS server on loopback; e2a's SDK 5.8.1 parses the answer."""

from __future__ import annotations

import smtplib
import socket
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from cryptography.hazmat.primitives import serialization

from e2a_gateway.accounts import bootstrap_user
from e2a_gateway.app import RunningGateway, run_gateway
from e2a_gateway.config import Settings
from e2a_gateway.mailauth.dns_answers import MxRecord
from e2a_gateway.mailauth.resolver import FixtureResolver
from e2a_gateway.outbound.dkim_signing import public_key_record_value
from tests.conftest import Account, make_settings
from tests.dns_server import serve_dns
from tests.sdk_v1 import run_sdk, sdk5_python, value
from tests.test_domain_dkim_record import SELECTOR, write_key

__all__ = ["sdk5_python"]  # a fixture

MAIL_HOST = "mx.agents.test"  # smtp.hostname of the test settings


def signing_settings(tmp_path: Path, **overrides: object) -> Settings:
    """Settings of a gateway that DKIM-signs with a new key in `tmp_path` (`account` turns
    the running gateway to production, where a missing TXT record is not waived)."""
    if not (tmp_path / "dkim.pem").exists():
        write_key(tmp_path / "dkim.pem", serialization.PrivateFormat.PKCS8)
    return make_settings(
        tmp_path,
        dkim={"selector": SELECTOR, "private_key_path": str(tmp_path / "dkim.pem")},
        **overrides,
    )


def listed_dkim(tmp_path: Path) -> str:
    """The DKIM record value the gateway lists for its key in `tmp_path`."""
    return public_key_record_value((tmp_path / "dkim.pem").read_bytes())


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return signing_settings(tmp_path)


async def register(account: Account, domain: str) -> None:
    made = await account.http.post("/v1/domains", json={"domain": domain})
    assert made.status_code == 201, made.text


async def verify(account: Account, domain: str) -> dict[str, Any]:
    answered = await account.http.post(f"/v1/domains/{domain}/verify")
    assert answered.status_code == 200, answered.text
    body: dict[str, Any] = answered.json()
    assert "spf" not in body  # the gateway lists no SPF record for a domain
    return body


async def test_each_record_is_found_missing_mismatched_or_deferred(
    running: RunningGateway, resolver: FixtureResolver, make_account: Any, tmp_path: Path
) -> None:
    running.gateway.settings.env = "production"
    alice: Account = await make_account("alice@example.com")
    ours = listed_dkim(tmp_path)
    for domain in ("found.example", "missing.example", "other.example", "down.example"):
        await register(alice, domain)
    resolver.load_zone(
        {
            "found.example": {"MX": [(20, "backup.example"), (10, "MX.Agents.Test.")]},
            f"{SELECTOR}._domainkey.found.example": {
                "TXT": ["v=DKIM1; k=rsa; p=MIIBstale", ours.replace("p=", "p= ")]
            },
            "missing.example": {"A": ["192.0.2.1"]},
            f"{SELECTOR}._domainkey.missing.example": {"TXT": ["not a key record"]},
            "other.example": {"MX": [(10, "mx.elsewhere.example")]},
            f"{SELECTOR}._domainkey.other.example": {"TXT": [ours[:200]]},
        }
    )
    resolver.failing_lookups |= {
        ("down.example", "MX"),
        (f"{SELECTOR}._domainkey.down.example", "TXT"),
    }

    found = await verify(alice, "found.example")
    assert (found["mx"], found["dkim"], found["verified"]) == ("found", "found", False)
    missing = await verify(alice, "missing.example")
    assert (missing["mx"], missing["dkim"]) == ("missing", "missing")
    other = await verify(alice, "other.example")
    assert (other["mx"], other["dkim"]) == ("mismatch", "mismatch")
    down = await verify(alice, "down.example")
    assert (down["mx"], down["dkim"], down["verified"]) == ("deferred", "deferred", False)

    revoked = {"TXT": ["v=DKIM1; k=rsa; p="]}
    resolver.load_zone({f"{SELECTOR}._domainkey.missing.example": revoked})
    assert (await verify(alice, "missing.example"))["dkim"] == "mismatch"

    token = (await alice.http.get("/v1/domains/found.example")).json()["verification_token"]
    resolver.set_txt("found.example", [token])
    proved = await verify(alice, "found.example")
    assert (proved["verified"], proved["mx"], proved["dkim"]) == (True, "found", "found")
    assert proved["verified_at"]
    resolver.load_zone({"found.example": {"TXT": [token], "MX": [(0, "")]}})  # a null MX
    again = await verify(alice, "found.example")  # verified already: the probe still runs
    assert (again["verified"], again["mx"]) == (True, "mismatch")


def rcpt_reply(port: int, recipient: str) -> tuple[int, str]:
    """What the gateway's SMTP listener answers a RCPT TO `recipient`."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("mail.example.org")
        assert client.mail("someone@example.org")[0] == 250
        code, text = client.rcpt(recipient)
    return code, text.decode()


async def test_verified_needs_the_mx_as_well_as_the_txt(
    running: RunningGateway, resolver: FixtureResolver, make_account: Any
) -> None:
    """As e2a's verifyDomain: `verified` flips true only once the ownership TXT and the MX
    pointing at this gateway are both published. With the TXT alone the domain stays pending
    (its inbound records too), takes no agent and its mail is refused at RCPT."""
    running.gateway.settings.env = "production"
    alice: Account = await make_account("alice@example.com")
    await register(alice, "corp.example")
    token = (await alice.http.get("/v1/domains/corp.example")).json()["verification_token"]
    smtp_port = running.addresses.smtp_port

    for mx in ([], [(10, "mx.elsewhere.example")]):
        resolver.load_zone({"corp.example": {"TXT": [token], "MX": mx}})
        body = await verify(alice, "corp.example")
        assert body["verified"] is False and "verified_at" not in body, body
        assert body["mx"] == ("missing" if not mx else "mismatch")
        shown = (await alice.http.get("/v1/domains/corp.example")).json()
        assert shown["verified"] is False and "verified_at" not in shown
        inbound = {r["purpose"]: r["status"] for r in shown["dns_records"]}
        assert (inbound["ownership"], inbound["inbound_mx"]) == ("pending", "pending")
        refused = await alice.http.post("/v1/agents", json={"email": "bot@corp.example"})
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["code"] == "domain_not_verified"
        code, _ = await trio.to_thread.run_sync(rcpt_reply, smtp_port, "bot@corp.example")
        assert code == 550

    resolver.load_zone({"corp.example": {"TXT": [token], "MX": [(10, MAIL_HOST)]}})
    body = await verify(alice, "corp.example")
    assert (body["verified"], body["mx"]) == (True, "found") and body["verified_at"]
    shown = (await alice.http.get("/v1/domains/corp.example")).json()
    inbound = {r["purpose"]: r["status"] for r in shown["dns_records"]}
    assert (inbound["ownership"], inbound["inbound_mx"]) == ("verified", "verified")
    made = await alice.http.post("/v1/agents", json={"email": "bot@corp.example"})
    assert made.status_code == 201, made.text
    code, _ = await trio.to_thread.run_sync(rcpt_reply, smtp_port, "bot@corp.example")
    assert code == 250


async def test_each_verify_records_when_the_records_were_checked(
    running: RunningGateway, resolver: FixtureResolver, make_account: Any
) -> None:
    """DomainView's `last_checked_at` is when verifyDomain last looked the records up, whatever
    it found (absent before the first look), as on e2a."""
    running.gateway.settings.env = "production"
    alice: Account = await make_account("alice@example.com")
    await register(alice, "corp.example")
    assert "last_checked_at" not in (await alice.http.get("/v1/domains/corp.example")).json()
    await verify(alice, "corp.example")
    first = (await alice.http.get("/v1/domains/corp.example")).json()
    assert first["verified"] is False and first["last_checked_at"] >= first["created_at"]
    await trio.sleep(1.1)  # timestamps are to the second
    await verify(alice, "corp.example")
    listed = (await alice.http.get("/v1/domains")).json()["items"][0]
    assert listed["last_checked_at"] > first["last_checked_at"]


async def test_without_dkim_signing_only_the_mx_is_probed(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    resolver = FixtureResolver.from_zone({"corp.example": {"MX": [(10, MAIL_HOST)]}})
    settings = make_settings(tmp_path)
    running: RunningGateway = await nursery.start(partial(run_gateway, settings, resolver=resolver))
    alice = await account(running)
    await register(alice, "corp.example")
    body = await verify(alice, "corp.example")
    assert body == {"domain": "corp.example", "verified": False, "mx": "found"}
    await alice.http.aclose()


class SlowResolver(FixtureResolver):
    """A fixture whose MX lookups hang far longer than `dns.timeout_seconds`."""

    def mx(self, name: str) -> list[MxRecord]:
        time.sleep(5)
        return super().mx(name)


async def test_a_lookup_that_outlasts_the_timeout_is_deferred_without_blocking(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    settings = signing_settings(tmp_path, dns={"timeout_seconds": 1})
    resolver = SlowResolver()
    resolver.load_zone({f"{SELECTOR}._domainkey.slow.example": {"TXT": [listed_dkim(tmp_path)]}})
    running: RunningGateway = await nursery.start(partial(run_gateway, settings, resolver=resolver))
    alice = await account(running)
    await register(alice, "slow.example")
    answers: dict[str, Any] = {}

    async def verify_slowly() -> None:
        started = trio.current_time()
        answers["verify"] = await verify(alice, "slow.example")
        answers["took"] = trio.current_time() - started

    async with trio.open_nursery() as requests:
        requests.start_soon(verify_slowly)
        await trio.sleep(0.2)
        started = trio.current_time()
        listed = await alice.http.get("/v1/domains")
        assert listed.status_code == 200 and trio.current_time() - started < 1
        assert "verify" not in answers  # the probe is still waiting on DNS meanwhile
    assert (answers["verify"]["mx"], answers["verify"]["dkim"]) == ("deferred", "found")
    assert answers["took"] < 3
    await alice.http.aclose()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A UDP port on loopback where nothing ever answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        yield silent.getsockname()[1]


async def test_the_probe_over_a_dns_server(
    tmp_path: Path, nursery: trio.Nursery, silent_port: int
) -> None:
    """The gateway's own resolver against an authoritative server on loopback: a whole
    ~400-character DKIM record crosses in 255-byte strings; no such name and no MX alike are
    `missing`."""
    write_key(tmp_path / "dkim.pem", serialization.PrivateFormat.PKCS8)
    ours = listed_dkim(tmp_path)
    zone: dict[str, Any] = {
        "good.example": {"MX": [(10, MAIL_HOST)]},
        f"{SELECTOR}._domainkey.good.example": {"TXT": [ours]},
        "other.example": {"MX": [(10, "mx.elsewhere.example")]},
        f"{SELECTOR}._domainkey.other.example": {"TXT": ["v=DKIM1; k=rsa; p=MIIBIjANother"]},
        "nodata.example": {"A": ["192.0.2.1"]},
    }
    port: int = await nursery.start(serve_dns, zone)
    served = signing_settings(tmp_path, dns={"nameservers": [f"127.0.0.1:{port}"]})
    running: RunningGateway = await nursery.start(partial(run_gateway, served))
    alice = await account(running)
    for domain in ("good.example", "other.example", "nodata.example", "absent.example"):
        await register(alice, domain)
    outcomes = {
        domain: (body["mx"], body["dkim"])
        for domain in ("good.example", "other.example", "nodata.example", "absent.example")
        for body in [await verify(alice, domain)]
    }
    assert outcomes == {
        "good.example": ("found", "found"),
        "other.example": ("mismatch", "mismatch"),
        "nodata.example": ("missing", "missing"),
        "absent.example": ("missing", "missing"),
    }
    await alice.http.aclose()


async def test_a_dns_server_that_never_answers_is_deferred(
    tmp_path: Path, nursery: trio.Nursery, silent_port: int
) -> None:
    settings = signing_settings(
        tmp_path, dns={"nameservers": [f"127.0.0.1:{silent_port}"], "timeout_seconds": 1}
    )
    running: RunningGateway = await nursery.start(partial(run_gateway, settings))
    alice = await account(running)
    await register(alice, "good.example")
    started = trio.current_time()
    body = await verify(alice, "good.example")
    assert (body["verified"], body["mx"], body["dkim"]) == (False, "deferred", "deferred")
    assert trio.current_time() - started < 4  # the TXT lookup, then MX and DKIM side by side
    await alice.http.aclose()


@pytest.mark.slow
async def test_the_sdk_reads_the_probe(
    running: RunningGateway,
    resolver: FixtureResolver,
    make_account: Any,
    tmp_path: Path,
    sdk5_python: Path,
) -> None:
    running.gateway.settings.env = "production"
    alice: Account = await make_account("alice@example.com")
    resolver.load_zone(
        {
            "good.example": {"MX": [(10, MAIL_HOST)]},
            f"{SELECTOR}._domainkey.good.example": {"TXT": [listed_dkim(tmp_path)]},
            "other.example": {"MX": [(10, "mx.elsewhere.example")]},
        }
    )
    resolver.failing_lookups.add((f"{SELECTOR}._domainkey.other.example", "TXT"))
    results = await run_sdk(
        sdk5_python,
        running.addresses.http_url,
        {"default": alice.key},
        [
            {"do": "domains.create", "args": [{"domain": "good.example"}]},
            {"do": "domains.create", "args": [{"domain": "other.example"}]},
            {"do": "domains.verify", "args": ["good.example"]},
            {"do": "domains.verify", "args": ["other.example"]},
        ],
    )
    good = value(results[2], "VerifyDomainView")
    assert good == {"domain": "good.example", "verified": False, "mx": "found", "dkim": "found"}
    other = value(results[3], "VerifyDomainView")
    assert (other["mx"], other["dkim"]) == ("mismatch", "deferred")


async def account(running: RunningGateway) -> Account:
    """A user of `running`, turned to production, with a live HTTP client (closed by the
    test)."""
    running.gateway.settings.env = "production"
    _, issued, _ = await bootstrap_user(
        running.gateway.storage, running.gateway.server_key, "owner@example.com"
    )
    http = httpx.AsyncClient(
        base_url=running.addresses.http_url,
        headers={"Authorization": f"Bearer {issued.plaintext}"},
        timeout=10,
    )
    return Account("owner@example.com", issued.plaintext, http)


async def test_a_verify_after_the_records_are_published_asks_dns_again(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """The gateway keeps DNS answers for their TTL, but a verify looks a domain's records up
    afresh: a user who pressed verify before publishing them (a TXT answer without the token,
    no MX yet) and publishes them now is verified at the next verify, not an hour later."""
    zone: dict[str, Any] = {
        "corp.example": {"TXT": ["v=spf1 -all"], "MX": [(10, MAIL_HOST)]},
        "late.example": {"A": ["192.0.2.1"]},
    }
    port: int = await nursery.start(serve_dns, zone)
    served = signing_settings(tmp_path, dns={"nameservers": [f"127.0.0.1:{port}"]})
    running: RunningGateway = await nursery.start(partial(run_gateway, served))
    alice = await account(running)
    tokens = {}
    for domain in ("corp.example", "late.example"):
        made = await alice.http.post("/v1/domains", json={"domain": domain})
        tokens[domain] = made.json()["verification_token"]

    early = await alice.http.post("/api/v1/domains/corp.example/verify")
    assert early.status_code == 412, early.text
    before = await verify(alice, "late.example")
    assert (before["verified"], before["mx"]) == (False, "missing")

    zone["corp.example"]["TXT"] = ["v=spf1 -all", tokens["corp.example"]]
    zone["late.example"].update(TXT=[tokens["late.example"]], MX=[(10, MAIL_HOST)])
    published = await alice.http.post("/api/v1/domains/corp.example/verify")
    assert published.status_code == 200 and published.json()["verified"] is True, published.text
    after = await verify(alice, "late.example")
    assert (after["verified"], after["mx"]) == (True, "found")
    await alice.http.aclose()
