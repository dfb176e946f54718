"""Form bodies (the dashboard's, the approval links'), bounded in how many fields they hold
before any is parsed.

Quart bounds a multipart form's parts by its `MAX_FORM_PARTS` (1,000), but parses an
`application/x-www-form-urlencoded` body whole, whatever it holds: twenty million empty fields
(`a&a&…`, 40 MB, under `http.max_request_bytes`) held the event loop for thirteen seconds and
took gigabytes, from anyone, since the sign-in form is read before anything else. Here such a
body is counted first, in time linear in its bytes and without a Python step per field.
"""

from __future__ import annotations

from typing import Any

from quart.wrappers.request import Body
from quart_trio.formparser import TrioFormDataParser
from werkzeug.datastructures import MultiDict

from e2a_gateway.operations.errors import Invalid

URL_ENCODED = frozenset({"application/x-www-form-urlencoded", "application/x-url-encoded"})
"""The form types Quart parses whole (multipart forms are bounded by Quart as they are read)."""
DEFAULT_MAX_FIELDS = 1_000
"""Quart's own default for `MAX_FORM_PARTS`, used when the app sets none."""


class BoundedFormParser(TrioFormDataParser):
    """Quart-Trio's form parser, refusing a URL-encoded form of more than `max_form_parts`
    fields (Invalid `too_many_form_fields`, 400) before parsing it."""

    async def parse(
        self,
        body: Body,
        mimetype: str,
        content_length: int | None,
        options: dict[str, str] | None = None,
    ) -> tuple[MultiDict[str, str], MultiDict[str, Any]]:
        if mimetype in URL_ENCODED:
            raw: bytes = await body  # awaited again, whole, by the parser below
            fields = raw.count(b"&") + 1  # "&" alone separates fields (Python 3.10+)
            limit = self.max_form_parts or DEFAULT_MAX_FIELDS
            if fields > limit:
                raise Invalid(
                    "too_many_form_fields",
                    f"a form holds at most {limit} fields; this one holds {fields}",
                )
        return await super().parse(body, mimetype, content_length, options)
