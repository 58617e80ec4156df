from __future__ import annotations

from csp.constants import SELF
from csp.decorators import csp_replace
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.views import stripe_webhook
from dashboard.landing_views import landing
from keys.urls import sub_account_urlpatterns as sub_accounts
from usage.urls import sub_account_urlpatterns as sub_account_usage


class JsonErrors(APIView):
    """Errors (a wrong method, a throttled caller) in JSON like every answer under
    ``/api/``, whatever the view renders when it succeeds (YAML, a page)."""

    def handle_exception(self, exc: Exception) -> Response:
        response = super().handle_exception(exc)
        self.request.accepted_renderer = JSONRenderer()
        self.request.accepted_media_type = JSONRenderer.media_type
        return response


class SchemaApi(JsonErrors, SpectacularAPIView):
    """``GET /api/v1/schema/``: the schema, in YAML or JSON (``?format=json``)."""


class ApiDocs(JsonErrors, SpectacularSwaggerSplitView):
    """``GET /api/v1/docs/``: the API reference, Swagger UI over the schema above, its files
    from drf-spectacular-sidecar. The split view: the page loads its start-up script from
    ``?script`` instead of inlining it, which the Content-Security-Policy would refuse."""

    url_name = "api-schema"
    template_name = "api/docs.html"
    title = "Tollgate API reference"


urlpatterns = [
    path("", landing, name="landing"),
    path("admin/", admin.site.urls),
    path("dashboard/", include("dashboard.urls")),
    path("portal/", include("portal.urls")),
    # Stripe's webhook (card top-ups): signed by Stripe, no session.
    path("billing/stripe/webhook/", stripe_webhook, name="stripe-webhook"),
    path("api/v1/", include("accounts.urls")),
    path("api/v1/", include("keys.urls")),
    path("api/v1/", include("billing.urls")),
    path("api/v1/", include("usage.urls")),
    path("api/v1/", include("alerts.urls")),
    # The sub-account API: /v1/ paths the proxy's ASGI router does not take (proxy.asgi).
    path("v1/", include(sub_accounts)),
    path("v1/", include(sub_account_usage)),
    path("api/v1/schema/", SchemaApi.as_view(), name="api-schema"),
    # Swagger UI's stylesheet draws its icons as data: images: allowed on this page only.
    path(
        "api/v1/docs/",
        csp_replace({"img-src": [SELF, "data:"]})(ApiDocs.as_view()),
        name="api-docs",
    ),
]

# JSON in each surface's shape under /api/ and /v1/, Django's pages elsewhere.
handler400 = "config.exceptions.bad_request"
handler403 = "config.exceptions.permission_denied"
handler404 = "config.exceptions.not_found"
handler500 = "config.exceptions.server_error"
