"""Model instances from the rows of raw statements, and raw statements from model instances, as the ORM
would build them: for the few statements that read and write several tables in one round trip (the reply
claim, a message stored straight into its open conversation), where the ORM has no single query.

- ``returning(model, alias)``: a RETURNING list of every column of ``model``, aliased ``<alias>__<column>``;
- ``instance(model, values)``: the instance of those values (each field's converters applied: JSON decoded,
  and so on), marked as loaded from the database;
- ``insert_select(instance, expressions)``: ``INSERT INTO <table> (every column) SELECT ...`` of an unsaved
  instance, each value prepared by its field as ``save()`` would (defaults, auto_now), so a field added to
  the model is covered without touching the statement;
- ``stored(instance)``: an instance a raw statement just wrote, marked saved.

Built on public field APIs (``get_db_converters``, ``get_db_prep_save``, ``pre_save``) and ``Model.from_db``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, TypeVar

from django.db import connection, models

ModelT = TypeVar("ModelT", bound=models.Model)


@functools.cache
def row_columns(model: type[models.Model]) -> list[tuple[str, str, list[Any], Any]]:
    """(column, attname, converters, column expression) of each concrete field of ``model``, in order: to
    build instances from a raw statement's rows as the ORM would (JSON decoded, and so on)."""
    return [
        (str(field.column), field.attname, field.get_db_converters(connection), field.cached_col)
        for field in model._meta.concrete_fields
    ]


def returning(model: type[models.Model], alias: str) -> str:
    quote = connection.ops.quote_name
    return ", ".join(
        f"{alias}.{quote(column)} AS {quote(f'{alias}__{column}')}" for column, *_ in row_columns(model)
    )


def instance(model: type[ModelT], values: Sequence[Any]) -> ModelT:
    columns = row_columns(model)
    converted = []
    for (_, _, converters, expression), value in zip(columns, values, strict=True):
        for convert in converters:
            value = convert(value, expression, connection)
        converted.append(value)
    return model.from_db(connection.alias, [attname for _, attname, *_ in columns], converted)


def insert_select(
    instance: models.Model, *, expressions: dict[str, str] | None = None
) -> tuple[str, list[Any]]:
    """``INSERT INTO <messages> (every column) SELECT ...`` of the unsaved ``instance``, for one statement that
    reads and writes at once (the caller adds FROM, WHERE and RETURNING). A column named in ``expressions``
    (by attname) takes that SQL over the caller's FROM; every other takes the instance's value, prepared by
    its field as ``save()`` would (defaults, auto_now), so a field added to the model is covered here too."""
    columns: list[str] = []
    selects: list[str] = []
    params: list[Any] = []
    for field in type(instance)._meta.concrete_fields:
        if field.primary_key or field.column is None:
            continue
        columns.append(connection.ops.quote_name(field.column))
        if expressions and field.attname in expressions:
            selects.append(expressions[field.attname])
        else:
            selects.append("%s")
            params.append(field.get_db_prep_save(field.pre_save(instance, True), connection))
    table = connection.ops.quote_name(type(instance)._meta.db_table)
    return f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(selects)}", params


def stored(instance: ModelT) -> ModelT:
    """An instance built from a row a raw statement just wrote: saved, as the ORM would have left it."""
    instance._state.adding = False
    instance._state.db = connection.alias
    return instance
