"""JSON: an array of product objects (streamed, one object at a time), an object holding such an array under
``products`` / ``items`` / ``data`` / ``entries`` (streamed too), or JSON Lines (one object per line).

Memory is bounded by ``CATALOG_MAX_RECORD_BYTES`` (one element, one line) whatever the file's size; deeper
than ``MAX_DEPTH`` levels is refused.

Nested values are flattened the way feeds use them: ``{"price": {"amount": 9.99, "currency": "EUR"}}`` ->
``"9.99 EUR"``; an ``attributes`` object merges into the row; lists of strings are joined with commas and
lists of objects with a ``url`` take the first.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

from django.conf import settings

from catalogs.importers.base import ColumnPlan, FileRejected, RowError, RowResult, build_item

READ_CHUNK = 1 << 16
# Product objects are shallow; anything deeper is hostile (and would recurse in the decoder and in _scalar).
MAX_DEPTH = 32
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


class _Stream:
    """A JSON text read through a bounded window: values are decoded one at a time with ``raw_decode``.

    The window holds at most one value plus one read, and a value may not exceed ``max_value`` characters:
    memory stays bounded whatever the file, a huge element is refused instead of re-parsed as the buffer
    grows (reads double while a value is incomplete, so finding its end costs at most twice its size), and a
    value nested deeper than ``MAX_DEPTH`` is refused before anything recurses into it.
    """

    def __init__(self, f: TextIO, max_value: int) -> None:
        self.f = f
        self.max_value = max_value
        self.buffer = ""
        self.pos = 0
        self.eof = False
        self.decoder = json.JSONDecoder()

    def _fill(self, size: int = READ_CHUNK) -> bool:
        if self.eof:
            return False
        more = self.f.read(size)
        if not more:
            self.eof = True
            return False
        self.buffer = self.buffer[self.pos :] + more
        self.pos = 0
        return True

    def peek(self) -> str:
        """The next character that is not whitespace ('' at the end)."""
        while True:
            while self.pos < len(self.buffer) and self.buffer[self.pos] in " \t\r\n":
                self.pos += 1
            if self.pos < len(self.buffer) or not self._fill():
                return self.buffer[self.pos] if self.pos < len(self.buffer) else ""

    def take(self, char: str, what: str) -> None:
        if self.peek() != char:
            raise FileRejected(f"the JSON file is not valid: expected {char!r} {what}")
        self.pos += 1

    def value(self, what: str) -> Any:
        """Decode the next value (refused past ``max_value`` characters or ``MAX_DEPTH`` levels)."""
        self.peek()
        read = READ_CHUNK
        while True:
            if len(self.buffer) - self.pos < READ_CHUNK // 2 and not self.eof:
                self._fill(READ_CHUNK)  # low water: top up once per half window, not per element
            try:
                value, end = self.decoder.raw_decode(self.buffer, self.pos)
            except RecursionError as exc:
                raise FileRejected(f"{what} is nested more than {MAX_DEPTH} levels deep") from exc
            except json.JSONDecodeError as exc:
                if len(self.buffer) - self.pos > self.max_value:
                    raise FileRejected(
                        f"{what} is larger than {self.max_value:,} characters (CATALOG_MAX_RECORD_BYTES)"
                    ) from exc
                if self.eof:
                    raise FileRejected(f"{what} is not valid JSON ({exc.msg})") from exc
                read = max(read, len(self.buffer) - self.pos)  # double what is buffered
                self._fill(read)
                continue
            if end == len(self.buffer) and not self.eof:
                self._fill(read)  # a number cut by the window's edge would decode short: read on
                continue
            if end - self.pos > self.max_value:
                raise FileRejected(
                    f"{what} is larger than {self.max_value:,} characters (CATALOG_MAX_RECORD_BYTES)"
                )
            self.pos = end
            if _too_deep(value):
                raise FileRejected(f"{what} is nested more than {MAX_DEPTH} levels deep")
            return value

    def array(self, what: str) -> Iterator[tuple[int, Any]]:
        """The elements of the array starting here, one at a time."""
        self.take("[", f"at the start of {what}")
        index = 0
        if self.peek() == "]":
            self.pos += 1
            return
        while True:
            index += 1
            yield index, self.value(f"element {index} of {what}")
            following = self.peek()
            if following == ",":
                self.pos += 1
            elif following == "]":
                self.pos += 1
                return
            elif following == "":
                raise FileRejected(f"{what} is not closed (truncated file?)")
            else:
                raise FileRejected(f"element {index} of {what} is not followed by ',' or ']'")


def _too_deep(value: Any) -> bool:
    """Whether a decoded value nests deeper than MAX_DEPTH (checked without recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        current, depth = stack.pop()
        children = (
            current.values() if isinstance(current, dict) else current if isinstance(current, list) else ()
        )
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > MAX_DEPTH:
                    return True
                stack.append((child, depth + 1))
    return False


def _array_objects(path: Path) -> Iterator[tuple[int, Any]]:
    """The elements of the top-level JSON array, decoded one at a time."""
    with path.open(encoding="utf-8-sig") as f:
        stream = _Stream(f, settings.CATALOG_MAX_RECORD_BYTES)
        if stream.peek() != "[":
            raise FileRejected("the JSON file is not an array of products")
        yield from stream.array("the JSON array")


def _wrapped_objects(path: Path) -> Iterator[tuple[int, Any]]:
    """The product array inside a wrapper object (``{"products": [...]}``), streamed like a bare array: the
    first of WRAPPER_KEYS that holds an array is used; other members are decoded and dropped one by one."""
    with path.open(encoding="utf-8-sig") as f:
        stream = _Stream(f, settings.CATALOG_MAX_RECORD_BYTES)
        stream.take("{", "at the start of the file")
        while stream.peek() not in ("}", ""):
            key = stream.value("a key of the JSON object")
            if not isinstance(key, str):
                raise FileRejected("the JSON file is not valid: an object key is not a string")
            stream.take(":", f"after the key {key[:50]!r}")
            if key in WRAPPER_KEYS and stream.peek() == "[":
                yield from stream.array(f"the {key!r} array")
                return
            stream.value(f"the value of {key[:50]!r}")
            if stream.peek() == ",":
                stream.pos += 1
    raise FileRejected(f"the JSON object holds no product array (expected one of: {', '.join(WRAPPER_KEYS)})")


def json_results(path: Path, mapping: Mapping[str, str] | None = None) -> Iterator[RowResult]:
    with path.open(encoding="utf-8-sig") as f:
        start = f.read(64).lstrip()[:1]
    objects = _array_objects(path) if start == "[" else _wrapped_objects(path)
    yield from _items(objects, mapping)


def jsonl_results(path: Path, mapping: Mapping[str, str] | None = None) -> Iterator[RowResult]:
    limit = settings.CATALOG_MAX_RECORD_BYTES

    def objects() -> Iterator[tuple[int, Any]]:
        with path.open(encoding="utf-8-sig") as f:
            number = 0
            while line := f.readline(limit + 1):
                number += 1
                if len(line) > limit and not line.endswith("\n"):
                    # Never hold a line past the limit: skip the rest of it in bounded reads.
                    while (rest := f.readline(limit)) and not rest.endswith("\n"):
                        pass
                    yield number, RowError(number, "", f"line longer than {limit:,} characters")
                    continue
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield number, RowError(number, "", f"not valid JSON ({exc.msg})")
                    continue
                except RecursionError:
                    yield number, RowError(number, "", f"nested more than {MAX_DEPTH} levels deep")
                    continue
                if _too_deep(value):
                    yield number, RowError(number, "", f"nested more than {MAX_DEPTH} levels deep")
                    continue
                yield number, value

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
