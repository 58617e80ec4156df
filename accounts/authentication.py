"""DRF authentication for reseller API tokens (``Authorization: Bearer tgr-…``), and the
one way a reseller API view reads who is calling (``request_tenant``, ``request_actor``)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from rest_framework import authentication, exceptions, permissions
from rest_framework.request import Request

from accounts.models import ApiToken, Tenant
from accounts.selectors import api_token_authenticate
from accounts.services import api_token_touch


class ApiTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[Any, ApiToken] | None:
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != self.keyword.lower() or not secret.strip():
            raise exceptions.AuthenticationFailed(
                "Use 'Authorization: Bearer <reseller API token>'."
            )
        token = api_token_authenticate(secret=secret.strip())
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked API token.")
        api_token_touch(token=token)
        request.tenant = token.tenant  # type: ignore[attr-defined]
        return token.tenant.owner, token

    def authenticate_header(self, request: Request) -> str:
        return self.keyword


class IsTenantMember(permissions.BasePermission):
    """Every reseller API view acts for exactly one tenant, set by authentication."""

    def has_permission(self, request: Request, view: Any) -> bool:
        return getattr(request, "tenant", None) is not None


def request_tenant(request: Request) -> Tenant:
    """The caller's tenant: set by ``ApiTokenAuthentication``, required by
    ``IsTenantMember`` (every reseller API view), so a view never runs without it."""
    return request.tenant  # type: ignore[attr-defined]


def request_actor(request: Request) -> AbstractBaseUser | None:
    """The user acting through the token (the tenant's owner), as services take ``actor``."""
    return request.user if isinstance(request.user, AbstractBaseUser) else None
