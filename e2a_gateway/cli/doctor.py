"""`e2a doctor`: read-only checks of the path mail takes to and from an agent, each reported
✓/✗ with what to fix.

It asks the gateway (health, info, the key, the agent), DNS (the agent's domain: MX to the
gateway's SMTP host, the verification TXT, SPF, DKIM, DMARC) and opens the agent's WebSocket
once. It sends no mail, marks nothing read and changes nothing. Every network step is bounded.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from e2a_gateway import __version__
from e2a_gateway.cli import exit_codes
from e2a_gateway.cli.config_file import effective
from e2a_gateway.cli.context import (
    ClientError,
    Context,
    checked_key,
    key_account,
    key_agents,
    key_source,
)
from e2a_gateway.cli.output import print_json, terminal_text, use_colour
from e2a_gateway.cli.v1_commands import js_time
from e2a_gateway.clock import format_timestamp

if TYPE_CHECKING:
    from e2a_gateway.mailauth.dns_answers import Resolver
    from e2a_gateway.v1 import E2AClient
    from e2a_gateway.v1.models import Agent, DNSRecord, Domain

TIMEOUT_SECONDS = 5.0
"""The bound on every request and DNS lookup doctor makes."""

Status = Literal["pass", "fail", "warn", "skip"]
MARKS: dict[Status, str] = {"pass": "✓", "fail": "✗", "warn": "!", "skip": "-"}
_COLOURS: dict[Status, str] = {"pass": "32", "fail": "31", "warn": "33", "skip": "2"}


@dataclass
class Check:
    """One finding: what was checked, how it went, and what to do when it did not pass."""

    id: str
    status: Status
    detail: str
    fix: str | None = None


@dataclass
class Report:
    """The findings of one run, in order."""

    url: str
    agent: str | None = None
    checks: list[Check] = field(default_factory=list)

    def add(self, id: str, status: Status, detail: str, fix: str | None = None) -> None:
        """Record a finding."""
        self.checks.append(Check(id, status, detail, fix))

    @property
    def failed(self) -> bool:
        """True when any check failed."""
        return any(check.status == "fail" for check in self.checks)


def add_doctor_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `e2a doctor` (besides --agent and --json)."""
    parser.add_argument(
        "--dkim-selector",
        metavar="SELECTOR",
        help="check the DKIM key at SELECTOR._domainkey.<domain> (the gateway's "
        "dkim.selector) when the gateway lists no DKIM record for the domain (the shared "
        "domain, say); a custom domain's listed record is checked without it",
    )
    parser.add_argument(
        "--domain",
        metavar="DOMAIN",
        help="check this domain's records (MX, verification TXT, SPF, DKIM, DMARC) instead "
        "of the agent's domain; it must be registered (`e2a domains register`) or the "
        "gateway's shared domain",
    )
    parser.add_argument(
        "--mcp-url",
        type=_http_url,
        metavar="URL",
        help="check that the gateway's MCP endpoint answers at URL (this gateway serves it "
        "at /mcp); not checked without it",
    )
    parser.add_argument(
        "--nameserver",
        action="append",
        metavar="IP[:PORT]",
        help="ask this DNS server instead of the system's (repeatable), e.g. 1.1.1.1 to "
        "bypass a local cache",
    )


def _http_url(text: str) -> str:
    """`--mcp-url`: an absolute http(s) URL, as e2a's CLI requires (else exit 2)."""
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(
            f"must be an absolute http(s) URL, e.g. https://mail.example.com/mcp, got {text!r}"
        )
    return text


# The gateway


def _get(report: Report, id: str, path: str) -> Any:
    """GET `path` of the gateway; None (and a failed check) when it does not answer."""
    import httpx

    try:
        return httpx.get(f"{report.url}{path}", timeout=TIMEOUT_SECONDS)
    except httpx.HTTPError as exc:
        report.add(
            id,
            "fail",
            f"{report.url}{path} does not answer: {exc}",
            "check the URL (`e2a config get url`) and that `e2a serve` runs there",
        )
        return None


def _check_gateway(report: Report) -> dict[str, Any] | None:
    """`/api/health` and `/api/v1/info`; the info when the gateway answered."""
    health = _get(report, "gateway.health", "/api/health")
    if health is None:
        return None
    storage = _json(health).get("storage") or {}
    if health.status_code == 200:
        report.add("gateway.health", "pass", f"healthy (storage {storage.get('backend')} up)")
    elif health.status_code == 503:
        report.add(
            "gateway.health",
            "fail",
            f"degraded: storage {storage.get('backend')} is {storage.get('state')} "
            f"({storage.get('detail', '')})",
            "check database.url and that the database is running (see the gateway's log)",
        )
    else:
        report.add(
            "gateway.health",
            "fail",
            f"GET /api/health answered HTTP {health.status_code}",
            "the URL must be the gateway's base URL (what http.public_url says)",
        )
        return None
    info_response = _get(report, "gateway.info", "/api/v1/info")
    if info_response is None:
        return None
    info = _json(info_response)
    if info_response.status_code != 200 or "version" not in info:
        report.add(
            "gateway.info",
            "fail",
            f"GET /api/v1/info answered HTTP {info_response.status_code} without deployment info",
            "the URL must be the gateway's base URL (what http.public_url says)",
        )
        return None
    shared = info.get("shared_domain") or "none"
    report.add("gateway.info", "pass", f"e2a {info['version']}, shared domain {shared}")
    return info


def _json(response: Any) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _check_key(report: Report, client: E2AClient, key: str) -> bool:
    """The key is accepted (`GET /v1/account`, which an agent key may read too); True when it
    is. An account key is named from the account's keys; an agent key, by its agent."""
    from e2a_gateway.v1 import E2AApiError, E2AConnectionError

    try:
        bound = key_account(client).get("agent_email")
        keys = [] if bound else client.api.list_api_keys().api_keys
    except E2AConnectionError:
        raise  # no answer, not a refusal: said as such by run_client_command
    except E2AApiError as exc:
        report.add(
            "api.key",
            "fail",
            f"the gateway refused the key ({exc.status_code}: {exc.message})",
            "run `e2a login --api-key KEY` with a valid key (`e2a bootstrap --email …` "
            "prints a new one on the server)",
        )
        return False
    mine = next((k for k in keys if k.key_prefix and key.startswith(k.key_prefix)), None)
    name = f" ({mine.name})" if mine and mine.name else ""
    if bound:
        name = f" (agent key of {bound})"
    report.add("api.key", "pass", f"key {key[:12]}…{name} accepted")
    return True


def _check_agent(report: Report, ctx: Context, client: E2AClient) -> Agent | None:
    """The agent to check exists; it, or None."""
    from e2a_gateway.v1 import E2AApiError

    chosen = ctx.args.agent or ctx.default_agent()
    if not chosen:
        emails = key_agents(client)
        if len(emails) != 1:
            report.add(
                "agent",
                "skip",
                f"no agent chosen and this key has {len(emails)} agents",
                "pass --agent EMAIL (or `e2a config set agent_email EMAIL`)",
            )
            return None
        chosen = emails[0]
    email = ctx.address(chosen)
    report.agent = email
    try:
        agent = client.get_agent(email)
    except E2AApiError as exc:
        if exc.status_code != 404:
            raise
        report.add(
            "agent",
            "fail",
            f"{email} is not an agent of this key",
            "check `e2a agents list`, or create it with `e2a agents register`",
        )
        return None
    where = "WebSocket/REST" if agent.agent_mode == "local" else f"webhook {agent.webhook_url}"
    report.add("agent", "pass", f"{email} exists ({agent.agent_mode}: mail goes by {where})")
    return agent


# DNS


def _resolver(nameservers: list[str] | None) -> Resolver | None:
    """The gateway's own DNS door, when this install has it (the `server` extra)."""
    try:
        from e2a_gateway.mailauth.resolver import DnsResolver
    except ModuleNotFoundError:
        return None
    return DnsResolver(nameservers or [], TIMEOUT_SECONDS, cache=False)


@dataclass
class DomainFacts:
    """What the gateway says about the agent's domain."""

    name: str
    mx_host: str | None
    """The gateway's SMTP host (`smtp.hostname`), when a registered domain names it."""
    registered: Domain | None


def _domain_facts(client: E2AClient, name: str) -> DomainFacts:
    domains = client.list_domains().domains
    registered = next((d for d in domains if d.domain == name), None)
    ordered = ([registered] if registered else []) + domains
    hosts = [
        d.dns_records.mx.value
        for d in ordered
        if d.dns_records and d.dns_records.mx and d.dns_records.mx.value
    ]
    return DomainFacts(name, hosts[0].rstrip(".").lower() if hosts else None, registered)


def _lookup(
    report: Report, id: str, what: str, lookup: Callable[[], list[Any]]
) -> list[Any] | None:
    """Run one lookup; a DNS failure (not an empty answer) is a failed check and None."""
    from e2a_gateway.mailauth.dns_answers import DnsTemporaryError

    try:
        return lookup()
    except DnsTemporaryError as exc:
        report.add(
            id,
            "fail",
            f"cannot look up {what}: {exc}",
            f"retry; if it persists, check DNS with `dig {what}`",
        )
        return None


def _check_mx(report: Report, dns: Resolver, facts: DomainFacts) -> None:
    records = _lookup(report, "dns.mx", f"MX {facts.name}", lambda: dns.mx(facts.name))
    if records is None:
        return
    host = facts.mx_host or "the gateway's smtp.hostname"
    fix = f"publish MX {facts.name} → {host} (priority 10)"
    hosts = sorted({exchange.rstrip(".").lower() for _, exchange in records})
    if not hosts:
        report.add("dns.mx", "fail", f"{facts.name} has no MX record: no mail reaches it", fix)
        return
    if facts.mx_host and facts.mx_host not in hosts:
        report.add(
            "dns.mx",
            "fail",
            f"MX of {facts.name} points at {', '.join(hosts)}, not at this gateway "
            f"({facts.mx_host})",
            fix + " and remove the others",
        )
        return
    report.add("dns.mx", "pass", f"MX {facts.name} → {', '.join(hosts)}")
    for exchange in [facts.mx_host] if facts.mx_host else hosts:
        addresses = _lookup(
            report,
            "dns.mx_address",
            f"A/AAAA {exchange}",
            partial(_addresses, dns, exchange),
        )
        if addresses is None:
            continue
        if addresses:
            report.add("dns.mx_address", "pass", f"{exchange} → {', '.join(addresses)}")
        else:
            report.add(
                "dns.mx_address",
                "fail",
                f"the mail host {exchange} has no A or AAAA record",
                f"publish A (and AAAA) records for {exchange} with the gateway's public address",
            )


def _addresses(dns: Resolver, host: str) -> list[str]:
    return dns.a(host) + dns.aaaa(host)


def _check_verification(report: Report, dns: Resolver, facts: DomainFacts) -> None:
    domain = facts.registered
    if domain is None:
        return
    if domain.verified:
        report.add("dns.verification", "pass", f"{facts.name} is verified")
        return
    token = domain.verification_token or ""
    records = _lookup(report, "dns.verification", f"TXT {facts.name}", lambda: dns.txt(facts.name))
    if records is None:
        return
    if token and token in (record.strip() for record in records):
        report.add(
            "dns.verification",
            "fail",
            f"the TXT record is published but {facts.name} is not verified yet",
            f"run `e2a domains verify {facts.name}`",
        )
    else:
        report.add(
            "dns.verification",
            "fail",
            f"{facts.name} is not verified and has no TXT record {token}",
            f'publish TXT {facts.name} "{token}", then run `e2a domains verify {facts.name}`',
        )


def _check_sending_records(
    report: Report, dns: Resolver, facts: DomainFacts, selector: str | None
) -> None:
    """SPF, DKIM and DMARC: what receivers check on mail an agent sends From: this domain."""
    name = facts.name
    records = _lookup(report, "dns.spf", f"TXT {name}", lambda: dns.txt(name))
    if records is not None:
        spf = [r for r in records if r.strip().lower().split(" ")[0] == "v=spf1"]
        if len(spf) == 1:
            report.add("dns.spf", "pass", f"SPF of {name}: {spf[0]}")
        elif spf:
            report.add(
                "dns.spf",
                "fail",
                f"{name} has {len(spf)} SPF records: receivers treat that as an error "
                "(RFC 7208 permerror)",
                "merge them into one v=spf1 record",
            )
        else:
            report.add(
                "dns.spf",
                "warn",
                f"{name} has no SPF record: receivers may refuse or junk the agents' mail",
                f'publish TXT {name} "v=spf1 include:<your relay\'s SPF domain> ~all" (your '
                "relay's documentation names the include)",
            )
    _check_dkim(report, dns, facts, selector)
    dmarc_name = f"_dmarc.{name}"
    dmarc = _lookup(report, "dns.dmarc", f"TXT {dmarc_name}", lambda: dns.txt(dmarc_name))
    if dmarc is not None:
        policy = [r for r in dmarc if r.strip().startswith("v=DMARC1")]
        if policy:
            report.add("dns.dmarc", "pass", f"DMARC of {name}: {policy[0]}")
        else:
            report.add(
                "dns.dmarc",
                "warn",
                f"{name} has no DMARC record (advisory: large receivers expect one)",
                f'publish TXT {dmarc_name} "v=DMARC1; p=none" and tighten it later',
            )


def _check_dkim(report: Report, dns: Resolver, facts: DomainFacts, selector: str | None) -> None:
    """The DKIM key record: the one the gateway lists for the domain (its key, its selector)
    when it lists one, else whatever key is published at `selector`."""
    records = facts.registered.dns_records if facts.registered else None
    listed = records.dkim if records else None
    listed_host = listed.host if listed and listed.host and listed.value else None
    if listed_host:
        signing_selector = listed_host.removesuffix("._domainkey")
        if selector and selector != signing_selector:
            report.add(
                "dns.dkim",
                "fail",
                f"the gateway signs {facts.name}'s mail with the selector {signing_selector}, "
                f"not {selector}",
                f"run doctor without --dkim-selector (or with --dkim-selector {signing_selector})",
            )
            return
        selector = signing_selector
    if not selector:
        report.add(
            "dns.dkim",
            "skip",
            "DKIM not checked: the gateway lists no DKIM record for this domain",
            "pass --dkim-selector SELECTOR (the gateway's dkim.selector) to check it",
        )
        return
    where = f"{selector}._domainkey.{facts.name}"
    keys = _lookup(report, "dns.dkim", f"TXT {where}", lambda: dns.txt(where))
    if keys is None:
        return
    published = [key for key in map(_dkim_public_key, keys) if key]
    wanted = _dkim_public_key(listed.value or "") if listed and listed_host else None
    fix = (
        f'publish TXT {where} "{listed.value}" (the whole value, ending as it does)'
        if listed and wanted
        else f'publish TXT {where} "v=DKIM1; k=rsa; p=<public key of dkim.private_key_path>"'
    )
    if not published:
        report.add("dns.dkim", "fail", f"no DKIM key at {where}: signed mail will fail DKIM", fix)
    elif wanted and wanted not in published:
        report.add(
            "dns.dkim",
            "fail",
            f"the DKIM key at {where} is not the one the gateway signs with (an old key, or "
            "a value cut short): signed mail will fail DKIM",
            fix + " in place of the one there",
        )
    else:
        matched = ", the gateway's key" if wanted else ""
        report.add("dns.dkim", "pass", f"DKIM key published at {where}{matched}")
    if listed_host and records and records.dkim_next:
        _check_next_dkim(report, dns, facts.name, records.dkim_next)


def _check_next_dkim(report: Report, dns: Resolver, domain: str, listed: DNSRecord) -> None:
    """The next key's record, while the gateway's key is being rotated: nothing is signed
    with it yet, so one not published is a warning, naming the record to publish before the
    operator switches keys."""
    if not (listed.host and listed.value):
        return
    where = f"{listed.host}.{domain}"
    keys = _lookup(report, "dns.dkim_next", f"TXT {where}", lambda: dns.txt(where))
    if keys is None:
        return
    if _dkim_public_key(listed.value) in map(_dkim_public_key, keys):
        report.add(
            "dns.dkim_next",
            "pass",
            f"the next DKIM key is published at {where}: {domain} is ready for the switch",
        )
        return
    report.add(
        "dns.dkim_next",
        "warn",
        f"the gateway's DKIM key is being rotated and {where} does not publish the next key "
        f"yet: once the gateway switches to it, mail from {domain} fails DKIM",
        f'publish TXT {where} "{listed.value}" now (the whole value), beside the current one',
    )


def _dkim_public_key(record: str) -> str | None:
    """The `p=` tag of a DKIM key record without its folding whitespace (RFC 6376 section
    3.6.1); None when the record has none, or an empty one (a revoked key)."""
    for tag in record.split(";"):
        label, _, value = tag.partition("=")
        if label.strip() == "p":
            key = "".join(value.split())
            return key or None
    return None


def _check_dns(report: Report, ctx: Context, client: E2AClient, name: str, shared: str) -> None:
    """The records of domain `name` (the agent's, or `--domain`'s); a `--domain` the account
    has not registered, and that is not the `shared` domain, is a failed check. An agent key
    may not read the account's domains: the checks are skipped, saying so."""
    from e2a_gateway.v1 import E2AApiError

    try:
        facts = _domain_facts(client, name)
    except E2AApiError as exc:
        if exc.status_code != 403:
            raise
        report.add(
            "dns",
            "skip",
            f"this key may not read the account's domains ({exc.message})",
            "run `e2a doctor` with an account key to check the DNS of " + name,
        )
        return
    if ctx.args.domain and facts.registered is None and name != shared:
        report.add(
            "domain.registered",
            "fail",
            f"{name} is not registered on this account",
            f"register it with `e2a domains register {name}`, or check the spelling",
        )
        return
    dns = _resolver(ctx.args.nameserver)
    if dns is None:
        report.add(
            "dns",
            "skip",
            "DNS not checked: this install has no DNS library",
            "install e2a-gateway's server extra (from a checkout: pip install '.[server]') "
            "or use the e2a binary",
        )
        return
    _check_mx(report, dns, facts)
    _check_verification(report, dns, facts)
    _check_sending_records(report, dns, facts, ctx.args.dkim_selector)


# WebSocket


def _check_websocket(report: Report, url: str, key: str, agent: Agent) -> None:
    if agent.agent_mode != "local":
        report.add("websocket", "skip", "a cloud agent: its mail goes to its webhook, not a socket")
        return
    import anyio
    import httpx

    from e2a_gateway.v1 import E2AApiError
    from e2a_gateway.v1.notifications import bearer, websocket_url
    from e2a_gateway.v1.wsclient import WebSocketRejected, connect_websocket

    address = websocket_url(url, agent.email or "")

    async def open_and_close() -> None:
        with anyio.fail_after(TIMEOUT_SECONDS * 2):
            async with connect_websocket(
                address,
                headers=bearer(key),
                handshake_seconds=TIMEOUT_SECONDS,
                idle_seconds=TIMEOUT_SECONDS,
            ):
                pass

    try:
        anyio.run(open_and_close)
    except E2AApiError as exc:
        refused = f"{address} refused: {exc.message} ({exc.status_code})"
        report.add("websocket", "fail", refused, None)
    except (WebSocketRejected, httpx.HTTPError, TimeoutError, OSError) as exc:
        report.add(
            "websocket",
            "fail",
            f"cannot open {address}: {exc}",
            "a reverse proxy in front of the gateway must pass WebSocket upgrades "
            "(Upgrade and Connection headers) on /api/v1/agents/*/ws",
        )
    else:
        report.add("websocket", "pass", f"{address} accepts the agent's WebSocket")


# MCP


def _check_mcp(report: Report, url: str) -> None:
    """`--mcp-url`: a GET of the endpoint, which carries no JSON-RPC request and so does
    nothing. Any answer below 500 but 404/410 (the MCP server asks for a key, or for POST)
    shows it is routed there."""
    import httpx

    try:
        status = httpx.get(url, timeout=TIMEOUT_SECONDS).status_code
    except httpx.HTTPError as exc:
        report.add(
            "mcp.reachability",
            "fail",
            f"cannot reach {url}: {exc}",
            "check the URL, and that the gateway runs with its mcp extra installed",
        )
        return
    if status in (404, 410):
        report.add(
            "mcp.reachability",
            "fail",
            f"HTTP {status}: no MCP endpoint at {url}",
            "the gateway serves MCP at <its URL>/mcp, with its mcp extra installed "
            "(pip install 'e2a-gateway[mcp]'); a reverse proxy must pass that path",
        )
    elif status >= 500:
        report.add(
            "mcp.reachability",
            "fail",
            f"HTTP {status} from {url}",
            "the endpoint is routed but failing: see the gateway's log",
        )
    else:
        report.add("mcp.reachability", "pass", f"{url} answered (HTTP {status})")


# Running and printing


def run_checks(ctx: Context) -> Report:
    """Every check that applies, in order; later ones are skipped when what they need failed."""
    from e2a_gateway.v1 import E2AClient

    report = Report(url=ctx.url)
    key = effective("api_key", ctx.values)
    info = _check_gateway(report)
    if not key:
        report.add("api.key", "fail", "no API key", "run `e2a login` (or set E2A_API_KEY)")
        return report
    try:
        checked_key(key, key_source())
    except ClientError as exc:  # never sent, nor shown
        report.add("api.key", "fail", str(exc), "run `e2a login` with the key alone")
        return report
    if info is None:
        return report
    # max_retries=0: a check reports what it saw; a gateway that stops answering is not waited for.
    client = E2AClient(
        api_key=key, agent_email="", base_url=report.url, timeout=TIMEOUT_SECONDS, max_retries=0
    )
    with client:
        if not _check_key(report, client, key):
            return report
        agent = _check_agent(report, ctx, client)
        # --domain needs no agent; without it, the agent's domain is checked.
        name = (ctx.args.domain or "").strip().rstrip(".").lower()
        if not name and agent is not None:
            name = (agent.email or "").rpartition("@")[2]
        if name:
            _check_dns(report, ctx, client, name, str(info.get("shared_domain") or ""))
        if agent is not None:
            _check_websocket(report, report.url, key, agent)
    if ctx.args.mcp_url:
        _check_mcp(report, ctx.args.mcp_url)
    return report


def _mark(status: Status) -> str:
    mark = MARKS[status]
    return f"\033[{_COLOURS[status]}m{mark}\033[0m" if use_colour() else mark


def print_report(report: Report) -> None:
    """One line per check (✓ pass, ✗ fail, ! warning, - skipped), each fix under its line."""
    subject = f" for {report.agent}" if report.agent else ""
    print(f"e2a doctor: {report.url}{subject} (read-only: sends no mail, changes nothing)")
    width = max((len(check.id) for check in report.checks), default=0)
    for check in report.checks:
        print(f"{_mark(check.status)} {check.id.ljust(width)}  {terminal_text(check.detail)}")
        if check.fix and check.status != "pass":
            print(f"  {' ' * width}  fix: {terminal_text(check.fix)}")
    counts = {status: sum(c.status == status for c in report.checks) for status in MARKS}
    print(
        f"\n{counts['fail']} failed, {counts['warn']} warnings, {counts['pass']} passed, "
        f"{counts['skip']} skipped"
    )


def exit_code(report: Report) -> int:
    """`doctor`'s exit code, as e2a's CLI's: 4 when the key is refused (or missing), 1 when the
    gateway does not answer (a retry may help), 9 when another check failed (configuration to
    fix), 8 for warnings only, else 0."""
    failed = {check.id for check in report.checks if check.status == "fail"}
    if "api.key" in failed:
        return exit_codes.AUTH
    if failed & {"gateway.health", "gateway.info"}:
        return exit_codes.ERROR
    if failed:
        return exit_codes.CONFIG
    if any(check.status == "warn" for check in report.checks):
        return exit_codes.WARN
    return exit_codes.OK


REPORT_STATUS = {exit_codes.OK: "healthy", exit_codes.WARN: "warnings"}
"""e2a's report `status` of an exit code; any other is `failed`."""


def report_json(report: Report) -> dict[str, Any]:
    """`doctor --json`: e2a's CLI's versioned report (`schema` `e2a.doctor/v1`, `status`,
    `exit_code`, `summary`), with ours beside it (`url`, `agent`, `ok`); each check has its
    `id`, `status` (`pass`/`warn`/`fail`/`skip`), `detail` and `fix`."""
    code = exit_code(report)
    summary = dict.fromkeys(("pass", "warn", "fail", "skip"), 0)
    for check in report.checks:
        summary[check.status] += 1
    return {
        "schema": "e2a.doctor/v1",
        "generated_at": js_time(format_timestamp(time.time())),
        "cli_version": __version__,
        "deployment_url": report.url,
        "status": REPORT_STATUS.get(code, "failed"),
        "exit_code": code,
        "summary": summary,
        "url": report.url,
        "agent": report.agent,
        "ok": not report.failed,
        "checks": [asdict(check) for check in report.checks],
    }


def cmd_doctor(ctx: Context) -> int:
    """`doctor`: exit 0 healthy, 8 warnings, 9 a failed check, 4 a refused key, 1 no
    gateway (see `exit_code`)."""
    report = run_checks(ctx)
    if ctx.json:
        print_json(report_json(report))
    else:
        print_report(report)
    return exit_code(report)
