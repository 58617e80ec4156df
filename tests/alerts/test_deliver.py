"""Delivering an alert (alerts.services.deliver): the signed webhook to a local receiver
(allowed by ALERT_WEBHOOK_ALLOW_PRIVATE), retries with backoff and then failure, never
twice for one crossing, the sweep, and the address checked again at every try."""

from __future__ import annotations

import smtplib
from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from alerts.models import AlertDelivery, AlertEvent
from alerts.services import (
    DeliveryOutcome,
    alert_deliver,
    alert_settings_update,
    alert_test_send,
    deliveries_resume,
    retry_delay,
    webhook_secret_rotate,
)
from alerts.tasks import alert_delivery_task
from alerts.webhooks import EVENT_ID_HEADER, SIGNATURE_HEADER
from tests.alerts.conftest import check, prepaid_key, resolving, spend, verify

pytestmark = pytest.mark.usefixtures("tasks_in_process")


@pytest.fixture
def allow_private(settings) -> None:
    settings.ALERT_WEBHOOK_ALLOW_PRIVATE = True


@pytest.fixture
def quick_retries(settings) -> None:
    settings.ALERT_DELIVERY_MAX_RETRIES = 2
    settings.ALERT_DELIVERY_BACKOFF_SECONDS = 10
    settings.ALERT_DELIVERY_BACKOFF_MAX_SECONDS = 15


def webhook_on(tenant, url: str) -> str:
    saved = alert_settings_update(tenant=tenant, actor=None, changes={"webhook_url": url})
    assert saved.new_secret is not None
    return saved.new_secret


def due_now(delivery: AlertDelivery) -> None:
    """Move the delivery's next try to now (the backoff's wait, elapsed)."""
    AlertDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())


def webhook_delivery() -> AlertDelivery:
    return AlertDelivery.objects.get(channel=AlertDelivery.Channel.WEBHOOK)


# --------------------------------------------------------------------------- the webhook


@pytest.mark.usefixtures("books_balance", "allow_private")
def test_crossing_80_percent_posts_one_signed_webhook_and_one_email(
    acme, price, receiver, django_capture_on_commit_callbacks
):
    secret = webhook_on(acme, receiver.url)
    key = prepaid_key(acme)
    spend(key, price, "85")

    (event,) = check(django_capture_on_commit_callbacks)
    check(django_capture_on_commit_callbacks)

    (request,) = receiver.requests
    assert len(mail.outbox) == 1
    headers = request["headers"]
    assert request["path"] == "/hooks/tollgate"
    assert headers["Content-Type"] == "application/json"
    assert headers[EVENT_ID_HEADER] == event.public_id
    assert verify(secret, request["body"], headers[SIGNATURE_HEADER])
    (body,) = receiver.bodies()
    assert body == {
        "id": event.public_id,
        "type": "key.threshold_reached",
        "created": int(event.created_at.timestamp()),
        "tenant": acme.pk,
        "data": {
            "key": {"id": key.pk, "label": "Client A", "prefix": key.prefix, "funding": "prepaid"},
            "threshold_percent": 80,
            "used_percent": 85,
            "limit_kind": "budget",
            "budget_period": "none",
            "limit": "100.00",
            "used": "85.00",
            "remaining": "15.00",
            "cost_spent": "51.00",
            "dashboard_url": f"https://tollgate.example/dashboard/keys/{key.pk}/",
        },
    }
    delivery = webhook_delivery()
    assert (delivery.status, delivery.attempts, delivery.http_status) == ("sent", 1, 200)
    assert delivery.target == receiver.url and delivery.sent_at is not None


@pytest.mark.usefixtures("books_balance", "allow_private", "quick_retries")
def test_a_failing_endpoint_is_retried_with_backoff_then_failed(
    acme, price, receiver, django_capture_on_commit_callbacks
):
    webhook_on(acme, receiver.url)
    receiver.status = 500
    key = prepaid_key(acme)
    spend(key, price, "85")
    before = timezone.now()

    check(django_capture_on_commit_callbacks)  # the first try, in process

    delivery = webhook_delivery()
    assert (delivery.status, delivery.attempts, delivery.http_status) == ("retrying", 1, 500)
    assert delivery.last_error == "The webhook answered HTTP 500."
    # 10 s × 2⁰, jittered between half and all of it.
    assert delivery.next_attempt_at is not None
    assert before + timedelta(seconds=5) <= delivery.next_attempt_at
    assert delivery.next_attempt_at <= timezone.now() + timedelta(seconds=10)
    # Not due yet: a second run (a message delivered twice) tries nothing.
    assert alert_deliver(delivery_id=delivery.pk).outcome == DeliveryOutcome.SKIPPED
    assert len(receiver.requests) == 1

    due_now(delivery)
    attempt = alert_deliver(delivery_id=delivery.pk)
    assert attempt.outcome == DeliveryOutcome.RETRY
    assert attempt.retry_in is not None and 7.5 <= attempt.retry_in <= 15  # 20 s, capped at 15
    due_now(delivery)
    assert alert_deliver(delivery_id=delivery.pk).outcome == DeliveryOutcome.FAILED

    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.http_status) == ("failed", 3, 500)
    assert delivery.next_attempt_at is None
    assert len(receiver.requests) == 3
    due_now(delivery)
    assert alert_deliver(delivery_id=delivery.pk).outcome == DeliveryOutcome.SKIPPED
    assert len(receiver.requests) == 3
    # The email of the same alert went through.
    assert AlertDelivery.objects.get(channel="email").status == "sent"


@pytest.mark.usefixtures("books_balance", "allow_private")
def test_a_sent_delivery_is_never_sent_again(
    acme, price, receiver, django_capture_on_commit_callbacks
):
    webhook_on(acme, receiver.url)
    key = prepaid_key(acme)
    spend(key, price, "85")
    check(django_capture_on_commit_callbacks)
    delivery = webhook_delivery()

    for _ in range(3):
        alert_delivery_task.delay(delivery.pk)  # a message delivered again, a retry
    assert deliveries_resume(now=timezone.now() + timedelta(hours=1)) == 0

    assert len(receiver.requests) == 1
    assert len(mail.outbox) == 1


@pytest.mark.usefixtures("books_balance", "allow_private")
def test_a_try_under_way_elsewhere_is_not_tried_again(
    acme, price, receiver, django_capture_on_commit_callbacks, monkeypatch
):
    webhook_on(acme, receiver.url)
    monkeypatch.setattr("alerts.services.check._enqueue", lambda ids: None)
    key = prepaid_key(acme)
    spend(key, price, "85")
    check(django_capture_on_commit_callbacks)
    delivery = webhook_delivery()
    leased = timezone.now() + timedelta(minutes=5)
    AlertDelivery.objects.filter(pk=delivery.pk).update(locked_until=leased)

    assert alert_deliver(delivery_id=delivery.pk).outcome == DeliveryOutcome.SKIPPED
    assert receiver.requests == []

    # A lease that expired (its worker died): the next try takes it.
    AlertDelivery.objects.filter(pk=delivery.pk).update(
        locked_until=timezone.now() - timedelta(seconds=1)
    )
    assert alert_deliver(delivery_id=delivery.pk).outcome == DeliveryOutcome.SENT
    assert len(receiver.requests) == 1


@pytest.mark.usefixtures("books_balance", "allow_private")
def test_the_sweep_sends_deliveries_whose_task_was_lost(
    acme, price, receiver, django_capture_on_commit_callbacks, monkeypatch
):
    webhook_on(acme, receiver.url)
    monkeypatch.setattr("alerts.services.check._enqueue", lambda ids: None)  # a broker down
    key = prepaid_key(acme)
    spend(key, price, "85")
    check(django_capture_on_commit_callbacks)

    assert deliveries_resume() == 0  # just created: its own task may still come
    assert receiver.requests == []
    assert deliveries_resume(now=timezone.now() + timedelta(minutes=2)) == 2

    assert len(receiver.requests) == 1
    assert len(mail.outbox) == 1
    assert set(AlertDelivery.objects.values_list("status", flat=True)) == {"sent"}


@pytest.mark.usefixtures("books_balance")
def test_a_webhook_removed_or_email_turned_off_before_the_send_fails_at_once(
    acme, price, django_capture_on_commit_callbacks, monkeypatch
):
    webhook_on(acme, "https://93.184.216.34/hook")
    monkeypatch.setattr("alerts.services.check._enqueue", lambda ids: None)
    key = prepaid_key(acme)
    spend(key, price, "85")
    check(django_capture_on_commit_callbacks)
    alert_settings_update(tenant=acme, actor=None, changes={"webhook_url": None, "email": False})

    for delivery in AlertDelivery.objects.all():
        assert alert_deliver(delivery_id=delivery.pk).outcome == DeliveryOutcome.FAILED

    errors = dict(AlertDelivery.objects.values_list("channel", "last_error"))
    assert errors == {
        "email": "Email alerts were turned off before this one was sent.",
        "webhook": "The webhook was removed before this alert was sent.",
    }
    assert mail.outbox == []


@pytest.mark.usefixtures("books_balance")
def test_a_name_that_now_resolves_to_a_private_address_is_not_posted_to(
    acme, price, django_capture_on_commit_callbacks, monkeypatch
):
    """DNS rebinding: public when saved, loopback at the send. The try checks again and
    connects to nothing."""
    resolving(monkeypatch, {"hooks.example.com": "93.184.216.34"})
    webhook_on(acme, "https://hooks.example.com/in")
    monkeypatch.setattr("alerts.services.check._enqueue", lambda ids: None)
    key = prepaid_key(acme)
    spend(key, price, "85")
    check(django_capture_on_commit_callbacks)
    resolving(monkeypatch, {"hooks.example.com": "127.0.0.1"})

    attempt = alert_deliver(delivery_id=webhook_delivery().pk)

    assert attempt.outcome == DeliveryOutcome.FAILED
    assert "hooks.example.com is 127.0.0.1" in webhook_delivery().last_error


@pytest.mark.usefixtures("allow_private")
def test_the_post_goes_to_the_address_resolved_with_the_names_host_header(
    acme, receiver, monkeypatch
):
    resolving(monkeypatch, {"hooks.example.com": "127.0.0.1"})
    webhook_on(acme, f"http://hooks.example.com:{receiver.port}/in")

    alert_test_send(tenant=acme, actor=None)  # enqueued on commit: run by the test's end
    delivery = webhook_delivery()
    assert alert_deliver(delivery_id=delivery.pk).outcome == DeliveryOutcome.SENT

    (request,) = receiver.requests
    assert request["headers"]["Host"] == f"hooks.example.com:{receiver.port}"
    assert request["path"] == "/in"
    assert receiver.bodies()[0]["type"] == AlertEvent.Type.TEST


@pytest.mark.usefixtures("allow_private")
def test_a_redirect_is_not_followed_and_counts_as_a_failure(acme, receiver):
    receiver.status = 307
    webhook_on(acme, receiver.url)
    alert_test_send(tenant=acme, actor=None)

    attempt = alert_deliver(delivery_id=webhook_delivery().pk)

    assert attempt.outcome == DeliveryOutcome.RETRY
    assert webhook_delivery().http_status == 307
    assert len(receiver.requests) == 1


@pytest.mark.usefixtures("allow_private")
def test_a_rotated_secret_signs_the_next_delivery(
    acme, receiver, django_capture_on_commit_callbacks
):
    old = webhook_on(acme, receiver.url)
    new = webhook_secret_rotate(tenant=acme, actor=None).new_secret
    assert new is not None and new != old

    with django_capture_on_commit_callbacks(execute=True):
        alert_test_send(tenant=acme, actor=None)

    (request,) = receiver.requests
    signature = request["headers"][SIGNATURE_HEADER]
    assert verify(new, request["body"], signature)
    assert not verify(old, request["body"], signature)


# ------------------------------------------------------------------------------- email


@pytest.mark.usefixtures("books_balance", "quick_retries")
def test_a_mail_server_down_is_retried_and_the_email_sent_once_it_is_back(
    acme, price, django_capture_on_commit_callbacks, monkeypatch
):
    calls = []

    def refuse(self, fail_silently=False):
        calls.append(self.subject)
        raise smtplib.SMTPServerDisconnected("Connection unexpectedly closed")

    monkeypatch.setattr("django.core.mail.EmailMessage.send", refuse)
    key = prepaid_key(acme)
    spend(key, price, "85")
    check(django_capture_on_commit_callbacks)
    (delivery,) = AlertDelivery.objects.all()
    assert (delivery.status, delivery.last_error) == ("retrying", "Connection unexpectedly closed")

    monkeypatch.undo()
    due_now(delivery)
    assert alert_deliver(delivery_id=delivery.pk).outcome == DeliveryOutcome.SENT
    assert len(calls) == 1 and len(mail.outbox) == 1


def test_the_backoff_doubles_is_jittered_and_capped(settings):
    settings.ALERT_DELIVERY_BACKOFF_SECONDS = 60
    settings.ALERT_DELIVERY_BACKOFF_MAX_SECONDS = 3600
    for attempts, full in [(1, 60), (2, 120), (3, 240), (5, 960), (7, 3600), (30, 3600)]:
        delays = [retry_delay(attempts) for _ in range(50)]
        assert all(full / 2 <= d <= full for d in delays), attempts
        assert len(set(delays)) > 1  # jittered
