"""The dashboard's pages. Thin: each reads through the apps' selectors and writes through
their services, exactly as the REST API does, so every number matches the API's."""

from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from billing.selectors import wallet_for_tenant
from dashboard.access import page_tenant, reseller_page


class SignInView(auth_views.LoginView):
    """Email and password; failures are counted and throttled by django-axes (the form
    authenticates with the request)."""

    template_name = "dashboard/sign_in.html"
    redirect_authenticated_user = True


class SignOutView(auth_views.LogoutView):
    """POST only (Django's LogoutView refuses GET), so no link can sign anyone out."""

    next_page = "dashboard:sign-in"


@require_GET
@reseller_page
def overview(request: HttpRequest) -> HttpResponse:
    tenant = page_tenant(request)
    return render(
        request,
        "dashboard/overview.html",
        {"tenant": tenant, "wallet": wallet_for_tenant(tenant=tenant)},
    )
