"""Settings: TOML loading, env overrides and errors that name the key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from e2a_gateway.config import (
    ConfigError,
    env_warnings,
    load_settings,
    nameserver_address,
    secret_file_warnings,
    setting_env_names,
)
from e2a_gateway.env_names import E2A_ALIASES, UNUSED_E2A_VARIABLES
from e2a_gateway.startup import StartupError, smtp_options

pytestmark = pytest.mark.backend_independent

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "e2a.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_a_file() -> None:
    settings = load_settings(None, environ={})
    assert settings.env == "development"
    assert settings.smtp.listen == "127.0.0.1:2525"
    assert settings.http.listen == "127.0.0.1:8080"
    assert settings.database.url == "sqlite:///./e2a.db"
    assert settings.smtp.max_message_bytes == 26214400
    assert settings.smtp.max_recipients == 100
    assert settings.retention.days == 30


def test_example_config_is_valid_and_matches_defaults() -> None:
    settings = load_settings(ROOT / "config.example.toml", environ={})
    defaults = load_settings(None, environ={})
    assert settings.shared_domain == "agents.localhost"
    assert settings.model_dump(exclude={"shared_domain", "smtp"}) == defaults.model_dump(
        exclude={"shared_domain", "smtp"}
    )


def test_example_config_documents_every_key() -> None:
    text = (ROOT / "config.example.toml").read_text()
    defaults = load_settings(None, environ={})
    for section, values in defaults.model_dump().items():
        if isinstance(values, dict):
            assert f"[{section}]" in text, section
            for key in values:
                assert f"{key} =" in text, f"{section}.{key} is not documented"
        else:
            assert f"{section} =" in text, section


def test_env_overrides_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[smtp]\nlisten = "127.0.0.1:2600"\nmax_recipients = 5\n')
    settings = load_settings(
        path,
        environ={
            "E2A_SMTP_MAX_RECIPIENTS": "7",
            "E2A_SHARED_DOMAIN": "Agents.Example.COM.",
            "E2A_DNS_NAMESERVERS": "127.0.0.1:5353, 127.0.0.2:5353",
            "E2A_API_KEY": "belongs to the SDK, ignored here",
        },
    )
    assert settings.smtp.listen == "127.0.0.1:2600"
    assert settings.smtp.max_recipients == 7
    assert settings.shared_domain == "agents.example.com"
    assert settings.dns.nameservers == ["127.0.0.1:5353", "127.0.0.2:5353"]


@pytest.mark.parametrize(
    ("text", "environ", "fragment"),
    [
        ('[smtp]\nlisen = "127.0.0.1:25"\n', {}, "smtp.lisen: unknown setting"),
        ("[smtpp]\n", {}, "smtpp: unknown setting"),
        ('[smtp]\nlisten = "no-port"\n', {}, "smtp.listen"),
        ('[smtp]\nlisten = "127.0.0.1:70000"\n', {}, "out of range"),
        # e2a's own config writes ":2525" (Go's every address): say how to write that here
        ('[smtp]\nlisten = ":2525"\n', {}, "write 0.0.0.0:2525 to listen on every IPv4"),
        ("", {"E2A_HTTP_LISTEN": "8080"}, "such as 127.0.0.1:8080"),
        ('env = "staging"\n', {}, "env:"),
        ("", {"E2A_SMTP_MAX_RECIPIENTS": "many"}, "E2A_SMTP_MAX_RECIPIENTS"),
        ('[database]\nurl = "mysql://x"\n', {}, "database.url"),
        ('[log]\nformat = "xml"\n', {}, "log.format"),
        ('shared_domain = "not a domain"\n', {}, "shared_domain"),
        ("smtp = [", {}, "not valid TOML"),
        ('[dns]\nnameservers = ["dns.google"]\n', {}, "dns.nameservers"),
        ("", {"E2A_DNS_NAMESERVERS": "127.0.0.1:53x"}, "port must be a number from 1 to 65535"),
        ('[dns]\nnameservers = ["[::1]53"]\n', {}, "[ipv6]:port"),
        ('[http]\ntrusted_proxies = ["proxy.internal"]\n', {}, "http.trusted_proxies"),
        ("", {"E2A_HTTP_TRUSTED_PROXIES": "10.0.0.0/33"}, "not an IP address or CIDR block"),
        ('[smtp]\nproxy_trusted_cidrs = ["lb.internal"]\n', {}, "smtp.proxy_trusted_cidrs"),
        ("", {"E2A_SMTP_PROXY_TRUSTED_CIDRS": "10.0.0.0/8,10.1.0.0/33"}, "'10.1.0.0/33' is not"),
        ('[smtp]\nproxy_trusted_cidrs = ["0.0.0.0/0"]\n', {}, "'0.0.0.0/0' trusts every peer"),
        ("", {"E2A_SMTP_PROXY_TRUSTED_CIDRS": "::/0"}, "list only the load balancer's own"),
        ("", {"E2A_SMTP_PROXY_TRUSTED_CIDRS": "::ffff:0.0.0.0/96"}, "trusts every peer"),
        # trusting every peer lets any client forge its address (limits, logs): refused too
        ('[http]\ntrusted_proxies = ["0.0.0.0/0"]\n', {}, "'0.0.0.0/0' trusts every peer"),
        ("", {"E2A_HTTP_TRUSTED_PROXIES": "10.0.0.1,::/0"}, "list only the reverse proxy's own"),
        ("", {"E2A_HTTP_TRUSTED_PROXIES": "::ffff:0.0.0.0/96"}, "http.trusted_proxies"),
        ("[http]\nmax_request_bytes = 100\n", {}, "http.max_request_bytes"),
        ('[smtp]\nhostname = "mx example.com"\n', {}, "smtp.hostname"),
        ("", {"E2A_SMTP_HOSTNAME": "."}, "such as mx.example.com"),
        ("", {"E2A_OPERATORS_ACCOUNTS": '["ops@example.com"]'}, "E2A_OPERATORS_ACCOUNTS"),
        ('[operators]\naccounts = ["ops"]\n', {}, "operators.accounts"),
        ("[limits]\nsends_per_agent_per_minute = 0\n", {}, "limits.sends_per_agent_per_minute"),
        ("", {"E2A_LIMITS_FEEDBACK_PER_IP_PER_HOUR": "-1"}, "limits.feedback_per_ip_per_hour"),
        (
            "[limits]\nunsubscribe_requests_per_ip_per_minute = 0\n",
            {},
            "limits.unsubscribe_requests_per_ip_per_minute",
        ),
        ("", {"E2A_LIMITS_UNSUBSCRIBE_REQUESTS_PER_IP_PER_MINUTE": "many"}, "E2A_LIMITS_UNSUB"),
        # beyond what a database integer holds: every send would fail
        ("", {"E2A_LIMITS_SENDS_PER_AGENT_PER_MINUTE": str(2**63)}, "less than or equal"),
        ("[limits]\nmessage_polls_per_user_per_minute = 1e12\n", {}, "limits.message_polls"),
        ("[database]\nsilent_server_seconds = 0\n", {}, "database.silent_server_seconds"),
        ("", {"E2A_DATABASE_SILENT_SERVER_SECONDS": "soon"}, "E2A_DATABASE_SILENT_SERVER"),
    ],
)
def test_bad_settings_name_the_key(
    tmp_path: Path, text: str, environ: dict[str, str], fragment: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text), environ=environ)
    assert fragment in str(caught.value)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (
            '[smtp]\nlisen = "127.0.0.1:25"\n',
            "smtp.lisen: unknown setting — did you mean smtp.listen?",
        ),
        ("[smtpp]\n", "smtpp: unknown setting — did you mean smtp?"),
        ('shared_domian = "agents.example.com"\n', "did you mean shared_domain?"),
        ("[retention]\nday = 7\n", "retention.day: unknown setting — did you mean retention.days?"),
        ("[dkim]\nselecter = 'e2a'\n", "did you mean dkim.selector?"),
    ],
)
def test_an_unknown_key_names_the_setting_it_resembles(
    tmp_path: Path, text: str, fragment: str
) -> None:
    """A misspelt key is refused naming the setting it most resembles, as a misspelt
    variable is warned about; a key like none of them is only refused."""
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text), environ={})
    assert fragment in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, "[smtp]\nzzzz = 1\n"), environ={})
    assert "smtp.zzzz: unknown setting — remove it" in str(caught.value)
    assert "did you mean" not in str(caught.value)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[http]\ncors_allowed_origins = [1]\n", "or E2A_HTTP_CORS_ALLOWED_ORIGINS)"),
        ('[dns]\nnameservers = ["192.0.2.1", 5]\n', "or E2A_DNS_NAMESERVERS)"),
        (
            "[webhooks]\ntimeout_seconds = 30\nlease_seconds = 20\n",
            "or the E2A_WEBHOOKS_* variables)",
        ),
        ("smtp = 5\n", "or the E2A_SMTP_* variables)"),
    ],
)
def test_the_variable_named_for_a_fix_exists(tmp_path: Path, text: str, fragment: str) -> None:
    """A bad list entry or a section-wide problem names a variable the operator can set
    (E2A_DNS_NAMESERVERS, the section's E2A_WEBHOOKS_*), never one that sets nothing
    (E2A_DNS_NAMESERVERS_1, E2A_WEBHOOKS)."""
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text), environ={})
    message = str(caught.value)
    assert fragment in message
    named = set(re.findall(r"E2A_[A-Z0-9_]+\b(?!\*)", message))
    assert named <= set(setting_env_names()), named


@pytest.mark.parametrize("variable", ["E2A_DATABASE_URL", "E2A_DATABASE_LISTEN_URL"])
def test_a_refused_url_is_named_without_its_password(variable: str) -> None:
    """A database URL written as another library spells it (SQLAlchemy's `+psycopg`) is
    refused naming the URL, but never its password: the message goes to the terminal and the
    service's log."""
    environ = {variable: "postgresql+psycopg://e2a:hunter2@db.example.com:5432/e2a"}
    with pytest.raises(ConfigError) as caught:
        load_settings(None, environ=environ)
    message = str(caught.value)
    assert "hunter2" not in message
    assert "postgresql+psycopg://e2a@db.example.com:5432/e2a" in message


@pytest.mark.parametrize(
    ("text", "environ", "key"),
    [
        ("[outbound_smtp]\npassword = 73190542\n", {}, "outbound_smtp.password"),
        ("[signing]\nhmac_secret = 73190542\n", {}, "signing.hmac_secret"),
        ("[operators]\nselftest_secret = 73190542\n", {}, "operators.selftest_secret"),
        ("[metrics]\ntoken = 73190542\n", {}, "metrics.token"),
        ("", {"E2A_DATABASE_URL": "e2a:73190542@db.example.com/e2a"}, "database.url"),
    ],
)
def test_a_refused_secret_is_named_without_its_value(
    tmp_path: Path, text: str, environ: dict[str, str], key: str
) -> None:
    """A password or secret written as a TOML number, or a database URL without its scheme,
    is refused naming the key, never echoing the secret to the terminal and the log."""
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text), environ=environ)
    message = str(caught.value)
    assert key in message
    assert "73190542" not in message


def test_the_sending_domain_is_written_as_mail_carries_it() -> None:
    """`outbound_smtp.from_domain` in any case, with a root's dot or in U-labels is the domain
    relayed mail's envelope and DKIM signature carry, so the gateway knows its own mail when it
    comes back (inbound/identity.py compares them as written)."""
    for written in ("Bücher.Example.", "xn--bcher-kva.example", "BÜCHER.example"):
        environ = {"E2A_OUTBOUND_SMTP_FROM_DOMAIN": written}
        assert load_settings(None, environ=environ).outbound_smtp.from_domain == (
            "xn--bcher-kva.example"
        )
    with pytest.raises(ConfigError, match=r"outbound_smtp\.from_domain"):
        load_settings(None, environ={"E2A_OUTBOUND_SMTP_FROM_DOMAIN": "not a domain"})


def test_operator_accounts_are_normalised_addresses() -> None:
    environ = {"E2A_OPERATORS_ACCOUNTS": " Ops@Example.COM , oncall@example.com"}
    accounts = load_settings(None, environ=environ).operators.accounts
    assert accounts == ["ops@example.com", "oncall@example.com"]


def test_an_empty_optional_path_is_unset(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[smtp]\ntls_cert = ""\n[outbound_smtp]\nca_file = " "\n[dkim]\nprivate_key_path = ""\n',
    )
    settings = load_settings(path, environ={"E2A_SMTP_TLS_KEY": ""})
    assert settings.smtp.tls_cert is None and settings.smtp.tls_key is None
    assert settings.outbound_smtp.ca_file is None and settings.dkim.private_key_path is None
    given = load_settings(path, environ={"E2A_SMTP_TLS_CERT": "/etc/e2a/cert.pem"})
    assert given.smtp.tls_cert == Path("/etc/e2a/cert.pem")


@pytest.mark.parametrize(
    ("entry", "address"),
    [
        ("192.0.2.1", ("192.0.2.1", 53)),
        ("192.0.2.1:5353", ("192.0.2.1", 5353)),
        ("2001:db8::1", ("2001:db8::1", 53)),
        ("[2001:db8::1]", ("2001:db8::1", 53)),
        ("[2001:db8::1]:5353", ("2001:db8::1", 5353)),
    ],
)
def test_nameserver_entries(entry: str, address: tuple[str, int]) -> None:
    assert nameserver_address(entry) == address
    assert load_settings(None, environ={"E2A_DNS_NAMESERVERS": entry}).dns.nameservers == [entry]


def test_an_unreadable_config_file_is_one_line(tmp_path: Path) -> None:
    """A --config that names a folder, or a file that is not UTF-8 text, is a ConfigError
    naming the path (one line from the command), not a traceback."""
    with pytest.raises(ConfigError, match=r"cannot read config file .*: .*--config"):
        load_settings(tmp_path, environ={})
    latin = tmp_path / "latin1.toml"
    latin.write_bytes('shared_domain = "caf\xe9.example"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load_settings(latin, environ={})


def test_a_file_saved_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    """Windows editors may save UTF-8 with a byte-order mark, invisible in any editor: the
    file is read as written, not refused as "Invalid statement (at line 1, column 1)"."""
    path = tmp_path / "e2a.toml"
    path.write_bytes(b'\xef\xbb\xbfshared_domain = "agents.example.com"\r\n')
    assert load_settings(path, environ={}).shared_domain == "agents.example.com"


def test_e2a_yaml_config_is_refused_saying_this_one_is_toml(tmp_path: Path) -> None:
    """An operator moving from e2a, whose configuration is YAML, passes its config.yaml: the
    refusal says this gateway reads TOML, not only where the TOML parser stumbled."""
    path = tmp_path / "config.yaml"
    path.write_text('smtp:\n  listen_addr: ":2525"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    message = str(caught.value)
    assert "is not valid TOML" in message and "(at line 1, column 5)" in message
    assert "e2a's YAML configuration is not read here" in message
    assert "config.example.toml" in message


def test_missing_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "absent.toml", environ={})


def test_trusted_proxies_from_the_environment() -> None:
    settings = load_settings(None, environ={"E2A_HTTP_TRUSTED_PROXIES": "10.0.0.1, 2001:db8::/32"})
    assert settings.http.trusted_proxies == ["10.0.0.1", "2001:db8::/32"]
    assert [str(network) for network in settings.http.trusted_networks] == [
        "10.0.0.1/32",
        "2001:db8::/32",
    ]
    assert load_settings(None, environ={}).http.trusted_proxies == []


def test_smtp_proxy_trusted_cidrs_from_the_environment_as_e2a_names_it() -> None:
    """e2a's E2A_SMTP_PROXY_TRUSTED_CIDRS is our setting: comma-separated, as e2a writes it;
    empty, no PROXY header is read."""
    environ = {"E2A_SMTP_PROXY_TRUSTED_CIDRS": "172.30.0.0/24, 10.0.0.5,2001:db8::/64"}
    settings = load_settings(None, environ=environ)
    assert settings.smtp.proxy_trusted_cidrs == ["172.30.0.0/24", "10.0.0.5", "2001:db8::/64"]
    assert [str(network) for network in settings.smtp.proxy_trusted_networks] == [
        "172.30.0.0/24",
        "10.0.0.5/32",
        "2001:db8::/64",
    ]
    assert env_warnings(environ) == []
    assert load_settings(None, environ={}).smtp.proxy_trusted_networks == []


# e2a's environment names

SECRET = "9f2c4e6a8b0d1f3e5a7c9e1b3d5f7a9c2e4f6a8b0c1d3e5f7a9b1c3d5e7f9a0b"

E2A_DOCUMENTED = (
    # e2a's docs/deployment.md (server operator), and the names its config loader reads
    "E2A_DATABASE_URL",
    "E2A_HMAC_SECRET",
    "E2A_PUBLIC_URL",
    "E2A_SHARED_DOMAIN",
    "E2A_GOOGLE_CLIENT_ID",
    "E2A_GOOGLE_CLIENT_SECRET",
    "E2A_OIDC_ENABLED",
    "E2A_OIDC_ISSUER_URL",
    "E2A_OIDC_CLIENT_ID",
    "E2A_OIDC_CLIENT_SECRET",
    "E2A_OIDC_REDIRECT_URL",
    "E2A_OIDC_USER_ID_CLAIM",
    "E2A_OUTBOUND_SMTP_HOST",
    "E2A_OUTBOUND_SMTP_PORT",
    "E2A_OUTBOUND_SMTP_USERNAME",
    "E2A_OUTBOUND_SMTP_PASSWORD",
    "E2A_OUTBOUND_SMTP_FROM_DOMAIN",
    "E2A_OUTBOUND_SMTP_REQUIRE_TLS",
    "E2A_OUTBOUND_SMTP_MESSAGE_ID_DOMAIN",
    "E2A_SMTP_PROXY_TRUSTED_CIDRS",
    "E2A_USAGE_TRACKING",
    "E2A_GEMINI_DETECTOR_ENABLED",
    "E2A_METRICS_ENABLED",
    "E2A_METRICS_LISTEN_ADDR",
    "E2A_INTERNAL_API_SECRET",
    "E2A_OAUTH_REDIRECT_URL",
    "E2A_OAUTH_SIGNING_KEY",
    "E2A_TRASH_RETENTION_DAYS",
    "E2A_ENV",
    # its clients (CLI, SDK, MCP)
    "E2A_URL",
    "E2A_API_URL",
    "E2A_API_KEY",
    "E2A_BASE_URL",
    "E2A_AGENT_EMAIL",
    "E2A_WEBHOOK_SECRET",
)


def test_e2a_server_names_set_our_keys() -> None:
    settings = load_settings(
        None,
        environ={
            "E2A_HMAC_SECRET": SECRET,
            "E2A_PUBLIC_URL": "https://mail.example.com/",
            "E2A_DATABASE_URL": "postgres://e2a:e2a@localhost:5433/e2a?sslmode=disable",
            "E2A_SHARED_DOMAIN": "agents.example.com",
            "E2A_OUTBOUND_SMTP_HOST": "email-smtp.us-east-1.amazonaws.com",
            "E2A_OUTBOUND_SMTP_PORT": "587",
            "E2A_OUTBOUND_SMTP_USERNAME": "AKIA",
            "E2A_OUTBOUND_SMTP_PASSWORD": "relay password",
            "E2A_OUTBOUND_SMTP_FROM_DOMAIN": "example.com",
            "E2A_METRICS_ENABLED": "true",
            "E2A_ENV": "production",
            "E2A_INTERNAL_API_SECRET": SECRET[::-1],
        },
    )
    assert settings.signing.hmac_secret == SECRET
    assert settings.operators.selftest_secret == SECRET[::-1]
    assert settings.http.public_url == "https://mail.example.com"
    assert settings.database.url.startswith("postgres://e2a:e2a@localhost:5433/")
    assert settings.shared_domain == "agents.example.com"
    smtp = settings.outbound_smtp
    assert (smtp.host, smtp.port, smtp.username, smtp.password, smtp.from_domain) == (
        "email-smtp.us-east-1.amazonaws.com",
        587,
        "AKIA",
        "relay password",
        "example.com",
    )
    assert settings.metrics.enabled and settings.is_production


def test_e2a_names_override_the_file_and_an_empty_one_is_unset(tmp_path: Path) -> None:
    path = write(tmp_path, '[http]\npublic_url = "https://file.example.com"\n')
    assert load_settings(path, environ={"E2A_PUBLIC_URL": ""}).http.public_url == (
        "https://file.example.com"
    )
    settings = load_settings(path, environ={"E2A_PUBLIC_URL": "https://env.example.com"})
    assert settings.http.public_url == "https://env.example.com"


@pytest.mark.parametrize(
    ("alias", "ours", "value"),
    [
        ("E2A_HMAC_SECRET", "E2A_SIGNING_HMAC_SECRET", SECRET),
        ("E2A_PUBLIC_URL", "E2A_HTTP_PUBLIC_URL", "https://mail.example.com"),
        ("E2A_INTERNAL_API_SECRET", "E2A_OPERATORS_SELFTEST_SECRET", SECRET),
    ],
)
def test_both_names_must_agree(alias: str, ours: str, value: str) -> None:
    assert load_settings(None, environ={alias: value, ours: value})  # the same value: fine
    with pytest.raises(ConfigError) as caught:
        load_settings(None, environ={alias: value, ours: value + "x"})
    message = str(caught.value)
    assert alias in message and ours in message and "keep one" in message
    assert value not in message  # a secret is never echoed


def test_a_bad_value_under_an_e2a_name_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"http\.public_url"):
        load_settings(None, environ={"E2A_PUBLIC_URL": "mail.example.com"})


def test_unknown_variables_are_warned_about_with_the_closest_name() -> None:
    warnings = env_warnings(
        {
            "E2A_HTTP_PUBLIK_URL": "https://secret-value.example",
            "E2A_SIGNING_HMAC_SECRT": "hunter2hunter2",
            "E2A_DATABSE_URL": "sqlite:///x.db",
            "E2A_API_KYE": "e2a_x",
        }
    )
    guesses = {line.split()[0]: line.split("did you mean ")[1].split("?")[0] for line in warnings}
    assert guesses == {
        "E2A_HTTP_PUBLIK_URL": "E2A_HTTP_PUBLIC_URL",
        "E2A_SIGNING_HMAC_SECRT": "E2A_SIGNING_HMAC_SECRET",
        "E2A_DATABSE_URL": "E2A_DATABASE_URL",
        "E2A_API_KYE": "E2A_API_KEY",
    }
    assert all("ignored" in line for line in warnings)
    joined = "\n".join(warnings)
    assert "secret-value" not in joined and "hunter2" not in joined


def test_e2a_settings_without_a_counterpart_say_so() -> None:
    warnings = env_warnings(
        {"E2A_GOOGLE_CLIENT_ID": "x", "E2A_USAGE_TRACKING": "true", "E2A_PROBE_API_KEY": "k"}
    )
    assert len(warnings) == 3
    assert all("is an e2a setting not used by this gateway" in line for line in warnings)
    assert any("API key" in line for line in warnings if line.startswith("E2A_GOOGLE"))


def test_client_and_test_variables_are_known() -> None:
    clients = {
        name: "x"
        for name in (
            "E2A_API_KEY",
            "E2A_BASE_URL",
            "E2A_URL",
            "E2A_API_URL",
            "E2A_AGENT_EMAIL",
            "E2A_WEBHOOK_SECRET",
            "E2A_TEST_BACKEND",
            "E2A_TEST_POSTGRES_URL",
            "E2A_TEST_ANYTHING_NEW",
            "E2A_PG_TEST_DIR",
            "E2A_SCREENSHOTS_DIR",
            "NOT_OURS_AT_ALL",
        )
    }
    assert env_warnings(clients) == []
    ours = {"E2A_SMTP_LISTEN": "x", "E2A_ENV": "x", "E2A_HMAC_SECRET": "x"}
    assert env_warnings(ours) == []


def test_every_name_e2a_documents_is_understood() -> None:
    """None of e2a's documented names is taken for a typo: each sets a key, is a client's,
    or is reported as not used here."""
    warnings = env_warnings(dict.fromkeys(E2A_DOCUMENTED, "x"))
    assert not [line for line in warnings if "did you mean" in line]
    assert all("not used by this gateway" in line for line in warnings)


def test_the_advice_names_real_settings() -> None:
    names = setting_env_names()
    advised = {
        name
        for reason in UNUSED_E2A_VARIABLES.values()
        for name in re.findall(r"E2A_[A-Z0-9_]+", reason)
    }
    assert advised and advised <= set(names)
    assert all(path in names.values() for path in E2A_ALIASES.values())


def test_the_memory_for_messages_reaches_the_listener_and_takes_a_largest_message() -> None:
    """smtp.max_message_memory_bytes bounds what one SMTP process holds of messages being
    received; a value that cannot take one message of smtp.max_message_bytes (which would be
    deferred on every retry) stops the start with what to set."""
    _, listener_limits, _ = smtp_options(load_settings(None, environ={}))
    assert listener_limits.max_message_memory == 134_217_728
    small = load_settings(None, environ={"E2A_SMTP_MAX_MESSAGE_MEMORY_BYTES": "20000000"})
    with pytest.raises(StartupError) as caught:
        smtp_options(small)
    assert str(caught.value) == (
        "smtp.max_message_memory_bytes: 20000000 cannot hold one message of "
        "smtp.max_message_bytes (26214400), which takes up to 29491208 octets while it is read "
        "— set it to at least 29491208, or lower smtp.max_message_bytes"
    )


def test_the_error_limits_reach_the_sessions_and_a_bad_one_is_named(tmp_path: Path) -> None:
    """smtp.max_errors, errors_before_delay, error_delay_seconds and max_junk_commands (docs/
    smtp.md, "Errors and address probing") become the sessions' limits."""
    limits, _, _ = smtp_options(load_settings(None, environ={}))
    assert (limits.errors_before_delay, limits.max_errors) == (10, 20)
    assert (limits.error_delay, limits.max_junk_commands) == (1.0, 100)
    path = write(tmp_path, "[smtp]\nmax_errors = 5\nerror_delay_seconds = 0.25\n")
    limits, _, _ = smtp_options(load_settings(path, environ={}))
    assert (limits.max_errors, limits.error_delay) == (5, 0.25)
    for bad in ("error_delay_seconds = -1", "error_delay_seconds = 600", "max_junk_commands = 0"):
        with pytest.raises(ConfigError, match=rf"smtp\.{bad.split(' ')[0]}"):
            load_settings(write(tmp_path, f"[smtp]\n{bad}\n"), environ={})


# --- secrets read from files (Docker secrets, systemd credentials) ------------------------

SECRET_FILE_CASES = [
    ("outbound_smtp", "password", "relay pass word"),
    ("signing", "hmac_secret", "9f" * 32),
    ("operators", "selftest_secret", "selftest-token-73190542"),
    ("metrics", "token", "metrics-token-73190542"),
    ("database", "url", "sqlite:///./from-a-file.db"),
    ("database", "listen_url", "postgresql://e2a:73190542@db.example.com/e2a"),
]


def _secret(settings: object, section: str, key: str) -> object:
    return getattr(getattr(settings, section), key)


@pytest.mark.parametrize(("section", "key", "secret"), SECRET_FILE_CASES)
def test_a_secret_is_read_from_the_file_its_file_setting_names(
    tmp_path: Path, section: str, key: str, secret: str
) -> None:
    """`X_file` in the config file, or `E2A_<SECTION>_<X>_FILE`, names a file whose text, but
    for one trailing newline, is the secret (systemd's credentials, Docker's secrets)."""
    secret_file = tmp_path / "secret"
    secret_file.write_text(secret + "\n", encoding="utf-8")
    secret_file.chmod(0o600)
    from_file = load_settings(write(tmp_path, f'[{section}]\n{key}_file = "{secret_file}"\n'), {})
    assert _secret(from_file, section, key) == secret
    variable = f"E2A_{section}_{key}_FILE".upper()
    assert variable in setting_env_names()
    from_variable = load_settings(None, environ={variable: str(secret_file)})
    assert _secret(from_variable, section, key) == secret
    assert secret_file_warnings(from_variable) == []


def test_only_the_trailing_newline_of_a_secret_file_is_dropped(tmp_path: Path) -> None:
    secret_file = tmp_path / "password"
    secret_file.write_bytes(b"  spaced pass\r\n")
    settings = load_settings(None, {"E2A_OUTBOUND_SMTP_PASSWORD_FILE": str(secret_file)})
    assert settings.outbound_smtp.password == "  spaced pass"
    secret_file.write_bytes(b"two\nlines\n\n")
    settings = load_settings(None, {"E2A_OUTBOUND_SMTP_PASSWORD_FILE": str(secret_file)})
    assert settings.outbound_smtp.password == "two\nlines\n"


@pytest.mark.parametrize(("section", "key", "secret"), SECRET_FILE_CASES)
def test_a_secret_and_its_file_both_set_is_refused_naming_both(
    tmp_path: Path, section: str, key: str, secret: str
) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(secret, encoding="utf-8")
    text = f'[{section}]\n{key} = "{secret}"\n'
    variable = f"E2A_{section}_{key}_FILE".upper()
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text), environ={variable: str(secret_file)})
    message = str(caught.value)
    assert f"{section}.{key} and {section}.{key}_file are both set" in message
    assert "keep one" in message and secret not in message and "73190542" not in message


@pytest.mark.parametrize(
    ("content", "phrase"),
    [
        (None, "no such file"),
        (b"", "is empty"),
        (b"\n", "is empty"),
        (b"\xff\xfe73190542", "not UTF-8"),
    ],
    ids=["missing", "empty", "a newline alone", "not text"],
)
def test_a_secret_file_that_gives_no_secret_is_refused_naming_setting_and_path(
    tmp_path: Path, content: bytes | None, phrase: str
) -> None:
    secret_file = tmp_path / "relay-password"
    if content is not None:
        secret_file.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        load_settings(None, environ={"E2A_OUTBOUND_SMTP_PASSWORD_FILE": str(secret_file)})
    message = str(caught.value)
    assert f"outbound_smtp.password_file: {secret_file}" in message, message
    assert phrase in message and "73190542" not in message, message
    assert "\n" not in message


def test_a_secret_file_that_is_a_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, environ={"E2A_SIGNING_HMAC_SECRET_FILE": str(tmp_path)})
    assert f"signing.hmac_secret_file: {tmp_path} is a directory" in str(caught.value)


def test_a_bad_secret_from_a_file_names_the_file_not_the_secret(tmp_path: Path) -> None:
    """The secret is checked as if written in the config file, and the error points at the file
    it came from, never showing the secret."""
    secret_file = tmp_path / "database-url"
    secret_file.write_text("mysql://e2a:73190542@db/e2a\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(None, environ={"E2A_DATABASE_URL_FILE": str(secret_file)})
    message = str(caught.value)
    assert "database.url:" in message and str(secret_file) in message, message
    assert "73190542" not in message


def test_a_secret_file_readable_by_others_is_warned_about(tmp_path: Path) -> None:
    """Group- or world-readable: a warning naming the path (Docker's secrets are 0444 unless
    told otherwise), never the secret; the gateway still starts."""
    secret_file = tmp_path / "hmac"
    secret_file.write_text("9f" * 32 + "\n", encoding="utf-8")
    secret_file.chmod(0o640)
    settings = load_settings(None, environ={"E2A_SIGNING_HMAC_SECRET_FILE": str(secret_file)})
    warnings = secret_file_warnings(settings)
    assert len(warnings) == 1, warnings
    assert f"signing.hmac_secret_file: {secret_file}" in warnings[0]
    assert "0640" in warnings[0] and "9f9f" not in warnings[0]


def test_a_secret_file_is_read_once_when_the_settings_are_made(tmp_path: Path) -> None:
    """Changing a setting later (validated on assignment) neither reads the file again nor
    takes the secret read from it for a second value set beside the file."""
    secret_file = tmp_path / "password"
    secret_file.write_text("first\n", encoding="utf-8")
    settings = load_settings(None, {"E2A_OUTBOUND_SMTP_PASSWORD_FILE": str(secret_file)})
    secret_file.unlink()
    settings.outbound_smtp.timeout_seconds = 30
    assert settings.outbound_smtp.password == "first"
    assert settings.outbound_smtp.timeout_seconds == 30


@pytest.mark.parametrize(
    ("written", "host"),
    [
        ("smtp.example.com", "smtp.example.com"),
        ("smtp.example.com.", "smtp.example.com"),
        ("192.0.2.10", "192.0.2.10"),
        ("2001:db8::25", "2001:db8::25"),
        ("[2001:db8::25]", "2001:db8::25"),
        ("", ""),
    ],
)
def test_a_relay_host_name_or_address_is_taken(written: str, host: str) -> None:
    settings = load_settings(None, environ={"E2A_OUTBOUND_SMTP_HOST": written})
    assert settings.outbound_smtp.host == host


@pytest.mark.parametrize("written", [".", "smtp.example.com..", "smtp..example.com"])
def test_a_relay_host_with_an_empty_label_is_refused(written: str) -> None:
    """A name that never resolves would pass start-up and defer every message for a day."""
    with pytest.raises(ConfigError) as refused:
        load_settings(None, environ={"E2A_OUTBOUND_SMTP_HOST": written})
    assert "smtp.example.com" in str(refused.value)


def test_a_relay_written_as_a_url_is_refused_without_its_password() -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(
            None, environ={"E2A_OUTBOUND_SMTP_HOST": "smtp://relay:hunter2@smtp.example.com/"}
        )
    assert 'host = "smtp.example.com"' in str(refused.value)
    assert "hunter2" not in str(refused.value)


@pytest.mark.parametrize("selector", ["s1", "e2a202607", "google", "k1.mail", "key_2024"])
def test_a_dkim_selector_is_taken_as_written(selector: str) -> None:
    settings = load_settings(None, environ={"E2A_DKIM_SELECTOR": selector})
    assert settings.dkim.selector == selector


def test_blanks_around_the_public_url_are_dropped() -> None:
    """A variable read from an env file may keep a blank at its end; the links the gateway
    mails and shows are the URL without it."""
    settings = load_settings(None, environ={"E2A_HTTP_PUBLIC_URL": " https://mail.example.com/ "})
    assert settings.http.public_url == "https://mail.example.com"
