"""Opening a card top-up (``billing.top_ups``): the amount's rules, the fee and its
rounding, and the Checkout Session asked of a real HTTP fake of Stripe's API."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.exceptions import ImproperlyConfigured

from billing.exceptions import TopUpCheckoutFailed, TopUpInvalid, TopUpsNotConfigured
from billing.models import LedgerEntry, TopUp
from billing.money import MoneyError, parse_percent, parse_usd, top_up_fee_nanos, whole_cents
from billing.selectors import wallet_for_tenant
from billing.top_ups import top_up_create, top_up_quote, top_up_terms
from tests.billing.stripe_fake import SECRET_KEY, StripeFake, stripe_fake, stripe_fake_server

__all__ = ["stripe_fake", "stripe_fake_server"]  # fixtures

pytestmark = pytest.mark.usefixtures("books_balance")

SITE = "https://tollgate.example"


# ------------------------------------------------------------------------ the fee's rounding


@pytest.mark.parametrize(
    ("amount", "percent", "fixed", "fee"),
    [
        ("10", "2.9", "0.30", "0.59"),  # 29 cents exactly, plus 30
        ("12.34", "2.5", "0", "0.31"),  # 30.85 cents: half up to 31
        ("12.30", "2.5", "0", "0.31"),  # 30.75 cents: up to 31
        ("12.10", "2.5", "0", "0.30"),  # 30.25 cents: down to 30
        ("0.20", "2.5", "0", "0.01"),  # half a cent exactly: up
        ("0.19", "2.5", "0", "0.00"),  # 0.475 cents: down
        ("100", "0", "1", "1.00"),
        ("100", "0", "0", "0.00"),
        ("3333.33", "3.333", "0", "111.10"),  # 11110.98889 cents: exact fraction, then once
    ],
)
def test_fee_is_the_percentage_rounded_once_half_up_to_the_cent_plus_the_fixed_part(
    amount, percent, fixed, fee
):
    assert top_up_fee_nanos(
        parse_usd(amount), percent=Decimal(percent), fixed_nanos=parse_usd(fixed)
    ) == parse_usd(fee)


def test_a_fixed_fee_must_be_whole_cents():
    with pytest.raises(MoneyError):
        top_up_fee_nanos(parse_usd("10"), percent=Decimal(0), fixed_nanos=parse_usd("0.001"))


@pytest.mark.parametrize("text", ["-1", "100", "1e2", "", "2,5", " ", "NaN"])
def test_a_fee_percentage_is_plain_digits_below_100(text):
    with pytest.raises(MoneyError):
        parse_percent(text)


def test_whole_cents_refuses_a_fraction_of_a_cent():
    assert whole_cents(parse_usd("12.34")) == 1234
    with pytest.raises(MoneyError):
        whole_cents(parse_usd("12.345"))


# ------------------------------------------------------------------------------- the quote


def test_the_default_terms_are_five_to_ten_thousand_dollars_and_no_fee():
    terms = top_up_terms()
    assert (terms.min_nanos, terms.max_nanos) == (parse_usd("5"), parse_usd("10000"))
    assert top_up_quote(amount_nanos=parse_usd("50")).fee_nanos == 0


def test_quote_adds_the_operators_fee(settings):
    settings.TOP_UP_FEE_PERCENT = "2.9"
    settings.TOP_UP_FEE_FIXED = "0.30"
    quote = top_up_quote(amount_nanos=parse_usd("100"))
    assert (quote.amount_nanos, quote.fee_nanos, quote.total_nanos) == (
        parse_usd("100"),
        parse_usd("3.20"),
        parse_usd("103.20"),
    )


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        ("4.99", "The smallest top-up is $5.00."),
        ("10000.01", "The largest top-up is $10000.00."),
        ("20.005", "Top up a whole number of cents, e.g. 25.50."),
    ],
)
def test_quote_refuses_amounts_out_of_range_or_not_whole_cents(amount, message):
    with pytest.raises(TopUpInvalid, match=message.replace(".", r"\.").replace("$", r"\$")):
        top_up_quote(amount_nanos=parse_usd(amount))


def test_the_range_is_the_operators(settings):
    settings.TOP_UP_MIN = "20"
    settings.TOP_UP_MAX = "50"
    with pytest.raises(TopUpInvalid):
        top_up_quote(amount_nanos=parse_usd("19.99"))
    assert top_up_quote(amount_nanos=parse_usd("50")).amount_nanos == parse_usd("50")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TOP_UP_MIN", "0"),
        ("TOP_UP_MIN", "five"),
        ("TOP_UP_MAX", "1"),  # below the minimum
        ("TOP_UP_FEE_FIXED", "0.001"),
        ("TOP_UP_FEE_PERCENT", "150"),
    ],
)
def test_a_bad_setting_is_named(settings, name, value):
    setattr(settings, name, value)
    with pytest.raises(ImproperlyConfigured, match=name):
        top_up_terms()


# --------------------------------------------------------------------------------- opening


def test_top_up_opens_a_checkout_session_at_stripe(stripe_fake: StripeFake, tenant, settings):
    settings.TOP_UP_FEE_PERCENT = "2.9"
    settings.TOP_UP_FEE_FIXED = "0.30"

    top_up = top_up_create(
        tenant=tenant, actor=tenant.owner, amount_nanos=parse_usd("50"), site_url=SITE
    )

    assert top_up.status == TopUp.Status.PENDING
    assert (top_up.amount_nanos, top_up.fee_nanos) == (parse_usd("50"), parse_usd("1.75"))
    (call,) = stripe_fake.creates()
    assert call.path == "/v1/checkout/sessions"
    assert call.headers["Authorization"] == f"Bearer {SECRET_KEY}"
    assert call.headers["Idempotency-Key"] == f"top-up-{top_up.pk}-{top_up.idempotency_key}"
    params = call.params
    assert params["mode"] == "payment"
    assert params["client_reference_id"] == str(top_up.pk)
    assert params["metadata"] == {"top_up_id": str(top_up.pk), "tenant_id": str(tenant.pk)}
    assert params["payment_intent_data"]["metadata"] == params["metadata"]
    # The amount and the fee, each a line item in integer cents.
    assert [
        (item["price_data"]["product_data"]["name"], item["price_data"]["unit_amount"])
        for item in params["line_items"]
    ] == [("Wallet top-up", "5000"), ("Card top-up fee", "175")]
    assert {item["price_data"]["currency"] for item in params["line_items"]} == {"usd"}
    page = f"{SITE}/dashboard/wallet/top-ups/{top_up.pk}/"
    assert (params["success_url"], params["cancel_url"]) == (page, f"{page}?cancelled=1")
    session = stripe_fake.session(top_up.stripe_session_id)
    assert session["amount_total"] == 5175
    assert top_up.checkout_url == session["url"]
    assert str(top_up.stripe_session_id).startswith("cs_test_")
    # Nothing moves until Stripe says it was paid.
    assert wallet_for_tenant(tenant=tenant).balance_nanos == 0
    assert not LedgerEntry.objects.exists()


def test_without_a_fee_the_session_has_one_line(stripe_fake: StripeFake, tenant):
    top_up_create(tenant=tenant, actor=None, amount_nanos=parse_usd("12.34"))
    (call,) = stripe_fake.creates()
    assert [item["price_data"]["unit_amount"] for item in call.params["line_items"]] == ["1234"]
    assert call.params["success_url"].startswith("http://localhost:8000/dashboard/")  # PUBLIC_URL


def test_a_retried_create_gets_the_same_session(stripe_fake: StripeFake, tenant):
    """Stripe answers a repeat of an idempotency key with the first session: the fake does
    too, and the key is the row's, so a retry can never open a second checkout."""
    from billing.stripe_api import checkout_session_create
    from billing.top_ups import _checkout_params

    top_up = top_up_create(tenant=tenant, actor=None, amount_nanos=parse_usd("20"))
    again = checkout_session_create(
        params=_checkout_params(top_up, site_url="http://localhost:8000"),
        idempotency_key=top_up.checkout_key,
    )
    assert again.id == top_up.stripe_session_id
    assert len(stripe_fake.sessions) == 1


def test_each_top_up_has_its_own_session_and_key(stripe_fake: StripeFake, tenant):
    first = top_up_create(tenant=tenant, actor=None, amount_nanos=parse_usd("20"))
    second = top_up_create(tenant=tenant, actor=None, amount_nanos=parse_usd("20"))
    assert first.stripe_session_id != second.stripe_session_id
    keys = {call.headers["Idempotency-Key"] for call in stripe_fake.creates()}
    assert len(keys) == 2


def test_stripe_refusing_leaves_the_row_failed_with_its_error(stripe_fake: StripeFake, tenant):
    stripe_fake.fail_next(402, "card_error", "Your account cannot take payments yet.")

    with pytest.raises(TopUpCheckoutFailed, match="cannot take payments yet"):
        top_up_create(tenant=tenant, actor=None, amount_nanos=parse_usd("20"))

    top_up = TopUp.objects.get()
    assert top_up.status == TopUp.Status.FAILED
    assert "cannot take payments yet" in top_up.error
    assert top_up.stripe_session_id is None and top_up.checkout_url == ""


def test_stripe_unreachable_leaves_the_row_failed(stripe_fake: StripeFake, tenant, settings):
    settings.STRIPE_API_BASE = "http://127.0.0.1:9"  # discard: nothing listens
    settings.STRIPE_TIMEOUT_SECONDS = 2

    with pytest.raises(TopUpCheckoutFailed):
        top_up_create(tenant=tenant, actor=None, amount_nanos=parse_usd("20"))

    assert TopUp.objects.get().status == TopUp.Status.FAILED


def test_a_wrong_secret_key_fails_cleanly(stripe_fake: StripeFake, tenant, settings):
    settings.STRIPE_SECRET_KEY = "sk_test_wrong"

    with pytest.raises(TopUpCheckoutFailed, match="Invalid API Key"):
        top_up_create(tenant=tenant, actor=None, amount_nanos=parse_usd("20"))


def test_without_a_secret_key_no_row_is_made_and_nothing_is_called(
    stripe_fake: StripeFake, tenant, settings
):
    settings.STRIPE_SECRET_KEY = ""

    with pytest.raises(TopUpsNotConfigured, match="not configured"):
        top_up_create(tenant=tenant, actor=None, amount_nanos=parse_usd("20"))

    assert not TopUp.objects.exists()
    assert stripe_fake.requests == []


def test_an_invalid_amount_makes_no_row_and_calls_nothing(stripe_fake: StripeFake, tenant):
    with pytest.raises(TopUpInvalid):
        top_up_create(tenant=tenant, actor=None, amount_nanos=parse_usd("1"))
    assert not TopUp.objects.exists()
    assert stripe_fake.requests == []
