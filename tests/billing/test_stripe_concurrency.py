"""Stripe's deliveries racing each other: threads, each with its own PostgreSQL connection,
released together by a barrier, each posting to the webhook through Django's test client.
Only PostgreSQL has the row locks these rules rely on (SQLite runs one writer at a time and
would prove nothing), so the module is skipped on it. Each test ends with ``check_ledger``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from billing.models import LedgerEntry, StripeEvent, TopUp
from billing.money import parse_usd
from billing.selectors import wallet_for_tenant
from billing.stripe_webhooks import stripe_events_purge
from billing.top_ups import top_up_create
from keys.services import key_create
from tests.billing.stripe_fake import (
    WEBHOOK_PATH,
    StripeFake,
    charge,
    dispute,
    event,
    signed,
    stripe_fake,
    stripe_fake_server,
)
from tests.keys.test_concurrency import assert_books_balance, run_together

__all__ = ["stripe_fake", "stripe_fake_server"]  # fixtures

pytestmark = pytest.mark.postgres

DELIVERIES = 5


def post(payload: dict[str, Any]) -> int:
    body, header = signed(payload)
    response = Client().post(
        WEBHOOK_PATH, data=body, content_type="application/json", HTTP_STRIPE_SIGNATURE=header
    )
    return response.status_code


@pytest.fixture
def paid(stripe_fake: StripeFake, transactional_db: None, tenant: Any) -> dict[str, Any]:
    """A $50 top-up whose session the payer has paid; no webhook delivered yet."""
    top_up = top_up_create(tenant=tenant, actor=None, amount_nanos=parse_usd("50"))
    return stripe_fake.complete(top_up.stripe_session_id)


def test_one_event_delivered_five_times_at_once_credits_once(paid: dict[str, Any], tenant):
    completed = event("checkout.session.completed", paid)

    outcomes = run_together(DELIVERIES, lambda i: post(completed))

    assert outcomes == [("ok", 200)] * DELIVERIES
    assert wallet_for_tenant(tenant=tenant).balance_nanos == parse_usd("50")
    assert LedgerEntry.objects.filter(kind=LedgerEntry.Kind.TOP_UP).count() == 1
    row = StripeEvent.objects.get()
    assert row.status == StripeEvent.Status.PROCESSED
    assert TopUp.objects.get().status == TopUp.Status.CREDITED
    assert_books_balance()


def test_five_events_of_one_session_at_once_credit_once(paid: dict[str, Any], tenant):
    kinds = ["checkout.session.completed"] * 3 + ["checkout.session.async_payment_succeeded"] * 2
    events = [event(kind, paid) for kind in kinds]

    outcomes = run_together(DELIVERIES, lambda i: post(events[i]))

    assert outcomes == [("ok", 200)] * DELIVERIES
    assert wallet_for_tenant(tenant=tenant).balance_nanos == parse_usd("50")
    assert LedgerEntry.objects.filter(kind=LedgerEntry.Kind.TOP_UP).count() == 1
    assert StripeEvent.objects.filter(status=StripeEvent.Status.PROCESSED).count() == DELIVERIES
    assert_books_balance()


def test_refund_events_at_once_take_back_once(paid: dict[str, Any], tenant):
    assert post(event("checkout.session.completed", paid)) == 200
    refunds = [event("charge.refunded", charge(paid, amount_refunded=2000)) for _ in range(5)]

    outcomes = run_together(DELIVERIES, lambda i: post(refunds[i]))

    assert outcomes == [("ok", 200)] * DELIVERIES
    assert wallet_for_tenant(tenant=tenant).balance_nanos == parse_usd("30")
    assert LedgerEntry.objects.filter(kind=LedgerEntry.Kind.TOP_UP_REFUND).count() == 1
    assert_books_balance()


def test_won_dispute_events_at_once_give_back_once(paid: dict[str, Any], tenant):
    assert post(event("checkout.session.completed", paid)) == 200
    opened = dispute(paid, amount=2000)
    assert post(event("charge.dispute.created", opened)) == 200
    won = {**opened, "status": "won"}
    kinds = ["charge.dispute.closed"] * 3 + ["charge.dispute.funds_reinstated"] * 2
    events = [event(kind, won) for kind in kinds]

    outcomes = run_together(DELIVERIES, lambda i: post(events[i]))

    assert outcomes == [("ok", 200)] * DELIVERIES
    assert wallet_for_tenant(tenant=tenant).balance_nanos == parse_usd("50")
    assert LedgerEntry.objects.filter(kind=LedgerEntry.Kind.TOP_UP_DISPUTE_WON).count() == 1
    assert StripeEvent.objects.filter(status=StripeEvent.Status.PROCESSED).count() == 2 + DELIVERIES
    assert TopUp.objects.get().reinstated_nanos == parse_usd("20")
    assert_books_balance()


@pytest.mark.parametrize("created_status", ["needs_response", "warning_needs_response"])
def test_a_chargeback_created_and_withdrawn_at_once_takes_once(
    paid: dict[str, Any], tenant, created_status
):
    """A chargeback (or an inquiry escalating to one) announced by ``created`` and
    ``funds_withdrawn``, each delivered more than once, all at the same moment."""
    assert post(event("checkout.session.completed", paid)) == 200
    opened = dispute(paid, amount=2000, status=created_status)
    withdrawn = {**opened, "status": "needs_response"}
    events = [event("charge.dispute.created", opened) for _ in range(2)] + [
        event("charge.dispute.funds_withdrawn", withdrawn) for _ in range(3)
    ]

    outcomes = run_together(DELIVERIES, lambda i: post(events[i]))

    assert outcomes == [("ok", 200)] * DELIVERIES
    assert wallet_for_tenant(tenant=tenant).balance_nanos == parse_usd("30")
    assert LedgerEntry.objects.filter(kind=LedgerEntry.Kind.TOP_UP_DISPUTE).count() == 1
    assert StripeEvent.objects.filter(status=StripeEvent.Status.PROCESSED).count() == 1 + DELIVERIES
    assert TopUp.objects.get().reversed_nanos == parse_usd("20")
    assert_books_balance()


def test_top_ups_credited_at_once_pay_a_shortfall_once(
    paid: dict[str, Any], stripe_fake: StripeFake, tenant
):
    """A $45 shortfall; two top-ups of $30 completed at once, with the short top-up's
    refund delivered again meanwhile: $45 collected in all, never twice."""
    assert post(event("checkout.session.completed", paid)) == 200
    key_create(
        tenant=tenant,
        actor=None,
        label="spent",
        client_budget_nanos=parse_usd("45"),
        your_cost_nanos=parse_usd("45"),
    )
    refund = charge(paid, amount_refunded=5000)
    assert post(event("charge.refunded", refund)) == 200
    sessions = []
    for _ in range(2):
        top_up = top_up_create(tenant=tenant, actor=None, amount_nanos=parse_usd("30"))
        sessions.append(stripe_fake.complete(top_up.stripe_session_id))
    events = [
        event("checkout.session.completed", sessions[0]),
        event("checkout.session.completed", sessions[1]),
        event("checkout.session.completed", sessions[0]),
        event("charge.refunded", refund),
        event("checkout.session.async_payment_succeeded", sessions[1]),
    ]

    outcomes = run_together(DELIVERIES, lambda i: post(events[i]))

    assert outcomes == [("ok", 200)] * DELIVERIES
    assert wallet_for_tenant(tenant=tenant).balance_nanos == parse_usd("15")
    paid_by = sorted(TopUp.objects.values_list("earlier_shortfall_paid_nanos", flat=True))
    assert sum(paid_by) == parse_usd("45")
    short = TopUp.objects.get(stripe_session_id=paid["id"])
    assert (short.reversed_nanos, short.shortfall_nanos) == (parse_usd("50"), 0)
    assert_books_balance()


def test_a_purged_event_delivered_again_while_the_purge_runs_credits_once(
    paid: dict[str, Any], tenant, settings
):
    completed = event("checkout.session.completed", paid)
    assert post(completed) == 200
    settings.STRIPE_EVENT_RETENTION_DAYS = 1
    StripeEvent.objects.update(received_at=timezone.now() - timedelta(days=2))

    outcomes = run_together(
        DELIVERIES, lambda i: stripe_events_purge() if i == 0 else post(completed)
    )

    assert outcomes[0][0] == "ok"
    assert outcomes[1:] == [("ok", 200)] * (DELIVERIES - 1)
    assert wallet_for_tenant(tenant=tenant).balance_nanos == parse_usd("50")
    assert LedgerEntry.objects.filter(kind=LedgerEntry.Kind.TOP_UP).count() == 1
    assert_books_balance()
