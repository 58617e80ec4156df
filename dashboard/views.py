"""The dashboard's pages. Thin: each reads through the apps' selectors and writes through
their services, exactly as the REST API does, so every number matches the API's."""

from __future__ import annotations

from django.contrib.auth import views as auth_views


class SignInView(auth_views.LoginView):
    """Email and password; failures are counted and throttled by django-axes (the form
    authenticates with the request)."""

    template_name = "dashboard/sign_in.html"
    redirect_authenticated_user = True


class SignOutView(auth_views.LogoutView):
    """POST only (Django's LogoutView refuses GET), so no link can sign anyone out."""

    next_page = "dashboard:sign-in"
