"""Production mode: weak or placeholder settings stop the gateway with one line naming the key,
webhooks must be https, SMTP without TLS is warned about, and development shortcuts are off."""

from __future__ import annotations

import base64
import logging
import re
import secrets
import shlex
import shutil
import string
import subprocess
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from e2a_gateway.app import run_gateway
from e2a_gateway.config import ConfigError, Settings, SigningSettings, load_settings
from e2a_gateway.mailauth.resolver import FixtureResolver
from e2a_gateway.production import check_production, secret_weakness
from tests.conftest import Account, agent_path, make_settings

ROOT = Path(__file__).resolve().parent.parent
GOOD_SECRET = "f7e53d13ed58993df48d4f54e11f7e0210f19cdab80c93c7e461b91c10e1ce3d"
PRODUCTION = {
    "env": "production",
    "shared_domain": "agents.e2a-prod.net",
    "signing": {"hmac_secret": GOOD_SECRET},
    "http": {"listen": "127.0.0.1:0", "public_url": "https://gateway.e2a-prod.net"},
}


def production_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings a production deployment could run on, with `overrides` applied."""
    return make_settings(tmp_path, **{**PRODUCTION, **overrides})


def refusal(settings: Settings) -> str:
    """The ConfigError message check_production raises for `settings`."""
    with pytest.raises(ConfigError) as raised:
        check_production(settings)
    message = str(raised.value)
    assert "\n" not in message
    return message


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The running gateway of these tests is a production one."""
    return production_settings(tmp_path)


@pytest.mark.parametrize(
    ("secret", "reason"),
    [
        (None, "required in production"),
        ("", "required in production"),
        ("tooshort-1f8e", "shorter than 32 bytes"),
        ("change-me-change-me-change-me-change-me", "placeholder"),
        ("replace-with-a-long-random-string-of-48-chars!!", "placeholder"),
        ("my-super-secret-hmac-key-for-e2a-gateway", "placeholder"),
        ("a" * 64, "too few characters"),
        ("0101010101010101010101010101010101010101", "at most 160 bits"),
        # 10 distinct characters, 64 of them: once accepted.
        ("deeeegcgaddbhdhjciigaegccdchdegjcajihfcbdeaghaiejehegeabcedfgedf", "too few characters"),
        ("abcdefghij" * 4, "at most 240 bits"),
        ("9f2c4e7a1b8d3f6c0e5a2d9b7c4f1e8a3d6b0c9f2e5a8d1b", "at most 192 bits"),  # 24 bytes
        ("f52693a6717799d54d9f7f4a2eca986d", "at most 128 bits"),  # token_hex(16)
        ("a1b2c3d4e5" * 7, "repeats a sequence of 16 characters"),
        ("Zq8vLw3XyT0nPbR5sK1mJd7H" * 2, "repeats a sequence of 11 characters"),
        ("k#9Lq!2vZ@7xR$4m&Wp6^Tn%" * 2, "repeats a sequence of 10 characters"),
        ("Kq7#vR2!pL9@xM4$" * 3, "too few characters"),
    ],
)
def test_weak_or_placeholder_secrets_are_refused(
    tmp_path: Path, secret: str | None, reason: str
) -> None:
    message = refusal(production_settings(tmp_path, signing={"hmac_secret": secret}))
    assert message.startswith("signing.hmac_secret: ") and reason in message
    assert "`openssl rand -hex 32`" in message


@pytest.mark.parametrize(
    "generate",
    [
        lambda: secrets.token_hex(32),
        lambda: secrets.token_urlsafe(32),
        lambda: base64.b64encode(secrets.token_bytes(32)).decode(),
        lambda: "".join(secrets.choice(string.printable[:94]) for _ in range(40)),
    ],
    ids=["token_hex-32", "token_urlsafe-32", "base64-32-bytes", "printable-40"],
)
def test_random_secrets_of_32_bytes_are_always_accepted(generate: Callable[[], str]) -> None:
    """What `secrets` or `openssl rand -hex 32 / -base64 32` make passes every time (2,000
    draws each), so the checks refuse weak values without refusing real ones."""
    refused = [secret for secret in (generate() for _ in range(2000)) if secret_weakness(secret)]
    assert refused == []


@pytest.mark.parametrize(
    "secret",
    [
        "Gq3vT8wzdumMyX1pQ7rK5nB2sY9cJ4hL6aF0eW8uZ3m",  # token_urlsafe(32) spelling 'dummy'
        "R2d9SecrETx7Lk4Qw1Zp8Nv3Hb6Jm0Tc5Yf2Ga7Ue9Ws",
    ],
)
def test_a_random_secret_that_spells_a_word_inside_is_accepted(secret: str) -> None:
    """Placeholder words count as words: random characters that happen to spell one between
    other letters are not a placeholder (such draws once failed about 1 run in 500)."""
    assert secret_weakness(secret) is None


def test_what_the_example_config_ships_is_refused() -> None:
    """Every key to mend is named at once, the missing secret among them: an operator fixes
    them in one round, not one start per key."""
    example = load_settings(ROOT / "config.example.toml", environ={"E2A_ENV": "production"})
    message = refusal(example)
    assert message.startswith("signing.hmac_secret: required in production")
    assert "shared_domain: agents.localhost is a reserved name" in message
    assert "http.public_url: still the development default" in message
    with_secret = example.model_copy(update={"signing": SigningSettings(hmac_secret=GOOD_SECRET)})
    message = refusal(with_secret)
    assert "shared_domain: agents.localhost is a reserved name" in message
    assert "http.public_url: still the development default" in message


def test_the_command_named_for_a_new_secret_runs_without_python() -> None:
    """The one-file executable runs where no Python is installed: the command the refusal
    names for making the secret must not need one, and what it prints must pass."""
    example = load_settings(ROOT / "config.example.toml", environ={"E2A_ENV": "production"})
    message = refusal(example)
    assert "python" not in message.lower(), message
    (command,) = re.findall(r"the output of `([^`]+)`", message)
    if shutil.which(command.split()[0]) is None:
        pytest.skip(f"{command.split()[0]} is not installed here")
    made = subprocess.run(shlex.split(command), capture_output=True, text=True, check=True)
    assert secret_weakness(made.stdout.strip()) is None


@pytest.mark.parametrize(
    "domain", ["agents.test", "mail.example", "example.com", "agents.example.org", "a.localhost"]
)
def test_reserved_shared_domains_are_refused(tmp_path: Path, domain: str) -> None:
    assert refusal(production_settings(tmp_path, shared_domain=domain)).startswith(
        f"shared_domain: {domain} is a reserved name"
    )


@pytest.mark.parametrize("hostname", ["raspberrypi", "localhost", "vps.localdomain", "e2a.local"])
def test_a_host_name_mail_cannot_reach_is_refused(tmp_path: Path, hostname: str) -> None:
    """smtp.hostname defaults to the system's name, on a Pi `raspberrypi`: users would be told
    to point their domains' MX at it, and approval replies addressed to it, lost."""
    smtp = {"listen": "127.0.0.1:0", "hostname": hostname}
    message = refusal(production_settings(tmp_path, smtp=smtp))
    assert message.startswith(f"smtp.hostname: {hostname} is not a name other mail servers"), (
        message
    )
    assert "such as mx.example.com" in message
    for public in ("mx.e2a-prod.net", "mx.agents.test"):
        check_production(production_settings(tmp_path, smtp={**smtp, "hostname": public}))


def test_a_weak_selftest_secret_is_refused_and_none_is_fine(tmp_path: Path) -> None:
    weak = production_settings(tmp_path, operators={"selftest_secret": "change-me"})
    assert refusal(weak).startswith("operators.selftest_secret: is shorter than 32 bytes")
    assert "change-me" not in refusal(weak)
    check_production(production_settings(tmp_path, operators={"selftest_secret": GOOD_SECRET}))
    check_production(production_settings(tmp_path))  # unset: GET /selftest is refused


def test_a_weak_metrics_token_is_refused_and_none_is_fine(tmp_path: Path) -> None:
    weak = production_settings(tmp_path, metrics={"enabled": True, "token": "change-me"})
    assert refusal(weak).startswith("metrics.token: is shorter than 32 bytes")
    assert "change-me" not in refusal(weak)
    check_production(production_settings(tmp_path, metrics={"enabled": True, "token": GOOD_SECRET}))
    check_production(production_settings(tmp_path, metrics={"enabled": True}))


def test_a_relay_password_over_plain_smtp_is_refused(tmp_path: Path) -> None:
    relay = {"host": "smtp.e2a-prod.net", "username": "u", "password": "p", "tls": "none"}
    message = refusal(production_settings(tmp_path, outbound_smtp=relay))
    assert message.startswith('outbound_smtp.tls: "none" would send the relay password')
    check_production(production_settings(tmp_path, outbound_smtp={**relay, "tls": "starttls"}))


def test_good_settings_pass_with_warnings_and_development_is_unchecked(tmp_path: Path) -> None:
    warnings = check_production(production_settings(tmp_path))
    assert len(warnings) == 1 and warnings[0].startswith("smtp.tls_cert/smtp.tls_key are not set")
    risky = production_settings(
        tmp_path,
        webhooks={"allow_private": True},
        http={"listen": "127.0.0.1:0", "public_url": "http://gateway.e2a-prod.net"},
    )
    assert [warning.split(" ")[0] for warning in check_production(risky)] == [
        "smtp.tls_cert/smtp.tls_key",
        "http.public_url",
        "webhooks.allow_private",
    ]
    assert check_production(make_settings(tmp_path)) == []


async def test_the_gateway_does_not_start_on_a_weak_secret(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh.db"
    weak = production_settings(
        tmp_path,
        signing={"hmac_secret": "change-me"},
        database={"url": f"sqlite:///{fresh}"},
    )
    with pytest.raises(ConfigError, match=r"^signing\.hmac_secret: is shorter than 32 bytes"):
        await run_gateway(weak, resolver=FixtureResolver())
    assert not fresh.exists()  # refused before anything was opened


async def test_smtp_without_tls_is_logged_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, nursery: trio.Nursery
) -> None:
    caplog.set_level(logging.WARNING, logger="e2a")
    await nursery.start(
        partial(run_gateway, production_settings(tmp_path), resolver=FixtureResolver())
    )
    assert any(
        record.getMessage().startswith("production: smtp.tls_cert/smtp.tls_key are not set")
        for record in caplog.records
    )
    nursery.cancel_scope.cancel()


async def test_webhooks_must_be_https(make_account: Any) -> None:
    alice: Account = await make_account("alice@example.com")
    plain = await alice.http.post(
        "/api/v1/agents",
        json={"slug": "bot", "agent_mode": "cloud", "webhook_url": "http://hooks.e2a-prod.net/x"},
    )
    assert plain.status_code == 400
    error = plain.json()["error"]
    assert error["code"] == "invalid_webhook_url" and "https://" in error["message"]

    created = await alice.http.post(
        "/api/v1/agents",
        json={"slug": "bot", "agent_mode": "cloud", "webhook_url": "https://hooks.e2a-prod.net/x"},
    )
    assert created.status_code == 201, created.text
    downgrade = await alice.http.put(
        agent_path(created.json()["email"]), json={"webhook_url": "http://hooks.e2a-prod.net/x"}
    )
    assert downgrade.status_code == 400
    assert downgrade.json()["error"]["code"] == "invalid_webhook_url"


async def test_domains_are_not_verified_without_their_dns_record(make_account: Any) -> None:
    alice: Account = await make_account("alice@example.com")
    added = await alice.http.post("/api/v1/domains", json={"domain": "corp.e2a-prod.net"})
    assert added.status_code == 201, added.text
    response = await alice.http.post("/api/v1/domains/corp.e2a-prod.net/verify")
    assert response.status_code == 412
    assert response.json()["error"]["code"] == "verification_record_missing"


async def test_webhook_urls_with_a_port_out_of_range_are_refused(make_account: Any) -> None:
    alice: Account = await make_account("alice@example.com")
    for url in ("https://hooks.e2a-prod.net:99999/x", "https://hooks.e2a-prod.net:0/x"):
        response = await alice.http.post(
            "/api/v1/agents", json={"slug": "bot", "agent_mode": "cloud", "webhook_url": url}
        )
        assert response.status_code == 400, response.text
        assert response.json()["error"] == {
            "code": "invalid_webhook_url",
            "message": "webhook_url port must be a number from 1 to 65535",
        }
