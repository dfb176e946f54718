"""Which `E2A_*` environment variables mean something, to the gateway or to someone else.

e2a's own server names (`E2A_HMAC_SECRET`, `E2A_PUBLIC_URL`, `E2A_INTERNAL_API_SECRET`) are
aliases of our keys; the variables clients read are known and left alone; e2a settings with
no counterpart here and misspelt names get a warning that says so. Pure data and text: no
I/O, no logging.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping

E2A_ALIASES: dict[str, tuple[str, str]] = {
    "E2A_HMAC_SECRET": ("signing", "hmac_secret"),
    "E2A_PUBLIC_URL": ("http", "public_url"),
    "E2A_INTERNAL_API_SECRET": ("operators", "selftest_secret"),
}
"""e2a's server variables whose name differs from ours, and the setting (section, key) each
sets. The others e2a documents (`E2A_DATABASE_URL`, `E2A_SHARED_DOMAIN`,
`E2A_OUTBOUND_SMTP_HOST`, `_PORT`, `_USERNAME`, `_PASSWORD`, `_FROM_DOMAIN`,
`E2A_METRICS_ENABLED`, `E2A_ENV`) already are our names."""

CLIENT_VARIABLES = frozenset(
    {
        "E2A_API_KEY",  # SDK, CLI and MCP: the API key
        "E2A_BASE_URL",  # SDK, CLI and MCP: the gateway
        "E2A_URL",  # CLI (and SDK fallback): the gateway
        "E2A_API_URL",  # e2a's SDK 3+ and MCP server: the API host
        "E2A_AGENT_EMAIL",  # SDK, CLI and MCP: the default agent
        "E2A_WEBHOOK_SECRET",  # SDK: the secret parse_webhook verifies with
        "E2A_SCREENSHOTS_DIR",  # the dashboard's browser test
        "E2A_SDK_PYTHON",  # the published-SDK compatibility tests
        "E2A_CONFORMANCE_DIR",  # packaging/mcp-conformance.sh
        "E2A_COMMAND",  # packaging/mcp-*.sh
    }
)
"""Variables that clients, tests and tools of this project read; never warned about."""

CLIENT_PREFIXES = ("E2A_TEST_", "E2A_PG_TEST_")
"""Prefixes of the test suite's and its helper scripts' variables."""

_NO_OAUTH = "the dashboard signs in with an API key; there is no OAuth or OIDC sign-in"
_NO_SES = "mail goes out through the relay in outbound_smtp; there is no Amazon SES/SNS link"
_INTERNAL = "an internal switch of e2a's server with no equivalent here"

UNUSED_E2A_VARIABLES: dict[str, str] = {
    "E2A_GOOGLE_CLIENT_ID": _NO_OAUTH,
    "E2A_GOOGLE_CLIENT_SECRET": _NO_OAUTH,
    "E2A_OAUTH_REDIRECT_URL": _NO_OAUTH,
    "E2A_OAUTH_SIGNING_KEY": _NO_OAUTH,
    "E2A_OAUTH_SIGNING_KID": _NO_OAUTH,
    "E2A_OIDC_ENABLED": _NO_OAUTH,
    "E2A_OIDC_ISSUER_URL": _NO_OAUTH,
    "E2A_OIDC_CLIENT_ID": _NO_OAUTH,
    "E2A_OIDC_CLIENT_SECRET": _NO_OAUTH,
    "E2A_OIDC_REDIRECT_URL": _NO_OAUTH,
    "E2A_OIDC_USER_ID_CLAIM": _NO_OAUTH,
    "E2A_SENDER_IDENTITY_SES_REGION": _NO_SES,
    "E2A_DELIVERY_SES_CONFIGURATION_SET": _NO_SES,
    "E2A_DELIVERY_SNS_TOPIC_ARNS": _NO_SES,
    "E2A_USAGE_TRACKING": "there is no usage accounting or billing",
    "E2A_GEMINI_DETECTOR_ENABLED": "inbound mail is not screened by a language model",
    "E2A_CONTENT_SCAN_ENABLED": "there is no content screening",
    "E2A_INBOUND_MODE": _INTERNAL,
    "E2A_OUTBOUND_MODE": _INTERNAL,
    "E2A_MIGRATION_MODE": "migrations run at start and with `e2a migrate`",
    "E2A_WEBHOOK_FANOUT_MODE": _INTERNAL,
    "E2A_WEBHOOK_INTERNAL_SINK_URL": "webhooks.allow_private (E2A_WEBHOOKS_ALLOW_PRIVATE) "
    "allows webhook URLs on private addresses",
    "E2A_METRICS_LISTEN_ADDR": "metrics are served at /metrics on http.listen "
    "(E2A_METRICS_ENABLED turns them on)",
    "E2A_TRASH_RETENTION_DAYS": "deleted messages are gone at once; retention.days "
    "(E2A_RETENTION_DAYS) bounds how long mail is kept",
    "E2A_OUTBOUND_SMTP_REQUIRE_TLS": 'outbound_smtp.tls decides: "starttls" (the default) '
    'requires STARTTLS, "implicit" is TLS from the start, "none" sends in clear',
    "E2A_OUTBOUND_SMTP_MESSAGE_ID_DOMAIN": "the Message-ID of outbound mail is on the "
    "agent's domain",
}
"""e2a's server variables with no counterpart in this gateway, and what to know instead."""

UNUSED_E2A_PREFIXES = {"E2A_PROBE_": "e2a-prober is not part of this gateway"}


def _closest(name: str, candidates: Iterable[str]) -> str:
    """The candidate most like `name` (difflib's ratio; ties go to the first in order)."""
    ranked = sorted(candidates)
    return max(ranked, key=lambda item: difflib.SequenceMatcher(None, name, item).ratio())


def unknown_variable_warnings(
    environ: Mapping[str, str], setting_names: Iterable[str]
) -> list[str]:
    """One warning per `E2A_*` variable in `environ` that sets nothing here: an e2a setting
    this gateway does not have (saying so), or a name nobody reads (naming the closest known
    one). Values are never quoted: they may be secrets."""
    settings = frozenset(setting_names)
    known = settings.union(E2A_ALIASES, CLIENT_VARIABLES)
    warnings: list[str] = []
    for name in sorted(environ):
        if not name.startswith("E2A_") or name in known or name.startswith(CLIENT_PREFIXES):
            continue
        reason = UNUSED_E2A_VARIABLES.get(name) or next(
            (why for prefix, why in UNUSED_E2A_PREFIXES.items() if name.startswith(prefix)), None
        )
        if reason is not None:
            warnings.append(f"{name} is an e2a setting not used by this gateway: {reason}")
            continue
        guess = _closest(name, known)
        warnings.append(
            f"{name} is not a setting of this gateway and is ignored: did you mean {guess}? "
            "(every key is E2A_<SECTION>_<KEY>, see config.example.toml)"
        )
    return warnings
