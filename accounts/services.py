"""Writes for tenants, their owners and their reseller API tokens."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Field
from django.utils import timezone

from accounts.events import config_changed
from accounts.exceptions import EmailTaken, TenantInvalid
from accounts.hashing import RESELLER_TOKEN_PREFIX, secret_generate
from accounts.models import ApiToken, Tenant

logger = logging.getLogger(__name__)

# last_used_at is informative; writing it at most once a minute keeps auth read-only.
TOKEN_TOUCH_INTERVAL = timedelta(minutes=1)


@dataclass(frozen=True)
class IssuedToken:
    token: ApiToken
    secret: str


@transaction.atomic
def tenant_create(
    *, email: str, password: str | None = None, name: str = ""
) -> tuple[Tenant, IssuedToken]:
    """Create a user, its tenant and a first API token; raise EmailTaken if the email is.

    A building block: a reseller also needs its wallet, which ``billing.services.
    reseller_open`` creates in the same transaction (accounts imports no other app).
    The token's secret is returned once and never stored.
    """
    user_model = get_user_model()
    email = user_model.objects.normalize_email(email).strip()
    if user_model.objects.filter(email__iexact=email).exists():
        raise EmailTaken(f"a user with email {email} already exists")
    user = user_model.objects.create_user(username=email, email=email, password=password)
    if password is None:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    tenant = Tenant.objects.create(name=name or email, owner=user)
    return tenant, api_token_create(tenant=tenant)


# tenant_update's inputs and the Tenant fields they set.
TENANT_SETTINGS = {"display_name": "name", "support_email": "support_email", "timezone": "timezone"}


@transaction.atomic
def tenant_update(
    *,
    tenant: Tenant,
    actor: AbstractBaseUser | None,
    display_name: str | None = None,
    support_email: str | None = None,
    timezone: str | None = None,
) -> Tenant:
    """Change what the tenant's clients see (``display_name``, the tenant's name; and
    ``support_email``, blank for none) and the time zone of its reports (an IANA name);
    None leaves a setting as it is. Text is stripped. Every value is checked against its
    field's rules before anything is written, so a bad one (a blank name, an email that is
    not one, an unknown zone) raises ``TenantInvalid`` naming it and changes nothing; only
    the settings given are written (two callers changing different ones both keep theirs).
    """
    given = {"display_name": display_name, "support_email": support_email, "timezone": timezone}
    changes: dict[str, str] = {}
    for name, value in given.items():
        if value is None:
            continue
        field = cast("Field[Any, Any]", Tenant._meta.get_field(TENANT_SETTINGS[name]))
        try:
            changes[field.name] = field.clean(value.strip(), tenant)
        except ValidationError as exc:
            raise TenantInvalid(name, " ".join(exc.messages)) from exc
    for field_name, value in changes.items():
        setattr(tenant, field_name, value)
    if changes:
        tenant.save(update_fields=list(changes))
        logger.info(
            "tenant %s changed %s by %s",
            tenant.pk,
            ", ".join(sorted(changes)),
            getattr(actor, "email", None) or "the operator",
        )
    return tenant


@dataclass(frozen=True)
class TenantActivation:
    tenant: Tenant
    # False when the tenant already was in the state asked for (a repeat changes nothing).
    changed: bool


@transaction.atomic
def tenant_suspend(*, tenant: Tenant, actor: AbstractBaseUser | None) -> TenantActivation:
    """Suspend a reseller: its API tokens (REST and sub-account APIs) answer 401, and so do
    all its client keys on every proxy worker, within the time Redis takes to tell them.

    Only ``Tenant.is_active`` changes: every key keeps its own status (reinstating brings
    back exactly the keys that were active), no money moves, and requests admitted before
    the suspension finish and are charged what they used. Without Redis, other processes'
    workers notice when their key cache expires (``PROXY_KEY_CACHE_SECONDS``); their
    reservations are refused at once all the same. Suspending twice changes nothing, but
    announces the suspension again (a repair, should a worker have missed the first).
    """
    return _tenant_activation_set(tenant=tenant, actor=actor, is_active=False)


@transaction.atomic
def tenant_reinstate(*, tenant: Tenant, actor: AbstractBaseUser | None) -> TenantActivation:
    """Lift a suspension (``tenant_suspend``): the tokens and the keys that were active work
    again, on every worker as promptly as they stopped; revoked keys stay revoked."""
    return _tenant_activation_set(tenant=tenant, actor=actor, is_active=True)


def _tenant_activation_set(
    *, tenant: Tenant, actor: AbstractBaseUser | None, is_active: bool
) -> TenantActivation:
    # Conditional update: of two concurrent calls exactly one reports the change.
    changed = (
        Tenant.objects.filter(pk=tenant.pk, is_active=not is_active).update(is_active=is_active)
        == 1
    )
    tenant.is_active = is_active
    # Workers cache keys with their tenant's is_active; one message drops them all.
    config_changed(f"tenant:{tenant.pk}")
    if changed:
        logger.info(
            "tenant %s %s by %s",
            tenant.pk,
            "reinstated" if is_active else "suspended",
            getattr(actor, "email", None) or "the operator",
        )
    return TenantActivation(tenant=tenant, changed=changed)


@transaction.atomic
def api_token_create(*, tenant: Tenant, name: str = "default") -> IssuedToken:
    new = secret_generate(RESELLER_TOKEN_PREFIX)
    token = ApiToken.objects.create(
        tenant=tenant, name=name, prefix=new.prefix, digest=new.digest, last4=new.last4
    )
    return IssuedToken(token=token, secret=new.secret)


def api_token_revoke(*, tenant: Tenant, token_id: int) -> ApiToken:
    token = ApiToken.objects.get(tenant=tenant, pk=token_id)
    # Conditional update: revoking twice keeps the first revocation time.
    ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    token.refresh_from_db()
    return token


def api_token_touch(*, token: ApiToken) -> None:
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > TOKEN_TOUCH_INTERVAL:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now


@transaction.atomic
def api_token_rotate(*, tenant: Tenant, name: str) -> IssuedToken:
    """Mint a new token called ``name`` and revoke the tenant's earlier tokens of that name
    (``make run`` prints a fresh token each time without piling up live ones)."""
    ApiToken.objects.active().filter(tenant=tenant, name=name).update(revoked_at=timezone.now())
    return api_token_create(tenant=tenant, name=name)


@transaction.atomic(durable=True)
def operator_ensure(*, email: str, password: str) -> AbstractBaseUser:
    """Create the operator superuser ``email``, or make an existing one a superuser that
    logs in with ``password``."""
    user_model = get_user_model()
    user = user_model.objects.filter(email__iexact=email).order_by("pk").first()
    if user is None:
        return user_model.objects.create_superuser(username=email, email=email, password=password)
    user.is_staff = user.is_superuser = user.is_active = True
    if not user.check_password(password):
        user.set_password(password)
    user.save()
    return user


@transaction.atomic(durable=True)
def user_password_ensure(*, user: AbstractBaseUser, password: str) -> None:
    """Make ``user`` log in with ``password`` (a no-op if it already does)."""
    if not user.check_password(password):
        user.set_password(password)
        user.save(update_fields=["password"])
