"""How the gateway's records look in e2a's `/v1` API (its api/openapi.yaml at 220fe0a7): the
JSON objects its SDKs parse. Pure functions; an optional timestamp that is unset is left out,
never null, since e2a's schemas type them as strings."""

from __future__ import annotations

from typing import Any

from e2a_gateway.config import Settings
from e2a_gateway.storage.base import ApiKey

API_VERSION = "1.0.0"
"""The version of e2a's `/v1` contract this face implements (e2a's `APIVersion`)."""


def present(**fields: Any) -> dict[str, Any]:
    """`fields` without those that are None."""
    return {name: value for name, value in fields.items() if value is not None}


def info_view(settings: Settings, gateway_version: str) -> dict[str, Any]:
    """DeploymentInfoView: what a client learns before it has a key."""
    return {
        "version": API_VERSION,
        "shared_domain": settings.shared_domain,
        "slug_registration_enabled": bool(settings.shared_domain),
        "public_url": settings.http.public_url,
        "gateway_version": gateway_version,
    }


def api_key_view(key: ApiKey) -> dict[str, Any]:
    """APIKeyView: a key's metadata (its prefix, never the key)."""
    return present(
        id=key.id,
        name=key.name,
        key_prefix=key.key_prefix,
        scope=key.scope,
        agent_email=key.agent_email,
        created_at=key.created_at,
        last_used_at=key.last_used_at,
        expires_at=key.expires_at,
    )
