"""``reseller_open``: the reseller's tenant (accounts) and its wallet (billing), together;
the built-in demo upstream's one road (``upstream_demo_ensure``)."""

from __future__ import annotations

import pytest

from accounts.exceptions import EmailTaken
from accounts.models import Tenant
from accounts.services import tenant_create
from billing.exceptions import UpstreamInvalid
from billing.models import DEMO_BASE_URL, Wallet
from billing.selectors import wallet_for_tenant
from billing.services import reseller_open, upstream_demo_ensure, upstream_save


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


# ----------------------------------------------------------------------------- the demo upstream


def test_only_the_demo_seeding_makes_a_demo_upstream_and_none_changes_kind(db):
    with pytest.raises(UpstreamInvalid, match="seed_demo"):
        upstream_save(name="fake-demo", kind="demo", base_url="http://127.0.0.1:9/v1")
    openai = upstream_save(name="openai", kind="openai", base_url="https://api.openai.com/v1")
    with pytest.raises(UpstreamInvalid, match="seed_demo"):
        upstream_save(name="openai", kind="demo", base_url=openai.base_url)

    demo, created = upstream_demo_ensure(name="tollgate-demo")
    assert created and (demo.kind, demo.base_url, demo.is_active) == ("demo", DEMO_BASE_URL, True)
    with pytest.raises(UpstreamInvalid, match="seed_demo"):
        upstream_save(name="tollgate-demo", kind="openai", base_url="http://127.0.0.1:9/v1")
    # Turned off (the admin's save), it stays off when the seeding runs again.
    upstream_save(name="tollgate-demo", kind="demo", base_url=DEMO_BASE_URL, is_active=False)
    assert upstream_demo_ensure(name="tollgate-demo") == (demo, False)
    demo.refresh_from_db()
    assert not demo.is_active
    # A provider's upstream of that name is never taken for the demo.
    with pytest.raises(UpstreamInvalid, match="not the built-in demo"):
        upstream_demo_ensure(name="openai")
