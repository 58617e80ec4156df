"""``reseller_open``: the reseller's tenant (accounts) and its wallet (billing), together."""

from __future__ import annotations

import pytest

from accounts.exceptions import EmailTaken
from accounts.models import Tenant
from accounts.services import tenant_create
from billing.models import Wallet
from billing.selectors import wallet_for_tenant
from billing.services import reseller_open


def test_reseller_open_creates_the_tenant_its_token_and_an_empty_wallet(db):
    tenant, token = reseller_open(email="new@example.com", name="Acme")

    assert (tenant.name, tenant.owner.email) == ("Acme", "new@example.com")
    assert token.token.tenant_id == tenant.pk and token.secret.startswith("tgr-")
    wallet = wallet_for_tenant(tenant=tenant)
    assert (wallet.balance_nanos, wallet.reserved_nanos) == (0, 0)


def test_tenant_create_alone_opens_no_wallet(db):
    """accounts knows nothing of wallets: the wallet is billing's half of a reseller."""
    tenant, _ = tenant_create(email="bare@example.com")

    assert not Wallet.objects.filter(tenant=tenant).exists()


def test_reseller_open_with_a_taken_email_creates_nothing(reseller):
    with pytest.raises(EmailTaken):
        reseller_open(email="ALICE@example.com")

    assert Tenant.objects.count() == Wallet.objects.count() == 1
