"""Stripe's webhook, ``POST /billing/stripe/webhook/``, end to end: deliveries signed as
Stripe signs them, the Checkout Sessions read back from a real HTTP fake of Stripe's API,
and the books audited after every test (``books_balance``, which runs ``check_ledger``).

A top-up is credited exactly once per Checkout Session, only for a paid session Tollgate
opened for exactly the row's total; refunds and disputes take back what they owe without
ever taking a wallet below zero."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.test import Client

from billing.models import LedgerEntry, StripeEvent, TopUp, Wallet
from billing.money import parse_usd
from billing.selectors import wallet_for_tenant
from billing.services import wallet_credit
from billing.top_ups import top_up_create
from keys.services import key_create
from tests.billing.stripe_fake import (
    WEBHOOK_PATH,
    StripeFake,
    charge,
    deliver,
    dispute,
    event,
    signature,
    signed,
    stripe_fake,
    stripe_fake_server,
)
from tests.dashboard.conftest import sign_in

__all__ = ["stripe_fake", "stripe_fake_server"]  # fixtures

pytestmark = pytest.mark.usefixtures("books_balance")

COMPLETED = "checkout.session.completed"
ASYNC_SUCCEEDED = "checkout.session.async_payment_succeeded"
ASYNC_FAILED = "checkout.session.async_payment_failed"
EXPIRED = "checkout.session.expired"


@pytest.fixture
def web() -> Client:
    return Client()


def open_top_up(tenant: Any, amount: str = "50") -> TopUp:
    return top_up_create(tenant=tenant, actor=tenant.owner, amount_nanos=parse_usd(amount))


def balance(tenant: Any) -> int:
    return wallet_for_tenant(tenant=tenant).balance_nanos


def top_up_entries(tenant: Any) -> list[tuple[str, int]]:
    kinds = [k for k in LedgerEntry.Kind.values if k.startswith("top_up")]
    return list(
        LedgerEntry.objects.filter(wallet__tenant=tenant, kind__in=kinds)
        .order_by("id")
        .values_list("kind", "amount_nanos")
    )


def stored(payload: dict[str, Any]) -> StripeEvent:
    return StripeEvent.objects.get(event_id=payload["id"])


# ------------------------------------------------------------------------------ crediting


def test_a_signed_paid_completion_credits_the_wallet_once(
    stripe_fake: StripeFake, web: Client, tenant, outsider, settings
):
    settings.TOP_UP_FEE_PERCENT = "2.9"
    settings.TOP_UP_FEE_FIXED = "0.30"
    top_up = open_top_up(tenant, "50")
    session = stripe_fake.complete(top_up.stripe_session_id)
    completed = event(COMPLETED, session)

    response = deliver(web, completed)

    assert response.status_code == 200, response.content
    assert response.json() == {"id": completed["id"], "status": "processed"}
    top_up.refresh_from_db()
    assert top_up.status == TopUp.Status.CREDITED and top_up.credited_at is not None
    assert top_up.stripe_payment_intent == session["payment_intent"]
    # The card's whole payment, and the fee apart: the wallet nets the amount.
    assert top_up_entries(tenant) == [
        ("top_up", parse_usd("51.75")),
        ("top_up_fee", -parse_usd("1.75")),
    ]
    assert balance(tenant) == parse_usd("50")
    entry = LedgerEntry.objects.get(kind="top_up")
    assert (entry.idempotency_key, entry.reference) == (
        f"stripe:{top_up.stripe_session_id}",
        top_up.stripe_session_id,
    )
    assert entry.actor_id == tenant.owner_id
    row = stored(completed)
    assert (row.status, row.attempts, row.type) == ("processed", 1, COMPLETED)
    assert row.note == f"credited top-up {top_up.pk}: 50.00"
    # The same delivery again: answered, nothing done.
    again = deliver(web, completed)
    assert again.status_code == 200 and again.json()["status"] == "processed"
    assert stored(completed).attempts == 1
    assert balance(tenant) == parse_usd("50")
    assert balance(outsider[0]) == parse_usd("500")


def test_the_same_session_under_other_event_ids_credits_once(
    stripe_fake: StripeFake, web: Client, tenant
):
    top_up = open_top_up(tenant, "20")
    session = stripe_fake.complete(top_up.stripe_session_id)

    for kind in (COMPLETED, COMPLETED, ASYNC_SUCCEEDED):
        assert deliver(web, event(kind, session)).status_code == 200

    assert balance(tenant) == parse_usd("20")
    assert len(top_up_entries(tenant)) == 1
    notes = list(StripeEvent.objects.order_by("id").values_list("note", flat=True))
    assert notes[1:] == [f"top-up {top_up.pk} was already credited"] * 2


def test_an_unpaid_completion_credits_nothing_until_the_delayed_payment_succeeds(
    stripe_fake: StripeFake, web: Client, tenant
):
    top_up = open_top_up(tenant, "30")
    session = stripe_fake.complete(top_up.stripe_session_id, paid=False)

    assert deliver(web, event(COMPLETED, session)).status_code == 200

    top_up.refresh_from_db()
    assert top_up.status == TopUp.Status.PENDING
    assert top_up.stripe_payment_intent == session["payment_intent"]
    assert balance(tenant) == 0
    # Days later the bank debit clears.
    paid = stripe_fake.pay_later(top_up.stripe_session_id)
    assert deliver(web, event(ASYNC_SUCCEEDED, paid)).status_code == 200
    top_up.refresh_from_db()
    assert top_up.status == TopUp.Status.CREDITED
    assert balance(tenant) == parse_usd("30")


def test_the_session_is_read_from_stripe_not_from_the_event(
    stripe_fake: StripeFake, web: Client, tenant
):
    """An event's copy saying "paid" is not enough: Stripe's API must say so too."""
    top_up = open_top_up(tenant)
    forged_copy = {**stripe_fake.session(top_up.stripe_session_id), "payment_status": "paid"}

    assert deliver(web, event(COMPLETED, forged_copy)).status_code == 200

    assert TopUp.objects.get().status == TopUp.Status.PENDING
    assert balance(tenant) == 0


def test_a_failed_delayed_payment_marks_the_top_up_failed(
    stripe_fake: StripeFake, web: Client, tenant
):
    top_up = open_top_up(tenant)
    session = stripe_fake.complete(top_up.stripe_session_id, paid=False)

    assert deliver(web, event(ASYNC_FAILED, session)).status_code == 200

    top_up.refresh_from_db()
    assert top_up.status == TopUp.Status.FAILED
    assert "payment failed" in top_up.error
    assert balance(tenant) == 0


def test_an_expired_session_marks_the_top_up_expired(stripe_fake: StripeFake, web: Client, tenant):
    top_up = open_top_up(tenant)
    session = {**stripe_fake.session(top_up.stripe_session_id), "status": "expired"}

    assert deliver(web, event(EXPIRED, session)).status_code == 200

    top_up.refresh_from_db()
    assert top_up.status == TopUp.Status.EXPIRED
    assert balance(tenant) == 0


def test_a_late_expiry_leaves_a_credited_top_up_credited(
    stripe_fake: StripeFake, web: Client, tenant
):
    top_up = open_top_up(tenant)
    session = stripe_fake.complete(top_up.stripe_session_id)
    deliver(web, event(COMPLETED, session))

    assert deliver(web, event(EXPIRED, session)).status_code == 200

    assert TopUp.objects.get().status == TopUp.Status.CREDITED
    assert balance(tenant) == parse_usd("50")


# ------------------------------------------------------------------------- the signature


def test_a_forged_signature_is_refused_and_stores_nothing(
    stripe_fake: StripeFake, web: Client, tenant
):
    top_up = open_top_up(tenant)
    completed = event(COMPLETED, stripe_fake.complete(top_up.stripe_session_id))

    response = deliver(web, completed, secret="whsec_someone_else")

    assert response.status_code == 400
    assert response.json()["code"] == "webhook_refused"
    assert not StripeEvent.objects.exists()
    assert TopUp.objects.get().status == TopUp.Status.PENDING
    assert balance(tenant) == 0


def test_a_body_changed_after_signing_is_refused(stripe_fake: StripeFake, web: Client, tenant):
    top_up = open_top_up(tenant, "10")
    session = stripe_fake.complete(top_up.stripe_session_id)
    body, header = signed(event(COMPLETED, session))
    tampered = body.replace(b'"amount_total":1000', b'"amount_total":9000')
    assert tampered != body

    response = web.post(
        WEBHOOK_PATH, data=tampered, content_type="application/json", HTTP_STRIPE_SIGNATURE=header
    )

    assert response.status_code == 400
    assert balance(tenant) == 0


@pytest.mark.parametrize("header", [None, "", "t=1", "v1=abc", "garbage"])
def test_a_missing_or_malformed_signature_is_refused(stripe_fake: StripeFake, web: Client, header):
    body, _ = signed(event("checkout.session.completed", {"id": "cs_test_x"}))
    extra = {} if header is None else {"HTTP_STRIPE_SIGNATURE": header}

    response = web.post(WEBHOOK_PATH, data=body, content_type="application/json", **extra)

    assert response.status_code == 400
    assert not StripeEvent.objects.exists()


def test_a_stale_timestamp_is_refused(stripe_fake: StripeFake, web: Client, tenant):
    top_up = open_top_up(tenant)
    completed = event(COMPLETED, stripe_fake.complete(top_up.stripe_session_id))

    stale = deliver(web, completed, timestamp=int(time.time()) - 301)

    assert stale.status_code == 400
    assert "tolerance" in stale.json()["detail"]
    assert balance(tenant) == 0
    # Within Stripe's five minutes, the same delivery is taken.
    assert deliver(web, completed, timestamp=int(time.time()) - 200).status_code == 200
    assert balance(tenant) == parse_usd("50")


def test_without_a_webhook_secret_every_event_is_refused(
    stripe_fake: StripeFake, web: Client, tenant, settings, caplog
):
    top_up = open_top_up(tenant)
    completed = event(COMPLETED, stripe_fake.complete(top_up.stripe_session_id))
    settings.STRIPE_WEBHOOK_SECRET = ""

    for secret in ("", "whsec_tollgate_fake"):
        response = deliver(web, completed, secret=secret)
        assert response.status_code == 400
        assert "STRIPE_WEBHOOK_SECRET is not set" in response.json()["detail"]

    assert "Stripe webhook refused" in caplog.text
    assert not StripeEvent.objects.exists()
    assert balance(tenant) == 0


def test_a_signed_body_that_is_not_an_event_is_refused(stripe_fake: StripeFake, web: Client):
    for body in (b"[1, 2]", b'{"id": "evt_1", "object": "charge"}', b"not json", b"\xff\xfe"):
        response = web.post(
            WEBHOOK_PATH,
            data=body,
            content_type="application/json",
            HTTP_STRIPE_SIGNATURE=signature(body) if body != b"\xff\xfe" else "t=1,v1=00",
        )
        assert response.status_code == 400, body
    assert not StripeEvent.objects.exists()


def test_the_webhook_takes_only_post(web: Client, stripe_fake: StripeFake):
    assert web.get(WEBHOOK_PATH).status_code == 405


def test_stripe_needs_no_csrf_token_or_session(stripe_fake: StripeFake, tenant):
    top_up = open_top_up(tenant)
    completed = event(COMPLETED, stripe_fake.complete(top_up.stripe_session_id))

    response = deliver(Client(enforce_csrf_checks=True), completed)

    assert response.status_code == 200
    assert balance(tenant) == parse_usd("50")


def test_while_the_secret_is_rolled_either_signature_is_taken(
    stripe_fake: StripeFake, web: Client, tenant
):
    """Stripe signs with every secret of the endpoint while one is being rolled: a header
    with an old signature and the current one is genuine."""
    top_up = open_top_up(tenant)
    body, header = signed(event(COMPLETED, stripe_fake.complete(top_up.stripe_session_id)))
    old = signature(body, secret="whsec_old").split(",")[1]

    response = web.post(
        WEBHOOK_PATH,
        data=body,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=f"{header},{old}",
    )

    assert response.status_code == 200
    assert balance(tenant) == parse_usd("50")


# ----------------------------------------------------------- sessions that are not the row's


def test_a_session_of_something_else_on_the_account_is_ignored(
    stripe_fake: StripeFake, web: Client, tenant
):
    """Another integration's session (no top-up in its metadata): not Tollgate's; Stripe is
    not even asked about it."""
    stranger = {
        "id": "cs_test_other_shop",
        "object": "checkout.session",
        "amount_total": 5000,
        "currency": "usd",
        "payment_status": "paid",
        "client_reference_id": "1",
        "metadata": {"order": "42"},
    }
    completed = event(COMPLETED, stranger)

    response = deliver(web, completed)

    assert response.status_code == 200 and response.json()["status"] == "ignored"
    assert stored(completed).note == "session cs_test_other_shop is not a Tollgate top-up"
    assert stripe_fake.requests == []
    assert balance(tenant) == 0


def test_a_session_stripe_does_not_know_credits_nothing(
    stripe_fake: StripeFake, web: Client, tenant
):
    top_up = open_top_up(tenant)
    unknown = {
        **stripe_fake.session(top_up.stripe_session_id),
        "id": "cs_test_unknown",
        "payment_status": "paid",
    }
    completed = event(COMPLETED, unknown)

    response = deliver(web, completed)

    assert response.status_code == 200  # no retry can help
    row = stored(completed)
    assert row.status == "failed" and "knows no session cs_test_unknown" in row.error
    assert TopUp.objects.get().status == TopUp.Status.PENDING
    assert balance(tenant) == 0


def test_another_session_naming_the_row_credits_nothing(
    stripe_fake: StripeFake, web: Client, tenant
):
    """A paid session for the right amount whose metadata names our row, but which is not
    the session Tollgate opened for it (made at Stripe by someone else)."""
    top_up = open_top_up(tenant)
    status, other = stripe_fake.session_create(
        {
            "mode": "payment",
            "line_items": [{"price_data": {"currency": "usd", "unit_amount": "5000"}}],
            "client_reference_id": str(top_up.pk),
            "metadata": {"top_up_id": str(top_up.pk), "tenant_id": str(tenant.pk)},
        },
        None,
    )
    assert status == 200
    completed = event(COMPLETED, stripe_fake.complete(other["id"]))

    assert deliver(web, completed).status_code == 200

    assert stored(completed).status == "failed"
    assert f"is not the one top-up {top_up.pk} opened" in stored(completed).error
    assert TopUp.objects.get().status == TopUp.Status.PENDING
    assert balance(tenant) == 0


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("amount_total", 4999, "totals 4999 cents"),
        ("amount_total", 500000, "totals 500000 cents"),
        ("currency", "eur", "is in 'eur'"),
        ("metadata", {"top_up_id": "X", "tenant_id": "1"}, "not an id"),
        ("client_reference_id", "999", "as its client_reference_id"),
    ],
)
def test_a_session_that_disagrees_with_the_row_credits_nothing(
    stripe_fake: StripeFake, web: Client, tenant, field, value, problem
):
    top_up = open_top_up(tenant, "50")
    stripe_fake.complete(top_up.stripe_session_id)
    stripe_fake.session(top_up.stripe_session_id)[field] = value
    completed = event(COMPLETED, stripe_fake.session(top_up.stripe_session_id))

    response = deliver(web, completed)

    assert response.status_code == 200
    row = stored(completed)
    assert row.status == "failed" and problem in row.error
    assert TopUp.objects.get().status == TopUp.Status.PENDING
    assert balance(tenant) == 0


def test_a_session_naming_another_tenant_credits_nothing(
    stripe_fake: StripeFake, web: Client, tenant, outsider
):
    top_up = open_top_up(tenant)
    stripe_fake.complete(top_up.stripe_session_id)
    session = stripe_fake.session(top_up.stripe_session_id)
    session["metadata"] = {**session["metadata"], "tenant_id": str(outsider[0].pk)}

    deliver(web, event(COMPLETED, session))

    assert balance(tenant) == 0 and balance(outsider[0]) == parse_usd("500")


def test_a_session_naming_no_row_here_is_ignored(stripe_fake: StripeFake, web: Client, tenant):
    top_up = open_top_up(tenant)
    stripe_fake.complete(top_up.stripe_session_id)
    session = stripe_fake.session(top_up.stripe_session_id)
    session["metadata"] = {**session["metadata"], "top_up_id": "99999"}
    session["client_reference_id"] = "99999"
    completed = event(COMPLETED, session)

    assert deliver(web, completed).json()["status"] == "ignored"
    assert "not in this database" in stored(completed).note
    assert balance(tenant) == 0


# ------------------------------------------------------------------ refunds and disputes


@pytest.fixture
def credited(stripe_fake: StripeFake, web: Client, tenant) -> dict[str, Any]:
    """A $50 top-up, paid and credited; the session as Stripe has it."""
    top_up = open_top_up(tenant, "50")
    session = stripe_fake.complete(top_up.stripe_session_id)
    assert deliver(web, event(COMPLETED, session)).status_code == 200
    assert balance(tenant) == parse_usd("50")
    return session


def test_refunds_take_back_what_was_refunded_once(credited: dict[str, Any], web: Client, tenant):
    ten = event("charge.refunded", charge(credited, amount_refunded=1000))
    assert deliver(web, ten).status_code == 200
    assert balance(tenant) == parse_usd("40")
    # Stripe's figure is cumulative: the whole charge refunded takes the other $40 …
    everything = event("charge.refunded", charge(credited, amount_refunded=5000))
    assert deliver(web, everything).status_code == 200
    assert balance(tenant) == 0
    # … and the first refund's event arriving again (or late) takes nothing more.
    assert (
        deliver(web, event("charge.refunded", charge(credited, amount_refunded=1000))).status_code
        == 200
    )
    assert deliver(web, ten).status_code == 200
    assert top_up_entries(tenant) == [
        ("top_up", parse_usd("50")),
        ("top_up_refund", -parse_usd("10")),
        ("top_up_refund", -parse_usd("40")),
    ]
    top_up = TopUp.objects.get()
    assert (top_up.refunded_nanos, top_up.reversed_nanos, top_up.shortfall_nanos) == (
        parse_usd("50"),
        parse_usd("50"),
        0,
    )
    assert top_up.status == TopUp.Status.CREDITED
    assert stored(everything).note == f"took back 40.00 of top-up {top_up.pk}"


def test_a_refunded_fee_is_the_operators_not_the_wallets(
    stripe_fake: StripeFake, web: Client, tenant, settings
):
    settings.TOP_UP_FEE_FIXED = "1"
    top_up = open_top_up(tenant, "50")
    session = stripe_fake.complete(top_up.stripe_session_id)
    deliver(web, event(COMPLETED, session))
    assert balance(tenant) == parse_usd("50")

    deliver(web, event("charge.refunded", charge(session, amount_refunded=5100)))

    assert balance(tenant) == 0
    assert TopUp.objects.get().reversed_nanos == parse_usd("50")


def test_a_refund_never_takes_the_wallet_below_zero_and_records_the_shortfall(
    credited: dict[str, Any], web: Client, tenant, caplog
):
    # $45 of the $50 went into a prepaid key: $5 is left.
    key_create(
        tenant=tenant,
        actor=None,
        label="acme",
        client_budget_nanos=parse_usd("45"),
        your_cost_nanos=parse_usd("45"),
    )
    assert balance(tenant) == parse_usd("5")

    refund = event("charge.refunded", charge(credited, amount_refunded=5000))
    assert deliver(web, refund).status_code == 200

    wallet = Wallet.objects.get(tenant=tenant)
    assert (wallet.balance_nanos, wallet.reserved_nanos) == (0, 0)
    top_up = TopUp.objects.get()
    assert (top_up.reversed_nanos, top_up.shortfall_nanos) == (parse_usd("5"), parse_usd("45"))
    assert stored(refund).note == f"took back 5.00 of top-up {top_up.pk}; 45.00 short"
    assert "45.00 short of what a refund or dispute takes back" in caplog.text
    # Money comes in later; the next event about the payment takes what is still owed.
    wallet_credit(tenant=tenant, amount_nanos=parse_usd("100"), reason="bank transfer")
    deliver(web, event("charge.refunded", charge(credited, amount_refunded=5000)))
    assert balance(tenant) == parse_usd("55")
    top_up.refresh_from_db()
    assert (top_up.reversed_nanos, top_up.shortfall_nanos) == (parse_usd("50"), 0)


def test_a_dispute_takes_back_the_disputed_amount(credited: dict[str, Any], web: Client, tenant):
    opened = event("charge.dispute.created", dispute(credited, amount=2000))

    assert deliver(web, opened).status_code == 200
    assert deliver(web, opened).status_code == 200  # redelivered

    assert balance(tenant) == parse_usd("30")
    assert top_up_entries(tenant)[-1] == ("top_up_dispute", -parse_usd("20"))
    top_up = TopUp.objects.get()
    assert (top_up.disputed_nanos, top_up.reversed_nanos) == (parse_usd("20"), parse_usd("20"))


def test_refunds_and_disputes_together_take_back_at_most_the_credit(
    credited: dict[str, Any], web: Client, tenant
):
    deliver(web, event("charge.refunded", charge(credited, amount_refunded=3000)))
    deliver(web, event("charge.dispute.created", dispute(credited, amount=5000)))

    assert balance(tenant) == 0
    assert [amount for _, amount in top_up_entries(tenant)] == [
        parse_usd("50"),
        -parse_usd("30"),
        -parse_usd("20"),
    ]


def test_a_refund_of_a_payment_that_is_not_a_top_up_is_ignored(
    credited: dict[str, Any], web: Client, tenant
):
    other = {**credited, "payment_intent": "pi_test_someone_elses"}
    refund = event("charge.refunded", charge(other, amount_refunded=5000))

    response = deliver(web, refund)

    assert response.json()["status"] == "ignored"
    assert balance(tenant) == parse_usd("50")


def test_a_refund_in_another_currency_is_rejected(credited: dict[str, Any], web: Client, tenant):
    refund = event("charge.refunded", {**charge(credited, amount_refunded=5000), "currency": "eur"})

    deliver(web, refund)

    assert stored(refund).status == "failed"
    assert balance(tenant) == parse_usd("50")


def test_a_dispute_recorded_before_the_credit_is_taken_back_when_it_lands(
    stripe_fake: StripeFake, web: Client, tenant
):
    """Deliveries out of order: the session completed unpaid (its payment intent known),
    a dispute, then the delayed payment's success."""
    top_up = open_top_up(tenant, "50")
    session = stripe_fake.complete(top_up.stripe_session_id, paid=False)
    deliver(web, event(COMPLETED, session))
    early = event("charge.dispute.created", dispute(session, amount=1500))

    assert deliver(web, early).status_code == 200
    assert "nothing to take back yet" in stored(early).note
    assert balance(tenant) == 0

    deliver(web, event(ASYNC_SUCCEEDED, stripe_fake.pay_later(top_up.stripe_session_id)))

    assert balance(tenant) == parse_usd("35")
    assert top_up_entries(tenant) == [
        ("top_up", parse_usd("50")),
        ("top_up_dispute", -parse_usd("15")),
    ]


# ---------------------------------------------------------------------- disputes closed

CLOSED = "charge.dispute.closed"
REINSTATED = "charge.dispute.funds_reinstated"


def spend(tenant: Any, amount: str) -> None:
    """Put ``amount`` of the wallet into a prepaid key: money the wallet no longer has."""
    key_create(
        tenant=tenant,
        actor=None,
        label="spent",
        client_budget_nanos=parse_usd(amount),
        your_cost_nanos=parse_usd(amount),
    )


def test_a_won_dispute_gives_back_what_it_took_once(credited: dict[str, Any], web: Client, tenant):
    opened = dispute(credited, amount=2000)
    deliver(web, event("charge.dispute.created", opened))
    assert balance(tenant) == parse_usd("30")
    won = {**opened, "status": "won"}
    closed = event(CLOSED, won)

    assert deliver(web, closed).status_code == 200
    assert balance(tenant) == parse_usd("50")
    # Stripe's other event of the win, the same one again, and the opening again: nothing.
    for again in (event(REINSTATED, won), closed, event(CLOSED, won)):
        assert deliver(web, again).status_code == 200
    assert deliver(web, event("charge.dispute.created", opened)).status_code == 200

    assert balance(tenant) == parse_usd("50")
    assert top_up_entries(tenant) == [
        ("top_up", parse_usd("50")),
        ("top_up_dispute", -parse_usd("20")),
        ("top_up_dispute_won", parse_usd("20")),
    ]
    top_up = TopUp.objects.get()
    assert top_up.is_dispute_won
    assert (top_up.reversed_nanos, top_up.reinstated_nanos, top_up.shortfall_nanos) == (
        parse_usd("20"),
        parse_usd("20"),
        0,
    )
    assert stored(closed).note == f"dispute of top-up {top_up.pk} won: 20.00 back to the wallet"
    entry = LedgerEntry.objects.get(kind="top_up_dispute_won")
    assert entry.idempotency_key == f"stripe:{top_up.stripe_session_id}:dispute-won"
    assert entry.reference == opened["id"]


def test_funds_reinstated_before_the_close_gives_back_once(
    credited: dict[str, Any], web: Client, tenant
):
    opened = dispute(credited)
    deliver(web, event("charge.dispute.created", opened))
    assert balance(tenant) == 0

    deliver(web, event(REINSTATED, {**opened, "status": "won"}))
    deliver(web, event(CLOSED, {**opened, "status": "won"}))

    assert balance(tenant) == parse_usd("50")
    assert [k for k, _ in top_up_entries(tenant)].count("top_up_dispute_won") == 1


def test_a_won_dispute_clears_the_shortfall_it_never_collected(
    credited: dict[str, Any], web: Client, tenant
):
    spend(tenant, "45")
    opened = dispute(credited)
    deliver(web, event("charge.dispute.created", opened))
    top_up = TopUp.objects.get()
    assert (top_up.reversed_nanos, top_up.shortfall_nanos) == (parse_usd("5"), parse_usd("45"))
    assert balance(tenant) == 0

    closed = event(CLOSED, {**opened, "status": "won"})
    deliver(web, closed)

    # Only the $5 the dispute took comes back; the $45 it could not take is simply not owed.
    assert balance(tenant) == parse_usd("5")
    top_up.refresh_from_db()
    assert (top_up.reinstated_nanos, top_up.shortfall_nanos) == (parse_usd("5"), 0)
    assert stored(closed).note == (
        f"dispute of top-up {top_up.pk} won: 5.00 back to the wallet; 45.00 of its shortfall cleared"
    )


def test_a_won_dispute_leaves_what_refunds_owe_taken(credited: dict[str, Any], web: Client, tenant):
    """$30 refunded, then the whole $50 disputed (the wallet gives up $50 at most); the
    won dispute gives back only the $20 beyond the refund."""
    deliver(web, event("charge.refunded", charge(credited, amount_refunded=3000)))
    opened = dispute(credited)
    deliver(web, event("charge.dispute.created", opened))
    assert balance(tenant) == 0

    deliver(web, event(CLOSED, {**opened, "status": "won"}))

    assert balance(tenant) == parse_usd("20")
    top_up = TopUp.objects.get()
    assert (top_up.owed_nanos, top_up.taken_back_nanos) == (parse_usd("30"), parse_usd("30"))
    # A later, larger refund is still taken back.
    deliver(web, event("charge.refunded", charge(credited, amount_refunded=5000)))
    assert balance(tenant) == 0


@pytest.mark.parametrize(
    ("kind", "status"),
    [(CLOSED, "lost"), (CLOSED, "warning_closed"), (REINSTATED, "lost")],
)
def test_a_dispute_not_won_moves_no_money(
    credited: dict[str, Any], web: Client, tenant, kind, status
):
    """A lost dispute was taken when it opened. Funds Stripe reinstates on a lost dispute
    of a partly refunded payment are the refunded part, given up once already."""
    deliver(web, event("charge.refunded", charge(credited, amount_refunded=1000)))
    opened = dispute(credited)
    deliver(web, event("charge.dispute.created", opened))
    assert balance(tenant) == 0

    closed = event(kind, {**opened, "status": status})
    assert deliver(web, closed).status_code == 200

    assert balance(tenant) == 0
    top_up = TopUp.objects.get()
    assert not top_up.is_dispute_won
    assert stored(closed).status == "processed"
    assert stored(closed).note == f"dispute of top-up {top_up.pk} is {status}: no money moves"


def test_a_win_recorded_before_the_dispute_moves_nothing(
    credited: dict[str, Any], web: Client, tenant
):
    """Out of order: the close arrives before the opening (say, its delivery failed and was
    retried later). The wallet never gives anything up."""
    opened = dispute(credited)
    deliver(web, event(CLOSED, {**opened, "status": "won"}))
    deliver(web, event("charge.dispute.created", opened))

    assert balance(tenant) == parse_usd("50")
    assert len(top_up_entries(tenant)) == 1


def test_a_won_dispute_of_a_payment_that_is_not_a_top_up_is_ignored(
    credited: dict[str, Any], web: Client, tenant
):
    other = {**credited, "payment_intent": "pi_test_someone_elses"}
    closed = event(CLOSED, dispute(other, status="won"))

    assert deliver(web, closed).json()["status"] == "ignored"
    assert balance(tenant) == parse_usd("50")


def test_a_won_dispute_in_another_currency_is_rejected(
    credited: dict[str, Any], web: Client, tenant
):
    deliver(web, event("charge.dispute.created", dispute(credited)))
    closed = event(CLOSED, {**dispute(credited, status="won"), "currency": "eur"})

    assert deliver(web, closed).status_code == 200
    assert stored(closed).status == "failed"
    assert balance(tenant) == 0


# -------------------------------------------------------------------------- inquiries

WITHDRAWN = "charge.dispute.funds_withdrawn"
INQUIRY_STATUSES = ["warning_needs_response", "warning_under_review", "warning_closed"]


@pytest.mark.parametrize("status", INQUIRY_STATUSES)
def test_an_inquiry_moves_no_money(credited: dict[str, Any], web: Client, tenant, status):
    """An inquiry withdraws nothing at Stripe: stored processed with a note, nothing taken,
    nothing recorded as disputed."""
    opened = event("charge.dispute.created", dispute(credited, amount=2000, status=status))

    assert deliver(web, opened).status_code == 200

    assert balance(tenant) == parse_usd("50")
    assert len(top_up_entries(tenant)) == 1
    top_up = TopUp.objects.get()
    assert (top_up.disputed_nanos, top_up.reversed_nanos) == (0, 0)
    assert stored(opened).status == "processed"
    assert stored(opened).note == (
        f"inquiry ({status}) about top-up {top_up.pk}: Stripe withdrew nothing, no money moves"
    )


def test_an_inquiry_that_escalates_takes_the_amount_once(
    credited: dict[str, Any], web: Client, tenant
):
    inquiry = dispute(credited, amount=2000, status="warning_needs_response")
    deliver(web, event("charge.dispute.created", inquiry))
    assert balance(tenant) == parse_usd("50")

    escalated = {**inquiry, "status": "needs_response"}
    withdrawn = event(WITHDRAWN, escalated)
    assert deliver(web, withdrawn).status_code == 200
    # Redelivered, under another event id, and the inquiry's opening again: nothing more.
    for again in (withdrawn, event(WITHDRAWN, escalated), event("charge.dispute.created", inquiry)):
        assert deliver(web, again).status_code == 200

    assert balance(tenant) == parse_usd("30")
    assert top_up_entries(tenant) == [
        ("top_up", parse_usd("50")),
        ("top_up_dispute", -parse_usd("20")),
    ]
    top_up = TopUp.objects.get()
    assert (top_up.disputed_nanos, top_up.reversed_nanos) == (parse_usd("20"), parse_usd("20"))
    assert stored(withdrawn).status == "processed"


@pytest.mark.parametrize("order", [("created", "withdrawn"), ("withdrawn", "created")])
def test_a_chargeback_announced_twice_takes_once_in_either_order(
    credited: dict[str, Any], web: Client, tenant, order
):
    """A chargeback sends both ``created`` and ``funds_withdrawn``: the wallet gives the
    amount up once, whichever comes first."""
    opened = dispute(credited, amount=2000)
    kinds = {"created": "charge.dispute.created", "withdrawn": WITHDRAWN}

    for name in order:
        assert deliver(web, event(kinds[name], opened)).status_code == 200

    assert balance(tenant) == parse_usd("30")
    assert [k for k, _ in top_up_entries(tenant)].count("top_up_dispute") == 1


def test_an_inquiry_closed_gives_nothing_back(credited: dict[str, Any], web: Client, tenant):
    inquiry = dispute(credited, amount=2000, status="warning_needs_response")
    deliver(web, event("charge.dispute.created", inquiry))

    closed = event(CLOSED, {**inquiry, "status": "warning_closed"})
    assert deliver(web, closed).status_code == 200

    assert balance(tenant) == parse_usd("50")
    assert len(top_up_entries(tenant)) == 1
    top_up = TopUp.objects.get()
    assert not top_up.is_dispute_won
    assert stored(closed).note == f"dispute of top-up {top_up.pk} is warning_closed: no money moves"


def test_a_won_dispute_gives_back_only_what_was_taken_after_an_inquiry(
    credited: dict[str, Any], web: Client, tenant
):
    """$10 refunded, an inquiry (nothing taken), then a win: the refund stays taken and
    nothing comes back. Escalated and won, exactly what funds_withdrawn took comes back."""
    deliver(web, event("charge.refunded", charge(credited, amount_refunded=1000)))
    inquiry = dispute(credited, amount=2000, status="warning_under_review")
    deliver(web, event("charge.dispute.created", inquiry))
    assert balance(tenant) == parse_usd("40")

    closed = event(CLOSED, {**inquiry, "status": "won"})
    deliver(web, closed)

    assert balance(tenant) == parse_usd("40")
    assert "top_up_dispute_won" not in [k for k, _ in top_up_entries(tenant)]
    top_up = TopUp.objects.get()
    assert stored(closed).note == f"dispute of top-up {top_up.pk} won: 0.00 back to the wallet"


def test_an_escalated_inquiry_won_gives_back_what_it_took(
    credited: dict[str, Any], web: Client, tenant
):
    inquiry = dispute(credited, amount=2000, status="warning_needs_response")
    deliver(web, event("charge.dispute.created", inquiry))
    deliver(web, event(WITHDRAWN, {**inquiry, "status": "needs_response"}))
    assert balance(tenant) == parse_usd("30")

    deliver(web, event(REINSTATED, {**inquiry, "status": "won"}))
    deliver(web, event(CLOSED, {**inquiry, "status": "won"}))

    assert balance(tenant) == parse_usd("50")
    assert top_up_entries(tenant)[-1] == ("top_up_dispute_won", parse_usd("20"))
    assert [k for k, _ in top_up_entries(tenant)].count("top_up_dispute_won") == 1


def test_an_inquiry_about_a_payment_that_is_not_a_top_up_is_ignored(
    credited: dict[str, Any], web: Client, tenant
):
    other = {**credited, "payment_intent": "pi_test_someone_elses"}
    opened = event("charge.dispute.created", dispute(other, status="warning_needs_response"))

    assert deliver(web, opened).json()["status"] == "ignored"
    assert balance(tenant) == parse_usd("50")


# ------------------------------------------------------- shortfalls paid by the next top-up


def top_up_paid(stripe_fake: StripeFake, web: Client, tenant: Any, amount: str) -> TopUp:
    top_up = open_top_up(tenant, amount)
    session = stripe_fake.complete(top_up.stripe_session_id)
    assert deliver(web, event(COMPLETED, session)).status_code == 200
    top_up.refresh_from_db()
    return top_up


@pytest.fixture
def short(credited: dict[str, Any], web: Client, tenant) -> TopUp:
    """The $50 top-up refunded in full after $45 of it went into a key: $45 short."""
    spend(tenant, "45")
    deliver(web, event("charge.refunded", charge(credited, amount_refunded=5000)))
    top_up = TopUp.objects.get()
    assert top_up.shortfall_nanos == parse_usd("45") and balance(tenant) == 0
    return top_up


def test_the_next_top_up_pays_the_shortfall_first_once(
    short: TopUp, stripe_fake: StripeFake, web: Client, tenant, outsider
):
    outsiders = top_up_paid(stripe_fake, web, outsider[0], "10")
    assert outsiders.earlier_shortfall_paid_nanos == 0

    top_up = top_up_paid(stripe_fake, web, tenant, "100")

    assert balance(tenant) == parse_usd("55")
    assert top_up.earlier_shortfall_paid_nanos == parse_usd("45")
    short.refresh_from_db()
    assert (short.reversed_nanos, short.shortfall_nanos) == (parse_usd("50"), 0)
    entry = LedgerEntry.objects.get(kind="top_up_shortfall")
    assert (entry.amount_nanos, entry.reference, entry.idempotency_key) == (
        -parse_usd("45"),
        top_up.stripe_session_id,
        f"stripe:{top_up.stripe_session_id}:shortfall-of:{short.stripe_session_id}",
    )
    assert (
        entry.reason
        == f"Shortfall of card top-up #{short.pk}, collected from card top-up #{top_up.pk}"
    )
    completed = StripeEvent.objects.order_by("id").last()
    assert completed is not None
    assert completed.note == (
        f"credited top-up {top_up.pk}: 100.00; 45.00 of it paid earlier top-ups' shortfall"
    )
    # Its completion again, and the first top-up's refund again: nothing more.
    deliver(web, event(COMPLETED, stripe_fake.session(top_up.stripe_session_id)))
    deliver(
        web,
        event(
            "charge.refunded",
            charge(stripe_fake.session(short.stripe_session_id), amount_refunded=5000),
        ),
    )
    assert balance(tenant) == parse_usd("55")
    assert LedgerEntry.objects.filter(kind="top_up_shortfall").count() == 1


def test_a_top_up_smaller_than_the_shortfall_pays_what_it_brings(
    short: TopUp, stripe_fake: StripeFake, web: Client, tenant
):
    first = top_up_paid(stripe_fake, web, tenant, "20")
    assert (first.earlier_shortfall_paid_nanos, balance(tenant)) == (parse_usd("20"), 0)
    short.refresh_from_db()
    assert short.shortfall_nanos == parse_usd("25")

    second = top_up_paid(stripe_fake, web, tenant, "30")

    assert (second.earlier_shortfall_paid_nanos, balance(tenant)) == (
        parse_usd("25"),
        parse_usd("5"),
    )
    short.refresh_from_db()
    assert short.shortfall_nanos == 0


def test_shortfalls_are_paid_oldest_first(
    credited: dict[str, Any], stripe_fake: StripeFake, web: Client, tenant
):
    spend(tenant, "50")
    second = top_up_paid(stripe_fake, web, tenant, "10")
    spend(tenant, "10")
    second_session = stripe_fake.session(second.stripe_session_id)
    deliver(web, event("charge.refunded", charge(second_session, amount_refunded=1000)))
    deliver(web, event("charge.refunded", charge(credited, amount_refunded=5000)))
    first = TopUp.objects.get(stripe_session_id=credited["id"])
    assert (first.shortfall_nanos, TopUp.objects.get(pk=second.pk).shortfall_nanos) == (
        parse_usd("50"),
        parse_usd("10"),
    )

    third = top_up_paid(stripe_fake, web, tenant, "55")

    assert third.earlier_shortfall_paid_nanos == parse_usd("55")
    assert TopUp.objects.get(pk=first.pk).shortfall_nanos == 0
    assert TopUp.objects.get(pk=second.pk).shortfall_nanos == parse_usd("5")
    assert balance(tenant) == 0


def test_a_won_dispute_gives_back_the_shortfall_a_later_top_up_paid(
    credited: dict[str, Any], stripe_fake: StripeFake, web: Client, tenant
):
    spend(tenant, "45")
    opened = dispute(credited)
    deliver(web, event("charge.dispute.created", opened))
    top_up_paid(stripe_fake, web, tenant, "100")
    assert balance(tenant) == parse_usd("55")

    deliver(web, event(CLOSED, {**opened, "status": "won"}))

    # The disputed top-up's $50 stays the wallet's: $5 left of it, and the $100.
    assert balance(tenant) == parse_usd("105")
    first = TopUp.objects.get(stripe_session_id=credited["id"])
    assert (first.reinstated_nanos, first.shortfall_nanos) == (parse_usd("50"), 0)


def test_the_api_and_the_page_say_what_went_to_the_shortfall(
    short: TopUp, stripe_fake: StripeFake, web: Client, tenant, api
):
    top_up = top_up_paid(stripe_fake, web, tenant, "100")

    body = api.get(f"/api/v1/wallet/top-ups/{top_up.pk}").json()
    assert (body["to_earlier_shortfall"], body["shortfall"], body["amount"]) == (
        "45.00",
        "0.00",
        "100.00",
    )
    earlier = api.get(f"/api/v1/wallet/top-ups/{short.pk}").json()
    assert (earlier["taken_back"], earlier["shortfall"]) == ("50.00", "0.00")
    html = sign_in(tenant).get(f"/dashboard/wallet/top-ups/{top_up.pk}/").content.decode()
    assert "Went to an earlier shortfall" in html
    assert "of which $45.00 went to what an earlier top-up" in html


# -------------------------------------------------------------------- other events, failures


def test_an_unknown_event_type_is_answered_and_changes_nothing(
    credited: dict[str, Any], web: Client, tenant
):
    other = event("customer.created", {"id": "cus_test_1", "object": "customer"})

    response = deliver(web, other)

    assert response.status_code == 200 and response.json()["status"] == "ignored"
    assert stored(other).note == "not a type Tollgate handles"
    assert balance(tenant) == parse_usd("50")


def test_a_failed_handler_stays_on_the_row_asks_for_a_retry_and_a_retry_credits(
    stripe_fake: StripeFake, web: Client, tenant
):
    top_up = open_top_up(tenant)
    completed = event(COMPLETED, stripe_fake.complete(top_up.stripe_session_id))
    stripe_fake.fail_next(500, "api_error", "Stripe is having a moment.")

    response = deliver(web, completed)

    assert response.status_code == 500  # Stripe sends it again
    row = stored(completed)
    assert (row.status, row.attempts) == ("failed", 1)
    assert "Stripe is having a moment." in row.error
    assert balance(tenant) == 0
    # Stripe's retry of the same event.
    assert deliver(web, completed).status_code == 200
    row.refresh_from_db()
    assert (row.status, row.attempts, row.error) == ("processed", 2, "")
    assert balance(tenant) == parse_usd("50")


def test_livemode_is_recorded(stripe_fake: StripeFake, web: Client, settings):
    settings.STRIPE_SECRET_KEY = "sk_live_tollgate"
    live = {**event("customer.created", {"id": "cus_1", "object": "customer"}), "livemode": True}
    deliver(web, live)
    assert stored(live).is_livemode and stored(live).status == "ignored"


# --------------------------------------------------------------------------------- mode


def test_a_live_event_at_a_test_key_is_refused_and_credits_nothing(
    stripe_fake: StripeFake, web: Client, tenant, caplog
):
    top_up = open_top_up(tenant)
    completed = {
        **event(COMPLETED, stripe_fake.complete(top_up.stripe_session_id)),
        "livemode": True,
    }

    response = deliver(web, completed)

    assert response.status_code == 200  # no retry can fix it
    row = stored(completed)
    assert row.status == "failed" and row.is_livemode
    assert row.error.startswith("Mode mismatch: a live-mode event")
    assert "Mode mismatch" in caplog.text
    assert stripe_fake.requests[-1].method == "POST"  # Stripe was not even asked
    assert TopUp.objects.get().status == TopUp.Status.PENDING
    assert balance(tenant) == 0
    # Redelivered, or reprocessed: refused again.
    assert deliver(web, completed).status_code == 200
    assert stored(completed).attempts == 2 and balance(tenant) == 0


@pytest.mark.parametrize(
    ("key", "is_refused"),
    [
        ("sk_live_tollgate", True),
        ("rk_live_tollgate", True),
        ("rk_test_tollgate", False),
        ("sk_test_tollgate", False),
        ("not_a_stripe_key", False),  # the mode is unknown: not checked
    ],
)
def test_the_mode_is_the_secret_keys(
    credited: dict[str, Any], web: Client, tenant, settings, key, is_refused
):
    settings.STRIPE_SECRET_KEY = key
    refund = event("charge.refunded", charge(credited, amount_refunded=5000))

    assert deliver(web, refund).status_code == 200

    assert stored(refund).status == ("failed" if is_refused else "processed")
    assert balance(tenant) == (parse_usd("50") if is_refused else 0)
