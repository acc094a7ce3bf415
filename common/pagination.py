"""Cursor pagination of the REST API's lists (``@cursor_paginated``: django-ninja's ``@paginate``).

A page is ``{"items": [...], "next_cursor": "..." | null}``; the next page is asked with ``?cursor=``. The
cursor is opaque: the last row's sort key, signed with SECRET_KEY for this list's path, so a page is found by
a keyset condition (``updated_at < x or (updated_at = x and pk < y)``), never an OFFSET that slows down and
skips or repeats rows while rows are added. A cursor that was altered, or comes from another list, is a 400.

The view returns a queryset ordered by ``pk`` or by one field then ``pk``, both in the same direction.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, get_type_hints

from django.core import signing
from django.db.models import Model, Q, QuerySet
from django.http import HttpRequest
from ninja import Field, Schema
from ninja.pagination import PaginationBase, paginate

from common.problems import Problem

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
_SALT = "api.cursor:"


def _encoded(value: Any) -> Any:
    return {"dt": value.isoformat()} if isinstance(value, datetime) else value


def _decoded(value: Any) -> Any:
    return datetime.fromisoformat(value["dt"]) if isinstance(value, dict) else value


def _keyset(ordering: tuple[str, ...]) -> tuple[list[str], bool]:
    """The sort fields (``pk`` last) and whether they descend; refuses orderings a cursor cannot follow."""
    fields = [name.lstrip("-") for name in ordering]
    directions = {name.startswith("-") for name in ordering}
    if not fields or fields[-1] not in ("pk", "id") or len(fields) > 2 or len(directions) != 1:
        raise ValueError(
            f"cursor pagination needs an ordering of (field,) pk in one direction, not {ordering}"
        )
    return fields, directions.pop()


class CursorPagination(PaginationBase):
    class Input(Schema):
        cursor: str | None = Field(
            None, max_length=500, description="`next_cursor` of the previous page; absent for the first page"
        )
        limit: int = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="How many items per page")

    class Output(Schema):
        items: list[Any]
        next_cursor: str | None = Field(description="Ask for the next page with ?cursor=; null on the last")

    items_attribute = "items"

    def paginate_queryset(
        self, queryset: QuerySet[Model], pagination: Any, request: HttpRequest, **params: Any
    ) -> dict[str, Any]:
        fields, descending = _keyset(tuple(str(o) for o in queryset.query.order_by))
        salt = _SALT + request.path
        if pagination.cursor:
            try:
                position = signing.loads(pagination.cursor, salt=salt)
            except signing.BadSignature as exc:
                raise Problem(400, "the cursor is not one this list gave out", code="invalid_cursor") from exc
            if not isinstance(position, list) or len(position) != len(fields):
                raise Problem(400, "the cursor is not one this list gave out", code="invalid_cursor")
            queryset = queryset.filter(self._after(fields, [_decoded(v) for v in position], descending))
        rows = list(queryset[: pagination.limit + 1])
        next_cursor = None
        if len(rows) > pagination.limit:
            rows = rows[: pagination.limit]
            last = rows[-1]
            next_cursor = signing.dumps([_encoded(getattr(last, f)) for f in fields], salt=salt)
        return {"items": rows, "next_cursor": next_cursor}

    @staticmethod
    def _after(fields: list[str], values: list[Any], descending: bool) -> Q:
        beyond = "lt" if descending else "gt"
        if len(fields) == 1:
            return Q(**{f"pk__{beyond}": values[0]})
        field, pk = values
        return Q(**{f"{fields[0]}__{beyond}": field}) | Q(**{fields[0]: field, f"pk__{beyond}": pk})


def cursor_paginated(view: Callable[..., Any]) -> Callable[..., Any]:
    """``@paginate(CursorPagination)`` for a view in a module with postponed annotations: django-ninja reads
    the parameters' annotations through its wrapper, in its own module, where the view's names are unknown,
    so they are resolved here first."""
    view.__annotations__ = get_type_hints(view, include_extras=True)
    paginated: Callable[..., Any] = paginate(CursorPagination)(view)
    return paginated
