"""``check_ledger`` audits card top-ups: each top-up's ledger entries (by their
``stripe:<session>`` idempotency keys) are what its row says, and tampering with either is
named."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from billing.models import LedgerEntry, TopUp
from billing.money import parse_usd
from billing.top_ups import top_up_create
from keys.selectors import books_audit
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


def checks() -> set[tuple[str, int]]:
    return {(problem.check, problem.object_id) for problem in books_audit()}


@pytest.fixture
def credited(stripe_fake: StripeFake, tenant: Any, settings: Any) -> TopUp:
    """A $50 top-up with a $1 fee, paid, credited, then $10 of it refunded."""
    settings.TOP_UP_FEE_FIXED = "1"
    top_up = top_up_create(tenant=tenant, actor=None, amount_nanos=parse_usd("50"))
    session = stripe_fake.complete(top_up.stripe_session_id)
    web = Client()
    assert deliver(web, event("checkout.session.completed", session)).status_code == 200
    assert (
        deliver(web, event("charge.refunded", charge(session, amount_refunded=1000))).status_code
        == 200
    )
    top_up.refresh_from_db()
    return top_up


def test_the_books_of_a_credited_and_refunded_top_up_agree(credited: TopUp):
    assert books_audit() == []
    call_command("check_ledger")


def test_a_top_up_marked_credited_without_its_entries_is_named(
    stripe_fake: StripeFake, tenant: Any
):
    top_up = top_up_create(tenant=tenant, actor=None, amount_nanos=parse_usd("20"))
    TopUp.objects.filter(pk=top_up.pk).update(status="credited", credited_at=top_up.created_at)

    assert checks() == {("top_up_credit", top_up.pk)}
    with pytest.raises(CommandError):
        call_command("check_ledger")


def test_a_credited_top_up_set_back_to_pending_is_named(credited: TopUp):
    TopUp.objects.filter(pk=credited.pk).update(status="pending", credited_at=None)

    assert checks() == {("top_up_credit", credited.pk), ("top_up_fee", credited.pk)}


def test_a_taken_back_figure_that_disagrees_with_the_entries_is_named(credited: TopUp):
    TopUp.objects.filter(pk=credited.pk).update(reversed_nanos=parse_usd("5"))
    assert checks() == {("top_up_reversed", credited.pk)}


def test_taking_back_more_than_is_owed_is_named(credited: TopUp):
    TopUp.objects.filter(pk=credited.pk).update(refunded_nanos=parse_usd("1"))
    assert checks() == {("top_up_reversed_owed", credited.pk)}


def test_a_fee_entry_of_the_wrong_amount_is_named(credited: TopUp):
    LedgerEntry.objects.filter(kind="top_up_fee").update(amount_nanos=-parse_usd("2"))
    assert ("top_up_fee", credited.pk) in checks()


def test_a_won_disputes_figure_that_disagrees_with_its_entry_is_named(
    credited: TopUp, stripe_fake: StripeFake
):
    session = stripe_fake.session(credited.stripe_session_id)
    opened = dispute(session, amount=2000)
    web = Client()
    deliver(web, event("charge.dispute.created", opened))
    deliver(web, event("charge.dispute.closed", {**opened, "status": "won"}))
    assert books_audit() == []

    TopUp.objects.filter(pk=credited.pk).update(reinstated_nanos=parse_usd("25"))

    assert checks() == {("top_up_reinstated", credited.pk)}


def test_a_shortfall_paid_figure_that_disagrees_with_its_entries_is_named(
    credited: TopUp, stripe_fake: StripeFake, tenant: Any
):
    key_create(
        tenant=tenant,
        actor=None,
        label="spent",
        client_budget_nanos=parse_usd("40"),
        your_cost_nanos=parse_usd("40"),
    )
    web = Client()
    session = stripe_fake.session(credited.stripe_session_id)
    deliver(web, event("charge.refunded", charge(session, amount_refunded=5000)))
    later = top_up_create(tenant=tenant, actor=None, amount_nanos=parse_usd("20"))
    deliver(web, event("checkout.session.completed", stripe_fake.complete(later.stripe_session_id)))
    later.refresh_from_db()
    assert later.earlier_shortfall_paid_nanos == parse_usd("20")
    assert books_audit() == []

    TopUp.objects.filter(pk=later.pk).update(earlier_shortfall_paid_nanos=parse_usd("19"))
    assert checks() == {("top_up_shortfall_paid", later.pk)}
    TopUp.objects.filter(pk=later.pk).update(earlier_shortfall_paid_nanos=parse_usd("20"))
    TopUp.objects.filter(pk=credited.pk).update(reversed_nanos=parse_usd("40"))
    assert checks() == {("top_up_reversed", credited.pk)}
