"""Stripe events are kept ``STRIPE_EVENT_RETENTION_DAYS`` once handled, then purged by the
hourly task; failed ones stay until reprocessed. A redelivery of a purged event is handled
again and moves no money twice (the books are audited after every test)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.test import Client
from django.utils import timezone

from billing.models import LedgerEntry, StripeEvent, TopUp
from billing.money import parse_usd
from billing.selectors import wallet_for_tenant
from billing.stripe_webhooks import stripe_events_purge
from billing.tasks import stripe_events_purge_task
from billing.top_ups import top_up_create
from keys.services import key_create
from tests.billing.stripe_fake import (
    StripeFake,
    charge,
    deliver,
    dispute,
    event,
    stripe_fake,
    stripe_fake_server,
)

__all__ = ["stripe_fake", "stripe_fake_server"]  # fixtures

pytestmark = pytest.mark.usefixtures("books_balance")

RETENTION_DAYS = 90


@pytest.fixture(autouse=True)
def retention(settings: Any) -> None:
    settings.STRIPE_EVENT_RETENTION_DAYS = RETENTION_DAYS


def stored_event(event_id: str, status: str, age: timedelta) -> StripeEvent:
    return StripeEvent.objects.create(
        event_id=event_id,
        type="customer.created",
        payload={"id": event_id},
        status=status,
        received_at=timezone.now() - age,
    )


def age(payload: dict[str, Any], days: int) -> None:
    StripeEvent.objects.filter(event_id=payload["id"]).update(
        received_at=timezone.now() - timedelta(days=days)
    )


def balance(tenant: Any) -> int:
    return wallet_for_tenant(tenant=tenant).balance_nanos


def test_handled_events_past_the_retention_are_purged_and_failed_ones_kept(db: None):
    old = timedelta(days=RETENTION_DAYS, minutes=1)
    recent = timedelta(days=RETENTION_DAYS - 1)
    stored_event("evt_old_processed", "processed", old)
    stored_event("evt_old_ignored", "ignored", old)
    stored_event("evt_old_failed", "failed", old)
    stored_event("evt_old_received", "received", old)
    stored_event("evt_recent_processed", "processed", recent)

    assert stripe_events_purge() == 2
    assert stripe_events_purge() == 0  # idempotent

    assert set(StripeEvent.objects.values_list("event_id", flat=True)) == {
        "evt_old_failed",
        "evt_old_received",
        "evt_recent_processed",
    }


def test_the_retention_is_the_setting(db: None, settings: Any):
    stored_event("evt_ten_days", "processed", timedelta(days=10))
    assert stripe_events_purge() == 0
    settings.STRIPE_EVENT_RETENTION_DAYS = 7
    assert stripe_events_purge() == 1


def test_the_purge_works_in_batches(db: None):
    for n in range(5):
        stored_event(f"evt_{n}", "processed", timedelta(days=RETENTION_DAYS + n + 1))
    assert stripe_events_purge(batch_size=2) == 5
    assert not StripeEvent.objects.exists()


def test_the_task_purges_and_is_safe_to_rerun(db: None):
    stored_event("evt_old", "ignored", timedelta(days=RETENTION_DAYS + 1))
    kept = stored_event("evt_new", "ignored", timedelta(hours=1))

    assert stripe_events_purge_task.apply().get() == 1
    assert stripe_events_purge_task() == 0
    assert list(StripeEvent.objects.values_list("pk", flat=True)) == [kept.pk]


def test_the_beat_schedule_names_the_task():
    entry = django_settings.CELERY_BEAT_SCHEDULE["purge-stripe-events"]
    assert entry["task"] == stripe_events_purge_task.name


def test_redelivered_after_the_purge_every_event_moves_money_once(
    stripe_fake: StripeFake, tenant: Any
):
    """A top-up's whole life (credit, refund with a shortfall, dispute, its win, the next
    top-up paying the shortfall), purged, then every event delivered again: handled again,
    the books unchanged."""
    web = Client()
    first = top_up_create(tenant=tenant, actor=None, amount_nanos=parse_usd("50"))
    session = stripe_fake.complete(first.stripe_session_id)
    events = [event("checkout.session.completed", session)]
    assert deliver(web, events[0]).status_code == 200
    key_create(
        tenant=tenant,
        actor=None,
        label="spent",
        client_budget_nanos=parse_usd("45"),
        your_cost_nanos=parse_usd("45"),
    )
    opened = dispute(session, amount=2000)
    events += [
        event("charge.refunded", charge(session, amount_refunded=3000)),
        event("charge.dispute.created", opened),
        event("charge.dispute.closed", {**opened, "status": "won"}),
    ]
    second = top_up_create(tenant=tenant, actor=None, amount_nanos=parse_usd("40"))
    events.append(
        event("checkout.session.completed", stripe_fake.complete(second.stripe_session_id))
    )
    for each in events[1:]:
        assert deliver(web, each).status_code == 200
    assert balance(tenant) == parse_usd("15")  # $5 left of the first, $40 less its $25 short
    books = (
        balance(tenant),
        list(LedgerEntry.objects.order_by("id").values_list("kind", "amount_nanos")),
        list(
            TopUp.objects.order_by("pk").values_list(
                "reversed_nanos", "reinstated_nanos", "earlier_shortfall_paid_nanos"
            )
        ),
    )
    for each in events:
        age(each, RETENTION_DAYS + 1)

    assert stripe_events_purge() == len(events)
    for each in events:
        response = deliver(web, each)
        assert response.status_code == 200 and response.json()["status"] == "processed"

    assert StripeEvent.objects.count() == len(events)
    after = (
        balance(tenant),
        list(LedgerEntry.objects.order_by("id").values_list("kind", "amount_nanos")),
        list(
            TopUp.objects.order_by("pk").values_list(
                "reversed_nanos", "reinstated_nanos", "earlier_shortfall_paid_nanos"
            )
        ),
    )
    assert after == books
