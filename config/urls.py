from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("keys.urls")),
    path("api/v1/", include("billing.urls")),
    path("api/v1/schema/", SpectacularAPIView.as_view(), name="api-schema"),
]
