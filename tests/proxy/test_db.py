"""The proxy's PostgreSQL driver: billing statements prepared once per connection and run
as ``EXECUTE`` batches, with arguments rendered by ``sql_literal``.

The literal rendering is checked on its own and then against PostgreSQL itself: what goes
in comes back byte for byte, whatever quotes, backslashes or placeholders it holds.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from billing.exceptions import InsufficientFunds, ReservationRefused
from billing.ledger import ledger_post_op
from billing.metering import reserve_op, settle_op
from billing.models import LedgerEntry, ModelPrice
from billing.money import Charge, parse_usd
from billing.selectors import wallet_for_tenant
from billing.services import wallet_credit
from keys.selectors import books_audit
from keys.services import key_create
from proxy.db import (
    PostgresDatabase,
    postgres_conninfo,
    prepared_form,
    sql_literal,
)

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


class TestSqlLiteral:
    @pytest.mark.parametrize(
        ("value", "literal"),
        [
            (None, "NULL"),
            (True, "true"),
            (False, "false"),
            (0, "0"),
            (-9_223_372_036_854_775_808, "-9223372036854775808"),
            ("plain", "'plain'"),
            ("O'Brien", "'O''Brien'"),
            ("back\\slash", "'back\\slash'"),
            ("'); DROP TABLE keys_clientkey; --", "'''); DROP TABLE keys_clientkey; --'"),
            (NOW, "'2026-11-22T12:00:00+00:00'"),
        ],
    )
    def test_renders_the_types_the_billing_statements_use(
        self, value: object, literal: str
    ) -> None:
        assert sql_literal(value) == literal

    @pytest.mark.parametrize("value", [1.5, Decimal("1"), b"bytes", [1], {"a": 1}])
    def test_refuses_any_other_type(self, value: object) -> None:
        with pytest.raises(TypeError):
            sql_literal(value)

    def test_refuses_nul_and_naive_datetimes(self) -> None:
        with pytest.raises(ValueError, match="NUL"):
            sql_literal("a\x00b")
        with pytest.raises(ValueError, match="naive"):
            sql_literal(datetime(2026, 1, 1))  # noqa: DTZ001 - the point of the test


def test_prepared_form_numbers_each_name_once_in_order_of_first_use() -> None:
    form = prepared_form("s1", "SELECT %(b)s + %(a)s WHERE x = %(b)s OR y = %(c)s")
    assert form.text == "SELECT $1 + $2 WHERE x = $1 OR y = $3"
    assert form.params == ("b", "a", "c")


def funded_key(tenant, label: str):  # type: ignore[no-untyped-def]
    """A prepaid key with a $2 client budget costing $1, from a wallet credited $10."""
    wallet_credit(tenant=tenant, amount_nanos=parse_usd("10"), reason="test funds")
    return key_create(
        tenant=tenant,
        actor=None,
        label=label,
        client_budget_nanos=parse_usd("2"),
        your_cost_nanos=parse_usd("1"),
    ).key


def reserve(key, price: ModelPrice, request_id: str, cost: int):  # type: ignore[no-untyped-def]
    return reserve_op(
        request_id=request_id,
        key_id=key.pk,
        funding=key.funding,
        wallet_id=key.wallet_id,
        price_id=price.pk,
        worst_case=Charge(cost, 2 * cost),
        now=NOW,
        expires_at=NOW + timedelta(minutes=15),
    )


def run(db: PostgresDatabase, op):  # type: ignore[no-untyped-def]
    async def go():  # type: ignore[no-untyped-def]
        try:
            return await db.run(op)
        finally:
            await db.close()

    return asyncio.run(go())


@pytest.mark.parametrize("prepare", [True, False], ids=["prepared", "plain"])
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_strings_round_trip_exactly_through_the_driver(tenant, prepare: bool) -> None:  # type: ignore[no-untyped-def]
    reason = "O'Brien paid 100% \\ of %(amount)s; $1 -- é ☃"
    wallet = wallet_for_tenant(tenant=tenant)
    db = PostgresDatabase(postgres_conninfo(), min_size=1, max_size=1, prepare=prepare)

    posted = run(
        db,
        ledger_post_op(
            wallet_id=wallet.pk, kind="manual_credit", amount_nanos=5, reason=reason, now=NOW
        ),
    )

    entry = LedgerEntry.objects.get(pk=posted.entry_id)
    assert entry.reason == reason
    assert posted.balance_after_nanos == 5
    assert books_audit() == []


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_reserve_and_settle_run_prepared_and_survive_a_session_reset(
    tenant, price: ModelPrice
) -> None:  # type: ignore[no-untyped-def]
    key = funded_key(tenant, "db")
    db = PostgresDatabase(postgres_conninfo(), min_size=1, max_size=1, prepare=True)

    async def scenario():  # type: ignore[no-untyped-def]
        try:
            first = await db.run(reserve(key, price, "req-1", 1_000))
            settled = await db.run(settle_op(hold=first, actual=Charge(400, 800), now=NOW))
            # A pooler resetting the session drops every prepared statement: the next
            # batch prepares them again instead of failing.
            async with db._pool.connection() as conn:
                await conn.execute("DISCARD ALL")
            second = await db.run(reserve(key, price, "req-2", 2_000))
            again = await db.run(settle_op(hold=second, actual=Charge(2_500, 5_000), now=NOW))
            twice = await db.run(settle_op(hold=second, actual=Charge(1, 2), now=NOW))
            with pytest.raises(ReservationRefused):
                await db.run(reserve(key, price, "req-3", parse_usd("1")))
            return settled, again, twice
        finally:
            await db.close()

    settled, again, twice = asyncio.run(scenario())

    assert (settled.charged_cost_nanos, settled.charged_client_nanos) == (400, 800)
    # Clamped to the hold; a second settlement of the same request charges nothing.
    assert (again.charged_cost_nanos, again.charged_client_nanos) == (2_000, 4_000)
    assert twice is None
    key.refresh_from_db()
    assert (key.cost_spent_nanos, key.client_spent_nanos) == (2_400, 4_800)
    assert (key.cost_reserved_nanos, key.client_reserved_nanos) == (0, 0)
    assert books_audit() == []


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_check_violation_in_a_prepared_batch_rolls_it_back_and_reaches_the_rule(tenant) -> None:  # type: ignore[no-untyped-def]
    wallet = wallet_for_tenant(tenant=tenant)
    wallet_credit(tenant=tenant, amount_nanos=100, reason="test funds")
    db = PostgresDatabase(postgres_conninfo(), min_size=1, max_size=1, prepare=True)

    with pytest.raises(InsufficientFunds):
        run(
            db,
            ledger_post_op(
                wallet_id=wallet.pk,
                kind="adjustment",
                amount_nanos=-101,
                reason="too much",
                now=NOW,
            ),
        )

    wallet.refresh_from_db()
    assert wallet.balance_nanos == 100
    assert LedgerEntry.objects.filter(wallet=wallet).count() == 1
    assert books_audit() == []


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_transactions_sent_together_commit_or_fail_one_by_one(tenant) -> None:  # type: ignore[no-untyped-def]
    """Thirty debits of 1 nano queued at once against a wallet holding 10: the sender puts
    many in one message; the ones past the balance fail on the CHECK constraint, each alone,
    and the ones queued behind a failure still run."""
    wallet = wallet_for_tenant(tenant=tenant)
    wallet_credit(tenant=tenant, amount_nanos=10, reason="test funds")
    db = PostgresDatabase(postgres_conninfo(), min_size=1, max_size=2, senders=1, prepare=True)
    group_sizes: list[int] = []
    send_group = db._send_group

    async def spy(conn, group):  # type: ignore[no-untyped-def]
        group_sizes.append(len(group))
        await send_group(conn, group)

    db._send_group = spy  # type: ignore[method-assign]

    async def debit(index: int) -> str:
        try:
            await db.run(
                ledger_post_op(
                    wallet_id=wallet.pk,
                    kind="adjustment",
                    amount_nanos=-1,
                    reason=f"debit {index}",
                    now=NOW,
                )
            )
        except InsufficientFunds:
            return "refused"
        return "ok"

    async def scenario() -> list[str]:
        try:
            await db.run(
                ledger_post_op(
                    wallet_id=wallet.pk,
                    kind="manual_credit",
                    amount_nanos=1,
                    reason="warm",
                    now=NOW,
                )
            )
            return await asyncio.gather(*(debit(i) for i in range(30)))
        finally:
            await db.close()

    outcomes = asyncio.run(scenario())

    assert outcomes.count("ok") == 11
    assert outcomes.count("refused") == 19
    assert max(group_sizes) > 1  # transactions did share messages
    wallet.refresh_from_db()
    assert wallet.balance_nanos == 0
    assert LedgerEntry.objects.filter(wallet=wallet, kind="adjustment").count() == 11
    assert books_audit() == []


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_transaction_waiting_on_a_lock_does_not_hold_up_other_keys(
    tenant, price: ModelPrice
) -> None:  # type: ignore[no-untyped-def]
    """Another process holds key A's row: A's reservation waits, B's goes through."""
    import psycopg

    keys = [funded_key(tenant, label) for label in ("a", "b")]
    db = PostgresDatabase(postgres_conninfo(), min_size=1, max_size=4, senders=1, prepare=True)

    async def scenario() -> tuple[bool, float]:
        locker = await psycopg.AsyncConnection.connect(postgres_conninfo())
        try:
            await locker.execute(
                "SELECT 1 FROM keys_clientkey WHERE id = %s FOR UPDATE", [keys[0].pk]
            )
            blocked = asyncio.get_running_loop().create_task(
                db.run(reserve(keys[0], price, "req-a", 1_000))
            )
            await asyncio.sleep(0.2)
            started = asyncio.get_running_loop().time()
            await asyncio.wait_for(db.run(reserve(keys[1], price, "req-b", 1_000)), timeout=5)
            other_took = asyncio.get_running_loop().time() - started
            still_waiting = not blocked.done()
            await locker.rollback()
            await asyncio.wait_for(blocked, timeout=5)
            return still_waiting, other_took
        finally:
            await locker.close()
            await db.close()

    still_waiting, other_took = asyncio.run(scenario())

    assert still_waiting
    assert other_took < 1
    for key in keys:
        key.refresh_from_db()
        assert key.cost_reserved_nanos == 1_000
    assert books_audit() == []


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_lost_connection_fails_its_batch_and_the_next_one_gets_a_new_connection(
    tenant, price: ModelPrice
) -> None:  # type: ignore[no-untyped-def]
    """PostgreSQL drops the sender's connection (a restart, say): the batch in hand fails
    with a database error, nothing half-done stays behind, and the next batch runs on a
    fresh connection, its statements prepared again."""
    import psycopg

    key = funded_key(tenant, "db")
    db = PostgresDatabase(postgres_conninfo(), min_size=1, max_size=1, prepare=True)

    async def scenario() -> list[str]:
        outcomes = []
        try:
            hold = await db.run(reserve(key, price, "req-1", 1_000))
            await db.run(settle_op(hold=hold, actual=Charge(500, 1_000), now=NOW))
            async with db._pool.connection() as conn:  # the pool's only connection
                pid = conn.info.backend_pid
            async with await psycopg.AsyncConnection.connect(
                postgres_conninfo(), autocommit=True
            ) as admin:
                await admin.execute("SELECT pg_terminate_backend(%s, 5000)", [pid])
            for request_id in ("req-2", "req-3"):
                try:
                    hold = await db.run(reserve(key, price, request_id, 1_000))
                    await db.run(settle_op(hold=hold, actual=Charge(500, 1_000), now=NOW))
                    outcomes.append("ok")
                except psycopg.OperationalError:
                    outcomes.append("failed")
            return outcomes
        finally:
            await db.close()

    outcomes = asyncio.run(scenario())

    # The batch that met the dead connection failed; the next one ran on a new connection.
    assert outcomes == ["failed", "ok"]
    key.refresh_from_db()
    settled = 2
    assert (key.cost_spent_nanos, key.cost_reserved_nanos) == (500 * settled, 0)
    assert books_audit() == []


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_statement_the_session_already_prepared_is_taken_as_ready(
    tenant, price: ModelPrice
) -> None:  # type: ignore[no-untyped-def]
    """If the driver's record of a session's prepared statements is behind the session
    (it would PREPARE one that exists), the batch still runs, once."""
    key = funded_key(tenant, "db")
    db = PostgresDatabase(postgres_conninfo(), min_size=1, max_size=1, prepare=True)

    async def scenario() -> None:
        try:
            hold = await db.run(reserve(key, price, "req-1", 1_000))
            await db.run(settle_op(hold=hold, actual=Charge(500, 1_000), now=NOW))
            db._ready.clear()  # forget what the (still open) session has prepared
            hold = await db.run(reserve(key, price, "req-2", 1_000))
            await db.run(settle_op(hold=hold, actual=Charge(500, 1_000), now=NOW))
        finally:
            await db.close()

    asyncio.run(scenario())

    key.refresh_from_db()
    assert (key.cost_spent_nanos, key.cost_reserved_nanos) == (1_000, 0)
    assert books_audit() == []
