# ruff: noqa: F811 (the fixtures imported from tests.cli_support are this module's parameters)
"""While the gateway's DKIM key is being rotated (`dkim.next_selector`), `e2a domains add`
prints the next key's record in full beside the signing one, and `e2a doctor` says whether the
domain publishes it yet (a DNS server on loopback serves the zone)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from e2a_gateway.mailauth.resolver import Zone
from e2a_gateway.outbound.dkim_signing import public_key_record_value
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
from tests.test_cli_parity import dns_server
from tests.test_domain_dkim_record import write_key

CURRENT = "e2a202606"
NEXT = "e2a202607"
RECORDS: dict[str, str] = {}
"""The current and the next key's record values, by selector."""


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    """One gateway for the module, signing with one key while the next is announced."""
    where = tmp_path_factory.mktemp("cli-dkim-rotation")
    for selector in (CURRENT, NEXT):
        write_key(where / f"{selector}.pem", serialization.PrivateFormat.PKCS8)
        RECORDS[selector] = public_key_record_value((where / f"{selector}.pem").read_bytes())
    dkim = {
        "selector": CURRENT,
        "private_key_path": str(where / f"{CURRENT}.pem"),
        "next_selector": NEXT,
        "next_private_key_path": str(where / f"{NEXT}.pem"),
    }
    yield from serve_live(make_settings(where, dkim=dkim))


def test_domains_add_prints_the_next_record_in_full(
    live: LiveGateway, account: Account, cli: Cli
) -> None:
    domain = f"{account.prefix}.example.net"
    code, out, err = cli("domains", "add", domain)
    assert code == 0, err
    assert f"publish TXT {CURRENT}._domainkey.{domain} with this value" in out
    assert f"\n{RECORDS[CURRENT]}\n" in out
    assert f"publish TXT {NEXT}._domainkey.{domain} with this value too, now" in out
    assert f"\n{RECORDS[NEXT]}\n" in out


def doctor_checks(cli: Cli, zone: Zone, agent: str) -> dict[str, dict[str, Any]]:
    """`e2a doctor --json` for `agent` against a DNS server serving `zone`, by check id."""
    with dns_server(zone) as port:
        _, out, _ = cli("doctor", "--agent", agent, "--nameserver", f"127.0.0.1:{port}", "--json")
    return {check["id"]: check for check in json.loads(out)["checks"]}


def test_doctor_says_whether_the_domain_publishes_the_next_key(
    live: LiveGateway, account: Account, cli: Cli
) -> None:
    domain = f"{account.prefix}.example.net"
    assert cli("domains", "add", domain)[0] == 0
    assert cli("domains", "verify", domain)[0] == 0  # development mode: the TXT proof is waived
    agent = f"bot@{domain}"
    assert cli("agents", "register", "--email", agent, "--mode", "local")[0] == 0
    current = {f"{CURRENT}._domainkey.{domain}": {"TXT": [RECORDS[CURRENT]]}}
    next_name = f"{NEXT}._domainkey.{domain}"

    waiting = doctor_checks(cli, current, agent)
    assert waiting["dns.dkim"]["status"] == "pass"
    assert waiting["dns.dkim_next"]["status"] == "warn"
    assert f"{next_name} does not publish the next key yet" in waiting["dns.dkim_next"]["detail"]
    assert f'publish TXT {next_name} "{RECORDS[NEXT]}"' in waiting["dns.dkim_next"]["fix"]

    ready = doctor_checks(cli, current | {next_name: {"TXT": [RECORDS[NEXT]]}}, agent)
    assert ready["dns.dkim"]["status"] == "pass"
    assert ready["dns.dkim_next"]["status"] == "pass"
    assert "ready for the switch" in ready["dns.dkim_next"]["detail"]
