"""Signing in to the portal with an emailed code, the client's keys, binding a key, and
signing out. Thin: the forms parse, ``portal.services`` decides.

``/portal/`` asks a visitor for an email address and sends a code (the answer is the same
whether or not a code went out, and whoever the address is), then ``/portal/code/`` takes
the code for the address the session asked for: never one typed in the code form, so a
code only ever signs in the address it was sent to. A signed-in client sees a card per
bound key (client prices only, under its reseller's name) and the form that binds another.
Every page here is ``never_cache``: they show a session's own data or its pending sign-in.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from accounts.lockout import client_address
from keys.models import EXPIRED, ClientKey
from portal.access import client_page, page_client, portal_sign_in, portal_sign_out, session_client
from portal.exceptions import (
    BindThrottled,
    CodeDead,
    CodeExpired,
    CodeMissing,
    CodeNotSent,
    CodeRefused,
    CodeThrottled,
    KeyNotBindable,
)
from portal.figures import ClientKeyFigures, client_key_figures
from portal.forms import BindForm, CodeForm, EmailForm
from portal.models import PortalClient
from portal.selectors import bindings_for_client
from portal.services import code_send, code_verify, duration_text, email_normalize, key_bind

TEMPLATES = "portal"
# The address a code was asked for, which the code step signs in, and where to go then.
PENDING_EMAIL = "portal_pending_email"
PENDING_NEXT = "portal_pending_next"
# Only the portal's own pages are somewhere to go after signing in.
NEXT_PREFIX = "/portal/"

# A key's status as its card shows it; a suspended reseller's keys answer 401 at the proxy
# whatever their own status, so they read "Suspended".
SUSPENDED = "suspended"
STATUS_BADGES = {
    ClientKey.Status.ACTIVE: "badge-good",
    ClientKey.Status.REVOKED: "badge-warn",
    EXPIRED: "badge-warn",
    ClientKey.Status.DELETED: "badge-bad",
    SUSPENDED: "badge-bad",
}
# A budget bar turns amber, then red, as the key nears its end (as on the dashboard).
BAR_WARN_PERCENT = 80
BAR_BAD_PERCENT = 95
# What a spend cap is "per", by the key's budget period.
CAP_PERIODS: dict[str, str] = {
    ClientKey.BudgetPeriod.DAILY: "today",
    ClientKey.BudgetPeriod.WEEKLY: "this week",
    ClientKey.BudgetPeriod.MONTHLY: "this month",
}


@dataclass(frozen=True, slots=True)
class KeyCard:
    """One bound key on the client's home page: its client-price figures and how to show
    them."""

    figures: ClientKeyFigures
    status: str
    badge_class: str
    bar_class: str
    cap_period: str
    # Working and bounded, but unused over the runway's window: no pace to tell a runway by.
    is_idle: bool

    @property
    def key(self) -> ClientKey:
        return self.figures.key


def _card(figures: ClientKeyFigures) -> KeyCard:
    key = figures.key
    status = figures.status
    if status == ClientKey.Status.ACTIVE and not key.tenant.is_active:
        status = SUSPENDED
    percent = figures.used_percent or 0
    bar = ""
    if percent >= BAR_BAD_PERCENT:
        bar = "bar-bad"
    elif percent >= BAR_WARN_PERCENT:
        bar = "bar-warn"
    return KeyCard(
        figures=figures,
        status=status,
        badge_class=STATUS_BADGES.get(status, ""),
        bar_class=bar,
        cap_period="" if key.is_prepaid else CAP_PERIODS.get(key.budget_period, ""),
        is_idle=(
            status == ClientKey.Status.ACTIVE
            and figures.budget_nanos is not None
            and figures.window_spent_nanos == 0
        ),
    )


def _next_url(request: HttpRequest, target: str | None) -> str:
    """``target`` if it is a portal page on this site, else ""."""
    if (
        target
        and target.startswith(NEXT_PREFIX)
        and url_has_allowed_host_and_scheme(
            target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        )
    ):
        return target
    return ""


def _sign_in_page(
    request: HttpRequest, form: EmailForm, next_url: str, status: int = 200
) -> HttpResponse:
    return render(
        request,
        f"{TEMPLATES}/sign_in.html",
        {"form": form, "next": next_url, "lifetime": duration_text(settings.PORTAL_CODE_SECONDS)},
        status=status,
    )


def _home_page(
    request: HttpRequest, client: PortalClient, form: BindForm, status: int = 200
) -> HttpResponse:
    bindings = bindings_for_client(client=client)
    cards = [_card(f) for f in client_key_figures(keys=[b.key for b in bindings])]
    return render(
        request,
        f"{TEMPLATES}/home.html",
        {"client": client, "cards": cards, "bind_form": form},
        status=status,
    )


@never_cache
@require_http_methods(["GET", "POST"])
def home(request: HttpRequest) -> HttpResponse:
    """``/portal/``: the signed-in client's keys, or the form that asks for an email. A
    POST asks for a code (from this form, or "Send a new code" on the code page)."""
    client = session_client(request)
    request.portal_client = client  # type: ignore[attr-defined]
    if request.method == "POST":
        return _code_ask(request)
    if client is None:
        return _sign_in_page(request, EmailForm(), _next_url(request, request.GET.get("next")))
    return _home_page(request, client, BindForm())


def _code_ask(request: HttpRequest) -> HttpResponse:
    form = EmailForm(request.POST)
    next_url = _next_url(request, request.POST.get("next"))
    if not form.is_valid():
        return _sign_in_page(request, form, next_url, status=400)
    email = email_normalize(form.cleaned_data["email"])
    try:
        code_send(email=email, ip=client_address(request))
    except CodeNotSent as exc:
        form.add_error(None, str(exc))
        return _sign_in_page(request, form, next_url, status=503)
    request.session[PENDING_EMAIL] = email
    request.session[PENDING_NEXT] = next_url
    if request.POST.get("resend"):
        cooldown = duration_text(settings.PORTAL_CODE_COOLDOWN_SECONDS)
        messages.info(
            request,
            f"A new code is on its way to {email}, unless the last one went out less than "
            f"{cooldown} ago: then that one still works.",
        )
    return redirect("portal:code")


@never_cache
@require_http_methods(["GET", "POST"])
def code(request: HttpRequest) -> HttpResponse:
    """``/portal/code/``: the code sent to the address this session asked for. Right, it
    signs the session in under a new session key; wrong, the page says why (400, or 429
    when codes come too fast)."""
    email = request.session.get(PENDING_EMAIL)
    if not email:
        return redirect("portal:home")
    request.portal_client = session_client(request)  # type: ignore[attr-defined]
    form = CodeForm(request.POST) if request.method == "POST" else CodeForm()
    status = 200
    retry_after = None
    needs_new_code = False
    if request.method == "POST":
        status = 400
        if form.is_valid():
            try:
                client = code_verify(email=email, code=form.cleaned_data["code"])
            except CodeThrottled as exc:
                form.add_error("code", str(exc))
                status, retry_after = 429, exc.wait_seconds
            except CodeRefused as exc:
                form.add_error("code", str(exc))
                needs_new_code = isinstance(exc, CodeMissing | CodeExpired | CodeDead)
            else:
                next_url = request.session.get(PENDING_NEXT) or reverse("portal:home")
                portal_sign_in(request, client)
                request.session.pop(PENDING_EMAIL, None)
                request.session.pop(PENDING_NEXT, None)
                return redirect(next_url)
    response = render(
        request,
        f"{TEMPLATES}/code.html",
        {
            "form": form,
            "email": email,
            "next": request.session.get(PENDING_NEXT, ""),
            "lifetime": duration_text(settings.PORTAL_CODE_SECONDS),
            "cooldown": duration_text(settings.PORTAL_CODE_COOLDOWN_SECONDS),
            "needs_new_code": needs_new_code,
        },
        status=status,
    )
    if retry_after is not None:
        response["Retry-After"] = str(retry_after)
    return response


@never_cache
@require_POST
@client_page
def bind(request: HttpRequest) -> HttpResponse:
    """``/portal/keys/bind/``: add the key whose secret was pasted; back to the keys with
    its card, or the same page with what went wrong (400, or 429 when throttled). The
    pasted secret is never written back into the page."""
    client = page_client(request)
    form = BindForm(request.POST)
    if not form.is_valid():
        return _home_page(request, client, form, status=400)
    try:
        binding = key_bind(
            client=client, secret=form.cleaned_data["key"], ip=client_address(request)
        )
    except BindThrottled as exc:
        form.add_error("key", str(exc))
        return _home_page(request, client, form, status=429)
    except KeyNotBindable as exc:
        form.add_error("key", str(exc))
        return _home_page(request, client, form, status=400)
    messages.success(request, f"Key “{binding.key.label}” added.")
    return redirect(f"{reverse('portal:home')}#key-{binding.key_id}")


@never_cache
@require_POST
def sign_out(request: HttpRequest) -> HttpResponse:
    portal_sign_out(request)
    return redirect("portal:home")
