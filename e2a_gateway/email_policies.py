"""The `email` package's policies e2a reads mail with, their header classes made once.

The standard library's `HeaderRegistry` makes a new class for every header it parses or sets
(`type(...)` in its `__getitem__`, about 7 us each): building an outbound message spent a third
of its time there, reading a stored one a fifth. `HeaderClassesOnce` makes the class of each
kind of header once; the headers themselves, their parsing and their folding stay the standard
library's.
"""

from __future__ import annotations

import email.policy
from email.headerregistry import BaseHeader, HeaderRegistry


class HeaderClassesOnce(HeaderRegistry):
    """A `HeaderRegistry` that makes each header class once and hands it out again: one per
    kind of header (address, date, unstructured, ...), however many names map to it."""

    def __init__(self, *, use_default_map: bool = True) -> None:
        super().__init__(use_default_map=use_default_map)
        self._made: dict[type, type[BaseHeader]] = {}

    def map_to_type(self, name: str, cls: type) -> None:
        """As `HeaderRegistry.map_to_type`; the classes made so far are made again."""
        self._made.clear()
        super().map_to_type(name, cls)

    def __getitem__(self, name: str) -> type[BaseHeader]:
        kind = self.registry.get(name.lower(), self.default_class)
        made = self._made.get(kind)
        if made is None:
            made = self._made[kind] = type("_" + kind.__name__, (kind, self.base_class), {})
        return made


READING = email.policy.default.clone(header_factory=HeaderClassesOnce())
"""`email.policy.default`, for reading stored mail."""
