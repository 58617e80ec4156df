"""Client alerts (portal.alerts, portal.tasks): once per crossing, re-armed below, sent
under the reseller's name in client prices only.

Keys spend through ``tests.metering`` (reserve and settle, as the proxy does), so the books
stay right. The check's emails are enqueued on commit: each test runs the check inside
``django_capture_on_commit_callbacks(execute=True)``, and its tasks run in this process
(``tasks_in_process``), as in development; a real worker runs them in
``test_alerts_worker.py``.
"""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from fractions import Fraction

import pytest
from django.core import mail
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import Tenant
from accounts.services import IssuedToken
from billing.models import ModelPrice
from billing.money import Usage, parse_usd
from config.celery import app
from keys.models import ClientKey
from keys.services import key_create, key_delete, key_top_up, key_update
from portal.alerts import (
    AlertChoiceInvalid,
    AlertKind,
    AlertSendOutcome,
    alert_preferences_set,
    alert_send,
    client_alerts_check,
    sender_name,
)
from portal.models import PortalBinding, PortalClient
from portal.tasks import SEND_MAX_RETRIES, client_alert_send_task, client_alerts_task
from tests.metering import charge
from tests.portal.conftest import bound
from tests.races import race_on_locked_row

# The conftest price's output rate at cost: $2 per 1M tokens.
OUTPUT_COST_NANOS_PER_TOKEN = 2_000
PUBLIC_URL = "https://portal.example"


# ------------------------------------------------------------------------------ helpers


@pytest.fixture
def tasks_in_process() -> Iterator[None]:
    """Enqueued tasks run here and now (``CELERY_TASK_ALWAYS_EAGER``, development's mode).
    With ``REDIS_URL`` set they would go to a broker that no worker of this test reads.
    (The producer pool an eager task leaves on the configured broker is dropped by
    ``tests.worker.publishing_to`` before any test publishes to a broker of its own.)"""
    saved = app.conf.task_always_eager
    app.conf.task_always_eager = True
    try:
        yield
    finally:
        app.conf.task_always_eager = saved


@pytest.fixture(autouse=True)
def public_url(settings) -> None:
    settings.PUBLIC_URL = PUBLIC_URL


def acme_reseller(make_reseller: Callable[..., tuple[Tenant, IssuedToken]]) -> Tenant:
    """A reseller named Acme AI, with a support address and $500 in its wallet."""
    tenant, _ = make_reseller(email="owner@acme.example", balance="500")
    tenant.name = "Acme AI"
    tenant.support_email = "help@acme.example"
    tenant.save()
    return tenant


@pytest.fixture
def acme(make_reseller: Callable[..., tuple[Tenant, IssuedToken]]) -> Tenant:
    return acme_reseller(make_reseller)


def prepaid_key(tenant: Tenant, *, budget: str = "100", cost: str = "60") -> ClientKey:
    """Client A: a prepaid key funded at client budget $100, cost $60."""
    return key_create(
        tenant=tenant,
        actor=None,
        label="Client A",
        client_budget_nanos=parse_usd(budget),
        your_cost_nanos=parse_usd(cost),
    ).key


def capped_key(tenant: Tenant, *, cap: str = "50") -> ClientKey:
    """A wallet-funded key (ratio 1:1) whose spend is capped at ``cap`` a month."""
    return key_create(
        tenant=tenant,
        actor=None,
        label="Client W",
        funding=ClientKey.Funding.WALLET,
        spend_cap_nanos=parse_usd(cap),
        budget_period=ClientKey.BudgetPeriod.MONTHLY,
    ).key


def spend(key: ClientKey, price: ModelPrice, client_usd: str, *, now=None) -> None:
    """One request that charges ``client_usd`` in the key's client prices (output tokens
    only, at the conftest price), reserved and settled as the proxy does."""
    key.refresh_from_db()
    tokens = Fraction(parse_usd(client_usd)) * key.ratio_cost_nanos / key.ratio_client_nanos
    tokens /= OUTPUT_COST_NANOS_PER_TOKEN
    assert tokens.denominator == 1, "pick an amount the price charges exactly"
    before = key.client_spent_nanos
    charge(
        key=key,
        price=price,
        request_id=f"req-{uuid.uuid4().hex}",
        usage=Usage(input_tokens=0, output_tokens=int(tokens)),
        now=now,
    )
    key.refresh_from_db()
    assert key.client_spent_nanos - before == parse_usd(client_usd)


def top_up(key: ClientKey, client_usd: str) -> None:
    key_top_up(
        tenant=key.tenant,
        actor=None,
        key_id=key.pk,
        client_amount_nanos=parse_usd(client_usd),
    )


def check(capture, **kwargs) -> list[tuple[int, AlertKind]]:
    """Run the check as the beat does, its enqueued emails sent when its claims commit."""
    with capture(execute=True):
        return client_alerts_check(**kwargs)


def html_of(message: mail.EmailMessage) -> str:
    """The HTML alternative of an alert email."""
    assert isinstance(message, mail.EmailMultiAlternatives)
    ((html, mimetype),) = message.alternatives
    assert mimetype == "text/html"
    return str(html)


def client(email: str = "client@example.com") -> PortalClient:
    return PortalClient.objects.get_or_create(email=email)[0]


def refreshed(binding: PortalBinding) -> PortalBinding:
    binding.refresh_from_db()
    return binding


pytestmark = pytest.mark.usefixtures("tasks_in_process")


# ------------------------------------------------------------------- once per crossing


@pytest.mark.usefixtures("books_balance")
def test_crossing_the_share_sends_one_email_and_a_second_check_sends_none(
    acme, price, django_capture_on_commit_callbacks
):
    key = prepaid_key(acme)
    binding = bound(client(), key, alert_percent=80)

    spend(key, price, "79.99")
    assert check(django_capture_on_commit_callbacks) == []
    assert mail.outbox == []

    spend(key, price, "0.01")  # exactly 80 %
    assert check(django_capture_on_commit_callbacks) == [(binding.pk, AlertKind.PERCENT)]
    assert len(mail.outbox) == 1
    assert refreshed(binding).percent_alerted_at is not None

    spend(key, price, "5")
    assert check(django_capture_on_commit_callbacks) == []
    assert client_alerts_task() == 0
    assert len(mail.outbox) == 1


@pytest.mark.usefixtures("books_balance")
def test_a_top_up_rearms_the_alert_and_the_next_crossing_sends_again(
    acme, price, django_capture_on_commit_callbacks
):
    key = prepaid_key(acme)
    binding = bound(client(), key, alert_percent=80)
    spend(key, price, "85")
    check(django_capture_on_commit_callbacks)
    assert len(mail.outbox) == 1

    top_up(key, "100")  # $85 of $200: 42.5 %
    assert check(django_capture_on_commit_callbacks) == []
    assert refreshed(binding).percent_alerted_at is None
    assert len(mail.outbox) == 1

    spend(key, price, "74.99")  # $159.99 of $200
    assert check(django_capture_on_commit_callbacks) == []
    spend(key, price, "0.01")
    assert check(django_capture_on_commit_callbacks) == [(binding.pk, AlertKind.PERCENT)]
    assert len(mail.outbox) == 2
    assert "$200.00" in mail.outbox[1].body
    assert "$160.00" in mail.outbox[1].body


@pytest.mark.usefixtures("books_balance")
def test_the_exhausted_alert_is_sent_when_nothing_remains(
    acme, price, django_capture_on_commit_callbacks
):
    key = prepaid_key(acme)
    binding = bound(client(), key, alert_exhausted=True)
    spend(key, price, "99.99")
    assert check(django_capture_on_commit_callbacks) == []

    spend(key, price, "0.01")
    assert check(django_capture_on_commit_callbacks) == [(binding.pk, AlertKind.EXHAUSTED)]
    (email,) = mail.outbox
    assert email.subject == "Acme AI: your key “Client A” has used all of its budget"
    assert "Remaining: $0.00" in email.body
    assert "refused until it is topped up" in email.body
    assert check(django_capture_on_commit_callbacks) == []

    top_up(key, "10")
    check(django_capture_on_commit_callbacks)
    assert refreshed(binding).exhausted_alerted_at is None
    assert len(mail.outbox) == 1


@pytest.mark.usefixtures("books_balance")
def test_both_alerts_of_one_binding_are_sent_when_one_request_passes_both(
    acme, price, django_capture_on_commit_callbacks
):
    key = prepaid_key(acme)
    binding = bound(client(), key, alert_percent=50, alert_exhausted=True)
    spend(key, price, "100")
    claimed = check(django_capture_on_commit_callbacks)
    assert sorted(claimed) == [(binding.pk, AlertKind.EXHAUSTED), (binding.pk, AlertKind.PERCENT)]
    assert sorted(m.subject for m in mail.outbox) == [
        "Acme AI: your key “Client A” has used 50 % of its budget",
        "Acme AI: your key “Client A” has used all of its budget",
    ]


@pytest.mark.usefixtures("books_balance")
def test_a_capped_wallet_key_alerts_on_its_cap_this_period_and_rearms_next_period(
    acme, price, django_capture_on_commit_callbacks
):
    key = capped_key(acme, cap="50")
    binding = bound(client(), key, alert_percent=80, alert_exhausted=True)
    spend(key, price, "39.99")
    assert check(django_capture_on_commit_callbacks) == []
    spend(key, price, "0.01")  # $40 of $50

    assert check(django_capture_on_commit_callbacks) == [(binding.pk, AlertKind.PERCENT)]
    (email,) = mail.outbox
    assert email.subject == (
        "Acme AI: your key “Client W” has used 80 % of its spend cap for this month"
    )
    assert "Spend cap for this month: $50.00" in email.body
    assert "Spent for this month: $40.00" in email.body
    assert "Remaining: $10.00" in email.body

    # A new month: nothing spent against the cap yet, so the alert is armed again.
    next_month = timezone.now() + timedelta(days=32)
    assert check(django_capture_on_commit_callbacks, now=next_month) == []
    assert refreshed(binding).percent_alerted_at is None
    assert len(mail.outbox) == 1


@pytest.mark.usefixtures("books_balance")
def test_a_raised_cap_rearms_and_a_reached_cap_sends_the_exhausted_alert(
    acme, price, django_capture_on_commit_callbacks
):
    key = capped_key(acme, cap="50")
    binding = bound(client(), key, alert_percent=80, alert_exhausted=True)
    spend(key, price, "50")
    check(django_capture_on_commit_callbacks)
    subjects = sorted(m.subject for m in mail.outbox)
    assert subjects == [
        "Acme AI: your key “Client W” has reached its spend cap for this month",
        "Acme AI: your key “Client W” has used 80 % of its spend cap for this month",
    ]
    key_update(tenant=acme, actor=None, key_id=key.pk, changes={"spend_cap": parse_usd("100")})

    assert check(django_capture_on_commit_callbacks) == []
    binding = refreshed(binding)
    assert (binding.percent_alerted_at, binding.exhausted_alerted_at) == (None, None)


@pytest.mark.usefixtures("books_balance")
def test_no_email_when_the_alerts_are_off_or_the_key_has_no_budget_of_its_own(
    acme, price, django_capture_on_commit_callbacks
):
    key = prepaid_key(acme)
    off = bound(client(), key)
    uncapped = key_create(
        tenant=acme, actor=None, label="Open", funding=ClientKey.Funding.WALLET
    ).key
    no_cap = bound(client(), uncapped, alert_percent=1, alert_exhausted=True)
    spend(key, price, "100")
    spend(uncapped, price, "10")

    assert check(django_capture_on_commit_callbacks) == []
    assert mail.outbox == []
    for binding in (off, no_cap):
        binding = refreshed(binding)
        assert (binding.percent_alerted_at, binding.exhausted_alerted_at) == (None, None)


@pytest.mark.usefixtures("books_balance")
def test_every_client_of_a_shared_key_gets_its_own_email(
    acme, price, django_capture_on_commit_callbacks
):
    key = prepaid_key(acme)
    ann = bound(client("ann@example.com"), key, alert_percent=80)
    bob = bound(client("bob@example.com"), key, alert_percent=90)
    spend(key, price, "85")

    assert check(django_capture_on_commit_callbacks) == [(ann.pk, AlertKind.PERCENT)]
    assert [m.to for m in mail.outbox] == [["ann@example.com"]]
    spend(key, price, "5")
    assert check(django_capture_on_commit_callbacks) == [(bob.pk, AlertKind.PERCENT)]
    assert [m.to for m in mail.outbox] == [["ann@example.com"], ["bob@example.com"]]


@pytest.mark.usefixtures("books_balance")
def test_a_deleted_key_sends_nothing(acme, price, django_capture_on_commit_callbacks):
    key = prepaid_key(acme)
    binding = bound(client(), key, alert_percent=80)
    spend(key, price, "90")
    key_delete(tenant=acme, actor=None, key_id=key.pk)

    assert check(django_capture_on_commit_callbacks) == []
    assert mail.outbox == []
    assert refreshed(binding).percent_alerted_at is None


@pytest.mark.usefixtures("books_balance")
def test_the_check_reads_every_binding_in_one_query_and_can_be_limited_to_keys(
    acme, price, django_capture_on_commit_callbacks
):
    keys = [prepaid_key(acme) for _ in range(3)]
    for index, key in enumerate(keys):
        bound(client(f"c{index}@example.com"), key, alert_percent=80, alert_exhausted=True)
    spend(keys[0], price, "10")
    with CaptureQueriesContext(connection) as queries:
        assert check(django_capture_on_commit_callbacks) == []
    assert len(queries) == 1

    spend(keys[1], price, "90")
    spend(keys[2], price, "90")
    claimed = check(django_capture_on_commit_callbacks, key_ids=[keys[1].pk])
    assert [b for b, _ in claimed] == [PortalBinding.objects.get(key=keys[1]).pk]
    assert len(mail.outbox) == 1


# --------------------------------------------------------------------- the client's choices


@pytest.mark.usefixtures("books_balance")
def test_changing_the_share_rearms_it(acme, price, django_capture_on_commit_callbacks):
    key = prepaid_key(acme)
    binding = bound(client(), key, alert_percent=80, alert_exhausted=True)
    spend(key, price, "85")
    check(django_capture_on_commit_callbacks)
    claimed_at = refreshed(binding).percent_alerted_at
    assert claimed_at is not None

    # The same choices again change nothing.
    binding = alert_preferences_set(binding=binding, percent=80, exhausted=True)
    assert binding.percent_alerted_at == claimed_at

    binding = alert_preferences_set(binding=binding, percent=90, exhausted=True)
    assert binding.percent_alerted_at is None
    assert check(django_capture_on_commit_callbacks) == []  # 85 % < 90 %

    binding = alert_preferences_set(binding=binding, percent=50, exhausted=True)
    assert check(django_capture_on_commit_callbacks) == [(binding.pk, AlertKind.PERCENT)]
    assert [m.subject for m in mail.outbox] == [
        "Acme AI: your key “Client A” has used 80 % of its budget",
        "Acme AI: your key “Client A” has used 50 % of its budget",
    ]


@pytest.mark.usefixtures("books_balance")
def test_turning_an_alert_off_and_on_rearms_it(acme, price, django_capture_on_commit_callbacks):
    key = prepaid_key(acme)
    binding = bound(client(), key, alert_exhausted=True)
    spend(key, price, "100")
    check(django_capture_on_commit_callbacks)
    assert refreshed(binding).exhausted_alerted_at is not None

    binding = alert_preferences_set(binding=binding, percent=None, exhausted=False)
    assert binding.exhausted_alerted_at is None
    assert check(django_capture_on_commit_callbacks) == []
    binding = alert_preferences_set(binding=binding, percent=None, exhausted=True)
    assert check(django_capture_on_commit_callbacks) == [(binding.pk, AlertKind.EXHAUSTED)]
    assert len(mail.outbox) == 2


@pytest.mark.parametrize("percent", [0, -5, 101, 1000])
def test_a_share_outside_1_to_100_is_refused(acme, percent):
    binding = bound(client(), prepaid_key(acme), alert_percent=80)
    with pytest.raises(AlertChoiceInvalid) as refused:
        alert_preferences_set(binding=binding, percent=percent, exhausted=True)
    assert refused.value.field == "alert_percent"
    assert (refreshed(binding).alert_percent, binding.alert_exhausted) == (80, False)


def test_the_bounds_and_off_are_accepted(acme):
    binding = bound(client(), prepaid_key(acme))
    assert alert_preferences_set(binding=binding, percent=1, exhausted=False).alert_percent == 1
    assert alert_preferences_set(binding=binding, percent=100, exhausted=True).alert_percent == 100
    off = alert_preferences_set(binding=binding, percent=None, exhausted=False)
    assert (off.alert_percent, off.alert_exhausted) == (None, False)


@pytest.mark.usefixtures("books_balance")
def test_a_deleted_key_takes_no_new_alert_but_may_turn_one_off(acme):
    key = prepaid_key(acme)
    binding = bound(client(), key, alert_percent=80)
    key_delete(tenant=acme, actor=None, key_id=key.pk)
    with pytest.raises(AlertChoiceInvalid):
        alert_preferences_set(binding=binding, percent=80, exhausted=True)
    assert (
        alert_preferences_set(binding=binding, percent=None, exhausted=False).alert_percent is None
    )


# ------------------------------------------------------------------------------- the email


@pytest.mark.usefixtures("books_balance")
def test_the_email_names_the_reseller_and_shows_client_prices_only(
    acme, price, django_capture_on_commit_callbacks
):
    key = prepaid_key(acme, budget="100", cost="60")
    bound(client("Client@Example.com".lower()), key, alert_percent=80)
    spend(key, price, "85")  # cost $51, profit $34
    check(django_capture_on_commit_callbacks)

    (email,) = mail.outbox
    assert email.subject == "Acme AI: your key “Client A” has used 80 % of its budget"
    assert email.from_email == "Acme AI <noreply@localhost>"
    assert email.reply_to == ["help@acme.example"]
    assert email.to == ["client@example.com"]
    for text in (email.body, html_of(email)):
        for shown in ("$100.00", "$85.00", "$15.00", "Acme AI", "help@acme.example"):
            assert shown in text
        assert f"{PUBLIC_URL}/portal/keys/{key.pk}/" in text
        assert f"{PUBLIC_URL}/portal/keys/{key.pk}/alerts/" in text
        # Nothing of the reseller's side: its cost ($60 funded, $51 spent) or profit ($34).
        for hidden in ("$60.00", "$51.00", "$34.00", "cost", "profit", "margin", "ratio"):
            assert hidden not in text.lower()
    assert "To stop it" in email.body


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("Acme AI", "Acme AI"),
        ("  Acme\n  AI ", "Acme AI"),
        ("Smith & Co, Ltd.", "Smith & Co, Ltd."),
        ("Café Ünï", "Café Ünï"),
        ("billing@bank.example", "Tollgate"),
        ("Acme <ops@acme.example>", "Tollgate"),
        ("Acme\x00AI", "Tollgate"),
        ("Acme\u202eIA", "Tollgate"),  # a right-to-left override
        ("x" * 79, "Tollgate"),
        ("", "Tollgate"),
    ],
)
def test_the_sender_shows_the_resellers_name_only_when_it_reads_as_a_name(name, shown):
    assert sender_name(name) == shown


@pytest.mark.usefixtures("books_balance")
def test_a_reseller_name_is_not_html_escaped_in_the_text_email_and_is_in_the_html(
    acme, price, django_capture_on_commit_callbacks
):
    acme.name = "Smith & <Co>"
    acme.support_email = ""
    acme.save()
    key = prepaid_key(acme)
    bound(client(), key, alert_percent=80)
    spend(key, price, "80")
    check(django_capture_on_commit_callbacks)

    (email,) = mail.outbox
    assert email.subject.startswith("Smith & <Co>: your key")
    assert email.from_email == "Tollgate <noreply@localhost>"
    assert email.reply_to == []
    assert "from Smith & <Co> has used 80 %" in email.body
    assert "Smith &amp; &lt;Co&gt;" in html_of(email)
    assert "<Co>" not in html_of(email)


# ------------------------------------------------------------------------------ sending


@pytest.mark.usefixtures("books_balance")
def test_a_send_skips_an_alert_turned_off_rearmed_below_or_unbound(
    acme, price, django_capture_on_commit_callbacks
):
    key = prepaid_key(acme)
    binding = bound(client(), key, alert_percent=80)
    spend(key, price, "85")
    # Claimed, its email not sent yet (the callbacks are not run).
    with django_capture_on_commit_callbacks(execute=False) as enqueued:
        assert client_alerts_check() == [(binding.pk, AlertKind.PERCENT)]
    assert len(enqueued) == 1
    claimed_at = refreshed(binding).percent_alerted_at
    assert claimed_at is not None

    def send() -> AlertSendOutcome:
        return alert_send(binding_id=binding.pk, kind="percent", claimed_at=claimed_at)

    # Another claim than the one enqueued (re-armed, crossed again) has its own email.
    assert alert_send(
        binding_id=binding.pk, kind="percent", claimed_at=claimed_at - timedelta(seconds=1)
    ) == (AlertSendOutcome.RECLAIMED)
    top_up(key, "100")  # back below, not yet re-armed by a check
    assert send() == AlertSendOutcome.BELOW
    spend(key, price, "80")  # $165 of $200: past 80 % again, the same claim
    PortalBinding.objects.filter(pk=binding.pk).update(alert_percent=None)
    assert send() == AlertSendOutcome.OFF
    PortalBinding.objects.filter(pk=binding.pk).update(alert_percent=80)
    binding.delete()
    assert send() == AlertSendOutcome.GONE
    assert mail.outbox == []


@pytest.mark.usefixtures("books_balance")
def test_the_send_task_sends_its_claim_once(acme, price, django_capture_on_commit_callbacks):
    key = prepaid_key(acme)
    binding = bound(client(), key, alert_percent=80)
    spend(key, price, "85")
    with django_capture_on_commit_callbacks(execute=False):
        client_alerts_check()
    stamp = refreshed(binding).percent_alerted_at
    assert stamp is not None
    claimed_at = stamp.isoformat()

    assert client_alert_send_task(binding.pk, "percent", claimed_at) == "sent"
    # The same message delivered again: its claim was sent, nothing more goes out.
    assert client_alert_send_task(binding.pk, "percent", claimed_at) == "reclaimed"
    assert len(mail.outbox) == 1
    sent_at = refreshed(binding).percent_alerted_at
    assert sent_at is not None and sent_at.isoformat() > claimed_at  # when it was sent

    # Re-armed and crossed again: the new claim's email, and the old task still sends none.
    top_up(key, "100")
    check(django_capture_on_commit_callbacks)
    spend(key, price, "80")
    check(django_capture_on_commit_callbacks)
    assert len(mail.outbox) == 2
    assert client_alert_send_task(binding.pk, "percent", claimed_at) == "reclaimed"
    assert len(mail.outbox) == 2


@pytest.fixture
def refusing_mail_server(settings) -> Iterator[list[int]]:
    """An SMTP server that hangs up on every connection (as one going down does); yields
    the count of connections it took. Email goes to it through Django's SMTP backend."""
    listener = socket.create_server(("127.0.0.1", 0))
    connections: list[int] = []
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            connections.append(1)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = listener.getsockname()
    settings.EMAIL_TIMEOUT = 5
    try:
        yield connections
    finally:
        stop.set()
        thread.join()
        listener.close()


@pytest.fixture
def failures_stay_in_the_task():
    """In process, a task's failure is kept in its result, as a worker keeps it, instead
    of being raised to whoever enqueued it (``CELERY_TASK_EAGER_PROPAGATES``): its retries
    then run, at once, and its failure handler."""
    saved = app.conf.task_eager_propagates
    app.conf.task_eager_propagates = False
    try:
        yield
    finally:
        app.conf.task_eager_propagates = saved


@pytest.mark.usefixtures("books_balance", "failures_stay_in_the_task")
def test_a_failing_send_is_retried_then_gives_the_claim_back_for_the_next_check(
    acme, price, django_capture_on_commit_callbacks, refusing_mail_server, settings, caplog
):
    key = prepaid_key(acme)
    binding = bound(client(), key, alert_percent=80)
    spend(key, price, "85")

    # A worker waits 1, 2, 4 … s between the tries; in process they run at once.
    assert check(django_capture_on_commit_callbacks) == [(binding.pk, AlertKind.PERCENT)]
    assert len(refusing_mail_server) == 1 + SEND_MAX_RETRIES
    assert refreshed(binding).percent_alerted_at is None
    assert f"not sent after {1 + SEND_MAX_RETRIES} tries" in caplog.text
    assert "claim released, the next check tries again" in caplog.text

    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    assert check(django_capture_on_commit_callbacks) == [(binding.pk, AlertKind.PERCENT)]
    assert len(mail.outbox) == 1


@pytest.mark.usefixtures("books_balance")
def test_a_send_failing_in_process_gives_the_claim_back_at_once(
    acme, price, django_capture_on_commit_callbacks, refusing_mail_server, caplog
):
    """Development (tasks in process, their errors raised): no retry, the claim released."""
    key = prepaid_key(acme)
    binding = bound(client(), key, alert_percent=80)
    spend(key, price, "85")

    check(django_capture_on_commit_callbacks)
    assert len(refusing_mail_server) == 1
    assert refreshed(binding).percent_alerted_at is None
    assert "not sent; claim released" in caplog.text


def test_the_beat_schedule_runs_the_check(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["client-alerts"]
    assert entry["task"] == client_alerts_task.name == "portal.tasks.client_alerts_task"
    assert entry["schedule"] == 60.0


# -------------------------------------------------------------------------- concurrency


@pytest.mark.postgres
def test_two_checks_at_once_send_one_email(transactional_db, acme, price):
    key = prepaid_key(acme)
    binding = bound(client(), key, alert_percent=80)
    spend(key, price, "85")

    # Both checks read the crossing, then both claim: the binding's row is held locked
    # until both claims wait for it, so they truly race. The conditional update lets one
    # through; the other finds the alert claimed (and would send a second email without).
    results = race_on_locked_row(
        lambda: PortalBinding.objects.select_for_update().get(pk=binding.pk),
        client_alerts_check,
    )

    assert sorted(len(r) for r in results) == [0, 1]
    assert len(mail.outbox) == 1
