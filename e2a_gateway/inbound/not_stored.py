"""How a storage failure becomes the SMTP listener's refusal of the message it was storing."""

from __future__ import annotations

from e2a_gateway.smtp.server import MessageNotStored, StorageFull
from e2a_gateway.storage.base import DiskFull, StorageUnavailable


def not_stored(failure: StorageUnavailable) -> MessageNotStored:
    """The refusal of a message `failure` kept from being stored, saying why: StorageFull
    (452 4.3.1) when the database's disk refused the write, else MessageNotStored (451 4.3.0)."""
    if isinstance(failure, DiskFull):
        return StorageFull(str(failure))
    return MessageNotStored(str(failure))
