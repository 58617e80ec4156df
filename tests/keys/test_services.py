"""keys.services, called directly: create (and fund), top up, update, delete (and refund).

Every test audits the books afterwards (``books_balance``), and money-moving refusals check
that nothing at all was written.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from accounts.hashing import CLIENT_KEY_PREFIX, PREFIX_LENGTH, secret_matches
from billing.exceptions import InsufficientFunds, KeyInactive, ReservationRefused
from billing.models import LedgerEntry
from billing.money import PriceRatio, Usage, parse_usd
from billing.selectors import wallet_for_tenant
from billing.services import wallet_credit
from keys.exceptions import ClientKeyInvalid, ClientKeyStateConflict
from keys.models import ClientKey
from keys.services import key_create, key_delete, key_top_up, key_update
from tests.metering import charge, reserve

pytestmark = pytest.mark.usefixtures("books_balance")


def fund(tenant, usd: str) -> None:
    wallet_credit(tenant=tenant, amount_nanos=parse_usd(usd), reason="test funds")


def balance(tenant) -> int:
    return wallet_for_tenant(tenant=tenant).balance_nanos


def prepaid_key(tenant, *, budget: str = "100", cost: str = "60", **options) -> ClientKey:
    return key_create(
        tenant=tenant,
        actor=None,
        label="acme-corp-prod",
        client_budget_nanos=parse_usd(budget),
        your_cost_nanos=parse_usd(cost),
        **options,
    ).key


def wallet_key(tenant, **options) -> ClientKey:
    return key_create(
        tenant=tenant, actor=None, label="sub", funding=ClientKey.Funding.WALLET, **options
    ).key


def fresh(key: ClientKey) -> ClientKey:
    return ClientKey.objects.get(pk=key.pk)


# ----------------------------------------------------------------------------- key_create


def test_creating_a_prepaid_key_debits_the_wallet_by_its_cost(tenant):
    fund(tenant, "200")

    issued = key_create(
        tenant=tenant,
        actor=tenant.owner,
        label=" acme-corp-prod ",
        client_budget_nanos=parse_usd("100"),
        your_cost_nanos=parse_usd("60"),
    )

    key = fresh(issued.key)
    assert key.label == "acme-corp-prod"
    assert key.funding == ClientKey.Funding.PREPAID
    assert (key.ratio_cost_nanos, key.ratio_client_nanos) == (parse_usd("60"), parse_usd("100"))
    assert (key.client_budget_nanos, key.cost_funded_nanos) == (parse_usd("100"), parse_usd("60"))
    assert balance(tenant) == parse_usd("140")
    entry = LedgerEntry.objects.get(kind=LedgerEntry.Kind.KEY_FUNDING)
    assert (entry.amount_nanos, entry.client_key_id, entry.actor_id) == (
        -parse_usd("60"),
        key.pk,
        tenant.owner_id,
    )
    assert entry.reference == f"key:{key.pk}"
    assert entry.balance_after_nanos == parse_usd("140")


def test_the_secret_is_returned_once_and_stored_only_as_a_hash(tenant):
    fund(tenant, "200")

    issued = key_create(
        tenant=tenant,
        actor=None,
        label="k",
        client_budget_nanos=parse_usd("1"),
        your_cost_nanos=parse_usd("1"),
    )

    secret, key = issued.secret, fresh(issued.key)
    assert secret.startswith(CLIENT_KEY_PREFIX)
    assert len(secret) >= len(CLIENT_KEY_PREFIX) + 43  # 32 random bytes, url-safe
    assert key.prefix == secret[:PREFIX_LENGTH]
    assert key.last4 == secret[-4:]
    assert secret not in key.digest
    assert secret_matches(secret, key.digest)
    assert not any(
        secret in str(value)
        for value in ClientKey.objects.filter(pk=key.pk).values().get().values()
    )


def test_a_wallet_key_sets_nothing_aside_and_defaults_to_no_markup(tenant):
    fund(tenant, "10")

    key = wallet_key(tenant)

    assert key.ratio == PriceRatio.one()
    assert (key.client_budget_nanos, key.cost_funded_nanos) == (0, 0)
    assert balance(tenant) == parse_usd("10")
    assert not LedgerEntry.objects.filter(client_key=key).exists()


def test_a_wallet_keys_budget_and_cost_only_fix_its_ratio(tenant):
    key = wallet_key(tenant, client_budget_nanos=parse_usd("100"), your_cost_nanos=parse_usd("60"))

    assert (key.ratio_cost_nanos, key.ratio_client_nanos) == (parse_usd("60"), parse_usd("100"))
    assert (key.client_budget_nanos, key.cost_funded_nanos) == (0, 0)
    assert balance(tenant) == 0  # nothing debited, not even from an empty wallet


def test_creating_a_prepaid_key_the_wallet_cannot_fund_writes_nothing(tenant):
    fund(tenant, "59.999999999")

    with pytest.raises(InsufficientFunds) as refused:
        prepaid_key(tenant)

    assert refused.value.needed_nanos == parse_usd("60")
    assert refused.value.available_nanos == parse_usd("59.999999999")
    assert not ClientKey.objects.exists()
    assert balance(tenant) == parse_usd("59.999999999")
    assert list(LedgerEntry.objects.values_list("kind", flat=True)) == [
        LedgerEntry.Kind.MANUAL_CREDIT
    ]


def test_a_key_can_take_the_whole_wallet(tenant):
    fund(tenant, "60")
    prepaid_key(tenant)
    assert balance(tenant) == 0


def test_held_wallet_funds_cannot_fund_a_key(tenant, price):
    fund(tenant, "60")
    key = wallet_key(tenant)
    reserve(key=key, price=price, request_id="req-1", worst_case=Usage(input_tokens=1_000_000))

    with pytest.raises(InsufficientFunds):
        prepaid_key(tenant)

    assert ClientKey.objects.count() == 1


NOW_PLUS_DAY = datetime.now(UTC) + timedelta(days=1)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"your_cost_nanos": parse_usd("100.000000001")}, "your_cost"),
        # More than 1,000× markup: client prices could overflow 64-bit nano-dollars.
        ({"your_cost_nanos": parse_usd("0.099999999")}, "your_cost"),
        ({"client_budget_nanos": 0}, "client_budget"),
        ({"client_budget_nanos": -1}, "client_budget"),
        ({"your_cost_nanos": 0}, "your_cost"),
        ({"client_budget_nanos": None}, "client_budget"),
        ({"your_cost_nanos": None}, "your_cost"),
        ({"client_budget_nanos": parse_usd("1000001")}, "client_budget"),
        ({"label": "   "}, "label"),
        ({"funding": "credit"}, "funding"),
        ({"budget_period": "daily"}, "budget_period"),
        ({"budget_period": "hourly", "spend_cap_nanos": 1}, "budget_period"),
        ({"spend_cap_nanos": -1}, "spend_cap"),
        ({"rpm": 0}, "rpm"),
        ({"tpm": 0}, "tpm"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"models": ["no-such-model"]}, "models"),
        ({"expires_at": datetime(2020, 1, 1, tzinfo=UTC)}, "expires_at"),
    ],
)
def test_invalid_prepaid_keys_are_refused_and_nothing_is_written(tenant, price, options, field):
    fund(tenant, "200")
    arguments = {
        "tenant": tenant,
        "actor": None,
        "label": "k",
        "client_budget_nanos": parse_usd("100"),
        "your_cost_nanos": parse_usd("60"),
        **options,
    }

    with pytest.raises(ClientKeyInvalid) as refused:
        key_create(**arguments)

    assert refused.value.field == field
    assert not ClientKey.objects.exists()
    assert balance(tenant) == parse_usd("200")


def test_a_markup_of_exactly_1000_times_is_the_most_a_key_takes(tenant, price):
    """$100 of client budget for $0.10: the largest markup (margin 99.9 %); a client price
    computed through it stays exact."""
    fund(tenant, "1")
    key = key_create(
        tenant=tenant,
        actor=None,
        label="k",
        client_budget_nanos=parse_usd("100"),
        your_cost_nanos=parse_usd("0.1"),
    ).key
    assert key.ratio.client_from_cost(parse_usd("0.000123")) == parse_usd("0.123")
    assert balance(tenant) == parse_usd("0.9")


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"client_budget_nanos": parse_usd("100")}, "your_cost"),
        ({"your_cost_nanos": parse_usd("60")}, "your_cost"),
        ({"budget_period": "weekly"}, "budget_period"),
    ],
)
def test_invalid_wallet_keys_are_refused(tenant, options, field):
    with pytest.raises(ClientKeyInvalid) as refused:
        wallet_key(tenant, **options)
    assert refused.value.field == field
    assert not ClientKey.objects.exists()


def test_known_models_and_limits_are_kept(tenant, price):
    key = wallet_key(
        tenant,
        models=["mock-gpt", " mock-gpt "],
        rpm=120,
        tpm=50_000,
        max_concurrency=2,
        expires_at=NOW_PLUS_DAY,
        spend_cap_nanos=parse_usd("5"),
        budget_period="monthly",
        default_tag=" team-a ",
    )
    key = fresh(key)
    assert key.allowed_models == ["mock-gpt"]
    assert (key.requests_per_minute, key.tokens_per_minute, key.max_concurrency) == (120, 50_000, 2)
    assert (key.spend_cap_nanos, key.budget_period, key.default_tag) == (
        parse_usd("5"),
        "monthly",
        "team-a",
    )


def test_limits_default_to_60_rpm_and_5_concurrent(tenant):
    key = fresh(wallet_key(tenant))
    assert (key.requests_per_minute, key.max_concurrency, key.tokens_per_minute) == (60, 5, None)


# ----------------------------------------------------------------------------- key_top_up


def test_top_up_raises_the_budget_and_debits_the_amount_times_the_ratio(tenant):
    fund(tenant, "200")
    key = prepaid_key(tenant)

    topped = key_top_up(
        tenant=tenant, actor=tenant.owner, key_id=key.pk, client_amount_nanos=parse_usd("50")
    )

    assert (topped.client_budget_nanos, topped.cost_funded_nanos) == (
        parse_usd("150"),
        parse_usd("90"),
    )
    assert balance(tenant) == parse_usd("110")
    entry = LedgerEntry.objects.filter(kind=LedgerEntry.Kind.KEY_FUNDING).order_by("-id").first()
    assert entry is not None
    assert (entry.amount_nanos, entry.client_key_id, entry.actor_id) == (
        -parse_usd("30"),
        key.pk,
        tenant.owner_id,
    )


def test_top_up_cost_rounds_once_half_up(tenant):
    fund(tenant, "10")
    key = prepaid_key(tenant, budget="3", cost="1")  # ratio 1/3

    key_top_up(tenant=tenant, actor=None, key_id=key.pk, client_amount_nanos=2)  # 2/3 nano -> 1

    assert fresh(key).cost_funded_nanos == parse_usd("1") + 1
    with pytest.raises(ClientKeyInvalid):
        key_top_up(tenant=tenant, actor=None, key_id=key.pk, client_amount_nanos=1)  # 1/3 -> 0


def test_wallet_keys_cannot_be_topped_up(tenant):
    fund(tenant, "10")
    key = wallet_key(tenant)

    with pytest.raises(ClientKeyStateConflict):
        key_top_up(tenant=tenant, actor=None, key_id=key.pk, client_amount_nanos=parse_usd("5"))

    assert balance(tenant) == parse_usd("10")


def test_a_top_up_the_wallet_cannot_cover_changes_nothing(tenant):
    fund(tenant, "80")
    key = prepaid_key(tenant)  # wallet $20

    with pytest.raises(InsufficientFunds):
        key_top_up(tenant=tenant, actor=None, key_id=key.pk, client_amount_nanos=parse_usd("50"))

    key = fresh(key)
    assert (key.client_budget_nanos, key.cost_funded_nanos) == (parse_usd("100"), parse_usd("60"))
    assert balance(tenant) == parse_usd("20")


@pytest.mark.parametrize("amount", [0, -1, None])
def test_a_top_up_needs_a_positive_amount(tenant, amount):
    fund(tenant, "100")
    key = prepaid_key(tenant)
    with pytest.raises(ClientKeyInvalid):
        key_top_up(tenant=tenant, actor=None, key_id=key.pk, client_amount_nanos=amount)
    assert balance(tenant) == parse_usd("40")


def test_a_deleted_key_cannot_be_topped_up(tenant):
    fund(tenant, "200")
    key = prepaid_key(tenant)
    key_delete(tenant=tenant, actor=None, key_id=key.pk)

    with pytest.raises(ClientKeyStateConflict):
        key_top_up(tenant=tenant, actor=None, key_id=key.pk, client_amount_nanos=parse_usd("50"))

    assert balance(tenant) == parse_usd("200")


def test_another_tenants_key_cannot_be_topped_up(tenant, outsider):
    fund(tenant, "200")
    key = prepaid_key(tenant)

    with pytest.raises(ClientKey.DoesNotExist):
        key_top_up(
            tenant=outsider[0], actor=None, key_id=key.pk, client_amount_nanos=parse_usd("50")
        )

    assert balance(outsider[0]) == parse_usd("500")
    assert fresh(key).client_budget_nanos == parse_usd("100")


# ----------------------------------------------------------------------------- key_update


@pytest.mark.parametrize(
    "changes",
    [
        {"client_budget": parse_usd("200")},
        {"your_cost": parse_usd("10")},
        {"ratio": "0.5"},
        {"funding": "wallet"},
        {"ratio_cost_nanos": 1},
        {"client_spent_nanos": 0},
    ],
)
def test_the_ratio_funding_and_money_are_locked(tenant, changes):
    fund(tenant, "200")
    key = prepaid_key(tenant)

    with pytest.raises(ClientKeyInvalid):
        key_update(tenant=tenant, actor=None, key_id=key.pk, changes=changes)

    after = fresh(key)
    assert (after.ratio_cost_nanos, after.ratio_client_nanos, after.funding) == (
        key.ratio_cost_nanos,
        key.ratio_client_nanos,
        key.funding,
    )


def test_update_changes_label_limits_and_models(tenant, price):
    key = wallet_key(tenant)

    updated = key_update(
        tenant=tenant,
        actor=None,
        key_id=key.pk,
        changes={
            "label": "renamed",
            "rpm": 10,
            "tpm": None,
            "max_concurrency": 1,
            "models": ["mock-gpt"],
        },
    )

    assert (updated.label, updated.requests_per_minute, updated.max_concurrency) == (
        "renamed",
        10,
        1,
    )
    assert fresh(key).allowed_models == ["mock-gpt"]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"label": " "}, "label"),
        ({"rpm": 0}, "rpm"),
        ({"models": ["no-such-model"]}, "models"),
        ({"expires_at": datetime(2020, 1, 1, tzinfo=UTC)}, "expires_at"),
        ({"spend_cap": -1}, "spend_cap"),
        ({"budget_period": "daily"}, "budget_period"),
        ({"budget_period": "hourly"}, "budget_period"),
        ({"status": "deleted"}, "status"),
    ],
)
def test_invalid_updates_change_nothing(tenant, changes, field):
    key = wallet_key(tenant)

    with pytest.raises(ClientKeyInvalid) as refused:
        key_update(tenant=tenant, actor=None, key_id=key.pk, changes=changes)

    assert refused.value.field == field
    after = fresh(key)
    assert (after.label, after.budget_period, after.status) == ("sub", "none", "active")


def test_a_budget_period_needs_a_spend_cap_and_keeps_needing_it(tenant):
    key = wallet_key(tenant)
    key_update(
        tenant=tenant,
        actor=None,
        key_id=key.pk,
        changes={"spend_cap": parse_usd("5"), "budget_period": "daily"},
    )

    with pytest.raises(ClientKeyInvalid) as refused:
        key_update(tenant=tenant, actor=None, key_id=key.pk, changes={"spend_cap": None})

    assert refused.value.field == "budget_period"
    assert fresh(key).spend_cap_nanos == parse_usd("5")


def test_changing_the_budget_period_starts_a_fresh_period(tenant, price):
    fund(tenant, "10")
    key = wallet_key(tenant, spend_cap_nanos=parse_usd("1"), budget_period="monthly")
    charge(key=key, price=price, request_id="req-1", usage=Usage(input_tokens=1_000_000))
    assert fresh(key).period_client_spent_nanos == parse_usd("1")

    key_update(tenant=tenant, actor=None, key_id=key.pk, changes={"budget_period": "daily"})

    assert fresh(key).period_client_spent_nanos == 0
    reserve(key=key, price=price, request_id="req-2", worst_case=Usage(input_tokens=1_000_000))


def test_a_revoked_key_stops_and_a_reactivated_one_works_again(tenant, price):
    fund(tenant, "10")
    key = wallet_key(tenant)

    revoked = key_update(tenant=tenant, actor=None, key_id=key.pk, changes={"status": "revoked"})
    assert revoked.revoked_at is not None
    with pytest.raises(KeyInactive):
        reserve(key=key, price=price, request_id="req-1", worst_case=Usage(input_tokens=1))

    active = key_update(tenant=tenant, actor=None, key_id=key.pk, changes={"status": "active"})
    assert active.revoked_at is None
    reserve(key=key, price=price, request_id="req-2", worst_case=Usage(input_tokens=1))


def test_a_deleted_key_cannot_be_updated(tenant):
    key = wallet_key(tenant)
    key_delete(tenant=tenant, actor=None, key_id=key.pk)

    with pytest.raises(ClientKeyStateConflict):
        key_update(tenant=tenant, actor=None, key_id=key.pk, changes={"status": "active"})

    assert fresh(key).status == ClientKey.Status.DELETED


def test_another_tenants_key_cannot_be_updated(tenant, outsider):
    key = wallet_key(tenant)
    with pytest.raises(ClientKey.DoesNotExist):
        key_update(tenant=outsider[0], actor=None, key_id=key.pk, changes={"status": "revoked"})
    assert fresh(key).status == ClientKey.Status.ACTIVE


def test_a_cap_can_be_lowered_below_what_was_spent(tenant, price):
    fund(tenant, "10")
    key = wallet_key(tenant, spend_cap_nanos=parse_usd("5"))
    charge(key=key, price=price, request_id="req-1", usage=Usage(input_tokens=2_000_000))

    key_update(tenant=tenant, actor=None, key_id=key.pk, changes={"spend_cap": parse_usd("1")})

    with pytest.raises(ReservationRefused) as refused:
        reserve(key=key, price=price, request_id="req-2", worst_case=Usage(input_tokens=1))
    assert refused.value.client_available_nanos == 0


# ----------------------------------------------------------------------------- key_delete


def test_delete_refunds_unspent_cost_once(tenant, price):
    fund(tenant, "200")
    key = prepaid_key(tenant)
    # $20.52 of cost.
    charge(key=key, price=price, request_id="req-1", usage=Usage(input_tokens=20_520_000))

    deleted = key_delete(tenant=tenant, actor=tenant.owner, key_id=key.pk)

    assert deleted.refunded_nanos == parse_usd("39.48")
    assert deleted.key.status == ClientKey.Status.DELETED
    assert deleted.key.deleted_at is not None
    assert balance(tenant) == parse_usd("179.48")
    with pytest.raises(ClientKeyStateConflict):
        key_delete(tenant=tenant, actor=None, key_id=key.pk)
    assert balance(tenant) == parse_usd("179.48")
    refund = LedgerEntry.objects.get(kind=LedgerEntry.Kind.KEY_REFUND)
    assert (refund.amount_nanos, refund.idempotency_key) == (
        parse_usd("39.48"),
        f"key-delete:{key.pk}",
    )
    key = fresh(key)
    assert key.cost_refunded_nanos == key.cost_funded_nanos - key.cost_spent_nanos


def test_deleting_an_unused_key_returns_all_its_cost(tenant):
    fund(tenant, "200")
    key = prepaid_key(tenant)
    key_top_up(tenant=tenant, actor=None, key_id=key.pk, client_amount_nanos=parse_usd("50"))

    assert key_delete(tenant=tenant, actor=None, key_id=key.pk).refunded_nanos == parse_usd("90")
    assert balance(tenant) == parse_usd("200")


def test_deleting_a_fully_spent_key_refunds_nothing(tenant, price):
    fund(tenant, "1")
    key = prepaid_key(tenant, budget="1", cost="1")
    charge(key=key, price=price, request_id="req-1", usage=Usage(input_tokens=1_000_000))

    assert key_delete(tenant=tenant, actor=None, key_id=key.pk).refunded_nanos == 0
    assert not LedgerEntry.objects.filter(kind=LedgerEntry.Kind.KEY_REFUND).exists()
    assert balance(tenant) == 0


def test_deleting_a_wallet_key_refunds_nothing(tenant):
    fund(tenant, "10")
    key = wallet_key(tenant)

    assert key_delete(tenant=tenant, actor=None, key_id=key.pk).refunded_nanos == 0
    assert balance(tenant) == parse_usd("10")


def test_another_tenants_key_cannot_be_deleted(tenant, outsider):
    fund(tenant, "200")
    key = prepaid_key(tenant)

    with pytest.raises(ClientKey.DoesNotExist):
        key_delete(tenant=outsider[0], actor=None, key_id=key.pk)

    assert fresh(key).status == ClientKey.Status.ACTIVE
    assert (balance(tenant), balance(outsider[0])) == (parse_usd("140"), parse_usd("500"))
