"""The operator's admin for billing: money read-only except through services, secrets write-only."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.urls import reverse

from accounts import events
from billing import crypto
from billing.models import LedgerEntry, ModelPrice, ModelRoute, Reservation, Upstream
from billing.money import PriceTier, Usage, parse_usd
from billing.selectors import price_current, wallet_for_tenant
from billing.services import upstream_demo_ensure, upstream_save, wallet_credit
from tests.keys.factories import WalletKeyFactory
from tests.metering import reserve

pytestmark = pytest.mark.usefixtures("books_balance")


@pytest.fixture(autouse=True)
def fast_password_hasher(settings):
    """The admin client logs a superuser in; the real hasher costs ~0.5 s per test."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def url(name: str, *args: object) -> str:
    return reverse(f"admin:{name}", args=args)


@pytest.fixture
def wallet(tenant):
    wallet_credit(tenant=tenant, amount_nanos=parse_usd("12.5"), reason="opening credit")
    return wallet_for_tenant(tenant=tenant)


@pytest.mark.parametrize(
    "model", ["wallet", "ledgerentry", "upstream", "modelroute", "modelprice", "reservation"]
)
def test_changelists_load(admin_client, wallet, outsider, price, model):
    key = WalletKeyFactory.create(tenant=wallet.tenant)
    reserve(key=key, price=price, request_id="r1", worst_case=Usage(input_tokens=10))
    response = admin_client.get(url(f"billing_{model}_changelist"))
    assert response.status_code == 200


def test_wallet_money_reads_as_usd_strings(admin_client, wallet):
    changelist = admin_client.get(url("billing_wallet_changelist")).content.decode()
    detail = admin_client.get(url("billing_wallet_change", wallet.pk)).content.decode()
    assert "12.50" in changelist and "12.50" in detail
    assert "12500000000" not in changelist + detail


def test_wallet_cannot_be_edited_added_or_deleted(admin_client, wallet):
    response = admin_client.post(url("billing_wallet_change", wallet.pk), {"balance_nanos": 1})
    assert response.status_code == 403
    assert admin_client.get(url("billing_wallet_add")).status_code == 403
    assert (
        admin_client.post(url("billing_wallet_delete", wallet.pk), {"post": "yes"}).status_code
        == 403
    )
    assert wallet_for_tenant(tenant=wallet.tenant).balance_nanos == parse_usd("12.5")


class TestWalletCredit:
    def form(self, admin_client, wallet) -> dict[str, str]:
        page = admin_client.get(url("billing_wallet_credit", wallet.pk)).content.decode()
        key = re.search(r'name="idempotency_key" value="([0-9a-f]+)"', page)
        assert key is not None
        return {"idempotency_key": key.group(1)}

    def test_credit_posts_through_the_ledger(self, admin_client, admin_user, wallet):
        data = {
            **self.form(admin_client, wallet),
            "amount": "7.50",
            "kind": "manual_credit",
            "reason": "goodwill",
        }
        response = admin_client.post(url("billing_wallet_credit", wallet.pk), data)

        assert response.status_code == 302
        assert response["Location"] == url("billing_wallet_change", wallet.pk)
        entry = LedgerEntry.objects.get(reason="goodwill")
        assert entry.amount_nanos == parse_usd("7.5") and entry.actor == admin_user
        assert wallet_for_tenant(tenant=wallet.tenant).balance_nanos == parse_usd("20")

    def test_submitting_the_form_twice_credits_once(self, admin_client, wallet):
        data = {
            **self.form(admin_client, wallet),
            "amount": "1",
            "kind": "manual_credit",
            "reason": "twice",
        }
        admin_client.post(url("billing_wallet_credit", wallet.pk), data)
        admin_client.post(url("billing_wallet_credit", wallet.pk), data)
        assert LedgerEntry.objects.filter(reason="twice").count() == 1

    def test_negative_adjustment(self, admin_client, wallet):
        data = {
            **self.form(admin_client, wallet),
            "amount": "-2.5",
            "kind": "adjustment",
            "reason": "correction",
        }
        admin_client.post(url("billing_wallet_credit", wallet.pk), data)
        assert wallet_for_tenant(tenant=wallet.tenant).balance_nanos == parse_usd("10")

    @pytest.mark.parametrize(
        ("amount", "kind", "message"),
        [
            ("ten", "manual_credit", "Not a valid USD amount"),
            ("0.0000000001", "manual_credit", "Not a valid USD amount"),
            ("-1", "manual_credit", "a credit must be positive"),
            ("-100", "adjustment", "available"),
        ],
    )
    def test_refused_credit_shows_why_and_posts_nothing(
        self, admin_client, wallet, amount, kind, message
    ):
        data = {**self.form(admin_client, wallet), "amount": amount, "kind": kind, "reason": "r"}
        response = admin_client.post(url("billing_wallet_credit", wallet.pk), data)
        assert response.status_code == 200
        assert message in response.content.decode()
        assert LedgerEntry.objects.count() == 1

    def test_staff_without_permission_cannot_credit(self, client, wallet):
        user = get_user_model().objects.create_user("viewer", "v@example.com", "pw", is_staff=True)
        user.user_permissions.add(Permission.objects.get(codename="view_wallet"))
        client.force_login(user)
        assert client.get(url("billing_wallet_change", wallet.pk)).status_code == 200
        assert client.get(url("billing_wallet_credit", wallet.pk)).status_code == 403

    def test_anonymous_is_sent_to_login(self, client, wallet):
        response = client.get(url("billing_wallet_credit", wallet.pk))
        assert response.status_code == 302 and "/login/" in response["Location"]


def test_ledger_entries_are_read_only(admin_client, wallet):
    entry = LedgerEntry.objects.get()
    site = admin_client.get(url("billing_ledgerentry_changelist"))
    model_admin = site.context["cl"].model_admin
    request = site.wsgi_request
    assert not model_admin.has_add_permission(request)
    assert not model_admin.has_change_permission(request, entry)
    assert not model_admin.has_delete_permission(request, entry)

    assert admin_client.get(url("billing_ledgerentry_add")).status_code == 403
    view = admin_client.get(url("billing_ledgerentry_change", entry.pk))
    assert view.status_code == 200 and "12.50" in view.content.decode()
    assert (
        admin_client.post(
            url("billing_ledgerentry_change", entry.pk), {"amount_nanos": 1}
        ).status_code
        == 403
    )
    assert (
        admin_client.post(url("billing_ledgerentry_delete", entry.pk), {"post": "yes"}).status_code
        == 403
    )
    assert LedgerEntry.objects.get().amount_nanos == parse_usd("12.5")


def test_ledger_filters_by_kind_and_wallet(admin_client, wallet):
    response = admin_client.get(
        url("billing_ledgerentry_changelist"),
        {"kind": "manual_credit", "wallet__id__exact": wallet.pk},
    )
    assert response.status_code == 200
    assert response.context["cl"].result_count == 1


class TestUpstream:
    form = {
        "name": "openai",
        "kind": "openai",
        "base_url": "https://api.openai.com/v1/",
        "api_key_env": "",
        "api_key": "sk-admin-secret-123",
        "timeout_seconds": "60",
        "is_active": "on",
    }

    def test_add_encrypts_the_key_and_never_shows_it(self, admin_client):
        response = admin_client.post(url("billing_upstream_add"), self.form)

        assert response.status_code == 302
        upstream = Upstream.objects.get(name="openai")
        assert upstream.base_url == "https://api.openai.com/v1"
        assert crypto.decrypt(upstream.api_key_encrypted) == "sk-admin-secret-123"
        page = admin_client.get(url("billing_upstream_change", upstream.pk)).content.decode()
        page += admin_client.get(url("billing_upstream_changelist")).content.decode()
        assert "sk-admin-secret-123" not in page
        assert upstream.api_key_encrypted not in page
        assert "stored (encrypted)" in page

    def test_blank_key_keeps_the_stored_one_and_clear_removes_it(self, admin_client):
        upstream = upstream_save(
            name="openai", kind="openai", base_url="https://api.openai.com/v1", api_key="sk-old"
        )
        change = url("billing_upstream_change", upstream.pk)
        data = {**self.form, "api_key": "", "timeout_seconds": "30"}
        assert admin_client.post(change, data).status_code == 302
        upstream.refresh_from_db()
        assert upstream.timeout_seconds == 30
        assert crypto.decrypt(upstream.api_key_encrypted) == "sk-old"

        admin_client.post(change, {**data, "clear_api_key": "on", "api_key_env": "OPENAI_API_KEY"})
        upstream.refresh_from_db()
        assert (upstream.api_key_encrypted, upstream.api_key_env) == ("", "OPENAI_API_KEY")

    def test_invalid_base_url_shows_the_service_message(self, admin_client):
        data = {**self.form, "kind": "anthropic", "base_url": "https://api.anthropic.com/v1"}
        response = admin_client.post(url("billing_upstream_add"), data)
        assert response.status_code == 200
        assert "without /v1" in response.content.decode()
        assert not Upstream.objects.exists()


class TestDemoUpstream:
    """The built-in demo upstream (made by seed_demo): an operator turns it off or on here,
    and can neither make another nor turn one into a provider's."""

    def test_a_new_upstream_cannot_be_the_demo(self, admin_client):
        page = admin_client.get(url("billing_upstream_add")).content.decode()
        assert 'value="openai"' in page and 'value="anthropic"' in page
        assert 'value="demo"' not in page
        data = {**TestUpstream.form, "name": "fake-demo", "kind": "demo"}
        response = admin_client.post(url("billing_upstream_add"), data)
        assert response.status_code == 200
        assert "Select a valid choice" in response.content.decode()
        assert not Upstream.objects.filter(kind=Upstream.Kind.DEMO).exists()

    def test_the_operator_turns_the_demo_off_and_its_kind_stays(
        self, admin_client, django_capture_on_commit_callbacks, monkeypatch
    ):
        announced: list[str] = []
        monkeypatch.setattr(events, "_listeners", [announced.append])
        demo, created = upstream_demo_ensure(name="tollgate-demo")
        assert created and demo.is_active
        change = url("billing_upstream_change", demo.pk)
        page = admin_client.get(change).content.decode()
        assert "Untick Active to take the demo model away" in page
        data = {
            "kind": "openai",  # disabled on this form: ignored
            "base_url": demo.base_url,
            "api_key_env": "",
            "api_key": "",
            "timeout_seconds": "600",
        }
        with django_capture_on_commit_callbacks(execute=True):
            assert admin_client.post(change, data).status_code == 302
        demo.refresh_from_db()
        assert (demo.kind, demo.is_active) == (Upstream.Kind.DEMO, False)
        assert "routes" in announced
        assert upstream_demo_ensure(name="tollgate-demo") == (demo, False)
        demo.refresh_from_db()
        assert not demo.is_active  # the seeding leaves the operator's choice alone


class TestModelPrice:
    def test_add_posts_a_new_manual_version(self, admin_client, price):
        route = price.route
        data = {
            "route": route.pk,
            "input_usd": "2.50",
            "output_usd": "10",
            "cached_input_usd": "1.25",
            "cache_write_usd": "",
        }
        response = admin_client.post(url("billing_modelprice_add"), data)

        assert response.status_code == 302
        current = price_current(route=route)
        assert current is not None and current.pk != price.pk
        assert current.source == ModelPrice.Source.MANUAL
        assert (current.input_per_mtok_nanos, current.output_per_mtok_nanos) == (
            parse_usd("2.5"),
            parse_usd("10"),
        )
        assert current.cached_input_per_mtok_nanos == parse_usd("1.25")
        assert current.cache_write_per_mtok_nanos is None
        assert ModelPrice.objects.filter(pk=price.pk).exists()

    def test_a_price_is_never_edited_or_deleted(self, admin_client, price):
        change = url("billing_modelprice_change", price.pk)
        view = admin_client.get(change)
        assert view.status_code == 200 and "1.00" in view.content.decode()
        assert admin_client.post(change, {"input_usd": "9"}).status_code == 403
        assert (
            admin_client.post(
                url("billing_modelprice_delete", price.pk), {"post": "yes"}
            ).status_code
            == 403
        )
        assert ModelPrice.objects.get(pk=price.pk).input_per_mtok_nanos == parse_usd("1")

    def test_bad_price_is_refused(self, admin_client, price):
        data = {"route": price.route.pk, "input_usd": "-1", "output_usd": "1.0000000001"}
        response = admin_client.post(url("billing_modelprice_add"), data)
        assert response.status_code == 200
        assert ModelPrice.objects.count() == 1

    def test_add_with_long_prompt_tiers(self, admin_client, price):
        data = {
            "route": price.route.pk,
            "input_usd": "3",
            "output_usd": "15",
            "cached_input_usd": "0.30",
            "cache_write_usd": "",
            "tiers_text": "200000:6:22.5:0.6\n\n",
        }
        assert admin_client.post(url("billing_modelprice_add"), data).status_code == 302

        current = price_current(route=price.route)
        assert current is not None
        assert current.as_prices().tiers == (
            PriceTier(
                above_prompt_tokens=200_000,
                input_per_mtok_nanos=parse_usd("6"),
                output_per_mtok_nanos=parse_usd("22.5"),
                cached_input_per_mtok_nanos=parse_usd("0.6"),
            ),
        )
        page = admin_client.get(url("billing_modelprice_change", current.pk)).content.decode()
        assert "over 200000 prompt tokens: input 6.00, output 22.50" in page

    @pytest.mark.parametrize(
        ("tiers", "message"),
        [
            ("200000:6", "expected ABOVE:INPUT:OUTPUT"),
            ("200000:6:22.5\n100000:9:30", "rise from one tier to the next"),
        ],
    )
    def test_bad_tiers_are_refused_with_the_reason(self, admin_client, price, tiers, message):
        data = {"route": price.route.pk, "input_usd": "3", "output_usd": "15", "tiers_text": tiers}
        response = admin_client.post(url("billing_modelprice_add"), data)
        assert response.status_code == 200
        assert message in response.content.decode()
        assert ModelPrice.objects.count() == 1

    def test_changelist_shows_usd_per_mtok(self, admin_client, price):
        page = admin_client.get(url("billing_modelprice_changelist")).content.decode()
        assert "0.50" in page and "2.00" in page


def test_route_changelist_shows_the_current_price(admin_client, price):
    page = admin_client.get(url("billing_modelroute_changelist")).content.decode()
    assert "mock-gpt" in page and "1.00" in page and "2.00" in page


def test_route_keeps_its_model_and_upstream_and_tells_the_proxy(
    admin_client, price, django_capture_on_commit_callbacks, monkeypatch
):
    announced: list[str] = []
    monkeypatch.setattr(events, "_listeners", [announced.append])
    route = price.route
    data = {
        "upstream_model": "real-gpt",
        "priority": "5",
        "max_output_tokens": "100",
        "is_active": "on",
    }
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(url("billing_modelroute_change", route.pk), data)
    assert response.status_code == 302
    assert "routes" in announced
    route.refresh_from_db()
    assert (route.model, route.upstream_model, route.priority) == ("mock-gpt", "real-gpt", 5)
    assert ModelRoute.objects.count() == 1


def test_reservations_are_read_only(admin_client, tenant, outsider, price):
    wallet_credit(tenant=tenant, amount_nanos=parse_usd("1"), reason="r")
    key = WalletKeyFactory.create(tenant=tenant)
    reserve(key=key, price=price, request_id="r1", worst_case=Usage(input_tokens=1000))
    reservation = Reservation.objects.get()
    assert admin_client.get(url("billing_reservation_change", reservation.pk)).status_code == 200
    assert (
        admin_client.post(url("billing_reservation_change", reservation.pk), {}).status_code == 403
    )
    assert admin_client.get(url("billing_reservation_add")).status_code == 403
