"""Who a dashboard page acts for: the signed-in user's tenant, or no page at all.

``reseller_page`` wraps every dashboard view: a visitor who is not signed in is sent to the
sign-in form (with ``?next=``), a signed-in user without an active tenant (an operator, a
suspended reseller) gets 403, and the view reads its tenant with ``page_tenant(request)``.
Every query a view makes is scoped by that tenant, so another tenant's ids answer 404.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.models import User
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponseBase

from accounts.models import Tenant
from accounts.selectors import tenant_for_user

# Streamed downloads (``StreamingHttpResponse``) are views too: any HttpResponseBase.
View = Callable[..., HttpResponseBase]


def reseller_page(view: View) -> View:
    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        user = request.user
        if not user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        assert isinstance(user, User)  # noqa: S101 - authenticated users are Users
        tenant = tenant_for_user(user=user)
        if tenant is None:
            raise PermissionDenied("This account has no active reseller workspace.")
        request.tenant = tenant  # type: ignore[attr-defined]
        return view(request, *args, **kwargs)

    return wrapped


def page_tenant(request: HttpRequest) -> Tenant:
    """The tenant ``reseller_page`` resolved for this request."""
    return request.tenant  # type: ignore[attr-defined]


def page_actor(request: HttpRequest) -> User:
    """The signed-in user, as services take ``actor``."""
    user = request.user
    assert isinstance(user, User)  # noqa: S101 - reseller_page let only users through
    return user
