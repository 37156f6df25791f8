"""Pure parsing of batch bodies: JSON array, NDJSON, CSV. Each item becomes a Registration or errors.

Nothing is dropped silently: every item that cannot be read becomes an error entry with its index.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from shared.schemas import REGISTRATIONS, Registration


class BodyError(ValueError):
    """The body as a whole cannot be read (the caller answers 422 with this message)."""


class UnsupportedMediaType(BodyError):
    """The content type is not one the batch endpoint reads (HTTP 415)."""


@dataclass(frozen=True)
class ItemResult:
    index: int
    registration: Registration | None
    registration_id: str | None
    errors: list[dict[str, Any]]


def pydantic_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """Pydantic errors as {field, message}: what a school needs to fix the item."""
    out = []
    for err in exc.errors(include_url=False):
        field = ".".join(str(p) for p in err["loc"]) or "item"
        message = err["msg"].removeprefix("Value error, ")
        out.append({"field": field, "message": message})
    return out


def validate_item(index: int, raw: Any) -> ItemResult:
    if not isinstance(raw, dict):
        return ItemResult(index, None, None, [{"field": "item", "message": "each item must be a JSON object"}])
    rid = raw.get("registration_id")
    rid = rid if isinstance(rid, str) else None
    try:
        return ItemResult(index, Registration.model_validate(raw), rid, [])
    except ValidationError as exc:
        return ItemResult(index, None, rid, pydantic_errors(exc))


def parse_json_array(body: bytes) -> list[Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BodyError(f"body is not valid JSON: {exc}") from exc
    if not isinstance(data, list):
        raise BodyError("body must be a JSON array of registrations (or NDJSON / CSV with their content types)")
    return data


def parse_ndjson(body: bytes) -> list[Any]:
    items: list[Any] = []
    for line_no, line in enumerate(body.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            items.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            items.append(_Unreadable(f"line {line_no} is not valid JSON: {exc}"))
    return items


@dataclass(frozen=True)
class _Unreadable:
    message: str


CSV_INT_FIELDS = ("minutes", "task_category")


def parse_csv(body: bytes) -> list[Any]:
    try:
        text = body.decode("utf-8-sig")  # a BOM from Excel is common and harmless
    except UnicodeDecodeError as exc:
        raise BodyError(f"CSV must be UTF-8: {exc}") from exc
    first_line = text.split("\n", 1)[0]
    delimiter = ";" if first_line.count(";") > first_line.count(",") else ","
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
    if not reader.fieldnames or "registration_id" not in [f.strip() for f in reader.fieldnames]:
        raise BodyError("CSV needs a header row with field names (registration_id, school_id, group_id, date, "
                        "minutes, care_worker, task_category, funding, pupils)")
    items: list[Any] = []
    for row in reader:
        item: dict[str, Any] = {}
        for key, value in row.items():
            if key is None:
                items.append(_Unreadable("row has more cells than the header"))
                break
            key = key.strip()
            value = (value or "").strip()
            if value == "":
                continue
            if key in CSV_INT_FIELDS:
                item[key] = _csv_int(value)
            elif key == "pupils":
                # Several pupils in one cell, separated by '|' or spaces.
                item[key] = [p for p in value.replace("|", " ").split() if p]
            else:
                item[key] = value
        else:
            items.append(item)
    return items


def _csv_int(value: str) -> Any:
    # Accept "60" and the decimal-comma or decimal-point spelling of a whole number ("60,0", "60.0").
    normalized = value.replace(",", ".")
    try:
        number = float(normalized)
    except ValueError:
        return value  # pydantic reports it as not a number, naming the field
    return int(number) if number.is_integer() else value


def parse_batch(body: bytes, content_type: str) -> list[ItemResult]:
    return validate_items(read_items(body, content_type))


def read_items(body: bytes, content_type: str) -> list[Any]:
    """The body's items, not yet validated (so a batch over the item limit is refused before that work)."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media in ("application/json", ""):
        return parse_json_array(body)
    if media in ("application/x-ndjson", "application/ndjson", "application/jsonlines"):
        return parse_ndjson(body)
    if media in ("text/csv", "application/csv"):
        return parse_csv(body)
    raise UnsupportedMediaType(f"unsupported content type {media!r}: use application/json, application/x-ndjson or text/csv")


def validate_items(raw_items: list[Any]) -> list[ItemResult]:
    """One ItemResult per raw item, by index. The usual batch, every item a valid registration, is validated
    in one call (`REGISTRATIONS`: the same schema and validators as `validate_item`); when that finds any
    problem, every item is validated again on its own, so each invalid one gets exactly its own errors."""
    if all(type(raw) is dict for raw in raw_items):
        try:
            registrations = REGISTRATIONS.validate_python(raw_items)
        except ValidationError:
            pass  # per item below
        else:
            return [ItemResult(index, reg, reg.registration_id, []) for index, reg in enumerate(registrations)]
    results = []
    for index, raw in enumerate(raw_items):
        if isinstance(raw, _Unreadable):
            results.append(ItemResult(index, None, None, [{"field": "item", "message": raw.message}]))
        else:
            results.append(validate_item(index, raw))
    return results
