"""Database operations written once and run by either driver.

Design overview
---------------
A money rule (debit a wallet, hold a reservation, settle a request) must have exactly one
implementation, yet it runs in two places: the Django services (sync, through the ORM's
connection, on SQLite or PostgreSQL) and the proxy's hot path (async psycopg on PostgreSQL,
no thread hop). So each rule is a *generator* that yields :class:`Sql` statements and
receives their rows back; it never touches a connection itself. A driver runs the
generator inside one transaction:

* :func:`run_sync` — Django's connection, under ``transaction.atomic()``.
* the proxy's async driver (``proxy.db``) — an async psycopg connection, in a transaction.

An exception raised by the generator propagates out of the driver, which rolls the whole
transaction back, so a half-applied rule is impossible. The SQL is portable (plain
``UPDATE … RETURNING``, ``CASE``; no ``LEAST``/``GREATEST``) and uses ``%(name)s`` params.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from django.db import connection, transaction

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Sql:
    text: str
    params: dict[str, Any]


Rows = list[tuple[Any, ...]]
Op = Generator[Sql, Rows, T]


def _adapt_sync(params: dict[str, Any]) -> dict[str, Any]:
    ops = connection.ops
    return {
        name: ops.adapt_datetimefield_value(value) if isinstance(value, datetime) else value
        for name, value in params.items()
    }


def run_sync(op: Op[T]) -> T:
    """Run an operation on Django's default connection, atomically."""
    with transaction.atomic(), connection.cursor() as cursor:
        try:
            statement = next(op)
            while True:
                cursor.execute(statement.text, _adapt_sync(statement.params))
                rows = cursor.fetchall() if cursor.description else []
                statement = op.send(rows)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
