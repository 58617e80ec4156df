"""The client portal, ``/portal/``: sign-in by emailed code, bound keys and their reports."""

from __future__ import annotations

from django.urls import path

from portal import sign_in_views

app_name = "portal"

urlpatterns = [
    path("", sign_in_views.home, name="home"),
    path("code/", sign_in_views.code, name="code"),
    path("keys/bind/", sign_in_views.bind, name="bind"),
    path("sign-out/", sign_in_views.sign_out, name="sign-out"),
]
