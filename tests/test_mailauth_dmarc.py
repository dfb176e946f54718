"""DMARC: policy discovery, alignment and the verdict, table-driven over a fixture zone."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from e2a_gateway.mailauth.dmarc import (
    Author,
    InvalidPolicyRecord,
    author_of,
    discover_policy,
    evaluate_dmarc,
    is_aligned,
    organizational_domain,
    parse_policy,
)
from e2a_gateway.mailauth.resolver import FixtureResolver, Zone
from e2a_gateway.mailauth.results import AuthResult

pytestmark = pytest.mark.backend_independent

ZONE: Zone = {
    "_dmarc.example.com": {"TXT": ["v=DMARC1; p=reject; rua=mailto:dmarc@example.com"]},
    "_dmarc.strict.example": {"TXT": ["v=DMARC1; p=quarantine; adkim=s; aspf=s"]},
    "_dmarc.example.org": {"TXT": ["v=DMARC1; p=none; sp=reject", "v=spf1 -all"]},
    "_dmarc.twice.example": {"TXT": ["v=DMARC1; p=reject", "v=DMARC1; p=none"]},
    "_dmarc.broken.example": {"TXT": ["v=DMARC1; p=bogus"]},
    "_dmarc.reporting.example": {"TXT": ["v=DMARC1; p=bogus; rua=mailto:r@reporting.example"]},
    "_dmarc.example.co.uk": {"TXT": ["v=DMARC1; p=reject"]},
}


@dataclass(frozen=True)
class Case:
    from_domain: str
    spf: AuthResult
    spf_domain: str
    dkim_domains: tuple[str, ...]
    result: AuthResult
    policy: str | None
    aligned: bool


CASES = {
    "aligned SPF only": Case("example.com", "pass", "example.com", (), "pass", "reject", True),
    "aligned DKIM only": Case(
        "example.com", "fail", "example.com", ("example.com",), "pass", "reject", True
    ),
    "both aligned": Case(
        "example.com", "pass", "example.com", ("example.com",), "pass", "reject", True
    ),
    "neither passes": Case("example.com", "fail", "example.com", (), "fail", "reject", False),
    "passes for unrelated domains only": Case(
        "example.com", "pass", "evil.test", ("evil.test",), "fail", "reject", False
    ),
    "SPF softfail is no pass": Case(
        "example.com", "softfail", "example.com", (), "fail", "reject", False
    ),
    "relaxed: SPF for a subdomain": Case(
        "example.com", "pass", "bounces.example.com", (), "pass", "reject", True
    ),
    "relaxed: DKIM for a subdomain": Case(
        "example.com", "none", "", ("mail.example.com",), "pass", "reject", True
    ),
    "relaxed: From a subdomain, DKIM for the parent": Case(
        "eu.example.com", "none", "", ("example.com",), "pass", "reject", True
    ),
    "strict: DKIM for a subdomain": Case(
        "strict.example", "none", "", ("mail.strict.example",), "fail", "quarantine", False
    ),
    "strict: SPF for a subdomain": Case(
        "strict.example", "pass", "bounces.strict.example", (), "fail", "quarantine", False
    ),
    "strict: exact DKIM domain": Case(
        "strict.example", "fail", "", ("strict.example",), "pass", "quarantine", True
    ),
    "no record, aligned": Case("norecord.test", "pass", "norecord.test", (), "none", None, True),
    "no record, unaligned": Case("norecord.test", "pass", "other.test", (), "none", None, False),
    "org fallback: subdomain gets sp": Case(
        "news.example.org", "pass", "example.org", (), "pass", "reject", True
    ),
    "org fallback: unaligned subdomain": Case(
        "news.example.org", "fail", "", ("evil.test",), "fail", "reject", False
    ),
    "org domain itself gets p": Case("example.org", "fail", "", (), "fail", "none", False),
    "fallback under a two-label public suffix": Case(
        "mail.shop.example.co.uk", "none", "", ("example.co.uk",), "pass", "reject", True
    ),
    "two records: none applies": Case(
        "twice.example", "pass", "twice.example", (), "none", None, True
    ),
    "record without a valid p": Case(
        "broken.example", "pass", "broken.example", (), "permerror", None, True
    ),
    "invalid p with rua reads as p=none": Case(
        "reporting.example", "fail", "", (), "fail", "none", False
    ),
}


@pytest.mark.parametrize("case", [pytest.param(case, id=name) for name, case in CASES.items()])
def test_evaluate_dmarc(case: Case) -> None:
    verdict = evaluate_dmarc(
        FixtureResolver.from_zone(ZONE),
        Author(1, case.from_domain),
        spf_result=case.spf,
        spf_domain=case.spf_domain,
        dkim_domains=case.dkim_domains,
    )
    assert (verdict.result, verdict.policy, verdict.aligned) == (
        case.result,
        case.policy,
        case.aligned,
    )


def test_dns_trouble_is_temperror_and_alignment_falls_back_to_strict() -> None:
    resolver = FixtureResolver.from_zone(ZONE)
    resolver.failing.add("_dmarc.example.com")

    def judge(spf_domain: str) -> tuple[str, bool]:
        verdict = evaluate_dmarc(
            resolver,
            Author(1, "example.com"),
            spf_result="pass",
            spf_domain=spf_domain,
            dkim_domains=(),
        )
        return verdict.result, verdict.aligned

    assert judge("example.com") == ("temperror", True)
    assert judge("bounces.example.com") == ("temperror", False)


@pytest.mark.parametrize(
    ("spf", "spf_domain", "dkim_temperror", "dkim_passed", "expected"),
    [
        ("temperror", "example.com", (), (), ("temperror", "reject")),
        ("temperror", "bounces.example.com", (), (), ("temperror", "reject")),
        ("fail", "example.com", ("example.com",), (), ("temperror", "reject")),
        ("temperror", "evil.test", ("evil.test",), (), ("fail", "reject")),
        ("temperror", "example.com", (), ("example.com",), ("pass", "reject")),
        ("temperror", "bounces.strict.example", (), (), ("fail", "quarantine")),
    ],
    ids=[
        "aligned SPF timed out",
        "SPF of a subdomain timed out, relaxed",
        "an aligned signature's key timed out",
        "only unaligned checks timed out",
        "another aligned check passed",
        "SPF timed out for a domain strict alignment would not take",
    ],
)
def test_an_aligned_check_that_met_dns_trouble_makes_no_fail_of_it(
    spf: AuthResult,
    spf_domain: str,
    dkim_temperror: tuple[str, ...],
    dkim_passed: tuple[str, ...],
    expected: tuple[str, str],
) -> None:
    """DNS trouble in the SPF or DKIM check of an aligned domain, with nothing passing, is
    `temperror` (the same message may pass once DNS answers), not a `fail` that the domain's
    `p=reject` would count against it."""
    from_domain = "strict.example" if "strict" in spf_domain else "example.com"
    verdict = evaluate_dmarc(
        FixtureResolver.from_zone(ZONE),
        Author(1, from_domain),
        spf_result=spf,
        spf_domain=spf_domain,
        dkim_domains=dkim_passed,
        dkim_temperror_domains=dkim_temperror,
    )
    assert (verdict.result, verdict.policy) == expected
    assert verdict.aligned is (expected[0] == "pass")


@pytest.mark.parametrize(
    ("from_domain", "modes"),
    [
        ("strict.example", ("s", "s")),
        ("example.com", ("r", "r")),
        ("norecord.test", ("r", "r")),
        ("broken.example", ("r", "r")),
        ("failing.example", ("s", "s")),
    ],
    ids=["the record's", "the record's defaults", "no record", "no valid p", "DNS trouble"],
)
def test_the_modes_alignment_was_judged_under_are_kept(
    from_domain: str, modes: tuple[str, str]
) -> None:
    resolver = FixtureResolver.from_zone(ZONE)
    resolver.failing.add("_dmarc.failing.example")
    verdict = evaluate_dmarc(
        resolver, Author(1, from_domain), spf_result="none", spf_domain="", dkim_domains=()
    )
    assert (verdict.aspf, verdict.adkim) == modes


def test_failure_at_the_organisational_domain_is_temperror() -> None:
    resolver = FixtureResolver.from_zone(ZONE)
    resolver.failing.add("_dmarc.example.org")
    verdict = evaluate_dmarc(
        resolver, Author(1, "news.example.org"), spf_result="none", spf_domain="", dkim_domains=()
    )
    assert verdict.result == "temperror"


@pytest.mark.parametrize(
    ("author", "expected"),
    [(Author(0, None), "none"), (Author(2, None), "permerror"), (Author(1, None), "permerror")],
    ids=["no From address", "several From addresses", "From without a domain"],
)
def test_unusable_author_is_never_aligned(author: Author, expected: str) -> None:
    verdict = evaluate_dmarc(
        FixtureResolver.from_zone(ZONE),
        author,
        spf_result="pass",
        spf_domain="example.com",
        dkim_domains=("example.com",),
    )
    assert (verdict.result, verdict.aligned, verdict.aspf) == (expected, False, None)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (b"From: alice@example.com", Author(1, "example.com")),
        (b'From: "Alice A." <Alice@EXAMPLE.com.>', Author(1, "example.com")),
        (b"From: Alice <alice@example.com>,\r\n bob@example.net", Author(2, None)),
        (b"From: alice@example.com\r\nFrom: bob@example.net", Author(2, None)),
        (b'From: "Bank CEO" <>\r\nFrom: bob@example.net', Author(2, None)),
        (b"From: undisclosed-recipients:;\r\nFrom: bob@example.net", Author(2, None)),
        (b"To: bob@example.net", Author(0, None)),
        (b"From: undisclosed-recipients:;", Author(0, None)),
        (b"From: Alice", Author(1, None)),
        ("From: Jürgen <j@bücher.example>".encode(), Author(1, "xn--bcher-kva.example")),
        (b"FROM:alice@example.com", Author(1, "example.com")),
        # whitespace before the colon (obsolete syntax): a field the stdlib does not read,
        # but other readers show
        (b"From : ceo@bank.example\r\nFrom: bob@example.net", Author(2, None)),
        (b"From: bob@example.net\r\nfrom\t: ceo@bank.example", Author(2, None)),
        (b"From : ceo@bank.example", Author(0, None)),
        (
            b"From bob@example.net Mon Jan  1 00:00:00 2026\r\nFrom: bob@example.net",
            Author(1, "example.net"),
        ),
    ],
)
def test_author_of(header: bytes, expected: Author) -> None:
    message = header + b"\r\nSubject: hi\r\n\r\nFrom: body@not.a.header\r\n"
    assert author_of(message) == expected


def test_author_of_bare_lf_message() -> None:
    assert author_of(b"Subject: x\nFrom: a@example.com\n\nbody\n") == Author(1, "example.com")


@pytest.mark.parametrize(
    ("domain", "expected"),
    [
        ("example.com", "example.com"),
        ("a.b.example.com", "example.com"),
        ("a.b.example.co.uk", "example.co.uk"),
        ("co.uk", "co.uk"),
        ("user.github.io", "user.github.io"),
        ("mx.agents.test", "agents.test"),
    ],
)
def test_organizational_domain(domain: str, expected: str) -> None:
    assert organizational_domain(domain) == expected


def test_relaxed_alignment_does_not_cross_public_suffixes() -> None:
    assert is_aligned("a.example.co.uk", "b.example.co.uk", "r")
    assert not is_aligned("evil.co.uk", "example.co.uk", "r")
    assert not is_aligned("a.example.com", "example.com", "s")


def test_parse_policy_reads_tags_leniently() -> None:
    policy = parse_policy(
        "v=DMARC1;P=Quarantine; sp=reject ;adkim=s; aspf=x; pct=50; future=1",
        published_at="example.com",
    )
    assert (policy.p, policy.sp, policy.adkim, policy.aspf) == ("quarantine", "reject", "s", "r")
    with pytest.raises(InvalidPolicyRecord):
        parse_policy("v=DMARC1; adkim=s", published_at="example.com")


def test_discover_policy_prefers_the_from_domain_record() -> None:
    resolver = FixtureResolver.from_zone(
        {
            **ZONE,
            "_dmarc.eu.example.com": {"TXT": ["v=DMARC1; p=none"]},
        }
    )
    policy = discover_policy(resolver, "eu.example.com")
    assert policy is not None
    assert (policy.published_at, policy.disposition_for("eu.example.com")) == (
        "eu.example.com",
        "none",
    )
    fallback = discover_policy(resolver, "us.example.com")
    assert fallback is not None
    assert fallback.published_at == "example.com"


def test_version_tag_must_come_first_and_match_exactly() -> None:
    resolver = FixtureResolver(
        {
            "_dmarc.a.test": ["p=reject; v=DMARC1"],
            "_dmarc.b.test": ["v=dmarc1; p=reject"],
        }
    )
    assert discover_policy(resolver, "a.test") is None
    assert discover_policy(resolver, "b.test") is None


def test_alignment_modes_are_read_without_regard_to_case() -> None:
    """RFC 7489's ABNF (`"r" / "s"`) is case-insensitive, as RFC 5234 section 2.3 has every
    quoted string: `aspf=S` asks for strict alignment, and an SPF pass for a subdomain does
    not verify mail from the organisational domain."""
    policy = parse_policy("v=DMARC1; p=reject; adkim=S; aspf=S", published_at="example.com")
    assert (policy.adkim, policy.aspf) == ("s", "s")
    resolver = FixtureResolver({"_dmarc.example.com": ["v=DMARC1; p=reject; aspf=S; adkim=S"]})
    verdict = evaluate_dmarc(
        resolver,
        Author(1, "example.com"),
        spf_result="pass",
        spf_domain="bounces.example.com",
        dkim_domains=("mail.example.com",),
    )
    assert (verdict.result, verdict.aligned, verdict.aspf, verdict.adkim) == (
        "fail",
        False,
        "s",
        "s",
    )


def test_the_version_tag_name_is_read_without_regard_to_case() -> None:
    """RFC 7489's ABNF spells the tag `"v"`, which matches `V` too (RFC 5234 section 2.3);
    only its value must be exactly `DMARC1`. A `V=DMARC1` record is the domain's policy, and
    its strict alignment holds: an SPF pass for a subdomain does not verify its mail."""
    resolver = FixtureResolver({"_dmarc.example.com": ["V=DMARC1; p=reject; aspf=s"]})
    verdict = evaluate_dmarc(
        resolver,
        Author(1, "example.com"),
        spf_result="pass",
        spf_domain="bounces.example.com",
        dkim_domains=(),
    )
    assert (verdict.result, verdict.policy, verdict.aligned, verdict.aspf) == (
        "fail",
        "reject",
        False,
        "s",
    )
