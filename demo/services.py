"""The demo ``make run`` serves: an operator, a funded demo reseller, priced upstreams, the
built-in demo model and a client key to call it with.

Every step is idempotent and is its own transaction (the services it calls are durable),
so running it again, or after an interrupted run, converges on the same state: the $100
credit is posted once (an idempotency key), upstreams are only created when absent (an
operator's changes to them stay, the demo upstream turned off included), prices follow
genai-prices without touching manual ones, and the demo model is priced once. The demo
client key is kept: the caller passes the secret it kept from the last run, and a new key
is minted only when that one no longer works. Only the "make-run" API token is new each
time: its secret is shown once, so the previous one is revoked and a fresh one printed.

The demo model (``tollgate-demo``) is what lets a first call succeed without any
provider's API key: its upstream answers inside Tollgate (``proxy.upstreams.demo``), and
nothing but this seeding makes such an upstream.
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
from billing.exceptions import InsufficientFunds
from billing.models import LedgerEntry, ModelPrice, ModelRoute, Upstream
from billing.money import NANOS_PER_USD
from billing.pricing_sync import PricesSyncSummary, prices_sync
from billing.selectors import price_current
from billing.services import (
    price_set,
    reseller_open,
    upstream_demo_ensure,
    upstream_save,
    wallet_credit,
)
from keys.models import ClientKey
from keys.selectors import key_for_secret
from keys.services import key_create

DEMO_ADMIN_EMAIL = "admin@example.com"
DEMO_RESELLER_EMAIL = "demo@example.com"
DEMO_RESELLER_NAME = "Demo reseller"
DEMO_CREDIT_NANOS = 100 * NANOS_PER_USD
DEMO_TOKEN_NAME = "make-run"  # noqa: S105 - a label, not a secret

# The built-in demo model, served by an upstream of the same name, and its posted price in
# nano-dollars per 1M tokens (what a real mid-size model costs; the operator may post
# another in the admin). Its replies are short: a small output limit keeps holds small.
DEMO_MODEL = "tollgate-demo"
DEMO_UPSTREAM_NAME = "tollgate-demo"
DEMO_INPUT_PER_MTOK_NANOS = 2_500_000_000  # $2.50
DEMO_OUTPUT_PER_MTOK_NANOS = 10 * NANOS_PER_USD  # $10.00
DEMO_MAX_OUTPUT_TOKENS = 1_024
# The demo reseller's client key: a $10 client budget that cost the wallet $6 (40 % margin).
DEMO_KEY_LABEL = "Demo key"
DEMO_KEY_BUDGET_NANOS = 10 * NANOS_PER_USD
DEMO_KEY_COST_NANOS = 6 * NANOS_PER_USD


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
class DemoModel:
    upstream: Upstream
    route: ModelRoute
    price: ModelPrice
    created: bool

    @property
    def is_on(self) -> bool:
        """Served: neither its upstream nor its route was turned off in the admin."""
        return self.upstream.is_active and self.route.is_active


@dataclass(frozen=True)
class DemoKey:
    key: ClientKey
    secret: str
    created: bool


@dataclass(frozen=True)
class DemoSeed:
    admin: AbstractBaseUser
    tenant: Tenant
    token: IssuedToken
    credited: bool
    upstreams_created: list[str]
    prices: PricesSyncSummary
    demo_model: DemoModel
    # None when the wallet could not fund a new key (it had spent its demo credit).
    client_key: DemoKey | None


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


def _demo_model() -> DemoModel:
    upstream, created = upstream_demo_ensure(name=DEMO_UPSTREAM_NAME)
    route = ModelRoute.objects.filter(model=DEMO_MODEL, upstream=upstream).first()
    price = price_current(route=route) if route is not None else None
    if price is None:
        price = price_set(
            model=DEMO_MODEL,
            upstream=upstream,
            input_per_mtok_nanos=DEMO_INPUT_PER_MTOK_NANOS,
            output_per_mtok_nanos=DEMO_OUTPUT_PER_MTOK_NANOS,
            max_output_tokens=DEMO_MAX_OUTPUT_TOKENS,
        )
        route = price.route
    assert route is not None  # noqa: S101 - made with its price above if it was missing
    return DemoModel(upstream=upstream, route=route, price=price, created=created)


def _demo_key(*, tenant: Tenant, kept_secret: str | None) -> DemoKey | None:
    """The key whose secret was kept from the last run while it still works, else a new
    one (None if the wallet cannot fund it)."""
    if kept_secret:
        key = key_for_secret(tenant=tenant, secret=kept_secret)
        if key is not None and key.effective_status == ClientKey.Status.ACTIVE:
            return DemoKey(key=key, secret=kept_secret, created=False)
    try:
        issued = key_create(
            tenant=tenant,
            actor=None,
            label=DEMO_KEY_LABEL,
            client_budget_nanos=DEMO_KEY_BUDGET_NANOS,
            your_cost_nanos=DEMO_KEY_COST_NANOS,
        )
    except InsufficientFunds:
        return None
    return DemoKey(key=issued.key, secret=issued.secret, created=True)


def demo_seed(
    *, admin_password: str, reseller_password: str, client_key_secret: str | None = None
) -> DemoSeed:
    """Ensure the demo operator, reseller (with $100 credited once), upstreams and their
    genai-prices prices, the built-in demo model and the reseller's demo client key (the
    one whose ``client_key_secret`` the caller kept, while it works), then rotate the
    reseller's "make-run" API token."""
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

    demo_model = _demo_model()
    client_key = _demo_key(tenant=tenant, kept_secret=client_key_secret)

    token = api_token_rotate(tenant=tenant, name=DEMO_TOKEN_NAME)
    return DemoSeed(
        admin=admin,
        tenant=tenant,
        token=token,
        credited=credited,
        upstreams_created=created,
        prices=prices,
        demo_model=demo_model,
        client_key=client_key,
    )
