"""Suspending a reseller (``tenant_suspend``) and lifting it (``tenant_reinstate``).

A suspension stops the tenant's API tokens and client keys and nothing else: every key
keeps its own status, no money moves, requests already admitted are charged what they
used, and one message tells the proxy workers, however many keys the tenant has.
"""

from __future__ import annotations

import pytest

from accounts.models import Tenant
from accounts.selectors import api_token_authenticate
from accounts.services import tenant_reinstate, tenant_suspend
from billing.exceptions import AccountSuspended, KeyInactive
from billing.models import LedgerEntry, Reservation
from billing.money import Usage, parse_usd
from billing.selectors import wallet_for_tenant
from billing.services import wallet_credit
from keys.models import ClientKey
from keys.services import key_create, key_update
from tests.metering import reserve, settle

pytestmark = pytest.mark.usefixtures("books_balance")

WORST = Usage(input_tokens=1_000, output_tokens=4_000)
ACTUAL = Usage(input_tokens=1_000, output_tokens=1_000)


def prepaid_key(tenant: Tenant, label: str = "prepaid") -> ClientKey:
    return key_create(
        tenant=tenant,
        actor=None,
        label=label,
        client_budget_nanos=parse_usd("10"),
        your_cost_nanos=parse_usd("6"),
    ).key


def wallet_key(tenant: Tenant) -> ClientKey:
    return key_create(
        tenant=tenant, actor=None, label="wallet", funding=ClientKey.Funding.WALLET
    ).key


def books(tenant: Tenant) -> tuple[object, ...]:
    """Everything money about a tenant: wallet, ledger, and every key's counters."""
    wallet = wallet_for_tenant(tenant=tenant)
    keys = list(
        ClientKey.objects.for_tenant(tenant)
        .order_by("pk")
        .values_list(
            "status",
            "client_budget_nanos",
            "cost_funded_nanos",
            "cost_refunded_nanos",
            "client_spent_nanos",
            "cost_spent_nanos",
            "client_reserved_nanos",
            "cost_reserved_nanos",
        )
    )
    entries = list(LedgerEntry.objects.filter(wallet=wallet).values_list("pk", flat=True))
    return wallet.balance_nanos, wallet.reserved_nanos, entries, keys


def test_suspension_stops_the_api_token_and_reinstatement_restores_it(reseller):
    tenant, token = reseller

    suspended = tenant_suspend(tenant=tenant, actor=None)

    assert (suspended.tenant, suspended.changed) == (tenant, True)
    assert Tenant.objects.get(pk=tenant.pk).is_active is False
    assert api_token_authenticate(secret=token.secret) is None

    reinstated = tenant_reinstate(tenant=tenant, actor=None)

    assert reinstated.changed is True
    assert Tenant.objects.get(pk=tenant.pk).is_active is True
    assert api_token_authenticate(secret=token.secret) is not None


def test_repeating_either_changes_nothing_and_says_so(tenant):
    assert tenant_suspend(tenant=tenant, actor=None).changed is True
    assert tenant_suspend(tenant=Tenant.objects.get(pk=tenant.pk), actor=None).changed is False
    assert Tenant.objects.get(pk=tenant.pk).is_active is False
    assert tenant_reinstate(tenant=tenant, actor=None).changed is True
    assert tenant_reinstate(tenant=tenant, actor=None).changed is False
    assert Tenant.objects.get(pk=tenant.pk).is_active is True


def test_suspension_keeps_every_keys_status_and_moves_no_money(tenant, price):
    wallet_credit(tenant=tenant, amount_nanos=parse_usd("50"), reason="test funds")
    active = prepaid_key(tenant, "active")
    revoked = prepaid_key(tenant, "revoked")
    key_update(tenant=tenant, actor=None, key_id=revoked.pk, changes={"status": "revoked"})
    wallet_key(tenant)
    # A request in flight holds part of the wallet and of a key across both changes.
    in_flight = reserve(key=active, price=price, request_id="in-flight", worst_case=WORST)
    before = books(tenant)

    tenant_suspend(tenant=tenant, actor=None)
    suspended = books(tenant)
    tenant_reinstate(tenant=tenant, actor=None)

    assert suspended == before
    assert books(tenant) == before
    statuses = dict(ClientKey.objects.for_tenant(tenant).values_list("label", "status"))
    assert statuses == {"active": "active", "revoked": "revoked", "wallet": "active"}
    settle(key=active, hold=in_flight, price=price, usage=ACTUAL)


@pytest.mark.parametrize("funding", ["prepaid", "wallet"])
def test_a_suspended_tenants_keys_cannot_reserve_until_reinstated(tenant, price, funding):
    """The reservation's own SQL refuses: a proxy worker still caching the key as usable
    cannot spend a cent past the suspension."""
    wallet_credit(tenant=tenant, amount_nanos=parse_usd("50"), reason="test funds")
    key = prepaid_key(tenant) if funding == "prepaid" else wallet_key(tenant)
    tenant_suspend(tenant=tenant, actor=None)
    wallet = wallet_for_tenant(tenant=tenant)

    with pytest.raises(AccountSuspended) as refused:
        reserve(key=key, price=price, request_id="refused", worst_case=WORST)

    assert refused.value.code == "account_suspended"
    assert isinstance(refused.value, KeyInactive)
    assert not Reservation.objects.exists()
    assert ClientKey.objects.get(pk=key.pk).client_reserved_nanos == 0
    assert wallet_for_tenant(tenant=tenant).reserved_nanos == wallet.reserved_nanos == 0

    tenant_reinstate(tenant=tenant, actor=None)
    served = reserve(key=key, price=price, request_id="served", worst_case=WORST)
    settled = settle(key=key, hold=served, price=price, usage=ACTUAL)

    assert settled is not None and settled.charged_cost_nanos > 0


def test_a_revoked_key_says_revoked_whether_or_not_its_tenant_is_suspended(tenant, price):
    wallet_credit(tenant=tenant, amount_nanos=parse_usd("50"), reason="test funds")
    key = prepaid_key(tenant)
    key_update(tenant=tenant, actor=None, key_id=key.pk, changes={"status": "revoked"})
    tenant_suspend(tenant=tenant, actor=None)

    with pytest.raises(KeyInactive, match="revoked") as refused:
        reserve(key=key, price=price, request_id="refused", worst_case=WORST)

    assert not isinstance(refused.value, AccountSuspended)


def test_a_request_admitted_before_the_suspension_is_charged_what_it_used(tenant, price):
    wallet_credit(tenant=tenant, amount_nanos=parse_usd("50"), reason="test funds")
    key = wallet_key(tenant)
    admitted = reserve(key=key, price=price, request_id="admitted", worst_case=WORST)

    tenant_suspend(tenant=tenant, actor=None)
    settled = settle(key=key, hold=admitted, price=price, usage=ACTUAL)

    # $1 input / $2 output per 1M tokens: 1,000 tokens of each cost $0.001 + $0.002.
    assert settled is not None and settled.charged_cost_nanos == 3_000_000
    assert ClientKey.objects.get(pk=key.pk).cost_spent_nanos == 3_000_000
    usage = LedgerEntry.objects.get(kind=LedgerEntry.Kind.USAGE)
    assert usage.amount_nanos == -3_000_000
    assert wallet_for_tenant(tenant=tenant).reserved_nanos == 0


def test_each_change_is_one_message_for_the_tenant_after_commit(
    tenant, outsider, announced_changes, django_capture_on_commit_callbacks
):
    for _ in range(3):
        wallet_key(tenant)
    wallet_key(outsider[0])
    announced_changes.clear()

    with django_capture_on_commit_callbacks(execute=True):
        tenant_suspend(tenant=tenant, actor=None)
        assert announced_changes == []  # not before the change is visible to the workers
    with django_capture_on_commit_callbacks(execute=True):
        tenant_reinstate(tenant=tenant, actor=None)

    assert announced_changes == [f"tenant:{tenant.pk}", f"tenant:{tenant.pk}"]
