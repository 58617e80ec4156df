"""Signing in and out, the two-factor code step, signing up with email verification, and
resetting a password by email. Thin: the forms parse, the accounts and billing services
decide, ``dashboard.account_mail`` writes the emails.

Nothing a visitor sees depends on whether an address has an account: sign-up, the
verification link's resend and the password reset answer the same either way.
"""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login, logout
from django.contrib.auth import views as auth_views
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse, reverse_lazy
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods
from django_otp import login as otp_login

from accounts import lockout
from accounts.exceptions import CodeRefused, CodeThrottled
from accounts.models import BackupCodeDevice
from accounts.selectors import (
    backup_codes_left,
    two_factor_enabled,
    user_awaits_verification,
    user_by_email,
)
from accounts.services import SignUpOutcome, sign_up_verify, two_factor_verify
from accounts.throttle import throttle_allow
from accounts.verification import email_verification_user
from billing.services import reseller_sign_up
from dashboard.access import CODE_STEP, needs_code
from dashboard.account_mail import duration_text, sign_up_notice_send, verification_link_send
from dashboard.forms.account import (
    CodeForm,
    DashboardPasswordResetForm,
    DashboardSetPasswordForm,
    EmailForm,
    SignInForm,
    SignUpForm,
)

TEMPLATES = "dashboard/account"
# Sign-up emails (verification links, resends, "someone tried") share one count per address.
SIGN_UP_EMAIL_SCOPE = "email:sign-up"
# The address a sign-up was for, shown on the "check your inbox" page that follows it.
SIGN_UP_EMAIL_SESSION_KEY = "dashboard:sign-up-email"
# How a verified sign-up's session is signed in (the backend Django records in it).
EMAIL_BACKEND = "accounts.backends.EmailBackend"


def _cool_off_minutes() -> int:
    return max(1, math.ceil(settings.AXES_COOLOFF_TIME.total_seconds() / 60))


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None, credentials: Any
) -> HttpResponse:
    """django-axes' answer to a locked-out sign-in (``AXES_LOCKOUT_CALLABLE``): on the
    dashboard's forms a page saying so and what to do, with the same 429 and Retry-After
    as ``accounts.lockout.lockout_response`` gives everywhere else (the admin's login)."""
    match = request.resolver_match
    if match is None or match.namespace != "dashboard":
        return lockout.lockout_response(request, original_response, credentials)
    response = render(
        request,
        f"{TEMPLATES}/locked_out.html",
        {"minutes": _cool_off_minutes(), "hide_nav": True},
        status=429,
    )
    response["Retry-After"] = str(int(settings.AXES_COOLOFF_TIME.total_seconds()))
    return response


def _next_url(request: HttpRequest) -> str:
    """Where to go once signed in: a ``next`` on this site, or the overview."""
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return reverse(settings.LOGIN_REDIRECT_URL)


def _code_step_url(next_url: str) -> str:
    return f"{reverse(CODE_STEP)}?{urlencode({'next': next_url})}"


class SignInView(auth_views.LoginView):
    """Email (any case) and password; failures are counted and throttled by django-axes
    (the form authenticates with the request). A user with two-factor sign-in on goes on
    to the code step, signed in but not verified, which no dashboard page accepts."""

    template_name = f"{TEMPLATES}/sign_in.html"
    form_class = SignInForm
    redirect_authenticated_user = True

    def form_valid(self, form: SignInForm) -> HttpResponse:  # type: ignore[override]
        response = super().form_valid(form)
        if two_factor_enabled(user=form.get_user()):
            return redirect(_code_step_url(self.get_success_url()))
        return response

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        form = context["form"]
        context["signup_open"] = settings.SIGNUP_OPEN
        context["hide_nav"] = True
        if form.is_bound and form.needs_verifying:
            context["resend_form"] = EmailForm(initial={"email": form.data.get("username", "")})
        return context


class SignOutView(auth_views.LogoutView):
    """POST only (Django's LogoutView refuses GET), so no link can sign anyone out."""

    next_page = "dashboard:sign-in"


def count_failure(request: HttpRequest, user: User) -> None:
    """Count a wrong code (or a wrong password asked again) as a failed sign-in of the
    account. At the limit the session is signed out, and axes' middleware answers with
    the lockout page instead of the view's."""
    lockout.sign_in_failure_record(request=request, username=user.email)
    if getattr(request, "axes_locked_out", False):
        logout(request)


@require_http_methods(["GET", "POST"])
def sign_in_code(request: HttpRequest) -> HttpResponse:
    """The second step for a user with two-factor sign-in on: a code from the authenticator
    app, or one of the backup codes (each works once)."""
    next_url = _next_url(request)
    if not request.user.is_authenticated:
        return redirect_to_sign_in(next_url)
    if not needs_code(request):
        return redirect(next_url)
    user = request.user
    assert isinstance(user, User)  # noqa: S101 - signed in
    form = CodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        if not lockout.sign_in_allowed(request=request, username=user.email):
            logout(request)
            return lockout_response(request, None, None)
        try:
            device = two_factor_verify(user=user, code=form.cleaned_data["code"])
        except CodeThrottled as exc:
            wait = (
                max(1, math.ceil((exc.until - timezone.now()).total_seconds())) if exc.until else 1
            )
            form.add_error(
                "code", f"Too many wrong codes: wait {wait} s, then enter the current one."
            )
        except CodeRefused:
            form.add_error(
                "code",
                "That code is not right. Enter the one your app shows now (its clock must be "
                "correct), or a backup code.",
            )
            count_failure(request, user)
        else:
            # A new session id for the now fully signed-in session (no fixation).
            request.session.cycle_key()
            otp_login(request, device)
            if isinstance(device, BackupCodeDevice):
                left = backup_codes_left(user=user)
                messages.warning(
                    request,
                    f"You signed in with a backup code; {left} left. Make new ones on the "
                    "Security page if you are running low.",
                )
            return redirect(next_url)
    return render(
        request,
        f"{TEMPLATES}/sign_in_code.html",
        {"form": form, "next": next_url, "hide_nav": True},
    )


def redirect_to_sign_in(next_url: str) -> HttpResponseRedirect:
    return redirect(f"{reverse('dashboard:sign-in')}?{urlencode({'next': next_url})}")


@require_http_methods(["GET", "POST"])
def sign_up(request: HttpRequest) -> HttpResponse:
    """Email, password and an optional business name open an account that works once the
    email is verified. The answer is the same whether the address had an account or not:
    "check your inbox", where either a link or a note awaits."""
    if not settings.SIGNUP_OPEN:
        return render(request, f"{TEMPLATES}/sign_up_closed.html", {"hide_nav": True}, status=404)
    if request.user.is_authenticated:
        return redirect("dashboard:overview")
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        if not throttle_allow(
            scope="sign-up",
            who=lockout.client_address(request) or "",
            limit=settings.SIGNUPS_PER_HOUR,
        ):
            form.add_error(None, "Too many sign-ups from your network just now; try again later.")
            return render(
                request, f"{TEMPLATES}/sign_up.html", {"form": form, "hide_nav": True}, status=429
            )
        email = form.cleaned_data["email"]
        if throttle_allow(
            scope=SIGN_UP_EMAIL_SCOPE, who=email, limit=settings.ACCOUNT_EMAILS_PER_HOUR
        ):
            result = reseller_sign_up(
                email=email,
                password=form.cleaned_data["password"],
                name=form.cleaned_data["display_name"].strip(),
            )
            if result.outcome == SignUpOutcome.TAKEN:
                sign_up_notice_send(request=request, user=result.user)
            else:
                verification_link_send(request=request, user=result.user)
        request.session[SIGN_UP_EMAIL_SESSION_KEY] = email
        return redirect("dashboard:verify-email")
    return render(request, f"{TEMPLATES}/sign_up.html", {"form": form, "hide_nav": True})


@require_http_methods(["GET", "POST"])
def verify_email(request: HttpRequest) -> HttpResponse:
    """ "Check your inbox" after a sign-up, and a new verification link on request (POST),
    at most ACCOUNT_EMAILS_PER_HOUR per address with the sign-up's own."""
    if request.method == "POST":
        form = EmailForm(request.POST)
        if form.is_valid():
            email = form.cleaned_data["email"]
            if throttle_allow(
                scope=SIGN_UP_EMAIL_SCOPE, who=email, limit=settings.ACCOUNT_EMAILS_PER_HOUR
            ):
                user = user_by_email(email=email)
                if user is not None and user_awaits_verification(user=user):
                    verification_link_send(request=request, user=user)
            request.session[SIGN_UP_EMAIL_SESSION_KEY] = email
            messages.info(
                request,
                f"If {email} has an account waiting to be verified, a new link is on its way.",
            )
            return redirect("dashboard:verify-email")
    else:
        email = request.session.get(SIGN_UP_EMAIL_SESSION_KEY, "")
        form = EmailForm(initial={"email": email})
    return render(
        request,
        f"{TEMPLATES}/verify_email.html",
        {
            "form": form,
            "email": request.session.get(SIGN_UP_EMAIL_SESSION_KEY, ""),
            "lifetime": duration_text(settings.EMAIL_VERIFICATION_SECONDS),
            "hide_nav": True,
        },
    )


@require_http_methods(["GET", "POST"])
def verify_email_link(request: HttpRequest, token: str) -> HttpResponse:
    """The link from the email. GET shows a button, POST verifies and signs in: a mail
    scanner that fetches every link in a message must neither use the link up nor be
    handed a signed-in session."""
    user = email_verification_user(token=token)
    if user is None:
        return render(
            request,
            f"{TEMPLATES}/verify_email_invalid.html",
            {"form": EmailForm(), "hide_nav": True},
            status=400,
        )
    assert isinstance(user, User)  # noqa: S101 - the project's user model
    if request.method == "POST":
        sign_up_verify(user=user)
        login(request, user, backend=EMAIL_BACKEND)
        request.session.pop(SIGN_UP_EMAIL_SESSION_KEY, None)
        messages.success(request, "Your email is verified. Welcome to Tollgate.")
        return redirect("dashboard:overview")
    return render(
        request, f"{TEMPLATES}/verify_email_confirm.html", {"email": user.email, "hide_nav": True}
    )


class PasswordResetView(auth_views.PasswordResetView):
    """An email with a link that works once, for PASSWORD_RESET_SECONDS, at most
    ACCOUNT_EMAILS_PER_HOUR per address; the same answer for every address."""

    template_name = f"{TEMPLATES}/password_reset.html"
    form_class = DashboardPasswordResetForm
    subject_template_name = f"{TEMPLATES}/email/password_reset_subject.txt"
    email_template_name = f"{TEMPLATES}/email/password_reset.txt"
    success_url = reverse_lazy("dashboard:password-reset-sent")
    extra_context = {"hide_nav": True}

    @property
    def extra_email_context(self) -> dict[str, str]:  # type: ignore[override]
        return {"lifetime": duration_text(settings.PASSWORD_RESET_TIMEOUT)}


class PasswordResetSentView(auth_views.PasswordResetDoneView):
    template_name = f"{TEMPLATES}/password_reset_sent.html"

    @property
    def extra_context(self) -> dict[str, Any]:  # type: ignore[override]
        return {"hide_nav": True, "lifetime": duration_text(settings.PASSWORD_RESET_TIMEOUT)}


class PasswordResetConfirmView(auth_views.PasswordResetConfirmView):
    """The link from the email: a new password (Django's validators). Setting it also
    forgets the account's failed sign-ins, lifting a lock on the account: the reset proved
    the email is theirs. Two-factor sign-in, when on, still asks for its code."""

    template_name = f"{TEMPLATES}/password_reset_confirm.html"
    form_class = DashboardSetPasswordForm
    success_url = reverse_lazy("dashboard:password-reset-done")
    extra_context = {"hide_nav": True}

    def form_valid(self, form: Any) -> HttpResponse:
        response = super().form_valid(form)
        lockout.sign_in_failures_forget(username=form.user.email)
        return response


class PasswordResetDoneView(auth_views.PasswordResetCompleteView):
    template_name = f"{TEMPLATES}/password_reset_done.html"
    extra_context = {"hide_nav": True}
