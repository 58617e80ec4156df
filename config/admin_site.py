"""The operator's admin site: Django's, with a second factor for operators.

A staff user whose account has two-factor sign-in on (an authenticator, confirmed) reaches
the admin only from a session that gave a code: after the password, the admin's login sends
them to the code step (the dashboard's), which brings them back. With ``ADMIN_REQUIRE_2FA``
(production should set it) every staff user needs such a session: one without an
authenticator is refused until they enrol one (``manage.py otp_enrol <email>``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.admin import AdminSite
from django.contrib.auth import REDIRECT_FIELD_NAME
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse

from accounts.selectors import two_factor_enabled

# Where a session with the password alone gives its code.
CODE_STEP = "dashboard:sign-in-code"


def second_factor_missing(request: HttpRequest) -> bool:
    """Whether the signed-in user still owes a code before the admin lets them in: their
    session gave none (OTPMiddleware's ``is_verified``) and they have an authenticator, or
    ``ADMIN_REQUIRE_2FA`` asks every operator for one."""
    user = request.user
    if user.is_verified():  # type: ignore[union-attr] # OTPMiddleware adds it
        return False
    return bool(settings.ADMIN_REQUIRE_2FA) or two_factor_enabled(user=user)  # type: ignore[arg-type]


class OperatorAdminSite(AdminSite):
    site_header = "Tollgate operator"
    site_title = "Tollgate"
    index_title = "Upstreams, prices, resellers and their money"

    def has_permission(self, request: HttpRequest) -> bool:
        return super().has_permission(request) and not second_factor_missing(request)

    def login(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        """Django's login; an active staff user signed in without the second factor goes
        on to the code step, or (none enrolled, but one required) is told how to enrol."""
        user = request.user
        if request.method == "GET" and user.is_active and user.is_staff:
            if second_factor_missing(request):
                return self._second_factor(request)
        return super().login(request, extra_context)

    def _second_factor(self, request: HttpRequest) -> HttpResponse:
        next_url = request.GET.get(REDIRECT_FIELD_NAME) or reverse("admin:index")
        if two_factor_enabled(user=request.user):  # type: ignore[arg-type]
            return redirect(f"{reverse(CODE_STEP)}?{urlencode({'next': next_url})}")
        context = {**self.each_context(request), "title": "Two-factor sign-in required"}
        return TemplateResponse(request, "admin/two_factor_required.html", context, status=403)
