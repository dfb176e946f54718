"""An account's export read whole from the storage (`Accounts.export_user`), as one dict:
its records, `messages`, `mailbox` (each message's labels and trash, by id, when it has any)
and `events`."""

from __future__ import annotations

from typing import Any

from e2a_gateway.storage.base import Accounts


async def whole_export(storage: Accounts, user_id: str) -> dict[str, Any]:
    """Everything `storage.export_user(user_id)` gives, gathered."""
    async with storage.export_user(user_id) as export:
        exported = await export.records()
        exported["messages"], exported["mailbox"] = [], {}
        async for page in export.messages():
            for message, filed in page:
                exported["messages"].append(message)
                kept = {key: value for key, value in filed.items() if key != "delivery"}
                if kept:  # labels and trash; a sent message's delivery is its rollup's input
                    exported["mailbox"][message["id"]] = kept
        exported["events"] = [event async for page in export.events() for event in page]
    return exported
