from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from proxy.urls import sub_account_urlpatterns

admin.site.site_header = "Tollgate operator"
admin.site.site_title = "Tollgate"
admin.site.index_title = "Upstreams, prices, resellers and their money"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("keys.urls")),
    path("api/v1/", include("billing.urls")),
    path("api/v1/", include("proxy.urls")),
    # The sub-account API: /v1/ paths the proxy's ASGI router does not take (proxy.asgi).
    path("v1/", include(sub_account_urlpatterns)),
    path("api/v1/schema/", SpectacularAPIView.as_view(), name="api-schema"),
]
