"""The proxy's database access: the billing operations on an async driver, and raw reads.

On PostgreSQL the hot path uses an async psycopg connection pool: no ORM, no thread hop,
each billing statement prepared once per connection. On SQLite (``make run`` without
``DATABASE_URL``) it runs the same operations through Django's connection in a worker
thread. Either way the money rules are the ones in ``billing.metering`` /
``billing.ledger``: this module only *runs* their statements.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import psycopg
from asgiref.sync import sync_to_async
from django import db as django_db
from django.conf import settings
from django.db import connection, transaction
from psycopg.adapt import Transformer
from psycopg.errors import error_from_result
from psycopg.generators import execute
from psycopg.pq import ExecStatus, TransactionStatus

from billing.sqlops import (
    Batch,
    ConstraintViolated,
    Op,
    Rows,
    Sql,
    check_violation_name,
    run_sync,
)
from proxy.coalesce import Coalescer

T = TypeVar("T")


class RowsRefused(Exception):
    """The database refused a value of some row given to ``insert_many`` (a string it
    cannot store or too long for its column, a number out of range, a key that no longer
    exists): none of the rows was written, and the same rows without the bad one can be."""


# What a refused value raises: the database's data and integrity errors, and the driver's
# own refusals before sending (a lone surrogate cannot be encoded; an integer too large for
# SQLite).
_PSYCOPG_REFUSALS = (psycopg.DataError, psycopg.IntegrityError, UnicodeError, OverflowError)
_DJANGO_REFUSALS = (django_db.DataError, django_db.IntegrityError, UnicodeError, OverflowError)


def _refusal(exc: BaseException) -> RowsRefused:
    # The first line only: PostgreSQL's context lines quote the refused value.
    first_line = (str(exc).splitlines() or [""])[0]
    return RowsRefused(f"{type(exc).__name__}: {first_line}")


class Database(Protocol):
    async def run(self, op: Op[T]) -> T: ...

    async def fetch(self, sql: str, params: dict[str, Any]) -> Rows: ...

    async def insert_many(
        self, table: str, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]
    ) -> None:
        """Insert every row, or none: raises :class:`RowsRefused` when a value is refused."""
        ...

    async def close(self) -> None: ...


def as_aware(value: Any) -> datetime | None:
    """Datetimes from raw SQLite rows come back naive (UTC); PostgreSQL's are aware."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def as_list(value: Any) -> list[Any]:
    """JSON columns: PostgreSQL returns the value, SQLite the text."""
    if value is None:
        return []
    if isinstance(value, str):
        return list(json.loads(value))
    return list(value)


# ``%(name)s`` placeholders of the billing operations' SQL (``billing.sqlops``).
PLACEHOLDER = re.compile(r"%\((\w+)\)s")


@dataclass(frozen=True, slots=True)
class Prepared:
    """A billing statement as a server-side prepared statement: ``$n`` is ``params[n-1]``."""

    name: str
    text: str
    params: tuple[str, ...]


def prepared_form(name: str, text: str) -> Prepared:
    params: list[str] = []

    def positional(match: re.Match[str]) -> str:
        if match.group(1) not in params:
            params.append(match.group(1))
        return f"${params.index(match.group(1)) + 1}"

    return Prepared(name, PLACEHOLDER.sub(positional, text), tuple(params))


APPLICATION_NAME = "tollgate-proxy"
FATAL_ERROR = ExecStatus.FATAL_ERROR
TUPLES_OK = ExecStatus.TUPLES_OK


def _rows(transformer: Any, result: Any) -> Rows:
    if result.status != TUPLES_OK:
        return []
    transformer.set_pgresult(result)
    return transformer.load_rows(0, result.ntuples, tuple)  # type: ignore[no-any-return]


def sql_literal(value: object) -> str:
    """An SQL literal for an ``EXECUTE`` argument (its type comes from the statement).

    Only the types the billing statements use; anything else is refused rather than
    guessed. Strings follow ``standard_conforming_strings`` (set on every connection):
    a quote is doubled, a backslash is an ordinary character; NUL cannot be sent at all.
    """
    if value is None:
        return "NULL"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if type(value) is int:
        return str(value)
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("a string parameter contains NUL")
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime parameter")
        return "'" + value.isoformat() + "'"
    raise TypeError(f"unsupported parameter type {type(value).__name__}")


class _Pending:
    """A batch waiting for a connection, and the future its caller awaits."""

    __slots__ = ("batch", "future")

    def __init__(self, batch: Batch, future: asyncio.Future[list[Rows]]) -> None:
        self.batch = batch
        self.future = future


class PostgresDatabase:
    """The hot path's PostgreSQL access.

    Batches are not sent one per connection: they queue (``proxy.coalesce``), and each of a
    few senders takes every batch waiting (up to ``GROUP_MAX``) and sends them as *one*
    simple-protocol message, each batch wrapped in its own ``BEGIN … COMMIT``. PostgreSQL runs them one
    after another as separate transactions, in one round trip. At light load a batch is
    alone in its message, so nothing waits; under load, N requests' reservations and
    settlements cost one round trip and one backend wake-up instead of N, and they no
    longer queue on the key row's lock in N backends (on this 2-core machine a round trip
    to another process costs ~0.1–0.2 ms of CPU on each side, and lock hand-offs between
    backends more).

    An error ends the message where it happens: the batches before it have committed, the
    failed one is rolled back and its caller gets the error (a CHECK violation becomes the
    rule's ``ConstraintViolated``), and the batches after it never ran and are queued again.

    One transaction waiting for a lock (another process holding a key's row) must not hold
    up every other key's requests behind it: once every sender's message has been out for
    over ``STALL_SECONDS``, a new batch starts a sender of its own (up to the pool's size).

    Statements are prepared once per connection (``PREPARE``, sent ahead of the first
    message that needs them) and run as ``EXECUTE`` with arguments rendered by
    :func:`sql_literal`: PostgreSQL parses and plans each billing statement once per
    connection instead of once per request (measured here: half its CPU per request).
    ``prepare=False`` sends the statements themselves (for a pooler in transaction mode,
    such as PgBouncer's, which keeps no session state).
    """

    GROUP_MAX = 64
    STALL_SECONDS = 0.05

    def __init__(
        self,
        conninfo: str,
        *,
        min_size: int = 2,
        max_size: int = 16,
        senders: int = 1,
        synchronous_commit: bool = True,
        prepare: bool = True,
    ) -> None:
        from psycopg_pool import AsyncConnectionPool

        options = "-c standard_conforming_strings=on"
        if not synchronous_commit:
            options += " -c synchronous_commit=off"
        self._pool = AsyncConnectionPool(
            conninfo,
            min_size=min_size,
            max_size=max_size,
            open=False,
            # Named, so that pg_stat_activity shows which connections are the proxy's.
            kwargs={"autocommit": True, "options": options, "application_name": APPLICATION_NAME},
        )
        self._prepare = prepare
        self._opened = False
        self._opening: asyncio.Lock | None = None
        # When each message now in flight was sent (see _stalled).
        self._in_flight: dict[int, float] = {}
        self._sender = Coalescer(
            self._send_on_a_connection,
            senders=min(senders, max_size),
            group_max=self.GROUP_MAX,
            may_add=self._stalled,
            most_senders=max_size,
        )
        # Statement text -> its prepared form (one name per text, for every connection),
        # and the names each connection has prepared so far.
        self._forms: dict[str, Prepared] = {}
        self._ready: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()

    async def _ensure_open(self) -> None:
        if self._opened:
            return
        # Many first requests arrive together; the pool must be opened exactly once.
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if not self._opened:
                await self._pool.open(wait=True)
                self._opened = True

    async def run(self, op: Op[T]) -> T:
        """Run an operation, each batch in its own transaction, in one round trip."""
        await self._ensure_open()
        results: list[Rows] | None = None
        violation: ConstraintViolated | None = None
        while True:
            try:
                batch = op.throw(violation) if violation is not None else op.send(results)  # type: ignore[arg-type]
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            try:
                results, violation = await self._run_batch(batch), None
            except psycopg.errors.CheckViolation as exc:
                results, violation = None, ConstraintViolated(check_violation_name(exc) or "")

    def _run_batch(self, batch: Batch) -> asyncio.Future[list[Rows]]:
        pending = _Pending(batch, asyncio.get_running_loop().create_future())
        self._sender.submit(pending)
        return pending.future

    async def _send_on_a_connection(self, group: list[_Pending]) -> None:
        try:
            async with self._pool.connection() as conn:
                await self._send_group(conn, group)
        except Exception as exc:
            # The connection failed (or could not be had): whether the group's
            # transactions committed is unknown, as for any lost connection.
            for pending in group:
                if not pending.future.done():
                    pending.future.set_exception(exc)

    def _stalled(self) -> bool:
        """Every sender is waiting on a message sent over ``STALL_SECONDS`` ago (a
        transaction waiting for a row lock someone holds, say): then a batch, maybe for
        another key or tenant, gets a sender of its own rather than queueing behind it."""
        if not self._in_flight or len(self._in_flight) < self._sender.sending:
            return False
        started = time.monotonic() - self.STALL_SECONDS
        return all(sent < started for sent in self._in_flight.values())

    def _form(self, text: str) -> Prepared:
        form = self._forms.get(text)
        if form is None:
            form = self._forms[text] = prepared_form(f"tollgate_{len(self._forms) + 1}", text)
        return form

    @staticmethod
    def _inline(statement: Sql) -> str:
        """The statement itself, its arguments rendered in place (``prepare=False``)."""
        params = statement.params
        return PLACEHOLDER.sub(lambda match: sql_literal(params[match.group(1)]), statement.text)

    @staticmethod
    def _execute(form: Prepared, statement: Sql) -> str:
        if not form.params:
            return f"EXECUTE {form.name}"
        args = ", ".join([sql_literal(statement.params[p]) for p in form.params])
        return f"EXECUTE {form.name}({args})"

    async def _send_group(self, conn: Any, group: list[_Pending]) -> None:
        transactions: list[str] = []
        preparing: dict[str, Prepared] = {}
        ready = self._ready.setdefault(conn, set()) if self._prepare else set()
        for pending in group:
            transactions.append("BEGIN")
            for statement in pending.batch.statements:
                if self._prepare:
                    form = self._form(statement.text)
                    if form.name not in ready:
                        preparing[form.name] = form
                    transactions.append(self._execute(form, statement))
                else:
                    transactions.append(self._inline(statement))
            transactions.append("COMMIT")
        # The PREPAREs go ahead of the transactions: a prepared statement belongs to the
        # session, not to a transaction.
        parts = [f"PREPARE {form.name} AS {form.text}" for form in preparing.values()]
        parts += transactions
        pgconn = conn.pgconn
        pgconn.send_query(";\n".join(parts).encode())
        self._in_flight[id(group)] = time.monotonic()
        try:
            results = await conn.wait(execute(pgconn))
        finally:
            del self._in_flight[id(group)]

        failed = results[-1] if results and results[-1].status == FATAL_ERROR else None
        if failed is not None and len(results) <= len(preparing):
            await self._prepare_failed(conn, group, list(preparing.values()), failed, results)
            return
        if self._prepare:
            self._ready[conn].update(preparing)
        transformer = Transformer(conn)
        position = len(preparing)
        for index, pending in enumerate(group):
            end = position + len(pending.batch.statements) + 2  # with BEGIN and COMMIT
            if failed is not None and end >= len(results):
                await self._failed(conn, pending, failed, group[index + 1 :])
                return
            rows = [_rows(transformer, result) for result in results[position + 1 : end - 1]]
            if not pending.future.done():
                pending.future.set_result(rows)
            position = end

    async def _prepare_failed(
        self, conn: Any, group: list[_Pending], forms: list[Prepared], failed: Any, results: Any
    ) -> None:
        """A PREPARE failed (nothing of the group ran). The ones before it stand; one that
        the session already had is now known to be there, and the group goes again; any
        other error is a defect in a statement, and every caller gets it."""
        ready = self._ready.setdefault(conn, set())
        made = len(results) - 1
        ready.update(form.name for form in forms[:made])
        error = error_from_result(failed)
        if isinstance(error, psycopg.errors.DuplicatePreparedStatement):
            ready.add(forms[made].name)
            self._sender.put_back(group)
            return
        for pending in group:
            if not pending.future.done():
                pending.future.set_exception(error)

    async def _failed(
        self, conn: Any, pending: _Pending, failed: Any, unsent: list[_Pending]
    ) -> None:
        """The message stopped at ``pending``'s error: roll it back, answer its caller and
        queue the batches after it again (they never ran)."""
        pgconn = conn.pgconn
        if pgconn.transaction_status != TransactionStatus.IDLE:
            pgconn.send_query(b"ROLLBACK")
            await conn.wait(execute(pgconn))
        error = error_from_result(failed)
        if isinstance(error, psycopg.errors.InvalidSqlStatementName):
            # The session lost its prepared statements (DISCARD ALL by a pooler, say); the
            # batch did not run. Prepare them again and run it once more.
            self._ready.pop(conn, None)
            unsent = [pending, *unsent]
        elif not pending.future.done():
            pending.future.set_exception(error)
        self._sender.put_back(unsent)

    async def fetch(self, sql: str, params: dict[str, Any]) -> Rows:
        await self._ensure_open()
        async with self._pool.connection() as conn:
            cursor = await conn.execute(sql, params)
            return await cursor.fetchall()

    async def insert_many(
        self, table: str, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]
    ) -> None:
        await self._ensure_open()
        from psycopg import sql

        statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
            sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
        )
        try:
            async with self._pool.connection() as conn:
                async with conn.cursor() as cursor:
                    async with cursor.copy(statement) as copy:
                        for row in rows:
                            await copy.write_row(row)
        except _PSYCOPG_REFUSALS as exc:
            raise _refusal(exc) from exc

    async def close(self) -> None:
        if self._opened:
            await self._pool.close()
            self._opened = False


class DjangoDatabase:
    """Development fallback: Django's own connection, in its database thread."""

    async def run(self, op: Op[T]) -> T:
        return await sync_to_async(run_sync)(op)

    async def fetch(self, sql: str, params: dict[str, Any]) -> Rows:
        return await sync_to_async(_fetch_sync)(sql, params)

    async def insert_many(
        self, table: str, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]
    ) -> None:
        try:
            await sync_to_async(_insert_many_sync)(table, columns, rows)
        except _DJANGO_REFUSALS as exc:
            raise _refusal(exc) from exc

    async def close(self) -> None:
        return None


def _fetch_sync(sql: str, params: dict[str, Any]) -> Rows:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def _insert_many_sync(table: str, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> None:
    quoted = ", ".join(connection.ops.quote_name(c) for c in columns)
    placeholders = ", ".join(["%s"] * len(columns))
    adapt = connection.ops.adapt_datetimefield_value
    prepared = [tuple(adapt(v) if isinstance(v, datetime) else v for v in row) for row in rows]
    # One transaction: in autocommit each row would commit alone, and a refused row would
    # leave the rows before it written (then written twice when the batch is split).
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO {connection.ops.quote_name(table)} ({quoted}) VALUES ({placeholders})",  # noqa: S608 - names are ours
            prepared,
        )


def postgres_conninfo() -> str:
    db = settings.DATABASES["default"]
    parts = {
        "dbname": db.get("NAME"),
        "user": db.get("USER"),
        "password": db.get("PASSWORD"),
        "host": db.get("HOST"),
        "port": db.get("PORT"),
    }
    from psycopg.conninfo import make_conninfo

    return make_conninfo(**{k: str(v) for k, v in parts.items() if v})


def database_from_settings() -> Database:
    if settings.IS_POSTGRES:
        return PostgresDatabase(
            postgres_conninfo(),
            min_size=settings.PROXY_DB_POOL_MIN,
            max_size=settings.PROXY_DB_POOL_MAX,
            senders=settings.PROXY_DB_SENDERS,
            synchronous_commit=settings.PROXY_SYNCHRONOUS_COMMIT,
            prepare=settings.PROXY_DB_PREPARE,
        )
    return DjangoDatabase()
