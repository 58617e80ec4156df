"""Reads for tenants and reseller tokens."""

from __future__ import annotations

from django.contrib.auth.models import User

from accounts.hashing import secret_prefix
from accounts.models import ApiToken, Tenant


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


def api_token_list(*, tenant: Tenant) -> list[ApiToken]:
    """The tenant's API tokens, revoked ones too, newest first."""
    return list(ApiToken.objects.filter(tenant=tenant).order_by("-created_at", "-pk"))


def api_token_get(*, tenant: Tenant, token_id: int) -> ApiToken:
    """The tenant's token; another tenant's id raises DoesNotExist (404)."""
    return ApiToken.objects.get(tenant=tenant, pk=token_id)
