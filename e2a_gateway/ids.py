"""Opaque identifiers with a type prefix (`msg_…`, `usr_…`, `apk_…`, `wsec_…`)."""

from __future__ import annotations

import secrets


def new_id(prefix: str) -> str:
    """A fresh random id such as `msg_3f9c…` (96 random bits, hex)."""
    return f"{prefix}_{secrets.token_hex(12)}"
