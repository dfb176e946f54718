"""The caller's data rights: everything stored about them (export), and erasing their account
with all it owns in one transaction."""

from __future__ import annotations

from typing import Any

from e2a_gateway.clock import utc_now
from e2a_gateway.gateway import Gateway
from e2a_gateway.hub import Revocation
from e2a_gateway.operations.caller import Caller

EXPORT_SCHEMA_VERSION = "1"


async def export_account(gateway: Gateway, caller: Caller) -> dict[str, Any]:
    """Everything stored about the caller, from one snapshot; never hashes, secrets or bodies."""
    caller.require_account("export the account")
    exported = await gateway.storage.export_user(caller.user_id)
    return {
        "schema_version": EXPORT_SCHEMA_VERSION,
        "generated_at": utc_now(),
        **exported,
    }


async def delete_account(gateway: Gateway, caller: Caller) -> dict[str, int]:
    """Erase the caller and all they own in one transaction, and close their live connections;
    returns the rows deleted per table."""
    caller.require_account("delete the account")
    deleted = await gateway.storage.delete_user(caller.user_id)
    gateway.hub.revoke(Revocation("user", caller.user_id))
    return deleted
