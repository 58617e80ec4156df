"""The dashboard's pages. Thin: each reads through the apps' selectors and writes through
their services, exactly as the REST API does, so every number matches the API's."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from billing.selectors import wallet_for_tenant
from dashboard.access import page_tenant, reseller_page


@require_GET
@reseller_page
def overview(request: HttpRequest) -> HttpResponse:
    tenant = page_tenant(request)
    return render(
        request,
        "dashboard/overview.html",
        {"tenant": tenant, "wallet": wallet_for_tenant(tenant=tenant)},
    )
