"""The Security page: the password, and optional two-factor sign-in (an authenticator app
with TOTP codes, and single-use backup codes). Thin: the accounts services decide.

Secrets are shown once: the authenticator's while it is being set up (QR code and text),
the backup codes on the page right after they are made (kept in the session only until
that page is shown, and never cached by the browser). Neither is stored in clear: the
authenticator's key is encrypted, the backup codes are keyed hashes (``accounts.models``).
"""

from __future__ import annotations

from base64 import b32encode
from typing import Any

import segno
from django.contrib import messages
from django.contrib.auth import update_session_auth_hash
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.safestring import SafeString, mark_safe
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_otp import login as otp_login

from accounts.exceptions import CodeRefused, CodeThrottled, PasswordRefused
from accounts.models import AuthenticatorDevice
from accounts.selectors import backup_codes_left, two_factor_device
from accounts.services import (
    backup_codes_regenerate,
    two_factor_confirm,
    two_factor_disable,
    two_factor_start,
)
from dashboard.access import page_actor, reseller_page
from dashboard.account_views import count_failure
from dashboard.forms.account import (
    DashboardPasswordChangeForm,
    TwoFactorConfirmForm,
    TwoFactorOffForm,
)

TEMPLATES = "dashboard/account"
# Backup codes just made, until the page that shows them once.
BACKUP_CODES_SESSION_KEY = "dashboard:backup-codes"
# Characters per group when the authenticator's secret is written out for typing.
SECRET_GROUP = 4


def _security_page(
    request: HttpRequest,
    *,
    password_form: DashboardPasswordChangeForm | None = None,
    off_form: TwoFactorOffForm | None = None,
) -> HttpResponse:
    user = page_actor(request)
    device = two_factor_device(user=user)
    return render(
        request,
        f"{TEMPLATES}/security.html",
        {
            "two_factor_on": device is not None,
            "device": device,
            "backup_codes_left": backup_codes_left(user=user) if device else 0,
            "password_form": password_form or DashboardPasswordChangeForm(user),
            "off_form": off_form or TwoFactorOffForm(),
        },
    )


@require_GET
@reseller_page
def security(request: HttpRequest) -> HttpResponse:
    return _security_page(request)


@require_POST
@reseller_page
def password_change(request: HttpRequest) -> HttpResponse:
    """Django's PasswordChangeForm (the current password, the new one twice). Other
    sessions of the account end (their session hash no longer matches); this one stays."""
    user = page_actor(request)
    form = DashboardPasswordChangeForm(user, request.POST)
    if not form.is_valid():
        if form.has_error("old_password"):
            count_failure(request, user)
        return _security_page(request, password_form=form)
    form.save()
    update_session_auth_hash(request, form.user)
    messages.success(
        request, "Your password is changed. Other browsers signed in as you are signed out."
    )
    return redirect("dashboard:security")


@require_POST
@reseller_page
def two_factor_begin(request: HttpRequest) -> HttpResponse:
    user = page_actor(request)
    if two_factor_device(user=user) is not None:
        messages.info(request, "Two-factor sign-in is already on.")
        return redirect("dashboard:security")
    two_factor_start(user=user)
    return redirect("dashboard:two-factor")


def _secret_text(device: AuthenticatorDevice) -> str:
    secret = b32encode(device.bin_key).decode()
    return " ".join(secret[i : i + SECRET_GROUP] for i in range(0, len(secret), SECRET_GROUP))


def _qr_svg(device: AuthenticatorDevice) -> SafeString:
    """The otpauth:// URL as an inline <svg> (the CSP allows no image from elsewhere, and
    an inline element needs no data: URL)."""
    code = segno.make(device.config_url, error="m")
    svg = code.svg_inline(
        scale=5,
        border=4,
        omitsize=True,
        svgclass="qr-code",
        title="QR code for your authenticator app",
        dark="#000",
        light="#fff",
    )
    return mark_safe(svg)  # noqa: S308 - segno's own markup of our own URL


@never_cache
@require_http_methods(["GET", "POST"])
@reseller_page
def two_factor_setup(request: HttpRequest) -> HttpResponse:
    """The authenticator being set up: its QR code and secret, and the code that confirms
    the app has it. Confirming turns two-factor sign-in on and makes the backup codes."""
    user = page_actor(request)
    device = two_factor_device(user=user, confirmed=False)
    if device is None:
        return redirect("dashboard:security")
    form = TwoFactorConfirmForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            confirmed, codes = two_factor_confirm(user=user, code=form.cleaned_data["code"])
        except CodeThrottled:
            form.add_error(
                "code", "Too many wrong codes: wait a few seconds, then try the current one."
            )
        except CodeRefused:
            form.add_error(
                "code",
                "That code does not match. Enter the code the app shows now; if it keeps "
                "failing, check that your phone's clock is set automatically.",
            )
        else:
            # This session gave a code: it stays signed in without the code step.
            otp_login(request, confirmed)
            request.session[BACKUP_CODES_SESSION_KEY] = codes
            messages.success(request, "Two-factor sign-in is on.")
            return redirect("dashboard:backup-codes")
    context: dict[str, Any] = {
        "form": form,
        "qr_svg": _qr_svg(device),
        "secret": _secret_text(device),
    }
    return render(request, f"{TEMPLATES}/two_factor_setup.html", context)


@never_cache
@require_http_methods(["GET", "POST"])
@reseller_page
def backup_codes(request: HttpRequest) -> HttpResponse:
    """GET: the codes just made, once. POST: a new set (the old ones stop working)."""
    user = page_actor(request)
    if request.method == "POST":
        try:
            request.session[BACKUP_CODES_SESSION_KEY] = backup_codes_regenerate(user=user)
        except CodeRefused:
            return redirect("dashboard:security")
        messages.success(request, "New backup codes are made; the old ones no longer work.")
        return redirect("dashboard:backup-codes")
    codes = request.session.pop(BACKUP_CODES_SESSION_KEY, None)
    if not codes:
        return redirect("dashboard:security")
    return render(request, f"{TEMPLATES}/backup_codes.html", {"codes": codes})


@require_POST
@reseller_page
def two_factor_off(request: HttpRequest) -> HttpResponse:
    user = page_actor(request)
    form = TwoFactorOffForm(request.POST)
    if form.is_valid():
        try:
            two_factor_disable(
                user=user,
                password=form.cleaned_data["password"],
                code=form.cleaned_data["code"],
            )
        except PasswordRefused:
            form.add_error("password", "That is not your password.")
            count_failure(request, user)
        except CodeThrottled:
            form.add_error("code", "Too many wrong codes: wait a few seconds and try again.")
        except CodeRefused:
            form.add_error("code", "That code is not right.")
            count_failure(request, user)
        else:
            messages.success(request, "Two-factor sign-in is off.")
            return redirect("dashboard:security")
    return _security_page(request, off_form=form)
