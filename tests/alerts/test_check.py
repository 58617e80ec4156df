"""The check (alerts.services.check): a key's share of its budget or cap, the wallet's
balance and runway; once per crossing, re-armed by a top-up, a raised cap, a new period;
a wallet alert re-armed only clearly back above its threshold, or at once by a credit;
a key's own shares against the tenant's default.

Deliveries are enqueued when the claims commit and tried in this process
(``tasks_in_process``); a real worker runs them in ``test_worker.py``.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import pytest
from django.core import mail
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from alerts.models import AlertDelivery, AlertEvent, AlertKind, AlertState
from alerts.services import alert_settings_update, alerts_check, key_alerts_set
from alerts.tasks import alerts_check_task
from billing.metering import Hold
from billing.models import LedgerEntry, ModelPrice
from billing.money import Usage, parse_usd
from billing.selectors import wallet_for_tenant
from billing.services import wallet_credit
from keys.models import ClientKey
from keys.selectors import key_use
from keys.services import key_create, key_delete, key_update
from tests.alerts.conftest import (
    OWNER_EMAIL,
    PUBLIC_URL,
    acme_reseller,
    capped_key,
    check,
    key_states,
    prepaid_key,
    spend,
    top_up,
)
from tests.metering import release, reserve
from tests.portal.test_alerts import OUTPUT_COST_NANOS_PER_TOKEN
from tests.races import race_on_locked_row

pytestmark = pytest.mark.usefixtures("tasks_in_process")


def subjects() -> list[str]:
    return [str(message.subject) for message in mail.outbox]


# ------------------------------------------------------------------- once per crossing


@pytest.mark.usefixtures("books_balance")
def test_crossing_80_percent_sends_one_email_and_a_second_check_none(
    acme, price, django_capture_on_commit_callbacks
):
    key = prepaid_key(acme)  # $100 budget, $60 cost

    spend(key, price, "79.99")
    assert check(django_capture_on_commit_callbacks) == []

    spend(key, price, "0.01")  # exactly 80 %
    (event,) = check(django_capture_on_commit_callbacks)
    assert event.type == AlertEvent.Type.KEY_THRESHOLD
    assert event.key_id == key.pk
    assert event.data["threshold_percent"] == 80
    assert (event.data["used"], event.data["limit"], event.data["remaining"]) == (
        "80.00",
        "100.00",
        "20.00",
    )
    assert subjects() == ["Key “Client A” has used 80 % of its budget"]
    assert mail.outbox[0].to == [OWNER_EMAIL]
    assert key_states(key) == {80: True}
    (delivery,) = AlertDelivery.objects.all()
    assert (delivery.channel, delivery.status, delivery.attempts, delivery.target) == (
        "email",
        "sent",
        1,
        OWNER_EMAIL,
    )

    spend(key, price, "5")
    assert check(django_capture_on_commit_callbacks) == []
    assert alerts_check_task() == 0
    assert len(mail.outbox) == 1


@pytest.mark.usefixtures("books_balance")
def test_the_email_speaks_in_the_resellers_terms_and_links_the_dashboard(
    acme, price, django_capture_on_commit_callbacks
):
    key = prepaid_key(acme)
    spend(key, price, "85")

    check(django_capture_on_commit_callbacks)

    (message,) = mail.outbox
    body = message.body
    assert "Your key “Client A”" in body and "has used 85 % of its client budget" in body
    assert "your alert is at 80 %" in body
    assert "Client budget: $100.00\nSpent: $85.00\nRemaining: $15.00" in body
    assert "Your cost so far: $51.00" in body  # the reseller's own figure
    assert f"{PUBLIC_URL}/dashboard/keys/{key.pk}/" in body
    assert f"{PUBLIC_URL}/dashboard/settings/#alerts" in body
    assert isinstance(message, mail.EmailMultiAlternatives)
    ((html, mimetype),) = message.alternatives
    assert mimetype == "text/html" and "$85.00" in str(html)
    assert message.extra_headers["X-Tollgate-Event-Id"].startswith("evt_")


@pytest.mark.usefixtures("books_balance")
def test_a_key_past_two_shares_at_once_sends_only_the_highest(
    acme, price, django_capture_on_commit_callbacks
):
    key = prepaid_key(acme)
    spend(key, price, "100")

    (event,) = check(django_capture_on_commit_callbacks)

    assert event.data["threshold_percent"] == 100
    assert subjects() == ["Key “Client A” has used 100 % of its budget"]
    assert "Its requests are refused until you top it up." in mail.outbox[0].body
    assert key_states(key) == {80: True, 100: True}  # 80 % claimed without a word
    assert check(django_capture_on_commit_callbacks) == []


@pytest.mark.usefixtures("books_balance")
def test_a_top_up_rearms_the_alert_and_the_next_crossing_sends_again(
    acme, price, django_capture_on_commit_callbacks
):
    key = prepaid_key(acme)
    spend(key, price, "85")
    check(django_capture_on_commit_callbacks)

    top_up(key, "100")  # $85 of $200: back under 80 %
    assert check(django_capture_on_commit_callbacks) == []
    assert key_states(key) == {80: False}

    spend(key, price, "80")  # $165 of $200
    (event,) = check(django_capture_on_commit_callbacks)
    assert event.data["used"] == "165.00" and event.data["limit"] == "200.00"
    assert len(mail.outbox) == 2
    state = AlertState.objects.get(key=key, threshold=80)
    assert state.crossings == 2


@pytest.mark.usefixtures("books_balance")
def test_a_raised_cap_rearms_a_wallet_funded_keys_alert(
    acme, price, django_capture_on_commit_callbacks
):
    key = capped_key(acme, cap="50")  # monthly
    spend(key, price, "45")  # 90 % of the cap

    (event,) = check(django_capture_on_commit_callbacks)
    assert subjects() == ["Key “Client W” has used 80 % of its spend cap for this month"]
    assert event.data["limit_kind"] == "spend_cap"

    key_update(tenant=acme, actor=None, key_id=key.pk, changes={"spend_cap": parse_usd("100")})
    assert check(django_capture_on_commit_callbacks) == []
    assert key_states(key) == {80: False}

    spend(key, price, "40")  # $85 of $100
    assert len(check(django_capture_on_commit_callbacks)) == 1
    assert len(mail.outbox) == 2


@pytest.mark.usefixtures("books_balance")
def test_a_new_budget_period_rearms_a_capped_key(acme, price, django_capture_on_commit_callbacks):
    key = capped_key(acme, cap="50")
    spend(key, price, "45")
    check(django_capture_on_commit_callbacks)

    next_month = (timezone.now().replace(day=1) + timedelta(days=32)).replace(day=2)
    assert check(django_capture_on_commit_callbacks, now=next_month) == []

    assert key_states(key) == {80: False}


@pytest.mark.usefixtures("books_balance")
def test_keys_without_a_limit_and_keys_not_active_alert_nothing(
    acme, price, django_capture_on_commit_callbacks
):
    uncapped = key_create(
        tenant=acme, actor=None, label="uncapped", funding=ClientKey.Funding.WALLET
    ).key
    spend(uncapped, price, "10")
    revoked = prepaid_key(acme)
    spend(revoked, price, "90")
    key_update(tenant=acme, actor=None, key_id=revoked.pk, changes={"status": "revoked"})
    deleted = prepaid_key(acme)
    spend(deleted, price, "90")
    key_delete(tenant=acme, actor=None, key_id=deleted.pk)

    assert check(django_capture_on_commit_callbacks) == []
    assert not AlertState.objects.exists()


# ---------------------------------------------------------------- whose thresholds apply


@pytest.mark.usefixtures("books_balance")
def test_a_keys_own_shares_replace_the_tenants_default(
    acme, price, django_capture_on_commit_callbacks
):
    own = prepaid_key(acme)
    default = prepaid_key(acme)
    silent = prepaid_key(acme)
    key_alerts_set(tenant=acme, actor=None, key_id=own.pk, thresholds=[50])
    key_alerts_set(tenant=acme, actor=None, key_id=silent.pk, thresholds=[])
    for key in (own, default, silent):
        spend(key, price, "55")

    (event,) = check(django_capture_on_commit_callbacks)
    assert (event.key_id, event.data["threshold_percent"]) == (own.pk, 50)

    # The tenant's default changes: the key that follows it alerts; the others keep theirs.
    alert_settings_update(tenant=acme, actor=None, changes={"key_thresholds": [50, 90]})
    (event,) = check(django_capture_on_commit_callbacks)
    assert (event.key_id, event.data["threshold_percent"]) == (default.pk, 50)

    # Back to the default: the key's 80 % is not reached, its 50 % stays claimed.
    key_alerts_set(tenant=acme, actor=None, key_id=own.pk, thresholds=None)
    assert check(django_capture_on_commit_callbacks) == []
    assert key_states(silent) == {}


# ---------------------------------------------------------------------------- the wallet


@pytest.mark.usefixtures("books_balance")
def test_the_wallet_under_its_balance_alert_sends_once_and_a_credit_rearms_it(
    make_reseller, django_capture_on_commit_callbacks
):
    acme = acme_reseller(make_reseller, balance="100")
    alert_settings_update(
        tenant=acme, actor=None, changes={"wallet_balance_below": parse_usd("50")}
    )
    assert check(django_capture_on_commit_callbacks) == []

    prepaid_key(acme, budget="60", cost="60")  # the wallet pays $60: $40 left
    (event,) = check(django_capture_on_commit_callbacks)
    assert event.type == AlertEvent.Type.WALLET_BALANCE
    assert (event.data["available"], event.data["threshold"]) == ("40.00", "50.00")
    assert subjects() == ["Wallet balance under $50.00"]
    assert "Your wallet's available balance is $40.00" in mail.outbox[0].body
    assert f"{PUBLIC_URL}/dashboard/wallet/" in mail.outbox[0].body
    assert check(django_capture_on_commit_callbacks) == []

    wallet_credit(tenant=acme, amount_nanos=parse_usd("20"), reason="top-up")  # $60
    assert check(django_capture_on_commit_callbacks) == []
    state = AlertState.objects.get(kind=AlertKind.WALLET_BALANCE)
    assert state.crossed_at is None

    prepaid_key(acme, budget="20", cost="20")  # $40 again
    assert len(check(django_capture_on_commit_callbacks)) == 1
    assert len(mail.outbox) == 2


@pytest.mark.usefixtures("books_balance")
def test_the_wallet_runway_under_n_days_alerts(make_reseller, django_capture_on_commit_callbacks):
    acme = acme_reseller(make_reseller, balance="100")
    alert_settings_update(tenant=acme, actor=None, changes={"wallet_runway_days_below": 3})
    prepaid_key(acme, budget="70", cost="70")  # $70 drawn this week: $10 a day, $30 left
    # 3 days left: not under 3.
    assert check(django_capture_on_commit_callbacks) == []

    alert_settings_update(tenant=acme, actor=None, changes={"wallet_runway_days_below": 4})
    (event,) = check(django_capture_on_commit_callbacks)
    assert event.type == AlertEvent.Type.WALLET_RUNWAY
    assert event.data["runway_days"] == 3
    assert (event.data["daily_draw"], event.data["available"]) == ("10.00", "30.00")
    assert subjects() == ["Wallet runway under 4 days"]
    assert "($10.00 a day)" in mail.outbox[0].body
    assert "lasts about 3 more days" in mail.outbox[0].body

    wallet_credit(tenant=acme, amount_nanos=parse_usd("100"), reason="top-up")  # 13 days
    assert check(django_capture_on_commit_callbacks) == []
    assert AlertState.objects.get(kind=AlertKind.WALLET_RUNWAY).crossed_at is None


@pytest.mark.usefixtures("books_balance")
def test_a_wallet_that_drew_nothing_has_no_runway_to_alert(
    make_reseller, django_capture_on_commit_callbacks
):
    acme = acme_reseller(make_reseller, balance="1")
    alert_settings_update(tenant=acme, actor=None, changes={"wallet_runway_days_below": 30})

    assert check(django_capture_on_commit_callbacks) == []


# ------------------------------------------------- the wallet alerts' margin to re-arm


def wallet_key(tenant) -> ClientKey:
    """A wallet-funded key without a cap (ratio 1:1): its requests draw on the wallet."""
    return key_create(
        tenant=tenant, actor=None, label="Client W", funding=ClientKey.Funding.WALLET
    ).key


def hold(key: ClientKey, price: ModelPrice, usd: str) -> Hold:
    """A request in flight holding ``usd`` of the wallet (until released)."""
    tokens = parse_usd(usd) // OUTPUT_COST_NANOS_PER_TOKEN
    held = reserve(
        key=key,
        price=price,
        request_id=f"req-{uuid.uuid4().hex}",
        worst_case=Usage(input_tokens=0, output_tokens=tokens),
    )
    assert wallet_for_tenant(tenant=key.tenant).reserved_nanos == parse_usd(usd)
    return held


def state_of(kind: str) -> AlertState:
    return AlertState.objects.get(kind=kind)


@pytest.mark.usefixtures("books_balance")
def test_a_runway_hovering_around_its_threshold_alerts_once(
    make_reseller, price, django_capture_on_commit_callbacks
):
    acme = acme_reseller(make_reseller, balance="100")
    alert_settings_update(tenant=acme, actor=None, changes={"wallet_runway_days_below": 4})
    key = wallet_key(acme)
    start = timezone.now()
    spend(key, price, "20", now=start)
    spend(key, price, "50", now=start + timedelta(days=2))

    # $30 left at $70 a week: 3 days.
    (event,) = check(django_capture_on_commit_callbacks, now=start + timedelta(days=2, minutes=1))
    assert event.data["runway_days"] == 3

    # The first $20 is out of the week: $30 at $50 a week, 4 days, back at the threshold
    # but not clearly (5 days re-arm): still claimed.
    assert check(django_capture_on_commit_callbacks, now=start + timedelta(days=7, hours=1)) == []
    assert state_of(AlertKind.WALLET_RUNWAY).crossed_at is not None

    # The pace wobbles up again: $25 at $55 a week, 3 days. Not a new crossing.
    spend(key, price, "5", now=start + timedelta(days=7, hours=2))
    assert check(django_capture_on_commit_callbacks, now=start + timedelta(days=7, hours=3)) == []

    # (The checks run in days to come: their deliveries are not due yet, so no email.)
    assert AlertEvent.objects.filter(type=AlertEvent.Type.WALLET_RUNWAY).count() == 1
    assert state_of(AlertKind.WALLET_RUNWAY).crossings == 1


@pytest.mark.usefixtures("books_balance")
def test_a_runway_clearly_back_above_rearms_and_the_next_fall_alerts_again(
    make_reseller, price, django_capture_on_commit_callbacks
):
    acme = acme_reseller(make_reseller, balance="100")
    alert_settings_update(tenant=acme, actor=None, changes={"wallet_runway_days_below": 4})
    key = wallet_key(acme)
    start = timezone.now()

    def at(days: int, hours: int = 0) -> datetime:
        return start + timedelta(days=days, hours=hours)

    spend(key, price, "20", now=at(0))
    spend(key, price, "50", now=at(2))
    assert len(check(django_capture_on_commit_callbacks, now=at(2, 1))) == 1  # 3 days

    spend(key, price, "5", now=at(4))  # $25 at $75 a week: 2 days
    assert check(django_capture_on_commit_callbacks, now=at(4, 1)) == []

    # Only the $5 left in the week: $25 at $5 a week, 35 days, clearly back: re-armed.
    assert check(django_capture_on_commit_callbacks, now=at(9, 1)) == []
    assert state_of(AlertKind.WALLET_RUNWAY).crossed_at is None

    spend(key, price, "20", now=at(9, 2))  # $5 at $25 a week: 1 day
    (event,) = check(django_capture_on_commit_callbacks, now=at(9, 3))
    assert event.data["runway_days"] == 1
    assert AlertEvent.objects.filter(type=AlertEvent.Type.WALLET_RUNWAY).count() == 2
    assert state_of(AlertKind.WALLET_RUNWAY).crossings == 2


@pytest.mark.usefixtures("books_balance")
def test_a_credit_rearms_the_runway_alert_at_once_without_the_margin(
    make_reseller, django_capture_on_commit_callbacks
):
    acme = acme_reseller(make_reseller, balance="100")
    alert_settings_update(tenant=acme, actor=None, changes={"wallet_runway_days_below": 4})
    prepaid_key(acme, budget="70", cost="70")  # $30 at $70 a week: 3 days
    assert len(check(django_capture_on_commit_callbacks)) == 1

    # A credit that leaves it under the threshold re-arms nothing (and sends nothing).
    wallet_credit(tenant=acme, amount_nanos=parse_usd("2"), reason="top-up")  # 3 days
    assert check(django_capture_on_commit_callbacks) == []
    assert state_of(AlertKind.WALLET_RUNWAY).crossed_at is not None

    # Back at the threshold by a top-up: 4 days, under the 5 days' margin, yet re-armed.
    wallet_credit(
        tenant=acme,
        amount_nanos=parse_usd("8"),
        reason="card top-up",
        kind=LedgerEntry.Kind.TOP_UP,
    )
    assert check(django_capture_on_commit_callbacks) == []
    assert state_of(AlertKind.WALLET_RUNWAY).crossed_at is None

    prepaid_key(acme, budget="10", cost="10")  # $30 at $80 a week: 2 days
    assert len(check(django_capture_on_commit_callbacks)) == 1
    assert len(mail.outbox) == 2


@pytest.mark.usefixtures("books_balance")
def test_a_balance_wobbling_with_requests_in_flight_alerts_once_until_clearly_back(
    make_reseller, price, django_capture_on_commit_callbacks
):
    acme = acme_reseller(make_reseller, balance="100")
    alert_settings_update(
        tenant=acme, actor=None, changes={"wallet_balance_below": parse_usd("50")}
    )
    prepaid = prepaid_key(acme, budget="20", cost="20")  # $80
    key = wallet_key(acme)
    spend(key, price, "27")  # $53 available: over $50, under the $55 that re-arms

    for _ in range(3):
        held = hold(key, price, "10")  # $43 available while it is in flight
        check(django_capture_on_commit_callbacks)
        release(hold=held)  # $53 again
        assert check(django_capture_on_commit_callbacks) == []
        assert state_of(AlertKind.WALLET_BALANCE).crossed_at is not None
    assert subjects() == ["Wallet balance under $50.00"]

    # A key's unspent cost comes back (no credit): $73, clearly back. Re-armed.
    key_delete(tenant=acme, actor=None, key_id=prepaid.pk)
    assert check(django_capture_on_commit_callbacks) == []
    assert state_of(AlertKind.WALLET_BALANCE).crossed_at is None

    spend(key, price, "30")  # $43
    assert len(check(django_capture_on_commit_callbacks)) == 1
    assert len(mail.outbox) == 2
    assert state_of(AlertKind.WALLET_BALANCE).crossings == 2


@pytest.mark.usefixtures("books_balance")
def test_a_credit_rearms_the_balance_alert_at_once_without_the_margin(
    make_reseller, django_capture_on_commit_callbacks
):
    acme = acme_reseller(make_reseller, balance="100")
    alert_settings_update(
        tenant=acme, actor=None, changes={"wallet_balance_below": parse_usd("50")}
    )
    prepaid_key(acme, budget="55", cost="55")  # $45
    assert len(check(django_capture_on_commit_callbacks)) == 1

    wallet_credit(tenant=acme, amount_nanos=parse_usd("7"), reason="credit")  # $52
    assert check(django_capture_on_commit_callbacks) == []
    assert state_of(AlertKind.WALLET_BALANCE).crossed_at is None

    prepaid_key(acme, budget="5", cost="5")  # $47
    assert len(check(django_capture_on_commit_callbacks)) == 1
    assert len(mail.outbox) == 2


@pytest.mark.usefixtures("books_balance")
def test_whether_wallets_were_credited_is_one_query_for_all_of_them(
    make_reseller, django_capture_on_commit_callbacks
):
    tenants = [make_reseller(balance="100")[0] for _ in range(3)]
    for tenant in tenants:
        alert_settings_update(
            tenant=tenant, actor=None, changes={"wallet_balance_below": parse_usd("50")}
        )
        prepaid_key(tenant, budget="57", cost="57")  # $43
    assert len(check(django_capture_on_commit_callbacks)) == 3
    for tenant in tenants:
        # The operator's correction is no credit: $53, between the threshold and the margin.
        wallet_credit(
            tenant=tenant,
            amount_nanos=parse_usd("10"),
            reason="correction",
            kind=LedgerEntry.Kind.ADJUSTMENT,
        )
    wallet_credit(tenant=tenants[1], amount_nanos=parse_usd("1"), reason="credit")  # $54

    with CaptureQueriesContext(connection) as queries:
        assert check(django_capture_on_commit_callbacks) == []

    lookups = [q["sql"] for q in queries if "MAX(" in q["sql"] and "ledgerentry" in q["sql"]]
    assert len(lookups) == 1
    claimed = dict(
        AlertState.objects.filter(kind=AlertKind.WALLET_BALANCE).values_list(
            "tenant_id", "crossed_at"
        )
    )
    assert [claimed[t.pk] is not None for t in tenants] == [True, False, True]


# ------------------------------------------------------------------ channels and tenants


@pytest.mark.usefixtures("books_balance")
def test_each_channel_on_gets_a_delivery_and_none_on_still_claims(
    acme, price, django_capture_on_commit_callbacks, monkeypatch
):
    monkeypatch.setattr("alerts.services.deliver.deliveries_enqueue", lambda ids: None)
    monkeypatch.setattr("alerts.services.check._enqueue", lambda ids: None)
    first, second = prepaid_key(acme), prepaid_key(acme)
    alert_settings_update(
        tenant=acme, actor=None, changes={"webhook_url": "https://93.184.216.34/hook"}
    )
    spend(first, price, "85")
    (event,) = check(django_capture_on_commit_callbacks)
    assert sorted(event.deliveries.values_list("channel", flat=True)) == ["email", "webhook"]

    alert_settings_update(tenant=acme, actor=None, changes={"email": False, "webhook_url": None})
    spend(second, price, "85")
    (event,) = check(django_capture_on_commit_callbacks)
    assert not event.deliveries.exists()
    assert key_states(second) == {80: True}


@pytest.mark.usefixtures("books_balance")
def test_a_suspended_reseller_and_other_tenants_are_left_alone(
    acme, outsider, price, django_capture_on_commit_callbacks
):
    theirs = prepaid_key(outsider[0])
    spend(theirs, price, "90")
    ours = prepaid_key(acme)
    spend(ours, price, "90")

    (event,) = check(django_capture_on_commit_callbacks, tenant_ids=[acme.pk])
    assert event.key_id == ours.pk

    outsider[0].is_active = False
    outsider[0].save()
    assert check(django_capture_on_commit_callbacks) == []
    assert key_states(theirs) == {}


@pytest.mark.usefixtures("books_balance")
def test_the_check_costs_the_same_queries_however_many_keys(make_reseller, price):
    tenants = [acme_reseller(make_reseller)] + [make_reseller(balance="500")[0] for _ in range(2)]
    for tenant in tenants:
        alert_settings_update(
            tenant=tenant,
            actor=None,
            changes={"wallet_balance_below": parse_usd("1"), "wallet_runway_days_below": 1},
        )

    def queries_with(keys_each: int) -> int:
        for tenant in tenants:
            for _ in range(keys_each):
                spend(prepaid_key(tenant, budget="10", cost="1"), price, "1")  # 10 %
        with CaptureQueriesContext(connection) as queries:
            assert alerts_check() == []
        return len(queries)

    # Tenants, states, settings, overrides, keys, wallets, one runway per wallet watched.
    assert queries_with(1) == queries_with(5) <= 5 + 1 + len(tenants)


@pytest.mark.usefixtures("books_balance")
def test_only_keys_that_may_have_something_to_say_are_measured(
    acme, price, django_capture_on_commit_callbacks, monkeypatch
):
    quiet = prepaid_key(acme)
    spend(quiet, price, "79.99")  # under 80 %, the lowest default share
    own = prepaid_key(acme)
    key_alerts_set(tenant=acme, actor=None, key_id=own.pk, thresholds=[5])
    topped_up = prepaid_key(acme)
    spend(topped_up, price, "85")
    check(django_capture_on_commit_callbacks)
    top_up(topped_up, "100")  # claimed, now under: to be re-armed
    measured: list[int] = []

    def counting_key_use(*, key, now):
        measured.append(key.pk)
        return key_use(key=key, now=now)

    monkeypatch.setattr("alerts.services.check.key_use", counting_key_use)
    assert check(django_capture_on_commit_callbacks) == []

    assert sorted(measured) == sorted([own.pk, topped_up.pk])
    assert key_states(topped_up) == {80: False}


def test_the_beat_schedule_runs_the_check(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["alerts"]
    assert entry["task"] == alerts_check_task.name == "alerts.tasks.alerts_check_task"
    assert entry["schedule"] == 60.0


# -------------------------------------------------------------------------- concurrency


@pytest.mark.postgres
def test_two_checks_at_once_claim_one_crossing(transactional_db, make_reseller, price):
    acme = acme_reseller(make_reseller)
    key = prepaid_key(acme)
    spend(key, price, "85")
    alerts_check()  # the state row exists, claimed; re-armed below, so the race is an update
    top_up(key, "100")
    alerts_check()
    spend(key, price, "80")
    mail.outbox.clear()
    state = AlertState.objects.get(key=key, threshold=80)
    assert state.crossed_at is None

    # Both checks read the state armed and the key past 80 %, then both claim: the state's
    # row is held locked until both claims wait for it, so they truly race. The conditional
    # update lets one through; the other finds it claimed (and would send again without).
    results = race_on_locked_row(
        lambda: AlertState.objects.select_for_update().get(pk=state.pk), alerts_check
    )

    assert sorted(len(r) for r in results) == [0, 1]
    assert AlertEvent.objects.filter(key=key).count() == 2
    assert wallet_for_tenant(tenant=acme).balance_nanos >= 0
