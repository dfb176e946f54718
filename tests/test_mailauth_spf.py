"""SPF: the RFC 7208 test suite run through our FixtureResolver, plus our own cases."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
import spf as pyspf
import yaml

from e2a_gateway.mailauth.resolver import FixtureResolver, Zone, ZoneEntry
from e2a_gateway.mailauth.spf import check_spf

pytestmark = pytest.mark.backend_independent

SUITE = Path(__file__).parent / "data" / "mailauth" / "rfc7208-tests.yml"
LOOKUP_TYPES = ("TXT", "A", "AAAA", "MX", "PTR")


@dataclass(frozen=True)
class SuiteCase:
    """One test of the suite with the DNS zone of its scenario."""

    name: str
    scenario: str
    zonedata: dict[str, list[Any]]
    helo: str
    host: str
    mailfrom: str
    results: tuple[str, ...]
    explanation: str | None


def load_suite() -> Iterator[SuiteCase]:
    """Every test of the vendored suite, in file order."""
    with SUITE.open("rb") as stream:
        for scenario in yaml.safe_load_all(stream):
            for name, test in scenario["tests"].items():
                result = test["result"]
                yield SuiteCase(
                    name=name,
                    scenario=scenario["description"],
                    zonedata=scenario.get("zonedata") or {},
                    helo=test["helo"],
                    host=test["host"],
                    mailfrom=test["mailfrom"],
                    results=tuple(result) if isinstance(result, list) else (result,),
                    explanation=test.get("explanation"),
                )


def suite_resolver(zonedata: dict[str, list[Any]]) -> FixtureResolver:
    """Our fixture resolver serving a scenario's zone, read as the suite's drivers read it.

    As in pyspf's own driver: SPF (type 99) records double as TXT records where a name has
    no TXT entry at all (`TXT: NONE` means "no TXT records, and no doubling"), and `TIMEOUT`
    makes every lookup type without an answer listed before it time out.
    """
    zone: dict[str, ZoneEntry] = {}
    resolver = FixtureResolver()
    for name, records in zonedata.items():
        entry: dict[str, Any] = {}
        answered: set[str] = set()
        timed_out = False
        spf_texts: list[str] = []
        has_txt_entry = False
        for record in records:
            if record == "TIMEOUT":
                timed_out = True
                break
            ((rdtype, value),) = record.items()
            has_txt_entry = has_txt_entry or rdtype == "TXT"
            if value == "NONE":
                continue
            answered.add(rdtype)
            if rdtype in ("TXT", "SPF"):
                text = "".join(value) if isinstance(value, list) else value
                if rdtype == "SPF":
                    spf_texts.append(text)
                else:
                    entry.setdefault("TXT", []).append(text)
            elif rdtype == "MX":
                entry.setdefault("MX", []).append((value[0], value[1]))
            elif rdtype == "CNAME":
                entry["CNAME"] = value
            else:
                entry.setdefault(rdtype, []).append(value)
        if not has_txt_entry and spf_texts and not timed_out:
            entry["TXT"] = spf_texts
        if timed_out:
            resolver.failing_lookups |= {
                (name.lower(), rdtype) for rdtype in LOOKUP_TYPES if rdtype not in answered
            }
        zone[name] = cast(ZoneEntry, entry)
    resolver.load_zone(zone)
    return resolver


@pytest.mark.parametrize("case", [pytest.param(case, id=case.name) for case in load_suite()])
def test_rfc7208_suite(case: SuiteCase) -> None:
    """Every case passes; `DEFAULT` in the suite means the checker's own default text."""
    resolver = suite_resolver(case.zonedata)
    outcome = check_spf(resolver, client_ip=case.host, helo=case.helo, mail_from=case.mailfrom)
    assert outcome.result in case.results, case.scenario
    if case.explanation == "DEFAULT":
        assert outcome.explanation == pyspf.EXPLANATIONS[outcome.result]
    elif case.explanation is not None:
        assert outcome.explanation == case.explanation


def test_suite_is_complete() -> None:
    """The vendored file holds the suite's 203 cases, each with a unique name."""
    names = [case.name for case in load_suite()]
    assert len(names) == len(set(names)) == 203


ZONE: Zone = {
    "example.org": {"TXT": ["v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all"]},
    "soft.example.org": {"TXT": ["v=spf1 mx ~all"], "MX": [(10, "mx.example.org")]},
    "mx.example.org": {"A": ["198.51.100.7"]},
    "mail.example.org": {"TXT": ["v=spf1 a -all"], "A": ["203.0.113.9"]},
}


@pytest.mark.parametrize(
    ("client_ip", "mail_from", "expected"),
    [
        ("192.0.2.10", "alice@example.org", "pass"),
        ("2001:db8::25", "alice@example.org", "pass"),
        ("203.0.113.1", "alice@example.org", "fail"),
        ("198.51.100.7", "bob@soft.example.org", "pass"),
        ("203.0.113.1", "bob@soft.example.org", "softfail"),
        ("203.0.113.1", "carol@nospf.example.org", "none"),
    ],
)
def test_check_spf_results(client_ip: str, mail_from: str, expected: str) -> None:
    resolver = FixtureResolver.from_zone(ZONE)
    outcome = check_spf(resolver, client_ip=client_ip, helo="client.test", mail_from=mail_from)
    assert (outcome.result, outcome.scope) == (expected, "mailfrom")
    assert outcome.domain == mail_from.rpartition("@")[2]


def test_null_reverse_path_checks_the_helo_name() -> None:
    resolver = FixtureResolver.from_zone(ZONE)
    outcome = check_spf(resolver, client_ip="203.0.113.9", helo="mail.example.org", mail_from="")
    assert (outcome.result, outcome.domain, outcome.scope) == ("pass", "mail.example.org", "helo")


def test_dns_trouble_is_temperror() -> None:
    resolver = FixtureResolver.from_zone(ZONE)
    resolver.failing.add("example.org")
    outcome = check_spf(resolver, client_ip="192.0.2.10", helo="h.test", mail_from="a@example.org")
    assert outcome.result == "temperror"


@pytest.mark.parametrize("client_ip", ["not-an-ip", "unknown", ""])
def test_unparsable_client_address_is_permerror_for_the_domain_checked(client_ip: str) -> None:
    """The gateway names a client whose address it could not read `unknown`: no address, no
    policy to match it against, and the result still names the MAIL FROM domain it was for."""
    resolver = FixtureResolver.from_zone(ZONE)
    outcome = check_spf(resolver, client_ip=client_ip, helo="h.test", mail_from="a@example.org")
    assert (outcome.result, outcome.domain, outcome.scope) == (
        "permerror",
        "example.org",
        "mailfrom",
    )


@pytest.mark.parametrize("client_ip", ["fe80::25%eth0", "fe80::25%2"])
def test_a_scoped_ipv6_client_is_checked_by_its_address(client_ip: str) -> None:
    """A client on a link-local IPv6 address is named with its zone (`fe80::25%eth0`), as the
    socket gives it; the zone is no part of the address SPF matches."""
    resolver = FixtureResolver.from_zone({"link.example": {"TXT": ["v=spf1 ip6:fe80::/10 -all"]}})
    outcome = check_spf(resolver, client_ip=client_ip, helo="h.test", mail_from="a@link.example")
    assert (outcome.result, outcome.domain) == ("pass", "link.example")


def test_pyspf_cannot_reach_dns_outside_a_check() -> None:
    """Our hook replaced pyspf's own resolver: a bare pyspf query has no DNS to reach."""
    query = pyspf.query(i="192.0.2.10", s="a@example.org", h="h.test")
    with pytest.raises(LookupError):
        query.dns_txt("example.org")


@pytest.mark.parametrize(
    ("client_ip", "expected"), [("192.0.2.10", "pass"), ("203.0.113.1", "fail")]
)
def test_a_quoted_local_part_holding_an_at_sign_checks_the_domain_after_it(
    client_ip: str, expected: str
) -> None:
    """RFC 5321 lets a quoted local part hold `@`: the domain is what follows the last one,
    and it is that domain's policy that says whether the client may send for it."""
    resolver = FixtureResolver.from_zone(ZONE)
    outcome = check_spf(
        resolver,
        client_ip=client_ip,
        helo="client.test",
        mail_from='"billing@victim.example"@example.org',
    )
    assert (outcome.result, outcome.domain) == (expected, "example.org")
