"""The demo ``make run`` serves: an operator, a funded demo reseller, priced upstreams.

Every step is idempotent and is its own transaction (the services it calls are durable),
so running it again, or after an interrupted run, converges on the same state: the $100
credit is posted once (an idempotency key), upstreams are only created when absent (an
operator's changes to them stay), prices follow genai-prices without touching manual
ones. Only the "make-run" API token is new each time: its secret is shown once, so the
previous one is revoked and a fresh one printed.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser

from accounts.models import Tenant
from accounts.selectors import tenant_get_by_owner_email
from accounts.services import (
    IssuedToken,
    api_token_rotate,
    operator_ensure,
    user_password_ensure,
)
from billing.models import LedgerEntry, Upstream
from billing.money import NANOS_PER_USD
from billing.pricing_sync import PricesSyncSummary, prices_sync
from billing.services import reseller_open, upstream_save, wallet_credit

DEMO_ADMIN_EMAIL = "admin@example.com"
DEMO_RESELLER_EMAIL = "demo@example.com"
DEMO_RESELLER_NAME = "Demo reseller"
DEMO_CREDIT_NANOS = 100 * NANOS_PER_USD
DEMO_TOKEN_NAME = "make-run"  # noqa: S105 - a label, not a secret


@dataclass(frozen=True)
class DemoUpstream:
    name: str
    kind: str
    base_url: str
    api_key_env: str


DEMO_UPSTREAMS = (
    DemoUpstream("openai", Upstream.Kind.OPENAI, "https://api.openai.com/v1", "OPENAI_API_KEY"),
    DemoUpstream(
        "anthropic", Upstream.Kind.ANTHROPIC, "https://api.anthropic.com", "ANTHROPIC_API_KEY"
    ),
)


@dataclass(frozen=True)
class DemoSeed:
    admin: AbstractBaseUser
    tenant: Tenant
    token: IssuedToken
    credited: bool
    upstreams_created: list[str]
    prices: PricesSyncSummary


def _demo_reseller(*, password: str) -> Tenant:
    try:
        tenant = tenant_get_by_owner_email(email=DEMO_RESELLER_EMAIL)
    except Tenant.DoesNotExist:
        tenant, _ = reseller_open(
            email=DEMO_RESELLER_EMAIL, password=password, name=DEMO_RESELLER_NAME
        )
        return tenant
    user_password_ensure(user=tenant.owner, password=password)
    return tenant


def demo_seed(*, admin_password: str, reseller_password: str) -> DemoSeed:
    """Ensure the demo operator, reseller (with $100 credited once), upstreams and their
    genai-prices prices, then rotate the reseller's "make-run" API token."""
    admin = operator_ensure(email=DEMO_ADMIN_EMAIL, password=admin_password)
    tenant = _demo_reseller(password=reseller_password)

    credit_key = f"demo-seed:opening-credit:{tenant.pk}"
    credited = not LedgerEntry.objects.filter(idempotency_key=credit_key).exists()
    wallet_credit(
        tenant=tenant,
        amount_nanos=DEMO_CREDIT_NANOS,
        reason="Demo credit",
        reference="manage.py seed_demo",
        idempotency_key=credit_key,
    )

    created = []
    for demo in DEMO_UPSTREAMS:
        if not Upstream.objects.filter(name=demo.name).exists():
            upstream_save(
                name=demo.name,
                kind=demo.kind,
                base_url=demo.base_url,
                api_key_env=demo.api_key_env,
            )
            created.append(demo.name)
    summaries = [prices_sync(upstream_name=demo.name) for demo in DEMO_UPSTREAMS]
    prices = PricesSyncSummary(
        dry_run=False, upstreams=[result for s in summaries for result in s.upstreams]
    )

    token = api_token_rotate(tenant=tenant, name=DEMO_TOKEN_NAME)
    return DemoSeed(
        admin=admin,
        tenant=tenant,
        token=token,
        credited=credited,
        upstreams_created=created,
        prices=prices,
    )
