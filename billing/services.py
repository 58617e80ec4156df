"""Writes for resellers' wallets, upstreams and prices, and the metering no request drives
(expiring the holds of dead workers, a deleted key's refund).

Money rules themselves live in ``billing.ledger`` and ``billing.metering`` as operations
that run on either database driver: the proxy runs reserve and settle on its async driver
(``proxy.admission``, ``proxy.settlement``); these services run the others synchronously.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from urllib.parse import urlsplit

from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.events import config_changed
from accounts.exceptions import EmailTaken
from accounts.models import Tenant
from accounts.selectors import user_awaits_verification, user_by_email
from accounts.services import (
    IssuedToken,
    SignUpOutcome,
    SignUpResult,
    sign_up_renew,
    tenant_create,
    tenant_sign_up,
)
from billing import crypto
from billing.exceptions import LedgerError, PriceInvalid, UpstreamInvalid
from billing.ledger import Posted, ledger_post_op
from billing.metering import Hold, deleted_key_refund_op, settle_op
from billing.models import (
    DEMO_BASE_URL,
    LedgerEntry,
    ModelPrice,
    ModelRoute,
    Reservation,
    Upstream,
    Wallet,
)
from billing.money import (
    MAX_AMOUNT_NANOS,
    Charge,
    Prices,
    PriceTier,
    tiers_invalid,
)
from billing.sqlops import run_sync

# Ledger kinds an operator may post by hand.
MANUAL_KINDS = {
    LedgerEntry.Kind.MANUAL_CREDIT,
    LedgerEntry.Kind.ADJUSTMENT,
    LedgerEntry.Kind.TOP_UP,
}


@transaction.atomic(durable=True)
def reseller_open(
    *, email: str, password: str | None = None, name: str = ""
) -> tuple[Tenant, IssuedToken]:
    """Create a reseller: its user, tenant and first API token (``accounts.services.
    tenant_create``, which raises EmailTaken) and the tenant's empty wallet, in one
    transaction. The token's secret is returned once and never stored."""
    tenant, token = tenant_create(email=email, password=password, name=name)
    wallet_get_or_create(tenant=tenant)
    return tenant, token


def reseller_sign_up(*, email: str, password: str, name: str = "") -> SignUpResult:
    """The dashboard's sign-up form: what ``reseller_open`` does for the operator, for
    anyone, with the email to be verified before the account works.

    A new address gets its user (inactive until verified), tenant and empty wallet in one
    transaction, and no API token (the reseller makes one on the dashboard, where its
    secret is shown). An address whose earlier sign-up is still unverified gets the newer
    password and name instead (``sign_up_renew``); an address with an account changes
    nothing. The outcome tells the caller which email to send; what the page says must not
    depend on it.
    """
    existing = user_by_email(email=email)
    if existing is None:
        try:
            tenant = _reseller_sign_up_open(email=email, password=password, name=name)
            return SignUpResult(user=tenant.owner, outcome=SignUpOutcome.OPENED)
        except (EmailTaken, IntegrityError):
            # A concurrent sign-up for the address committed first (the unique username
            # refused this one's whole transaction): answer as to a second sign-up.
            existing = user_by_email(email=email)
            if existing is None:
                raise
    if user_awaits_verification(user=existing):
        sign_up_renew(user=existing, password=password, name=name)
        return SignUpResult(user=existing, outcome=SignUpOutcome.RENEWED)
    # Hash anyway: an address with an account must take as long to answer as a new one
    # (hashing is most of a sign-up's time), or the delay would tell which it was.
    make_password(password)
    return SignUpResult(user=existing, outcome=SignUpOutcome.TAKEN)


@transaction.atomic(durable=True)
def _reseller_sign_up_open(*, email: str, password: str, name: str) -> Tenant:
    tenant = tenant_sign_up(email=email, password=password, name=name)
    wallet_get_or_create(tenant=tenant)
    return tenant


def wallet_get_or_create(*, tenant: Tenant) -> Wallet:
    wallet, _ = Wallet.objects.get_or_create(tenant=tenant)
    return wallet


def wallet_credit(
    *,
    tenant: Tenant,
    amount_nanos: int,
    reason: str,
    kind: str = LedgerEntry.Kind.MANUAL_CREDIT,
    reference: str = "",
    idempotency_key: str | None = None,
    actor: AbstractBaseUser | None = None,
) -> LedgerEntry:
    """Post a manual credit, top-up or (signed) adjustment to a tenant's wallet.

    A negative adjustment cannot take the wallet below its reservations
    (InsufficientFunds). With an ``idempotency_key`` already used, returns the earlier entry,
    also when the earlier call is a concurrent one that committed first.
    """
    if kind not in MANUAL_KINDS:
        raise LedgerError(f"{kind} entries are posted by their own flows")
    if kind != LedgerEntry.Kind.ADJUSTMENT and amount_nanos <= 0:
        raise LedgerError("a credit must be positive")
    if abs(amount_nanos) > MAX_AMOUNT_NANOS:
        raise LedgerError("amount out of range")
    try:
        return _wallet_credit_once(
            tenant=tenant,
            kind=kind,
            amount_nanos=amount_nanos,
            reason=reason,
            reference=reference,
            idempotency_key=idempotency_key,
            actor=actor,
        )
    except IntegrityError:
        # Two calls with the same key raced past the replay check: the unique constraint
        # on the entry's idempotency key refused this one's whole transaction (nothing of
        # it was written), and the winner's entry is the answer.
        earlier = (
            _credit_replayed(idempotency_key, tenant=tenant, kind=kind, amount_nanos=amount_nanos)
            if idempotency_key
            else None
        )
        if earlier is None:
            raise
        return earlier


def _credit_replayed(
    idempotency_key: str, *, tenant: Tenant, kind: str, amount_nanos: int
) -> LedgerEntry | None:
    """The entry an earlier credit with this idempotency key posted, if any."""
    earlier = LedgerEntry.objects.filter(idempotency_key=idempotency_key).first()
    if earlier is None:
        return None
    # A replay returns the first entry; the same key for another credit is a mistake that
    # must not pass silently (it would credit nothing, or report another tenant's).
    if (earlier.wallet.tenant_id, earlier.kind, earlier.amount_nanos) != (
        tenant.pk,
        kind,
        amount_nanos,
    ):
        raise LedgerError("This idempotency key was already used for a different entry.")
    return earlier


@transaction.atomic(durable=True)
def _wallet_credit_once(
    *,
    tenant: Tenant,
    kind: str,
    amount_nanos: int,
    reason: str,
    reference: str,
    idempotency_key: str | None,
    actor: AbstractBaseUser | None,
) -> LedgerEntry:
    if idempotency_key:
        earlier = _credit_replayed(
            idempotency_key, tenant=tenant, kind=kind, amount_nanos=amount_nanos
        )
        if earlier is not None:
            return earlier
    wallet = wallet_get_or_create(tenant=tenant)
    posted: Posted = run_sync(
        ledger_post_op(
            wallet_id=wallet.pk,
            kind=kind,
            amount_nanos=amount_nanos,
            reason=reason,
            reference=reference,
            idempotency_key=idempotency_key,
            actor_id=actor.pk if actor is not None else None,
            now=timezone.now(),
        )
    )
    return LedgerEntry.objects.get(pk=posted.entry_id)


# ----------------------------------------------------------------------------- upstreams


def upstream_base_url_validate(*, kind: str, base_url: str) -> str:
    """Normalise and check an upstream base URL as the official SDKs take it."""
    url = base_url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise UpstreamInvalid("The base URL must be an http(s) URL with a host.")
    if parts.username or parts.password:
        raise UpstreamInvalid("Put credentials in the API key, not in the base URL.")
    if parts.query or parts.fragment:
        raise UpstreamInvalid("The base URL cannot have a query string or fragment.")
    if kind == Upstream.Kind.ANTHROPIC and parts.path.rstrip("/").endswith("/v1"):
        raise UpstreamInvalid(
            "An Anthropic base URL is the host (e.g. https://api.anthropic.com), without /v1."
        )
    if kind not in Upstream.Kind.values:
        raise UpstreamInvalid(f"Unknown upstream kind {kind!r}.")
    return url


@transaction.atomic(durable=True)
def upstream_save(
    *,
    name: str,
    kind: str,
    base_url: str,
    api_key_env: str | None = None,
    api_key: str | None = None,
    timeout_seconds: int | None = None,
    is_active: bool | None = None,
) -> Upstream:
    """Create or update an upstream. A literal ``api_key`` is stored encrypted ("" clears it).

    Optional arguments left as None keep the upstream's current value (the model default
    for a new upstream), so updating the URL does not drop its key.
    """
    url = upstream_base_url_validate(kind=kind, base_url=base_url)
    existing = Upstream.objects.filter(name=name).first()
    was_demo = existing is not None and existing.is_demo
    if (kind == Upstream.Kind.DEMO) != was_demo:
        # The demo answers without a provider: it is made by the demo seeding only
        # (upstream_demo_ensure), and never turned into a provider's upstream, nor back.
        raise UpstreamInvalid(
            "The built-in demo upstream is made by `manage.py seed_demo`; "
            "its kind cannot be given to or taken from another upstream."
        )
    upstream, _ = Upstream.objects.get_or_create(
        name=name, defaults={"kind": kind, "base_url": url}
    )
    upstream.kind = kind
    upstream.base_url = url
    if api_key_env is not None:
        upstream.api_key_env = api_key_env.strip()
    if api_key is not None:
        upstream.api_key_encrypted = crypto.encrypt(api_key) if api_key else ""
    if timeout_seconds is not None:
        upstream.timeout_seconds = timeout_seconds
    if is_active is not None:
        upstream.is_active = is_active
    upstream.full_clean()
    upstream.save()
    config_changed("routes")
    return upstream


@transaction.atomic(durable=True)
def upstream_demo_ensure(*, name: str) -> tuple[Upstream, bool]:
    """The built-in demo upstream named ``name``, created (active) when absent; one that
    exists is left as the operator left it (turned off in the admin, it stays off).
    Returns it and whether it was created. Raises UpstreamInvalid if a provider's upstream
    has the name."""
    upstream = Upstream.objects.filter(name=name).first()
    if upstream is not None:
        if not upstream.is_demo:
            raise UpstreamInvalid(f"The upstream {name!r} exists and is not the built-in demo.")
        return upstream, False
    upstream = Upstream(name=name, kind=Upstream.Kind.DEMO, base_url=DEMO_BASE_URL)
    upstream.full_clean()
    upstream.save()
    config_changed("routes")
    return upstream, True


# ----------------------------------------------------------------------------- prices


@transaction.atomic(durable=True)
def price_set(
    *,
    model: str,
    upstream: Upstream,
    input_per_mtok_nanos: int,
    output_per_mtok_nanos: int,
    cached_input_per_mtok_nanos: int | None = None,
    cache_write_per_mtok_nanos: int | None = None,
    cache_write_1h_per_mtok_nanos: int | None = None,
    source: str = ModelPrice.Source.MANUAL,
    effective_from: datetime | None = None,
    max_output_tokens: int | None = None,
    tiers: Sequence[PriceTier] = (),
    context_window_tokens: int | None = None,
) -> ModelPrice:
    """Post a new price version for ``model`` on ``upstream`` (creating the route).

    ``tiers`` price long prompts (see ``billing.money.PriceTier``), thresholds rising.
    Earlier versions stay untouched; requests already charged keep their version.
    """
    model = model.strip()
    if not model:
        raise PriceInvalid("A model name is required.")
    prices = Prices(
        input_per_mtok_nanos=input_per_mtok_nanos,
        output_per_mtok_nanos=output_per_mtok_nanos,
        cached_input_per_mtok_nanos=cached_input_per_mtok_nanos,
        cache_write_per_mtok_nanos=cache_write_per_mtok_nanos,
        cache_write_1h_per_mtok_nanos=cache_write_1h_per_mtok_nanos,
        tiers=tuple(tiers),
    )
    levels: list[Prices | PriceTier] = [prices, *prices.tiers]
    for level in levels:
        for value in (
            level.input_per_mtok_nanos,
            level.output_per_mtok_nanos,
            level.cached_input_per_mtok_nanos,
            level.cache_write_per_mtok_nanos,
            level.cache_write_1h_per_mtok_nanos,
        ):
            if value is not None and (value < 0 or value > MAX_AMOUNT_NANOS):
                raise PriceInvalid("Prices must be between 0 and 1,000,000 USD per 1M tokens.")
    problem = tiers_invalid(prices.tiers)
    if problem is not None:
        raise PriceInvalid(problem)
    _context_window_check(context_window_tokens)
    route, _ = ModelRoute.objects.get_or_create(model=model, upstream=upstream)
    changed = []
    if max_output_tokens is not None and route.max_output_tokens != max_output_tokens:
        route.max_output_tokens = max_output_tokens
        changed.append("max_output_tokens")
    if context_window_tokens is not None and route.context_window_tokens != context_window_tokens:
        route.context_window_tokens = context_window_tokens
        changed.append("context_window_tokens")
    if changed:
        route.save(update_fields=changed)
    config_changed("routes")
    return ModelPrice.objects.create(
        route=route,
        input_per_mtok_nanos=input_per_mtok_nanos,
        output_per_mtok_nanos=output_per_mtok_nanos,
        cached_input_per_mtok_nanos=cached_input_per_mtok_nanos,
        cache_write_per_mtok_nanos=cache_write_per_mtok_nanos,
        cache_write_1h_per_mtok_nanos=cache_write_1h_per_mtok_nanos,
        tiers=[tier.as_json() for tier in prices.tiers],
        source=source,
        effective_from=effective_from or timezone.now(),
    )


def _context_window_check(tokens: int | None) -> None:
    if tokens is not None and tokens < 1:
        raise PriceInvalid("A context window must be at least 1 token.")


def route_context_window_set(*, route: ModelRoute, tokens: int | None) -> ModelRoute:
    """Record a route's context window (None: unknown), which bounds the input of requests
    whose body does not (see ``proxy.wire.base.input_is_unbounded``)."""
    _context_window_check(tokens)
    route.context_window_tokens = tokens
    route.save(update_fields=["context_window_tokens"])
    config_changed("routes")
    return route


# ----------------------------------------------------------------------------- metering
#
# Reserving and settling are the proxy's (proxy.admission.reserve, proxy.settlement, on the
# operations of billing.metering); what runs here is what no request drives: the sweep of
# holds whose worker died, and a deleted key's refund.


def deleted_key_refund(*, key_id: int, wallet_id: int, refund: int, now: datetime) -> bool:
    """Pay back ``refund``, a deleted prepaid key's unspent cost; False if it changed
    meanwhile (a later settlement or the sweep pays it then)."""
    return run_sync(
        deleted_key_refund_op(key_id=key_id, wallet_id=wallet_id, refund=refund, now=now)
    )


def reservations_expire(*, now: datetime | None = None, limit: int = 500) -> int:
    """Release holds whose worker never settled them (crashed or killed), charging nothing.

    Each expiry claims its reservation like a settlement does, so a late settlement and the
    sweep can never both apply. Returns how many were expired.
    """
    now = now or timezone.now()
    request_ids = list(
        Reservation.objects.filter(status=Reservation.Status.HELD, expires_at__lt=now)
        .order_by("expires_at")
        .values_list("request_id", flat=True)[:limit]
    )
    expired = 0
    for request_id in request_ids:
        with transaction.atomic(durable=True):
            expired += _reservation_expire(request_id=request_id, now=now)
    return expired


def _reservation_expire(*, request_id: str, now: datetime) -> bool:
    """Release one hold still expired at ``now``; pay a deleted prepaid key what its hold
    leaves unspent. False if the hold was settled, released or extended meanwhile."""
    reservation = Reservation.objects.select_related("client_key").get(request_id=request_id)
    key = reservation.client_key
    # The holder's view of the stored reservation (the worker that held it is gone).
    hold = Hold(
        request_id=reservation.request_id,
        reservation_id=reservation.pk,
        key_id=key.pk,
        funding=key.funding,
        wallet_id=reservation.wallet_id,
        key_wallet_id=key.wallet_id,
        cost_nanos=reservation.cost_nanos,
        client_nanos=reservation.client_nanos,
    )
    settled = run_sync(
        settle_op(
            hold=hold,
            actual=Charge(0, 0),
            now=now,
            status=Reservation.Status.EXPIRED,
            expired_before=now,
        )
    )
    if settled is None:
        return False
    if settled.refund_owed_nanos:
        deleted_key_refund(
            key_id=key.pk, wallet_id=key.wallet_id, refund=settled.refund_owed_nanos, now=now
        )
    return True
