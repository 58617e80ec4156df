"""keys.selectors.books_audit (what check_ledger runs: billing's wallet audit and the keys'
counters): every cached money counter agrees with the rows that explain it, after real
money flows; and each kind of tampering is named."""

from __future__ import annotations

import pytest
from django.db.models import F
from django.utils import timezone

from billing.models import LedgerEntry, Reservation, Wallet
from billing.money import Usage, parse_usd
from billing.selectors import ledger_mismatches, wallet_for_tenant
from billing.services import wallet_credit
from keys.models import ClientKey
from keys.selectors import books_audit
from keys.services import key_create, key_delete, key_top_up
from tests.keys.factories import WalletKeyFactory
from tests.metering import reserve, settle


def checks() -> set[tuple[str, int]]:
    return {(problem.check, problem.object_id) for problem in books_audit()}


@pytest.fixture
def funded(tenant):
    wallet_credit(tenant=tenant, amount_nanos=parse_usd("200"), reason="opening credit")
    return tenant


@pytest.fixture
def prepaid_key(funded) -> ClientKey:
    return key_create(
        tenant=funded,
        actor=None,
        label="prepaid",
        client_budget_nanos=parse_usd("100"),
        your_cost_nanos=parse_usd("60"),
    ).key


@pytest.fixture
def wallet_key(funded) -> ClientKey:
    return WalletKeyFactory.create(tenant=funded)


def test_books_of_every_flow_agree(funded, outsider, price, prepaid_key, wallet_key):
    p1 = reserve(
        key=prepaid_key,
        price=price,
        request_id="p1",
        worst_case=Usage(input_tokens=1_000, output_tokens=1_000),
    )
    settle(key=prepaid_key, hold=p1, price=price, usage=Usage(input_tokens=500, output_tokens=10))
    key_top_up(tenant=funded, actor=None, key_id=prepaid_key.pk, client_amount_nanos=parse_usd("5"))
    p2 = reserve(
        key=prepaid_key, price=price, request_id="p2", worst_case=Usage(input_tokens=2_000)
    )
    w1 = reserve(
        key=wallet_key,
        price=price,
        request_id="w1",
        worst_case=Usage(input_tokens=3_000, output_tokens=100),
    )
    reserve(key=wallet_key, price=price, request_id="w2", worst_case=Usage(input_tokens=10))
    settle(key=wallet_key, hold=w1, price=price, usage=Usage(input_tokens=2_999, output_tokens=7))
    assert books_audit() == []  # with holds still in flight (p2, w2)

    key_delete(tenant=funded, actor=None, key_id=prepaid_key.pk)
    # Refunds the released part.
    settle(key=prepaid_key, hold=p2, price=price, usage=Usage(input_tokens=1_000))
    assert LedgerEntry.objects.filter(kind=LedgerEntry.Kind.KEY_REFUND).count() == 2
    assert books_audit() == []
    assert ledger_mismatches() == []


def test_wallet_reserved_must_match_held_reservations(funded, price, wallet_key):
    reserve(key=wallet_key, price=price, request_id="w1", worst_case=Usage(input_tokens=1_000_000))
    wallet = wallet_for_tenant(tenant=funded)
    Wallet.objects.filter(pk=wallet.pk).update(reserved_nanos=F("reserved_nanos") + 1)
    assert checks() == {("wallet_reserved", wallet.pk)}


def test_a_hold_marked_finished_by_hand_is_caught(funded, price, wallet_key):
    reserve(key=wallet_key, price=price, request_id="w1", worst_case=Usage(input_tokens=1_000_000))
    Reservation.objects.filter(request_id="w1").update(status=Reservation.Status.SETTLED)
    wallet = wallet_for_tenant(tenant=funded)
    assert checks() == {
        ("wallet_reserved", wallet.pk),
        ("key_client_reserved", wallet_key.pk),
        ("key_cost_reserved", wallet_key.pk),
    }


def test_balance_after_must_be_the_running_sum(funded):
    second = wallet_credit(tenant=funded, amount_nanos=parse_usd("1"), reason="more")
    LedgerEntry.objects.filter(pk=second.pk).update(balance_after_nanos=parse_usd("1"))
    (problem,) = books_audit()
    assert (problem.check, problem.object_id) == ("entry_balance_after", second.pk)
    assert (problem.expected_nanos, problem.actual_nanos) == (parse_usd("201"), parse_usd("1"))


@pytest.mark.parametrize(
    ("counter", "check"),
    [
        ("client_reserved_nanos", "key_client_reserved"),
        ("cost_reserved_nanos", "key_cost_reserved"),
        ("cost_funded_nanos", "key_cost_funded"),
        ("cost_refunded_nanos", "key_cost_refunded"),
    ],
)
def test_prepaid_key_counters_must_match_their_entries(prepaid_key, counter, check):
    # Raise the budget too, so the database constraints let the counter grow.
    changes = {
        "client_budget_nanos": F("client_budget_nanos") + 1,
        "cost_funded_nanos": F("cost_funded_nanos") + 1,
        counter: F(counter) + 1,
    }
    ClientKey.objects.filter(pk=prepaid_key.pk).update(**changes)
    assert checks() == {(check, prepaid_key.pk), ("key_cost_funded", prepaid_key.pk)}


def test_wallet_key_spend_must_match_its_usage_entries(wallet_key):
    ClientKey.objects.filter(pk=wallet_key.pk).update(cost_spent_nanos=7)
    assert checks() == {("key_cost_spent", wallet_key.pk)}


def test_usage_posted_for_a_prepaid_key_is_a_double_charge(funded, prepaid_key):
    wallet = wallet_for_tenant(tenant=funded)
    LedgerEntry.objects.create(
        wallet=wallet,
        kind=LedgerEntry.Kind.USAGE,
        amount_nanos=-5,
        balance_after_nanos=wallet.balance_nanos - 5,
        reason="usage",
        client_key=prepaid_key,
        created_at=timezone.now(),
    )
    Wallet.objects.filter(pk=wallet.pk).update(balance_nanos=F("balance_nanos") - 5)
    assert checks() == {("key_usage_entries", prepaid_key.pk)}


def test_problem_reads_as_usd(funded):
    Wallet.objects.filter(tenant=funded).update(balance_nanos=parse_usd("0.000000001"))
    (problem,) = books_audit()
    assert problem.as_dict()["expected"] == "200.00"
    assert problem.as_dict()["actual"] == "0.000000001"
    assert "balance is 0.000000001, the books say 200.00" in problem.message


@pytest.mark.django_db(transaction=True)
def test_audit_outside_a_transaction_reads_one_snapshot(make_reseller):
    # Outside any transaction the audit opens its own (REPEATABLE READ on PostgreSQL).
    tenant, _ = make_reseller(balance="3")
    assert books_audit() == []
    Wallet.objects.filter(tenant=tenant).update(balance_nanos=1)
    assert {problem.check for problem in books_audit()} == {"wallet_balance"}
