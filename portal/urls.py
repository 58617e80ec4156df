"""The client portal, ``/portal/``: sign-in by emailed code, bound keys and their reports."""

from __future__ import annotations

from django.urls import path

from portal import alerts_views, key_reports, key_views, sign_in_views

app_name = "portal"

urlpatterns = [
    path("", sign_in_views.home, name="home"),
    path("code/", sign_in_views.code, name="code"),
    path("keys/bind/", sign_in_views.bind, name="bind"),
    path("sign-out/", sign_in_views.sign_out, name="sign-out"),
    # A bound key's page and reports (portal/key_views.py, portal/key_reports.py).
    path("keys/<int:key_id>/", key_views.key_page, name="key"),
    path("keys/<int:key_id>/unbind/", key_views.key_unbind, name="key-unbind"),
    path("keys/<int:key_id>/usage/", key_reports.key_usage_page, name="key-usage"),
    path("keys/<int:key_id>/requests/", key_reports.key_requests_page, name="key-requests"),
    path("keys/<int:key_id>/statements/", key_reports.key_statements, name="key-statements"),
    path(
        "keys/<int:key_id>/statements/<str:month>/",
        key_reports.key_statement_page,
        name="key-statement",
    ),
    path("keys/<int:key_id>/alerts/", alerts_views.key_alerts, name="key-alerts"),
]
