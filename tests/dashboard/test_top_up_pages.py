"""The wallet's card top-up pages through the Django client, against the fake Stripe: the
form previews the fee and total, confirms once and answers 303 to Stripe's checkout page;
the top-up's page shows it pending until a signed webhook lands, then credited. Another
tenant's top-up is a 404; every form needs its CSRF token."""

from __future__ import annotations

import re
from html import unescape

import pytest
from django.test import Client

from billing.models import TopUp
from billing.money import parse_usd
from billing.selectors import wallet_for_tenant
from billing.top_ups import top_up_create
from tests.billing.stripe_fake import StripeFake, deliver, event, stripe_fake, stripe_fake_server
from tests.dashboard.conftest import sign_in

__all__ = ["stripe_fake", "stripe_fake_server"]  # fixtures

pytestmark = pytest.mark.usefixtures("books_balance")

FORM = "/dashboard/wallet/top-up/"


def text(response) -> str:
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", response.content.decode())).split())


def token(response) -> str:
    match = re.search(r'name="preview_token" value="([^"]+)"', response.content.decode())
    assert match, "no preview"
    return match[1]


def test_the_wallet_page_has_a_top_up_button_and_the_latest_top_ups(
    stripe_fake: StripeFake, page: Client, tenant, outsider
):
    mine = top_up_create(tenant=tenant, actor=None, amount_nanos=parse_usd("25"))
    theirs = top_up_create(tenant=outsider[0], actor=None, amount_nanos=parse_usd("77"))

    response = page.get("/dashboard/wallet/")

    html = response.content.decode()
    assert f'href="{FORM}" role="button">Top up</a>' in html
    assert f'href="/dashboard/wallet/top-ups/{mine.pk}/"' in html
    assert f"/dashboard/wallet/top-ups/{theirs.pk}/" not in html
    assert "$25.00" in text(response) and "Pending" in text(response)
    assert "$77.00" not in text(response)


def test_without_stripe_there_is_no_button_and_the_form_says_why(page: Client, settings):
    settings.STRIPE_SECRET_KEY = ""

    wallet = page.get("/dashboard/wallet/")
    assert FORM not in wallet.content.decode()
    assert "Card top-ups are not configured" in text(wallet)
    form = page.get(FORM)
    assert form.status_code == 503
    assert "Card top-ups are not configured on this server." in text(form)
    assert page.post(FORM, {"amount": "20"}).status_code == 503
    assert not TopUp.objects.exists()


def test_top_up_previews_the_fee_then_sends_the_payer_to_stripe(
    stripe_fake: StripeFake, page: Client, tenant, settings
):
    settings.TOP_UP_FEE_PERCENT = "2.9"
    settings.TOP_UP_FEE_FIXED = "0.30"
    form = page.get(FORM)
    assert form.status_code == 200
    assert "card fee: 2.9 % + $0.30" in text(form)
    # The form's page may post through to Stripe's checkout (CSP form-action).
    assert f"form-action 'self' {stripe_fake.url}" in form["Content-Security-Policy"]

    preview = page.post(FORM, {"amount": "100"})

    assert preview.status_code == 200
    assert "To your wallet $100.00 Card fee $3.20 You pay $103.20" in text(preview)
    assert not TopUp.objects.exists() and stripe_fake.requests == []

    confirmed = page.post(FORM, {"amount": "100", "preview_token": token(preview)})

    top_up = TopUp.objects.get()
    assert confirmed.status_code == 303
    assert confirmed["Location"] == top_up.checkout_url
    assert confirmed["Location"].startswith(f"{stripe_fake.url}/c/pay/cs_test_")
    assert (top_up.tenant, top_up.actor, top_up.amount_nanos, top_up.fee_nanos) == (
        tenant,
        tenant.owner,
        parse_usd("100"),
        parse_usd("3.20"),
    )
    (call,) = stripe_fake.creates()
    # Stripe sends the payer back to the origin the reseller used.
    assert call.params["success_url"] == f"http://testserver/dashboard/wallet/top-ups/{top_up.pk}/"
    # The same confirmation again (a reload, a double click) opens nothing more.
    again = page.post(FORM, {"amount": "100", "preview_token": token(preview)})
    assert again.status_code == 200 and TopUp.objects.count() == 1


def test_a_preview_confirms_only_its_own_amount(stripe_fake: StripeFake, page: Client):
    preview = page.post(FORM, {"amount": "20"})
    changed = page.post(FORM, {"amount": "2000", "preview_token": token(preview)})
    assert changed.status_code == 200  # a new preview, for the new amount
    assert "You pay $2,000.00" in text(changed)
    assert not TopUp.objects.exists()


def test_the_live_preview_is_a_fragment(stripe_fake: StripeFake, page: Client):
    live = page.post(FORM, {"amount": "12.5"}, HTTP_HX_REQUEST="true")
    assert live.status_code == 200
    html = live.content.decode()
    assert html.lstrip().startswith('<div id="top-up-preview"')
    assert "You pay $12.50" in text(live)
    bad = page.post(FORM, {"amount": "2"}, HTTP_HX_REQUEST="true")
    assert "The smallest top-up is $5.00." in text(bad)
    assert not TopUp.objects.exists()


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        ("2", "The smallest top-up is $5.00."),
        ("20000", "The largest top-up is $10000.00."),
        ("20.005", "Top up a whole number of cents, e.g. 25.50."),
        ("lots", "Enter an amount in dollars, such as 100 or 12.50."),
        ("", "This field is required."),
    ],
)
def test_bad_amounts_are_refused_on_the_form(
    stripe_fake: StripeFake, page: Client, amount, message
):
    response = page.post(FORM, {"amount": amount})
    assert response.status_code == 400
    assert message in text(response)
    assert not TopUp.objects.exists()


def test_stripe_refusing_shows_on_the_form(stripe_fake: StripeFake, page: Client):
    preview = page.post(FORM, {"amount": "20"})
    stripe_fake.fail_next(402, "card_error", "Payments are paused on this account.")

    response = page.post(FORM, {"amount": "20", "preview_token": token(preview)})

    assert response.status_code == 502
    assert "Payments are paused on this account." in text(response)
    assert TopUp.objects.get().status == TopUp.Status.FAILED


def test_the_top_up_page_is_pending_until_the_webhook_lands(
    stripe_fake: StripeFake, page: Client, tenant
):
    top_up = top_up_create(tenant=tenant, actor=None, amount_nanos=parse_usd("40"))
    url = f"/dashboard/wallet/top-ups/{top_up.pk}/"

    pending = page.get(url)
    assert pending.status_code == 200
    assert "Pending Waiting for Stripe to confirm the payment." in text(pending)
    html = pending.content.decode()
    assert 'hx-trigger="every 2s"' in html  # htmx asks again while pending
    assert f'href="{url}">Reload</a>' in html  # and without JavaScript, a link
    assert f'href="{top_up.checkout_url}"' in html
    poll = page.get(url, HTTP_HX_REQUEST="true")
    assert poll.content.decode().lstrip().startswith('<article id="top-up-status"')

    deliver(
        Client(),
        event("checkout.session.completed", stripe_fake.complete(top_up.stripe_session_id)),
    )

    credited = page.get(url, HTTP_HX_REQUEST="true")
    assert "Credited Your wallet was credited $40.00. It now holds $40.00." in text(credited)
    assert "hx-trigger" not in credited.content.decode()  # the polling stops
    assert wallet_for_tenant(tenant=tenant).balance_nanos == parse_usd("40")


def test_a_cancelled_checkout_says_nothing_was_charged(
    stripe_fake: StripeFake, page: Client, tenant
):
    top_up = top_up_create(tenant=tenant, actor=None, amount_nanos=parse_usd("40"))
    response = page.get(f"/dashboard/wallet/top-ups/{top_up.pk}/?cancelled=1")
    assert "You left Stripe's page without paying; nothing was charged." in text(response)
    assert "Pay on Stripe" in text(response)


def test_another_tenants_top_up_is_404(stripe_fake: StripeFake, page: Client, outsider):
    theirs = top_up_create(tenant=outsider[0], actor=None, amount_nanos=parse_usd("40"))
    assert page.get(f"/dashboard/wallet/top-ups/{theirs.pk}/").status_code == 404
    assert page.get("/dashboard/wallet/top-ups/999999/").status_code == 404


def test_signed_out_visitors_are_sent_to_sign_in(stripe_fake: StripeFake, tenant):
    top_up = top_up_create(tenant=tenant, actor=None, amount_nanos=parse_usd("40"))
    for url in (FORM, f"/dashboard/wallet/top-ups/{top_up.pk}/"):
        response = Client().get(url)
        assert response.status_code == 302 and "/dashboard/sign-in/" in response["Location"]


def test_the_form_needs_its_csrf_token(stripe_fake: StripeFake, tenant):
    client = sign_in(tenant, enforce_csrf_checks=True)
    assert client.post(FORM, {"amount": "20"}).status_code == 403
    assert not TopUp.objects.exists()


def test_an_expired_top_up_offers_to_try_again_with_its_amount(
    stripe_fake: StripeFake, page: Client, tenant
):
    top_up = top_up_create(tenant=tenant, actor=None, amount_nanos=parse_usd("40"))
    session = {**stripe_fake.session(top_up.stripe_session_id), "status": "expired"}
    deliver(Client(), event("checkout.session.expired", session))

    response = page.get(f"/dashboard/wallet/top-ups/{top_up.pk}/")

    assert "Expired The checkout expired before it was paid; nothing was charged." in text(response)
    assert f'href="{FORM}?amount=40.00" role="button">Try again</a>' in response.content.decode()
    assert "hx-trigger" not in response.content.decode()
    form = page.get(f"{FORM}?amount=40.00")
    assert 'value="40.00"' in form.content.decode()
