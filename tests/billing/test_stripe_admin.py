"""The operator's admin for card top-ups and Stripe events: both read-only, and "Reprocess",
which runs a failed event again through the webhook's own dispatch."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from billing.models import LedgerEntry, StripeEvent, TopUp
from billing.money import parse_usd
from billing.selectors import wallet_for_tenant
from billing.top_ups import top_up_create
from tests.billing.stripe_fake import StripeFake, deliver, event, stripe_fake, stripe_fake_server

__all__ = ["stripe_fake", "stripe_fake_server"]  # fixtures

pytestmark = pytest.mark.usefixtures("books_balance")

EVENTS = reverse("admin:billing_stripeevent_changelist")
TOP_UPS = reverse("admin:billing_topup_changelist")


@pytest.fixture(autouse=True)
def fast_password_hasher(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def failed(stripe_fake: StripeFake, tenant) -> StripeEvent:
    """A paid top-up whose completion failed: Stripe's API errored while it was handled."""
    top_up = top_up_create(tenant=tenant, actor=None, amount_nanos=parse_usd("40"))
    completed = event("checkout.session.completed", stripe_fake.complete(top_up.stripe_session_id))
    stripe_fake.fail_next(503, "api_error", "Stripe is down for maintenance.")
    assert deliver(Client(), completed).status_code == 500
    row = StripeEvent.objects.get(event_id=completed["id"])
    assert row.status == StripeEvent.Status.FAILED
    return row


def reprocess(client: Client, *events: StripeEvent):
    return client.post(
        EVENTS,
        {"action": "reprocess", "_selected_action": [e.pk for e in events]},
        follow=True,
    )


def test_reprocess_runs_a_failed_event_again_and_credits(admin_client, failed, tenant):
    page = admin_client.get(EVENTS).content.decode()
    assert "Stripe is down for maintenance." in page
    assert wallet_for_tenant(tenant=tenant).balance_nanos == 0

    response = reprocess(admin_client, failed)

    assert "Reprocessed: 1 processed." in response.content.decode()
    failed.refresh_from_db()
    assert (failed.status, failed.attempts, failed.error) == ("processed", 2, "")
    assert wallet_for_tenant(tenant=tenant).balance_nanos == parse_usd("40")
    assert TopUp.objects.get().status == TopUp.Status.CREDITED
    # Done once: reprocessing it again skips it, and credits nothing more.
    again = reprocess(admin_client, failed)
    assert "1 already processed (skipped)" in again.content.decode()
    assert LedgerEntry.objects.filter(kind="top_up").count() == 1


def test_reprocess_that_fails_again_says_so(admin_client, failed, stripe_fake: StripeFake):
    stripe_fake.fail_next(503, "api_error", "Still down.")

    response = reprocess(admin_client, failed)

    assert "Reprocessed: 1 failed." in response.content.decode()
    failed.refresh_from_db()
    assert (failed.status, failed.attempts) == ("failed", 2)
    assert "Still down." in failed.error


def test_staff_without_the_change_permission_cannot_reprocess(failed, tenant):
    user = get_user_model().objects.create_user("viewer", "v@example.com", "pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_stripeevent"))
    client = Client()
    client.force_login(user)

    assert client.get(EVENTS).status_code == 200
    assert "Reprocess the selected events" not in client.get(EVENTS).content.decode()
    reprocess(client, failed)

    failed.refresh_from_db()
    assert failed.status == StripeEvent.Status.FAILED
    assert wallet_for_tenant(tenant=tenant).balance_nanos == 0


def test_top_ups_and_events_are_read_only(admin_client, failed):
    top_up = TopUp.objects.get()
    assert admin_client.get(TOP_UPS).status_code == 200
    detail = admin_client.get(reverse("admin:billing_topup_change", args=[top_up.pk]))
    assert detail.status_code == 200 and "40.00" in detail.content.decode()
    assert admin_client.get(reverse("admin:billing_topup_add")).status_code == 403
    change = reverse("admin:billing_topup_change", args=[top_up.pk])
    assert admin_client.post(change, {"status": "credited"}).status_code == 403
    assert (
        admin_client.post(reverse("admin:billing_topup_delete", args=[top_up.pk])).status_code
        == 403
    )
    event_page = admin_client.get(reverse("admin:billing_stripeevent_change", args=[failed.pk]))
    assert event_page.status_code == 200 and failed.event_id in event_page.content.decode()
    assert admin_client.get(reverse("admin:billing_stripeevent_add")).status_code == 403
    top_up.refresh_from_db()
    assert top_up.status == TopUp.Status.PENDING
