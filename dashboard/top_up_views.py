"""Card top-ups of the wallet: the form (with the fee and total before paying), and a
top-up's page, where Stripe sends the payer back.

Thin, as every dashboard view: the preview is ``billing.top_ups.top_up_quote`` and the write
is ``top_up_create``, the REST API's. Without JavaScript the first "Top up" shows the preview
and the second (confirming exactly that amount, once: ``dashboard.confirmation``) opens the
Stripe Checkout Session and answers 303 to Stripe's page; with htmx the preview follows the
typing. A top-up's page shows it pending until Stripe's webhook credits it; htmx asks for
the status every 2 seconds meanwhile, and a reload link does without JavaScript. A top-up is
reached only through ``top_up_get`` with the signed-in tenant: any other id is 404.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods

from billing.exceptions import TopUpCheckoutFailed, TopUpInvalid, TopUpsNotConfigured
from billing.models import TopUp
from billing.selectors import top_up_get, wallet_for_tenant
from billing.stripe_api import is_configured
from billing.top_ups import TopUpQuote, TopUpTerms, top_up_create, top_up_quote, top_up_terms
from dashboard.access import page_actor, page_tenant, reseller_page
from dashboard.confirmation import preview_confirmed, preview_token
from dashboard.forms.top_ups import WalletTopUpForm
from pages.templatetags.money import usd

TOP_UP_ACTION = "wallet-top-up"
FORM_TEMPLATE = "dashboard/wallet/top_up.html"
PAGE_TEMPLATE = "dashboard/wallet/top_up_detail.html"
# How often a pending top-up's page asks for its status (htmx), in seconds.
POLL_SECONDS = 2


def _is_live(request: HttpRequest) -> bool:
    return bool(request.htmx)  # type: ignore[attr-defined]


def posts_to_checkout(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """The page's form is answered by a redirect to Stripe's checkout: its
    Content-Security-Policy's ``form-action`` must allow that origin too (browsers check a
    form's redirects against the policy of the page it was on)."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = view(request, *args, **kwargs)
        response._csp_update = {"form-action": [settings.STRIPE_CHECKOUT_ORIGIN]}  # type: ignore[attr-defined] # django-csp reads it
        return response

    return wrapped


def fee_rule(terms: TopUpTerms) -> str:
    """The operator's fee in words: "2.9 % + $0.30", "$1.00", "2.5 %" or "no fee"."""
    parts = []
    if terms.fee_percent:
        parts.append(f"{terms.fee_percent.normalize():f} %")
    if terms.fee_fixed_nanos:
        parts.append(usd(terms.fee_fixed_nanos))
    return " + ".join(parts) or "no fee"


def _form_context(request: HttpRequest, form: WalletTopUpForm) -> dict[str, Any]:
    """The form and, for a valid amount, its quote and the token that confirms it."""
    terms = top_up_terms()
    context: dict[str, Any] = {
        "form": form,
        "quote": None,
        "terms": terms,
        "fee_rule": fee_rule(terms),
        "is_configured": True,
    }
    if not form.is_valid():
        return context
    amount = form.cleaned_data["amount"]
    try:
        context["quote"] = top_up_quote(amount_nanos=amount)
    except TopUpInvalid as error:
        form.add_top_up_error(error)
        return context
    context["preview_token"] = preview_token(
        request, action=TOP_UP_ACTION, terms={"amount": amount}
    )
    return context


@never_cache
@require_http_methods(["GET", "POST"])
@reseller_page
@posts_to_checkout
def top_up_create_page(request: HttpRequest) -> HttpResponse:
    """GET: the form; POST: the preview (a page, or the fragment htmx asks for), or,
    confirming a preview, the top-up: 303 to Stripe's checkout page."""
    if not is_configured():
        return render(request, FORM_TEMPLATE, {"is_configured": False}, status=503)
    if request.method == "GET":
        form = WalletTopUpForm(initial={"amount": request.GET.get("amount", "")})
        terms = top_up_terms()
        return render(
            request,
            FORM_TEMPLATE,
            {"form": form, "terms": terms, "fee_rule": fee_rule(terms), "is_configured": True},
        )
    form = WalletTopUpForm(request.POST)
    context = _form_context(request, form)
    if _is_live(request):
        context["is_live"] = True
        return render(request, f"{FORM_TEMPLATE}#top-up-preview", context)
    quote: TopUpQuote | None = context["quote"]
    if quote is None:
        return render(request, FORM_TEMPLATE, context, status=400)
    if not preview_confirmed(request, action=TOP_UP_ACTION, terms={"amount": quote.amount_nanos}):
        return render(request, FORM_TEMPLATE, context)  # the preview, with its "Pay" button
    try:
        top_up = top_up_create(
            tenant=page_tenant(request),
            actor=page_actor(request),
            amount_nanos=quote.amount_nanos,
            site_url=request.build_absolute_uri("/").rstrip("/"),
        )
    except TopUpInvalid as error:
        form.add_top_up_error(error)
        return render(request, FORM_TEMPLATE, context, status=400)
    except TopUpCheckoutFailed as error:
        form.add_error(None, str(error))
        context["quote"] = None
        return render(request, FORM_TEMPLATE, context, status=502)
    except TopUpsNotConfigured:
        return render(request, FORM_TEMPLATE, {"is_configured": False}, status=503)
    response = HttpResponseRedirect(top_up.checkout_url)
    response.status_code = 303  # See Other: the browser GETs Stripe's page
    return response


def page_top_up(request: HttpRequest, top_up_id: int) -> TopUp:
    """The page tenant's top-up ``top_up_id``; any other id, another tenant's included, is
    a 404."""
    try:
        return top_up_get(tenant=page_tenant(request), top_up_id=top_up_id)
    except TopUp.DoesNotExist:
        raise Http404("No such top-up.") from None


@never_cache
@require_GET
@reseller_page
def top_up_page(request: HttpRequest, top_up_id: int) -> HttpResponse:
    """A top-up's status; the fragment alone for htmx's poll. ``?cancelled=1`` is where
    Stripe sends a payer who left its page without paying."""
    tenant = page_tenant(request)
    top_up = page_top_up(request, top_up_id)
    context = {
        "tenant": tenant,
        "top_up": top_up,
        "wallet": wallet_for_tenant(tenant=tenant),
        "is_cancelled": request.GET.get("cancelled") == "1",
        "poll_seconds": POLL_SECONDS,
        "is_pending": top_up.status == TopUp.Status.PENDING,
    }
    if _is_live(request):
        return render(request, f"{PAGE_TEMPLATE}#status", context)
    return render(request, PAGE_TEMPLATE, context)
