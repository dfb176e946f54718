"""Settings: TOML loading, env overrides and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from e2a.config import ConfigError, load_settings, nameserver_address

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
        ("[http]\nmax_request_bytes = 100\n", {}, "http.max_request_bytes"),
    ],
)
def test_bad_settings_name_the_key(
    tmp_path: Path, text: str, environ: dict[str, str], fragment: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text), environ=environ)
    assert fragment in str(caught.value)


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
