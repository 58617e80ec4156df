"""Writes for tenants, their owners and their reseller API tokens; the owners' sign-up and
their two-factor devices."""

from __future__ import annotations

import logging
import secrets
from base64 import b32encode
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, User
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.db.models import Field
from django.utils import timezone
from django_otp.models import Device

from accounts.events import config_changed
from accounts.exceptions import (
    CodeRefused,
    CodeThrottled,
    EmailTaken,
    PasswordRefused,
    TenantInvalid,
)
from accounts.hashing import RESELLER_TOKEN_PREFIX, backup_code_digest, secret_generate
from accounts.models import (
    ApiToken,
    AuthenticatorDevice,
    BackupCode,
    BackupCodeDevice,
    SignUp,
    Tenant,
)

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
    user = _owner_create(email=email, password=password)
    tenant = Tenant.objects.create(name=name or user.email, owner=user)
    return tenant, api_token_create(tenant=tenant)


def _owner_create(*, email: str, password: str | None, is_active: bool = True) -> User:
    user_model = get_user_model()
    email = user_model.objects.normalize_email(email).strip()
    if user_model.objects.filter(email__iexact=email).exists():
        raise EmailTaken(f"a user with email {email} already exists")
    user = user_model.objects.create_user(
        username=email, email=email, password=password, is_active=is_active
    )
    if password is None:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user


class SignUpOutcome(models.TextChoices):
    """What a sign-up did, which decides the email its address gets (the page answers the
    same whatever it did, so the form tells no one which addresses have accounts)."""

    # A new account, inactive until the email is verified: send the link.
    OPENED = "opened"
    # The address's earlier sign-up was never verified: its password (and name) are
    # replaced by the newer ones, voiding the links sent before. Send a new link.
    RENEWED = "renewed"
    # The address already has an account: nothing changes; tell its owner someone tried.
    TAKEN = "taken"


@dataclass(frozen=True)
class SignUpResult:
    user: User
    outcome: SignUpOutcome


@transaction.atomic
def tenant_sign_up(*, email: str, password: str, name: str = "") -> Tenant:
    """A building block of ``billing.services.reseller_sign_up``: the user, inactive until
    the email is verified (a ``SignUp`` row says so), and its tenant; raises EmailTaken.
    No API token: the reseller makes one on the dashboard, where its secret is shown."""
    user = _owner_create(email=email, password=password, is_active=False)
    SignUp.objects.create(user=user)
    return Tenant.objects.create(name=name or user.email, owner=user)


@transaction.atomic(durable=True)
def sign_up_renew(*, user: User, password: str, name: str = "") -> None:
    """A newer sign-up for an address whose account still awaits verification: its
    password (and tenant name, when given) replace the pending ones. The new password
    voids the verification links sent before (``accounts.verification``)."""
    user.set_password(password)
    user.save(update_fields=["password"])
    if name:
        Tenant.objects.filter(owner=user).update(name=name)


@transaction.atomic(durable=True)
def sign_up_verify(*, user: User) -> bool:
    """The email of ``user``'s sign-up is verified: the account becomes active. True when
    this call verified it; False when it already was (a repeat changes nothing).

    Conditional update: of two concurrent calls (a double click) exactly one wins.
    """
    verified = (
        SignUp.objects.filter(user=user, verified_at__isnull=True).update(
            verified_at=timezone.now()
        )
        == 1
    )
    if verified:
        get_user_model().objects.filter(pk=user.pk).update(is_active=True)
        user.is_active = True
        logger.info("user %s verified the email of their sign-up", user.pk)
    return verified


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


# ---------------------------------------------------------------- two-factor sign-in

# Single-use backup codes made at once (shown once, replaced as a set).
BACKUP_CODE_COUNT = 10
AUTHENTICATOR_NAME = "Authenticator app"
BACKUP_CODES_NAME = "Backup codes"
TOTP_DIGITS = 6


def code_normalize(code: str) -> str:
    """A code as typed ("123 456", "ABCD-EFGH") as the devices compare it."""
    return "".join(code.split()).replace("-", "").lower()


def _device_verify(device: Device, code: str) -> tuple[bool, datetime | None]:
    """Check ``code`` on ``device`` (locked by the caller) through django-otp, which
    throttles it: after n successive wrong codes, every code is refused for 2^(n-1) s.
    Returns (matched, refused-until when the throttle refused it unchecked)."""
    allowed, info = device.verify_is_allowed()
    if not allowed:
        return False, (info or {}).get("locked_until")
    return bool(device.verify_token(code)), None


def _code_outcome(matched: bool, throttled_until: datetime | None) -> None:
    # Raised after the transaction: the device's failure count must commit with it.
    if matched:
        return
    if throttled_until is not None:
        raise CodeThrottled(throttled_until)
    raise CodeRefused("that code does not match")


def backup_code_new() -> str:
    """A backup code: 8 base32 characters (40 random bits), lower case as typed back."""
    return b32encode(secrets.token_bytes(5)).decode().lower()


def _backup_codes_replace(*, user: User) -> list[str]:
    """A new set of codes, returned to be shown once; only their keyed hashes are kept."""
    BackupCodeDevice.objects.filter(user=user).delete()
    device = BackupCodeDevice.objects.create(user=user, name=BACKUP_CODES_NAME, confirmed=True)
    codes: set[str] = set()
    while len(codes) < BACKUP_CODE_COUNT:
        codes.add(backup_code_new())
    BackupCode.objects.bulk_create(
        BackupCode(device=device, digest=backup_code_digest(code)) for code in codes
    )
    return sorted(codes)


@transaction.atomic(durable=True)
def two_factor_start(*, user: User) -> AuthenticatorDevice:
    """A new authenticator for ``user``, unconfirmed (sign-in does not ask for it yet) until
    a code from it is given to ``two_factor_confirm``; any earlier unconfirmed one is
    dropped. Its secret is shown to the user (QR code and text) on the setup page."""
    AuthenticatorDevice.objects.filter(user=user, confirmed=False).delete()
    return AuthenticatorDevice.objects.create(user=user, name=AUTHENTICATOR_NAME, confirmed=False)


def two_factor_confirm(*, user: User, code: str) -> tuple[AuthenticatorDevice, list[str]]:
    """Turn two-factor sign-in on: ``code`` from the authenticator being set up proves the
    app has its secret. The device is confirmed (it replaces any earlier one) and a fresh
    set of backup codes is made; they are returned to be shown once. Raises CodeRefused
    (also when no setup is under way) or CodeThrottled."""
    with transaction.atomic(durable=True):
        # Locked: two concurrent confirmations (a double submit) cannot both succeed.
        device = (
            AuthenticatorDevice.objects.select_for_update()
            .filter(user=user, confirmed=False)
            .order_by("-pk")
            .first()
        )
        if device is None:
            raise CodeRefused("no authenticator is being set up")
        matched, throttled_until = _device_verify(device, code_normalize(code))
        codes: list[str] = []
        if matched:
            AuthenticatorDevice.objects.filter(user=user, confirmed=True).delete()
            device.confirmed = True
            device.save(update_fields=["confirmed"])
            codes = _backup_codes_replace(user=user)
            logger.info("user %s turned two-factor sign-in on", user.pk)
    _code_outcome(matched, throttled_until)
    return device, codes


def two_factor_verify(*, user: User, code: str) -> Device:
    """The device that accepts ``code`` at sign-in: six digits are checked on the
    authenticator, anything else as a backup code (used up by this). Raises CodeRefused or
    CodeThrottled; each wrong code makes that device's throttle longer."""
    normalized = code_normalize(code)
    is_totp = normalized.isdigit() and len(normalized) == TOTP_DIGITS
    model: type[Device] = AuthenticatorDevice if is_totp else BackupCodeDevice
    with transaction.atomic(durable=True):
        # Locked: one code is accepted once, even by two concurrent requests.
        device = (
            model.objects.select_for_update()
            .filter(user=user, confirmed=True)
            .order_by("-pk")
            .first()
        )
        matched, throttled_until = (
            _device_verify(device, normalized) if device is not None else (False, None)
        )
    _code_outcome(matched, throttled_until)
    assert device is not None  # noqa: S101 - matched implies a device
    return device


@transaction.atomic(durable=True)
def backup_codes_regenerate(*, user: User) -> list[str]:
    """A new set of backup codes for a user with two-factor sign-in on; the old ones stop
    working. Returned to be shown once."""
    if not AuthenticatorDevice.objects.filter(user=user, confirmed=True).exists():
        raise CodeRefused("two-factor sign-in is off")
    return _backup_codes_replace(user=user)


def two_factor_disable(*, user: User, password: str = "", code: str = "") -> None:
    """Turn two-factor sign-in off, confirmed by the account's password or a current code
    (authenticator or backup). Removes the authenticator and the backup codes. Raises
    PasswordRefused, CodeRefused or CodeThrottled and changes nothing then."""
    if password:
        if not user.check_password(password):
            raise PasswordRefused("that is not the account's password")
    elif code:
        two_factor_verify(user=user, code=code)
    else:
        raise PasswordRefused("give the account's password or a code")
    with transaction.atomic(durable=True):
        AuthenticatorDevice.objects.filter(user=user).delete()
        BackupCodeDevice.objects.filter(user=user).delete()
    logger.info("user %s turned two-factor sign-in off", user.pk)


@transaction.atomic
def two_factor_reset(*, user: AbstractBaseUser, actor: AbstractBaseUser | None) -> bool:
    """The operator turns ``user``'s two-factor sign-in off (a reseller who lost both the
    phone and the backup codes): the authenticator and the backup codes are removed. True
    when there was something to remove."""
    removed, _ = AuthenticatorDevice.objects.filter(user_id=user.pk).delete()
    codes, _ = BackupCodeDevice.objects.filter(user_id=user.pk).delete()
    if removed or codes:
        logger.info(
            "two-factor sign-in of user %s turned off by %s",
            user.pk,
            getattr(actor, "email", None) or "the operator",
        )
    return bool(removed or codes)
