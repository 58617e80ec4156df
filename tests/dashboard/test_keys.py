"""The keys pages through the Django test client: the list, creating a key after its
preview, the secret shown once, a key's page and its actions (top up, limits, revoke,
delete), each write only after its preview and only once; another tenant's keys answer 404
everywhere and change nothing; every form needs its CSRF token."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import Tenant
from billing.models import LedgerEntry, ModelPrice
from billing.money import Usage, parse_usd
from billing.selectors import wallet_for_tenant
from billing.services import wallet_credit
from keys.models import ClientKey
from keys.services import key_create, key_delete
from tests.keys.factories import WalletKeyFactory
from tests.metering import reserve, settle
from tests.usage.conftest import trace

KEYS = "/dashboard/keys/"
NEW = "/dashboard/keys/new/"
TOKEN = re.compile(r'name="preview_token" value="([^"]+)"')
WORKED_EXAMPLE = {
    "label": "acme-corp-prod",
    "funding": "prepaid",
    "client_budget": "100",
    "your_cost": "60",
    "rpm": "60",
    "max_concurrency": "5",
    "budget_period": "none",
}


def signed_in(tenant: Tenant, **options: Any) -> Client:
    client = Client(**options)
    client.force_login(tenant.owner)
    return client


@pytest.fixture
def browser(tenant: Tenant) -> Client:
    return signed_in(tenant)


def fund(tenant: Tenant, usd: str) -> None:
    wallet_credit(tenant=tenant, amount_nanos=parse_usd(usd), reason="test funds")


def balance(tenant: Tenant) -> int:
    return wallet_for_tenant(tenant=tenant).balance_nanos


def text(response: Any) -> str:
    return response.content.decode()


def token_of(response: Any) -> str:
    found = TOKEN.search(text(response))
    assert found, "the page carries no preview token"
    return found.group(1)


def prepaid(tenant: Tenant, *, budget: str = "100", cost: str = "60", **options: Any) -> ClientKey:
    return key_create(
        tenant=tenant,
        actor=None,
        label=options.pop("label", "acme-corp-prod"),
        client_budget_nanos=parse_usd(budget),
        your_cost_nanos=parse_usd(cost),
        **options,
    ).key


def spend_34_20(key: ClientKey, price: ModelPrice) -> None:
    """$20.52 of cost at $1/MTok: $34.20 at the worked example's ratio 0.6."""
    usage = Usage(input_tokens=20_520_000)
    settle(key=key, hold=reserve(key=key, price=price, request_id="r1", worst_case=usage),
           price=price, usage=usage)  # fmt: skip


def entries(tenant: Tenant) -> int:
    return LedgerEntry.objects.filter(wallet__tenant=tenant).count()


# ------------------------------------------------------------------------------ the list


def test_the_list_shows_each_key_with_its_budget_margin_and_status(tenant, browser, price):
    fund(tenant, "200")
    key = prepaid(tenant, default_tag="prod")
    spend_34_20(key, price)
    share = key_create(
        tenant=tenant,
        actor=None,
        label="team-internal",
        funding=ClientKey.Funding.WALLET,
        spend_cap_nanos=parse_usd("25"),
        budget_period=ClientKey.BudgetPeriod.MONTHLY,
    ).key
    page = text(browser.get(KEYS))
    assert f'href="/dashboard/keys/{key.pk}/">acme-corp-prod</a>' in page
    assert key.display_key in page and share.display_key in page
    assert "40 % margin" in page
    assert "No markup (internal share)" in page
    assert "$34.20</strong> of $100.00" in page and "$65.80 left" in page
    assert "$0.00</strong> of $25.00 cap" in page
    assert ">Active</span>" in page
    assert f'href="{NEW}" class="button-link">New key</a>' in page


def test_the_list_shows_a_runway_at_the_last_weeks_pace(tenant, browser):
    fund(tenant, "200")
    key = prepaid(tenant)
    idle = prepaid(tenant, label="idle")
    # $35 of client spend in the last 7 days ($5 a day); its counters say $30 spent of $100.
    trace(key, at=timezone.now() - timedelta(days=2), client_nanos=parse_usd("35"))
    ClientKey.objects.filter(pk=key.pk).update(client_spent_nanos=parse_usd("30"))
    ClientKey.objects.filter(pk=key.pk).update(cost_spent_nanos=parse_usd("18"))
    page = text(browser.get(KEYS))
    assert "14 days" in page  # $70 left at $5 a day
    assert idle.label in page and "—" in page


def test_a_tenant_without_keys_is_told_how_to_start(browser):
    page = text(browser.get(KEYS))
    assert "No keys yet" in page
    assert "Create your first key" in page


def test_the_list_filters_by_status_tag_and_label(tenant, browser):
    fund(tenant, "500")
    prod = prepaid(tenant, label="acme-prod", default_tag="prod")
    staging = prepaid(tenant, label="acme-staging", default_tag="staging")
    other = prepaid(tenant, label="globex")
    gone = prepaid(tenant, label="old-acme")
    key_delete(tenant=tenant, actor=None, key_id=gone.pk)

    def labels(query: str) -> set[str]:
        page = text(browser.get(f"{KEYS}?{query}"))
        return set(re.findall(r'class="key-label" href="[^"]+">([^<]+)</a>', page))

    assert labels("") == {"acme-prod", "acme-staging", "globex"}
    assert labels("tag=prod") == {prod.label}
    assert labels("tag=-") == {other.label}
    assert labels("q=ACME") == {prod.label, staging.label}
    assert labels("status=deleted") == {gone.label}
    assert labels("status=active&q=staging") == {staging.label}
    assert labels("status=nonsense") == {"acme-prod", "acme-staging", "globex"}
    assert "No key matches these filters." in text(browser.get(f"{KEYS}?q=nobody"))


def test_the_list_pages_by_50(tenant, browser):
    WalletKeyFactory.create_batch(51, tenant=tenant)
    first = text(browser.get(KEYS))
    assert first.count('class="key-label"') == 50
    assert "Page 1 of 2" in first and 'rel="next"' in first
    second = text(browser.get(f"{KEYS}?page=2"))
    assert second.count('class="key-label"') == 1


def test_the_lists_queries_do_not_grow_with_its_keys(tenant, browser):
    def queries_for(count: int) -> int:
        ClientKey.objects.filter(tenant=tenant).delete()
        for key in WalletKeyFactory.create_batch(count, tenant=tenant, spend_cap_nanos=10**10):
            trace(key, client_nanos=10**9, cost_nanos=10**9)
        with CaptureQueriesContext(connection) as queries:
            response = browser.get(KEYS)
        assert text(response).count('class="key-label"') == count
        return len(queries)

    assert queries_for(3) == queries_for(30)


# ------------------------------------------------------------------------------ creating


def test_the_create_form_has_the_named_inputs(browser, price):
    page = text(browser.get(NEW))
    for name in ("label", "client_budget", "your_cost", "funding", "spend_cap", "markup"):
        assert f'name="{name}"' in page
    for name in ("budget_period", "rpm", "tpm", "max_concurrency", "models", "expires_at"):
        assert f'name="{name}"' in page
    assert 'name="rpm" value="60"' in page and 'name="max_concurrency" value="5"' in page
    assert 'name="models" value="mock-gpt"' in page  # the priced models
    # Every input has its label.
    for input_id in re.findall(r'<input[^>]+id="(id_[a-z_]+)"', page):
        if not re.search(r"id_funding_\d|id_models_\d", input_id):
            assert f'for="{input_id}"' in page, input_id


def test_creating_shows_the_preview_first_and_writes_nothing(tenant, browser):
    fund(tenant, "200")
    response = browser.post(NEW, WORKED_EXAMPLE)
    page = text(response)
    assert response.status_code == 200
    assert "$100.00</strong> budget" in page
    assert "$60.00" in page and "40 %" in page and "$140.00" in page
    assert ">Create key</button>" in page
    assert not ClientKey.objects.filter(tenant=tenant).exists()
    assert balance(tenant) == parse_usd("200")


@pytest.mark.usefixtures("books_balance")
def test_confirming_the_preview_creates_one_key_and_shows_its_secret_once(tenant, browser):
    fund(tenant, "200")
    token = token_of(browser.post(NEW, WORKED_EXAMPLE))
    response = browser.post(NEW, {**WORKED_EXAMPLE, "preview_token": token})
    key = ClientKey.objects.get(tenant=tenant)
    assert response.status_code == 302
    assert response["Location"] == f"/dashboard/keys/{key.pk}/created/"
    assert (key.label, key.client_budget_nanos, key.cost_funded_nanos) == (
        "acme-corp-prod",
        parse_usd("100"),
        parse_usd("60"),
    )
    assert (key.requests_per_minute, key.max_concurrency) == (60, 5)
    assert balance(tenant) == parse_usd("140")

    shown = browser.get(response["Location"])
    assert "no-store" in shown["Cache-Control"]
    secret = re.search(r'id="new-key-secret" class="secret">(tg-[^<]+)</code>', text(shown))
    assert secret and secret.group(1).endswith(key.last4)
    assert text(shown).count(secret.group(1)) >= 3  # the key, the message, the example
    assert "http://testserver/v1" in text(shown) and "http://testserver/portal/" in text(shown)
    assert f'href="/dashboard/keys/{key.pk}/"' in text(shown)

    again = text(browser.get(response["Location"]))
    assert secret.group(1) not in again and "shown once" in again
    # Posting the confirmed form again (a reload, the back button) creates nothing more.
    repeat = browser.post(NEW, {**WORKED_EXAMPLE, "preview_token": token})
    assert repeat.status_code == 200
    assert ClientKey.objects.filter(tenant=tenant).count() == 1
    assert balance(tenant) == parse_usd("140")


def test_terms_changed_after_the_preview_are_previewed_again(tenant, browser):
    fund(tenant, "200")
    token = token_of(browser.post(NEW, WORKED_EXAMPLE))
    changed = {**WORKED_EXAMPLE, "your_cost": "50", "preview_token": token}
    response = browser.post(NEW, changed)
    assert response.status_code == 200
    assert "50 %" in text(response) and "$50.00" in text(response)
    assert not ClientKey.objects.filter(tenant=tenant).exists()


def test_a_forged_token_creates_nothing(tenant, browser):
    fund(tenant, "200")
    response = browser.post(NEW, {**WORKED_EXAMPLE, "preview_token": "abc.def"})
    assert response.status_code == 200
    assert not ClientKey.objects.filter(tenant=tenant).exists()


def test_the_live_preview_is_a_fragment_and_never_writes(tenant, browser):
    fund(tenant, "200")
    token = token_of(browser.post(NEW, WORKED_EXAMPLE))
    response = browser.post(NEW, {**WORKED_EXAMPLE, "preview_token": token}, HTTP_HX_REQUEST="true")
    fragment = text(response)
    assert fragment.lstrip().startswith('<article id="key-preview"')
    assert "40 %" in fragment and "$60.00" in fragment and "$140.00" in fragment
    assert "<html" not in fragment
    assert not ClientKey.objects.filter(tenant=tenant).exists()


def test_the_live_preview_needs_no_label_and_hints_until_amounts_are_typed(tenant, browser):
    fund(tenant, "200")
    live = {"HTTP_HX_REQUEST": "true"}
    blank = text(browser.post(NEW, {**WORKED_EXAMPLE, "label": "", "your_cost": ""}, **live))
    assert "Enter a client budget and your cost" in blank and "errorlist" not in blank
    unnamed = text(browser.post(NEW, {**WORKED_EXAMPLE, "label": ""}, **live))
    assert "40 %" in unnamed
    wrong = text(browser.post(NEW, {**WORKED_EXAMPLE, "your_cost": "120"}, **live))
    assert "Your cost cannot exceed the client budget." in wrong


@pytest.mark.usefixtures("books_balance")
def test_a_key_the_wallet_cannot_fund_is_refused_on_the_form(tenant, browser):
    fund(tenant, "50")
    response = browser.post(NEW, WORKED_EXAMPLE)
    assert response.status_code == 400
    assert "Your wallet has $50.00 available; this key needs $60.00." in text(response)
    assert not ClientKey.objects.filter(tenant=tenant).exists()
    assert balance(tenant) == parse_usd("50")


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"your_cost": "120"}, "your_cost", "Your cost cannot exceed the client budget."),
        ({"client_budget": "ten"}, "client_budget", "Enter an amount in dollars"),
        ({"client_budget": "1e2"}, "client_budget", "Enter an amount in dollars"),
        ({"client_budget": ""}, "client_budget", "This field is required."),
        ({"label": ""}, "label", "This field is required."),
        ({"rpm": "0"}, "rpm", "Must be between 1 and 1,000,000."),
        ({"models": "no-such-model"}, "models", "Select a valid choice."),
    ],
)
def test_bad_terms_are_shown_on_their_field_and_write_nothing(
    tenant, browser, change, field, message
):
    fund(tenant, "200")
    response = browser.post(NEW, {**WORKED_EXAMPLE, **change})
    assert response.status_code == 400
    errors = re.search(rf'<ul class="errorlist" id="id_{field}_error">(.*?)</ul>', text(response))
    assert errors and message in errors.group(1)
    assert not ClientKey.objects.filter(tenant=tenant).exists()


def test_dollar_amounts_may_carry_a_dollar_sign(tenant, browser):
    fund(tenant, "200")
    page = text(
        browser.post(NEW, {**WORKED_EXAMPLE, "client_budget": "$100", "your_cost": "60.00"})
    )
    assert "40 %" in page


@pytest.mark.usefixtures("books_balance")
def test_a_wallet_key_with_a_markup_and_a_monthly_cap(tenant, browser, price):
    fund(tenant, "10")
    terms = {
        **WORKED_EXAMPLE,
        "label": "staging",
        "funding": "wallet",
        "markup": "25",
        "spend_cap": "25",
        "budget_period": "monthly",
        "models": ["mock-gpt"],
        "expires_at": "2099-01-31T18:30",
        "default_tag": "staging",
        "tpm": "10000",
    }
    preview = browser.post(NEW, terms)
    page = text(preview)
    assert "$25.00</strong> spend cap, every month" in page
    assert "20 %" in page  # a 25 % markup is a 20 % margin
    assert "$0.00" in page and "$10.00" in page
    response = browser.post(NEW, {**terms, "preview_token": token_of(preview)})
    assert response.status_code == 302
    key = ClientKey.objects.get(tenant=tenant)
    assert key.funding == ClientKey.Funding.WALLET
    assert (key.ratio_cost_nanos, key.ratio_client_nanos) == (parse_usd("100"), parse_usd("125"))
    assert (key.spend_cap_nanos, key.budget_period) == (parse_usd("25"), "monthly")
    assert (key.allowed_models, key.default_tag, key.tokens_per_minute) == (
        ["mock-gpt"],
        "staging",
        10_000,
    )
    assert key.expires_at is not None and key.expires_at.isoformat() == "2099-01-31T18:30:00+00:00"
    assert balance(tenant) == parse_usd("10")


def test_expiry_is_read_in_the_tenants_time_zone(tenant, browser):
    Tenant.objects.filter(pk=tenant.pk).update(timezone="Asia/Kolkata")
    terms = {**WORKED_EXAMPLE, "funding": "wallet", "expires_at": "2099-01-31T18:30"}
    browser.post(NEW, {**terms, "preview_token": token_of(browser.post(NEW, terms))})
    key = ClientKey.objects.get(tenant=tenant)
    assert key.expires_at is not None
    assert key.expires_at.isoformat() == "2099-01-31T13:00:00+00:00"


# ----------------------------------------------------------------------------- a key


@pytest.mark.usefixtures("books_balance")
def test_the_key_page_shows_the_worked_examples_figures(tenant, browser, price):
    fund(tenant, "200")
    key = prepaid(tenant)
    spend_34_20(key, price)
    page = text(browser.get(f"{KEYS}{key.pk}/"))
    for label, figure in (
        ("Client budget", "$100.00"),
        ("Spent", "$34.20"),
        ("Remaining", "$65.80"),
        ("Cost consumed", "$20.52"),
        ("Profit", "$13.68"),
    ):
        pattern = rf'{label}</span><span class="stat-value">{re.escape(figure)}</span>'
        assert re.search(pattern, page), label
    assert "40 % margin" in page and 'name="client_amount"' in page
    reports = re.search(r'<section id="key-reports".*?</section>', page, re.S)
    assert reports
    for path in ("usage/", "requests/", "statements/"):
        assert f'href="/dashboard/keys/{key.pk}/{path}' in reports.group(0)
    assert page.count(">Delete</button>") == 1


@pytest.mark.usefixtures("books_balance")
def test_a_top_up_shows_the_debit_first_then_takes_it_once(tenant, browser, price):
    fund(tenant, "200")
    key = prepaid(tenant)
    url = f"{KEYS}{key.pk}/top-up/"
    preview = browser.post(url, {"client_amount": "50"})
    assert preview.status_code == 200
    assert "$30.00" in text(preview) and "$150.00" in text(preview)
    assert balance(tenant) == parse_usd("140")

    confirm = {"client_amount": "50", "preview_token": token_of(preview)}
    response = browser.post(url, confirm, follow=True)
    assert response.redirect_chain == [(f"{KEYS}{key.pk}/", 302)]
    assert "Added $50.00 to the client&#x27;s budget; $30.00 left your wallet." in text(response)
    key.refresh_from_db()
    assert key.client_budget_nanos == parse_usd("150")
    assert balance(tenant) == parse_usd("110")

    browser.post(url, confirm)  # the same confirmation again: nothing more
    assert balance(tenant) == parse_usd("110")


def test_the_live_top_up_preview_is_a_fragment(tenant, browser):
    fund(tenant, "200")
    key = prepaid(tenant)
    response = browser.post(
        f"{KEYS}{key.pk}/top-up/", {"client_amount": "50"}, HTTP_HX_REQUEST="true"
    )
    fragment = text(response)
    assert fragment.lstrip().startswith('<div id="top-up-preview"')
    assert "$30.00" in fragment
    bad = text(
        browser.post(f"{KEYS}{key.pk}/top-up/", {"client_amount": "x"}, HTTP_HX_REQUEST="true")
    )
    assert "Enter an amount in dollars" in bad
    assert balance(tenant) == parse_usd("140")


@pytest.mark.usefixtures("books_balance")
@pytest.mark.parametrize(
    ("amount", "message"),
    [
        ("fifty", "Enter an amount in dollars"),
        ("0", "Must be greater than zero."),
        ("-5", "Must be greater than zero."),
        ("500", "Your wallet has $140.00 available; this top-up needs $300.00."),
    ],
)
def test_a_refused_top_up_is_shown_on_the_form_and_writes_nothing(tenant, browser, amount, message):
    fund(tenant, "200")
    key = prepaid(tenant)
    before = entries(tenant)
    response = browser.post(f"{KEYS}{key.pk}/top-up/", {"client_amount": amount})
    assert response.status_code == 400
    assert message in text(response)
    assert entries(tenant) == before


def test_a_wallet_key_offers_no_top_up(tenant, browser):
    key = WalletKeyFactory.create(tenant=tenant)
    assert 'name="client_amount"' not in text(browser.get(f"{KEYS}{key.pk}/"))
    response = browser.post(f"{KEYS}{key.pk}/top-up/", {"client_amount": "5"})
    assert response.status_code == 400
    assert "Wallet-funded keys draw from the wallet" in text(response)


@pytest.mark.usefixtures("books_balance")
def test_deleting_states_the_refund_then_pays_it_once(tenant, browser, price):
    fund(tenant, "200")
    key = prepaid(tenant)
    spend_34_20(key, price)
    preview = browser.post(f"{KEYS}{key.pk}/top-up/", {"client_amount": "50"})
    browser.post(
        f"{KEYS}{key.pk}/top-up/", {"client_amount": "50", "preview_token": token_of(preview)}
    )
    assert balance(tenant) == parse_usd("110")

    confirmation = text(browser.get(f"{KEYS}{key.pk}/delete/"))
    assert "$69.48 will be refunded to your wallet" in confirmation
    assert confirmation.count(">Delete</button>") == 1
    assert ClientKey.objects.get(pk=key.pk).status == ClientKey.Status.ACTIVE

    response = browser.post(f"{KEYS}{key.pk}/delete/", follow=True)
    assert "Deleted acme-corp-prod. $69.48 was refunded to your wallet." in text(response)
    assert ClientKey.objects.get(pk=key.pk).status == ClientKey.Status.DELETED
    assert balance(tenant) == parse_usd("179.48")
    browser.post(f"{KEYS}{key.pk}/delete/")
    assert balance(tenant) == parse_usd("179.48")
    gone = text(browser.get(f"{KEYS}{key.pk}/"))
    assert ">Deleted</span>" in gone and ">Delete</button>" not in gone
    assert 'name="client_amount"' not in gone
    assert browser.get(f"{KEYS}{key.pk}/delete/").status_code == 302


def test_editing_limits_goes_through_the_update_service(tenant, browser, price):
    key = WalletKeyFactory.create(tenant=tenant)
    url = f"{KEYS}{key.pk}/limits/"
    form = text(browser.get(url))
    assert 'name="rpm" value="60"' in form and 'name="spend_cap"' in form
    changes = {
        "label": "renamed",
        "rpm": "120",
        "max_concurrency": "2",
        "tpm": "",
        "models": ["mock-gpt"],
        "spend_cap": "12.50",
        "budget_period": "weekly",
        "default_tag": "beta",
        "expires_at": "",
    }
    response = browser.post(url, changes)
    assert response.status_code == 302
    key.refresh_from_db()
    assert (key.label, key.requests_per_minute, key.max_concurrency) == ("renamed", 120, 2)
    assert (key.spend_cap_nanos, key.budget_period) == (parse_usd("12.50"), "weekly")
    assert (key.allowed_models, key.default_tag) == (["mock-gpt"], "beta")

    refused = browser.post(url, {**changes, "rpm": "0"})
    assert refused.status_code == 400 and "Must be between 1 and 1,000,000." in text(refused)
    key.refresh_from_db()
    assert key.requests_per_minute == 120


def test_a_prepaid_keys_limits_have_no_spend_cap(tenant, browser):
    fund(tenant, "100")
    key = prepaid(tenant)
    assert 'name="spend_cap"' not in text(browser.get(f"{KEYS}{key.pk}/limits/"))


def test_revoking_and_reactivating(tenant, browser):
    key = WalletKeyFactory.create(tenant=tenant)
    browser.post(f"{KEYS}{key.pk}/revoke/")
    key.refresh_from_db()
    assert key.status == ClientKey.Status.REVOKED
    page = text(browser.get(f"{KEYS}{key.pk}/"))
    assert ">Revoked</span>" in page and ">Re-activate</button>" in page
    browser.post(f"{KEYS}{key.pk}/reactivate/")
    key.refresh_from_db()
    assert key.status == ClientKey.Status.ACTIVE
    assert browser.get(f"{KEYS}{key.pk}/revoke/").status_code == 405


# -------------------------------------------------------------------- who reaches what


def key_urls(key_id: int) -> list[str]:
    base = f"{KEYS}{key_id}/"
    return [base, *(f"{base}{p}/" for p in ("created", "top-up", "limits", "delete"))]


@pytest.mark.usefixtures("books_balance")
def test_another_tenants_keys_answer_404_everywhere_and_change_nothing(
    tenant, outsider, make_reseller: Callable[..., Any]
):
    fund(tenant, "200")
    mine = prepaid(tenant)
    theirs = prepaid(outsider[0], label="theirs")
    client = signed_in(tenant)
    before = (entries(outsider[0]), balance(outsider[0]))
    posts = {"client_amount": "50", "rpm": "1", "label": "x", "max_concurrency": "1"}
    for url in [
        *key_urls(theirs.pk),
        f"{KEYS}{theirs.pk}/revoke/",
        f"{KEYS}{theirs.pk}/reactivate/",
    ]:
        if not url.endswith(("revoke/", "reactivate/")):
            assert client.get(url).status_code == 404, url
        assert client.post(url, posts).status_code == 404, url
    theirs.refresh_from_db()
    assert (theirs.status, theirs.label, theirs.requests_per_minute) == ("active", "theirs", 60)
    assert (entries(outsider[0]), balance(outsider[0])) == before
    assert theirs.label not in text(client.get(KEYS))
    assert client.get(f"{KEYS}{mine.pk}/").status_code == 200
    assert client.get(f"{KEYS}999999/").status_code == 404


def test_every_key_form_needs_its_csrf_token(tenant):
    fund(tenant, "200")
    key = prepaid(tenant)
    client = signed_in(tenant, enforce_csrf_checks=True)
    for url, data in (
        (NEW, WORKED_EXAMPLE),
        (f"{KEYS}{key.pk}/top-up/", {"client_amount": "5"}),
        (f"{KEYS}{key.pk}/limits/", {"rpm": "1"}),
        (f"{KEYS}{key.pk}/revoke/", {}),
        (f"{KEYS}{key.pk}/reactivate/", {}),
        (f"{KEYS}{key.pk}/delete/", {}),
    ):
        assert client.post(url, data).status_code == 403, url
    key.refresh_from_db()
    assert key.status == ClientKey.Status.ACTIVE and key.client_budget_nanos == parse_usd("100")
    assert balance(tenant) == parse_usd("140")


def test_a_visitor_is_sent_to_sign_in_from_every_key_page(tenant):
    fund(tenant, "100")
    key = prepaid(tenant)
    for url in [KEYS, NEW, *key_urls(key.pk)]:
        response = Client().get(url)
        assert response.status_code == 302 and response["Location"].startswith(
            "/dashboard/sign-in/?next="
        ), url
    assert Client().post(f"{KEYS}{key.pk}/delete/").status_code == 302
    assert ClientKey.objects.get(pk=key.pk).status == ClientKey.Status.ACTIVE
