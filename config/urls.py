from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

from keys.urls import sub_account_urlpatterns as sub_accounts
from usage.urls import sub_account_urlpatterns as sub_account_usage

admin.site.site_header = "Tollgate operator"
admin.site.site_title = "Tollgate"
admin.site.index_title = "Upstreams, prices, resellers and their money"


class SchemaApi(SpectacularAPIView):
    """``GET /api/v1/schema/``: the schema, in YAML or JSON (``?format=json``); its errors
    (a wrong method, a throttled caller) in JSON like every answer under ``/api/``, not in
    the schema's YAML."""

    def handle_exception(self, exc: Exception) -> Response:
        response = super().handle_exception(exc)
        self.request.accepted_renderer = JSONRenderer()
        self.request.accepted_media_type = JSONRenderer.media_type
        return response


urlpatterns = [
    path("admin/", admin.site.urls),
    path("dashboard/", include("dashboard.urls")),
    path("api/v1/", include("accounts.urls")),
    path("api/v1/", include("keys.urls")),
    path("api/v1/", include("billing.urls")),
    path("api/v1/", include("usage.urls")),
    # The sub-account API: /v1/ paths the proxy's ASGI router does not take (proxy.asgi).
    path("v1/", include(sub_accounts)),
    path("v1/", include(sub_account_usage)),
    path("api/v1/schema/", SchemaApi.as_view(), name="api-schema"),
]

# JSON in each surface's shape under /api/ and /v1/, Django's pages elsewhere.
handler400 = "config.exceptions.bad_request"
handler403 = "config.exceptions.permission_denied"
handler404 = "config.exceptions.not_found"
handler500 = "config.exceptions.server_error"
