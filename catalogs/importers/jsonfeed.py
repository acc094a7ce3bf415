"""JSON: an array of product objects (streamed, one object at a time), an object holding such an array under
``products`` / ``items`` / ``data``, or JSON Lines (one object per line).

Nested values are flattened the way feeds use them: ``{"price": {"amount": 9.99, "currency": "EUR"}}`` ->
``"9.99 EUR"``; an ``attributes`` object merges into the row; lists of strings are joined with commas and
lists of objects with a ``url`` take the first.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from catalogs.importers.base import ColumnPlan, FileRejected, RowError, RowResult, build_item

READ_CHUNK = 1 << 16
WRAPPER_KEYS = ("products", "items", "data", "entries")


def _flatten(obj: dict[str, Any]) -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in obj.items():
        if key == "attributes" and isinstance(value, dict):
            for k, v in value.items():
                flat.setdefault(str(k), _scalar(v))
            continue
        flat[str(key)] = _scalar(value)
    return flat


def _scalar(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    if isinstance(value, dict):
        amount = value.get("amount", value.get("value"))
        if amount is not None:
            return f"{amount} {value.get('currency', value.get('currency_code', ''))}".strip()
        if "url" in value:
            return str(value["url"])
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        if value and all(isinstance(v, dict) for v in value):
            return _scalar(value[0])
        return ", ".join(_scalar(v) for v in value)
    return str(value)


def _array_objects(path: Path) -> Iterator[tuple[int, Any]]:
    """The elements of the top-level JSON array, decoded one at a time from a sliding buffer."""
    decoder = json.JSONDecoder()
    with path.open(encoding="utf-8-sig") as f:
        buffer = f.read(READ_CHUNK).lstrip()
        if not buffer.startswith("["):
            raise FileRejected("the JSON file is not an array of products")
        pos, index, eof = 1, 0, False
        while True:
            while True:
                # Skip whitespace and the comma between elements; refill when the buffer runs low.
                while pos < len(buffer) and buffer[pos] in " \t\r\n,":
                    pos += 1
                if pos < len(buffer) or eof:
                    break
                buffer, pos = f.read(READ_CHUNK), 0
                eof = not buffer
            if pos >= len(buffer):
                raise FileRejected("the JSON array is not closed (truncated file?)")
            if buffer[pos] == "]":
                return
            while True:
                try:
                    value, end = decoder.raw_decode(buffer, pos)
                    break
                except json.JSONDecodeError as exc:
                    more = "" if eof else f.read(READ_CHUNK)
                    if not more:
                        raise FileRejected(
                            f"element {index + 1} of the JSON array is not valid JSON ({exc.msg})"
                        ) from exc
                    buffer, pos = buffer[pos:] + more, 0
            index += 1
            yield index, value
            pos = end
            if len(buffer) - pos < READ_CHUNK // 2 and not eof:
                more = f.read(READ_CHUNK)
                eof = not more
                buffer, pos = buffer[pos:] + more, 0


def _wrapped_objects(path: Path) -> Iterator[tuple[int, Any]]:
    # A wrapper object cannot be streamed without a streaming parser; the upload size limit bounds it.
    with path.open(encoding="utf-8-sig") as f:
        try:
            document = json.load(f)
        except json.JSONDecodeError as exc:
            raise FileRejected(f"the file is not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    if isinstance(document, dict):
        for key in WRAPPER_KEYS:
            if isinstance(document.get(key), list):
                yield from enumerate(document[key], start=1)
                return
    raise FileRejected(f"the JSON object holds no product array (expected one of: {', '.join(WRAPPER_KEYS)})")


def json_results(path: Path, mapping: Mapping[str, str] | None = None) -> Iterator[RowResult]:
    with path.open(encoding="utf-8-sig") as f:
        start = f.read(64).lstrip()[:1]
    objects = _array_objects(path) if start == "[" else _wrapped_objects(path)
    yield from _items(objects, mapping)


def jsonl_results(path: Path, mapping: Mapping[str, str] | None = None) -> Iterator[RowResult]:
    def objects() -> Iterator[tuple[int, Any]]:
        with path.open(encoding="utf-8-sig") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    yield number, json.loads(line)
                except json.JSONDecodeError as exc:
                    yield number, RowError(number, "", f"not valid JSON ({exc.msg})")

    yield from _items(objects(), mapping)


def _items(objects: Iterator[tuple[int, Any]], mapping: Mapping[str, str] | None) -> Iterator[RowResult]:
    plans: dict[frozenset[str], ColumnPlan] = {}
    for number, obj in objects:
        if isinstance(obj, RowError):
            yield obj
            continue
        if not isinstance(obj, dict):
            yield RowError(number, "", "not a JSON object")
            continue
        record = _flatten(obj)
        # Objects may differ in their keys; a plan per key set (they repeat, so this stays small).
        key = frozenset(record)
        plan = plans.get(key)
        if plan is None:
            if len(plans) > 1000:
                plans.clear()
            plan = plans[key] = ColumnPlan.from_header(list(record), mapping)
        yield build_item(record, plan, number)
