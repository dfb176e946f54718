"""Bidirectional formatting characters: the ones that change the order text is displayed in.

An embedding, override or isolate reorders whole runs of letters — `invoice`, U+202E,
`fdp.exe` shows as `invoiceexe.pdf`, and `"`, U+202E, `moc.knab@"@evil.example` as
`"elpmaxe.live@"@bank.com` — so what mail says must not reach a reader with them in force. The
marks (LRM, RLM, ALM) move only punctuation and white space about, and right-to-left writing
uses them.
"""

from __future__ import annotations

REORDERING = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
"""Embeddings (LRE, RLE), overrides (LRO, RLO), their end (PDF) and isolates (LRI, RLI, FSI,
PDI)."""
MARKS = frozenset("\u061c\u200e\u200f")
"""The implicit marks: ALM, LRM, RLM."""
BIDI_CONTROLS = REORDERING | MARKS
"""Every bidirectional formatting character."""

_SHOWN = str.maketrans(dict.fromkeys(REORDERING, "\ufffd"))


def in_real_order(text: str) -> str:
    """`text` to show a reader: each embedding, override and isolate is U+FFFD, so the text
    reads in the order it is written, and the reader sees that something was there."""
    return text.translate(_SHOWN)
