"""Reads for tenants, reseller tokens, and the state of a user's sign-in (email verified,
two-factor devices)."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import User

from accounts.hashing import secret_prefix
from accounts.models import (
    ApiToken,
    AuthenticatorDevice,
    BackupCode,
    BackupCodeDevice,
    SignUp,
    Tenant,
)


def api_token_authenticate(*, secret: str) -> ApiToken | None:
    """The active token with this secret, or None. Constant-time comparison of the hash."""
    token = (
        ApiToken.objects.active()
        .select_related("tenant", "tenant__owner")
        .filter(prefix=secret_prefix(secret), tenant__is_active=True)
        .first()
    )
    if token is None or not token.matches(secret):
        return None
    return token


def tenant_for_user(*, user: User) -> Tenant | None:
    return Tenant.objects.active().filter(owner=user).order_by("pk").first()


def tenant_get_by_owner_email(*, email: str) -> Tenant:
    return Tenant.objects.select_related("owner").get(owner__email__iexact=email)


def user_by_email(*, email: str) -> User | None:
    """The user whose email is ``email`` in any case (the oldest, should there be two)."""
    return get_user_model().objects.filter(email__iexact=email.strip()).order_by("pk").first()


def user_awaits_verification(*, user: AbstractBaseUser) -> bool:
    """Whether ``user`` signed up on the dashboard and has not verified the email yet."""
    return (
        not user.is_active
        and SignUp.objects.filter(user_id=user.pk, verified_at__isnull=True).exists()
    )


def users_for_password_reset(*, email: str) -> list[User]:
    """Who may reset a password by email from the dashboard: active accounts with that
    email, in any case, whether or not they have a password yet (a reseller the operator
    created without one sets it this way). Not operators (staff): the reseller dashboard is
    no road into the admin; they use ``manage.py changepassword``."""
    return list(
        get_user_model()
        .objects.filter(email__iexact=email.strip(), is_active=True, is_staff=False)
        .order_by("pk")
    )


def two_factor_device(
    *, user: AbstractBaseUser, confirmed: bool = True
) -> AuthenticatorDevice | None:
    """The user's authenticator (TOTP) device: the confirmed one that sign-in asks a code
    of, or (``confirmed=False``) the one being set up."""
    return (
        AuthenticatorDevice.objects.filter(user_id=user.pk, confirmed=confirmed)
        .order_by("-pk")
        .first()
    )


def two_factor_enabled(*, user: AbstractBaseUser) -> bool:
    """Whether signing in as ``user`` needs a code after the password (one query)."""
    return AuthenticatorDevice.objects.filter(user_id=user.pk, confirmed=True).exists()


def backup_codes_left(*, user: AbstractBaseUser) -> int:
    """How many of the user's single-use backup codes are still unused."""
    return BackupCode.objects.filter(device__user_id=user.pk, device__confirmed=True).count()


def backup_device(*, user: AbstractBaseUser) -> BackupCodeDevice | None:
    return BackupCodeDevice.objects.filter(user_id=user.pk, confirmed=True).order_by("-pk").first()


def api_token_list(*, tenant: Tenant) -> list[ApiToken]:
    """The tenant's API tokens, revoked ones too, newest first."""
    return list(ApiToken.objects.filter(tenant=tenant).order_by("-created_at", "-pk"))


def api_token_get(*, tenant: Tenant, token_id: int) -> ApiToken:
    """The tenant's token; another tenant's id raises DoesNotExist (404)."""
    return ApiToken.objects.get(tenant=tenant, pk=token_id)
