"""The memory that messages being received hold, counted against one limit for all the sessions
of a listener, so that many sessions together cannot hold more than the machine can spare.

Pure bookkeeping for the sans-IO session: it must not do I/O nor decide what to answer.
"""

from __future__ import annotations

__all__ = ["MessageBuffer", "MessageMemory", "memory_for_message"]


def memory_for_message(octets: int) -> int:
    """The most memory a message of `octets` octets takes while it is read into a
    `MessageBuffer`: a bytearray that grows by an eighth more than it needs (CPython's
    `PyByteArray_Resize`), and a few octets besides."""
    return octets + (octets >> 3) + 8


class MessageMemory:
    """Octets of messages being received that the sessions sharing this may hold at once.

    Each session reserves memory as its message grows and gives it back once the message is
    answered or abandoned; a reservation that does not fit is refused, and the session then
    refuses the message (`452 4.3.1`). One trio thread uses it: no lock is needed.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"MessageMemory limit must be at least 1, not {limit}")
        self.limit = limit
        self.held = 0
        """Octets reserved now, by all sessions together."""

    @property
    def available(self) -> int:
        """Octets that can still be reserved."""
        return self.limit - self.held

    def reserve(self, octets: int) -> bool:
        """Reserve `octets` more if they fit within the limit; False (nothing reserved) if not."""
        if octets > self.limit - self.held:
            return False
        self.held += octets
        return True

    def adjust(self, octets: int) -> None:
        """Count `octets` more (or fewer, when negative) as held, whether they fit or not:
        memory already allocated, or given back."""
        self.held += octets


class MessageBuffer:
    """One message's octets as they arrive, with what they take in memory reserved in a
    `MessageMemory`: what the buffer really allocates (`bytearray.__alloc__`), the slack of
    its growth included, reserved before it grows and given back when the message is
    discarded — or, once it is taken, when the session lets go of it (`discard`)."""

    def __init__(self, memory: MessageMemory) -> None:
        self._memory = memory
        self._content = bytearray()
        self._reserved = 0

    def can_hold(self, octets: int) -> bool:
        """Whether a message of `octets` octets in all would fit in the memory left, counting
        what this buffer holds already."""
        if octets < self._reserved:  # within what the buffer has allocated already
            return True
        return memory_for_message(octets) <= self._memory.available + self._reserved

    def keep(self, octets: bytes | bytearray) -> bool:
        """Append `octets`. False when the memory for them cannot be reserved: then nothing is
        kept any more and the memory held is given back."""
        if not octets:
            return True
        needed = len(self._content) + len(octets)
        if needed >= self._reserved and not self._reserve(memory_for_message(needed)):
            self.discard()
            return False
        self._content += octets
        self._settle(self._content.__alloc__())
        return True

    def take(self) -> bytes:
        """Hand over the message; its octets stay reserved until `discard`. (For the moment of
        the copy the message exists twice: one message at a time, nothing runs meanwhile.)"""
        content = bytes(self._content)
        self._content = bytearray()
        self._settle(len(content))
        return content

    def discard(self) -> None:
        """Drop the octets kept, and give back all the memory reserved (a taken message's too)."""
        if self._reserved or self._content:
            self._content = bytearray()
            self._settle(0)

    def _reserve(self, octets: int) -> bool:
        """Hold `octets` in all, if the memory for them can be reserved."""
        if not self._memory.reserve(octets - self._reserved):
            return False
        self._reserved = octets
        return True

    def _settle(self, octets: int) -> None:
        """Hold exactly `octets` in all, what the buffer really takes now."""
        self._memory.adjust(octets - self._reserved)
        self._reserved = octets
