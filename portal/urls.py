"""The client portal, ``/portal/``: sign-in by emailed code, bound keys and their reports."""

from __future__ import annotations

from django.urls import path

from portal import alerts_views, sign_in_views

app_name = "portal"

urlpatterns = [
    path("", sign_in_views.home, name="home"),
    path("sign-out/", sign_in_views.sign_out, name="sign-out"),
    path("keys/<int:key_id>/alerts/", alerts_views.key_alerts, name="key-alerts"),
]
