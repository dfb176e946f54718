"""What a `/v1` request brings, validated as e2a validates it: a JSON body against a strict
model (a malformed body, or one holding a value no request may carry, is 400, a body breaking
the schema — an unknown field, a wrong type, a `null` — 422, both `invalid_request` naming each
field), and query parameters against their model."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError
from quart import request

from e2a_gateway.api.v1.errors import V1Error, field_errors, invalid
from e2a_gateway.web.json_bodies import NotAJsonObject, UnfitValue, json_object

Model = TypeVar("Model", bound=BaseModel)


class QueryParams(BaseModel):
    """Base of a query string's model: values arrive as text and are read as their declared
    types (`limit=5` an integer, `deleted=true` a boolean); parameters it does not name are
    ignored, as e2a ignores them (a model that must refuse them forbids extras)."""

    model_config = ConfigDict(extra="ignore", frozen=True)


async def read_json(
    model: type[Model], *, allow_empty: bool = False, numbers_as_written: str | None = None
) -> Model:
    """The request's JSON body validated against `model`; an absent body is `{}` when
    `allow_empty`; the numbers of field `numbers_as_written` kept as the text they are
    written in (`with_numbers_as_written`)."""
    raw = await request.get_data(as_text=False)
    assert isinstance(raw, bytes)
    if not raw.strip():
        if not allow_empty:
            raise invalid(400, "request body is empty; send a JSON object", ("body", "required"))
        raw = b"{}"
    try:
        data = json_object(raw, numbers_as_written=numbers_as_written)
    except UnfitValue as exc:
        raise invalid(400, str(exc), (exc.location, exc.problem)) from None
    except NotAJsonObject as exc:
        raise invalid(400, str(exc), ("body", str(exc))) from None
    refuse_nulls(data)
    body = validated(model, data, "body")
    if numbers_as_written is not None:
        body = with_numbers_as_written(body, numbers_as_written, raw)
    return body


def refuse_nulls(data: dict[str, Any]) -> None:
    """422 `invalid_request` naming each field of the body sent as `null`: none of e2a's request
    schemas lets a field be null (an optional one is left out), so a `null` is refused as e2a
    refuses it, never read as the field left out (which, in a change, would keep what the
    sender may have meant to clear)."""
    nulls = [f"body.{name}" for name, value in data.items() if value is None]
    if nulls:
        fields = [(location, "null is not allowed; leave the field out") for location in nulls]
        message = "; ".join(f"{location}: {text}" for location, text in fields)
        raise V1Error(422, "invalid_request", message, field_errors(*fields))


def with_numbers_as_written(body: Model, name: str, document: bytes) -> Model:
    """`body` with its field `name` read again from the JSON object `document`, every number
    kept as the text it is written in (`1.50` stays `"1.50"`), as e2a's server reads template
    data; `body` itself when that field is empty."""
    if not getattr(body, name):
        return body
    written = json.loads(document, parse_float=str, parse_int=str).get(name)
    return body.model_copy(update={name: written})


def read_query(model: type[Model]) -> Model:
    """The query string validated against `model` (a repeated parameter is a list when the
    model wants one, else its first value counts)."""
    data: dict[str, Any] = {}
    for name, values in request.args.lists():
        field = model.model_fields.get(name)
        wants_list = field is not None and "list" in str(field.annotation)
        data[name] = values if wants_list else values[0]
    return validated(model, data, "query")


def validated(model: type[Model], data: dict[str, Any], part: str) -> Model:
    """`data` (from the request's `part`: body, query) as `model`; 422 `invalid_request` with
    every offending field otherwise."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        fields = [_field_error(error, part) for error in exc.errors()]
        message = "; ".join(f"{location}: {text}" for location, text in fields)
        raise V1Error(422, "invalid_request", message, field_errors(*fields)) from None


def _field_error(error: Any, part: str) -> tuple[str, str]:
    """(location, message) of one pydantic error, in e2a's words."""
    path = "".join(f"[{item}]" if isinstance(item, int) else f".{item}" for item in error["loc"])
    location = f"{part}{path}"
    if error["type"] == "extra_forbidden":
        return location, "unknown field"
    if error["type"] == "missing":
        return location, "required field missing"
    return location, str(error["msg"])
