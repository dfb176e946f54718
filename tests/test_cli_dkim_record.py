# ruff: noqa: F811 (the fixtures imported from tests.cli_support are this module's parameters)
"""`e2a domains add|verify` print the DKIM key record a DKIM-signing gateway lists, in full,
and `e2a doctor` checks that very record: the published key must be the gateway's, at the
gateway's selector (a DNS server on loopback serves the zone)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from e2a_gateway.mailauth.resolver import Zone
from e2a_gateway.v1 import E2AClient
from tests.cli_support import (  # noqa: F401 (fixtures)
    Account,
    Cli,
    LiveGateway,
    account,
    cli,
    home,
    serve_live,
)
from tests.conftest import make_settings
from tests.test_cli_parity import dns_server, statuses
from tests.test_domain_dkim_record import SELECTOR, write_key

STALE_KEY = "v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAstale"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    """One DKIM-signing gateway (a PKCS#1 key) for the module."""
    where = tmp_path_factory.mktemp("cli-dkim")
    write_key(where / "dkim.pem", serialization.PrivateFormat.TraditionalOpenSSL)
    dkim = {"selector": SELECTOR, "private_key_path": str(where / "dkim.pem")}
    yield from serve_live(make_settings(where, dkim=dkim))


def listed_record(live: LiveGateway, account: Account, domain: str) -> tuple[str, str]:
    """The DKIM record the gateway lists for `domain`: its full name and value."""
    with E2AClient(api_key=account.key, base_url=live.url) as client:
        found = next(d for d in client.list_domains().domains if d.domain == domain)
    assert found.dns_records and found.dns_records.dkim
    record = found.dns_records.dkim
    assert record.host and record.value
    return f"{record.host}.{domain}", record.value


def test_domains_add_and_verify_print_the_whole_dkim_record(
    live: LiveGateway, account: Account, cli: Cli
) -> None:
    domain = f"{account.prefix}.example.net"
    code, out, err = cli("domains", "add", domain)
    assert code == 0, err
    name, value = listed_record(live, account, domain)
    assert name == f"{SELECTOR}._domainkey.{domain}" and len(value) > 300
    assert f"publish TXT {name} with this value" in out
    assert f"\n{value}\n" in out  # the key in full, not cut to a table cell
    code, out, err = cli("domains", "verify", domain)
    assert code == 0, err
    assert out.startswith(f"Verified {domain}\n") and f"\n{value}\n" in out


def doctor(cli: Cli, zone: Zone, agent: str, *extra: str) -> dict[str, Any]:
    """`e2a doctor --json` for `agent` against a DNS server serving `zone`: the dns.dkim check."""
    with dns_server(zone) as port:
        _, out, err = cli(
            "doctor", "--agent", agent, "--nameserver", f"127.0.0.1:{port}", *extra, "--json"
        )
    report = json.loads(out)
    assert statuses(report)["dns.dkim"] in {"pass", "fail"}, err
    return next(check for check in report["checks"] if check["id"] == "dns.dkim")


def test_doctor_checks_the_listed_record(live: LiveGateway, account: Account, cli: Cli) -> None:
    domain = f"{account.prefix}.example.net"
    assert cli("domains", "add", domain)[0] == 0
    assert cli("domains", "verify", domain)[0] == 0  # development mode: the TXT proof is waived
    agent = f"bot@{domain}"
    assert cli("agents", "register", "--email", agent, "--mode", "local")[0] == 0
    name, value = listed_record(live, account, domain)

    published = doctor(cli, {name: {"TXT": [value]}}, agent)
    assert published["status"] == "pass" and "the gateway's key" in published["detail"]
    split = value[:200] + " " + value[200:]  # folding whitespace inside p= is still the key
    assert doctor(cli, {name: {"TXT": [split]}}, agent)["status"] == "pass"

    stale = doctor(cli, {name: {"TXT": [STALE_KEY]}}, agent)
    assert stale["status"] == "fail" and "not the one the gateway signs with" in stale["detail"]
    assert f'publish TXT {name} "{value}"' in stale["fix"]
    missing = doctor(cli, {}, agent)
    assert missing["status"] == "fail" and f'publish TXT {name} "{value}"' in missing["fix"]

    other = doctor(cli, {name: {"TXT": [value]}}, agent, "--dkim-selector", "other")
    assert other["status"] == "fail"
    assert f"with the selector {SELECTOR}, not other" in other["detail"]
    same = doctor(cli, {name: {"TXT": [value]}}, agent, "--dkim-selector", SELECTOR)
    assert same["status"] == "pass"
