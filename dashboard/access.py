"""Who a dashboard page acts for: the signed-in user's tenant, or no page at all.

``reseller_page`` wraps every dashboard view: a visitor who is not signed in is sent to the
sign-in form (with ``?next=``); a user with two-factor sign-in on whose session has not
given a code yet (the password alone) is sent to the code step (``?next=`` too); a
signed-in user without an active tenant (an operator, a suspended reseller) gets 403, and
the view reads its tenant with ``page_tenant(request)``.
Every query a view makes is scoped by that tenant, so another tenant's ids answer 404.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.models import User
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponseBase

from accounts.models import Tenant
from accounts.selectors import tenant_for_user, two_factor_enabled
from keys.models import ClientKey
from keys.selectors import key_get

# A page, or a download streamed (``StreamingHttpResponse``) as a CSV export is.
View = Callable[..., HttpResponseBase]

# The sign-in's second step, where a session with the password alone gives its code.
CODE_STEP = "dashboard:sign-in-code"


def reseller_page(view: View) -> View:
    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        user = request.user
        if not user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        assert isinstance(user, User)  # noqa: S101 - authenticated users are Users
        if needs_code(request):
            return redirect_to_login(request.get_full_path(), login_url=CODE_STEP)
        tenant = tenant_for_user(user=user)
        if tenant is None:
            raise PermissionDenied("This account has no active reseller workspace.")
        request.tenant = tenant  # type: ignore[attr-defined]
        return view(request, *args, **kwargs)

    return wrapped


def needs_code(request: HttpRequest) -> bool:
    """Whether the signed-in user has two-factor sign-in on and this session has not
    given a code (OTPMiddleware's ``is_verified``: a device recorded in the session)."""
    user = request.user
    if user.is_verified():  # type: ignore[union-attr] # OTPMiddleware adds it
        return False
    assert isinstance(user, User)  # noqa: S101 - called for signed-in users
    return two_factor_enabled(user=user)


def page_tenant(request: HttpRequest) -> Tenant:
    """The tenant ``reseller_page`` resolved for this request."""
    return request.tenant  # type: ignore[attr-defined]


def page_actor(request: HttpRequest) -> User:
    """The signed-in user, as services take ``actor``."""
    user = request.user
    assert isinstance(user, User)  # noqa: S101 - reseller_page let only users through
    return user


def page_key(request: HttpRequest, key_id: int) -> ClientKey:
    """The page tenant's key ``key_id`` (deleted ones too, as the API reads them); any
    other id, another tenant's included, is a 404."""
    try:
        return key_get(tenant=page_tenant(request), key_id=key_id)
    except ClientKey.DoesNotExist:
        raise Http404("No such key.") from None
