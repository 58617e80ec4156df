"""The keys pages: the list, creating a key (with a preview of what leaves the wallet), the
secret shown once, a key's page and its actions (top up, limits, revoke / re-activate,
delete).

Thin, as every dashboard view: figures come from ``keys.selectors`` / ``usage.selectors``
and every write is a ``keys.services`` call, the ones the REST API makes, after a quote
from the same module (``key_create_quote``, ``key_top_up_quote``, ``key_delete_quote``)
has shown what it will do. Money moves only on a POST that confirms a preview
(``dashboard.confirmation``), and every write ends in a redirect (Post/Redirect/Get). A key
is reached only through ``key_get`` with the signed-in tenant: another tenant's id is 404.

Without JavaScript each form posts a whole page and the server answers the preview first;
with htmx the same views answer the preview fragment as the reseller types
(``request.htmx``), and never write.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    HttpResponseNotAllowed,
)
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods

from alerts.selectors import key_alerts_get
from billing.exceptions import InsufficientFunds
from dashboard.access import page_actor, page_key, page_tenant, reseller_page
from dashboard.confirmation import preview_confirmed, preview_token
from dashboard.forms.alerts import KeyAlertsForm
from dashboard.forms.keys import KeyCreateForm, KeyFilterForm, KeyLimitsForm, KeyTopUpForm
from keys.exceptions import ClientKeyInvalid, ClientKeyStateConflict
from keys.models import ClientKey
from keys.selectors import (
    KeyFigures,
    key_figures,
    key_list,
    key_tags,
    ratio_is_internal_share,
)
from keys.services import (
    key_create,
    key_create_quote,
    key_delete,
    key_delete_quote,
    key_top_up,
    key_top_up_quote,
    key_update,
)
from pages.templatetags.money import usd
from usage.selectors import RUNWAY_WINDOW_DAYS, KeyRunway, key_runways

KEYS_PER_PAGE = 50
# Where a new key's secret waits, by key id, between the POST that made it and the one page
# that shows it (and removes it).
NEW_SECRETS_SESSION_KEY = "dashboard.new_key_secrets"
CREATE_ACTION = "key-create"
TOP_UP_ACTION = "key-top-up"
# A budget bar turns amber, then red, as the key nears its end.
BAR_WARN_PERCENT = 80
BAR_BAD_PERCENT = 95
# The live preview of a key not yet named: its figures do not depend on the label.
UNNAMED_LABEL = "(no label yet)"


KeyView = Callable[[HttpRequest, ClientKey], HttpResponse]


def key_page_view(*methods: str) -> Callable[[KeyView], Callable[..., HttpResponseBase]]:
    """A page of one of the tenant's keys, taking ``methods``: the view gets the key. The
    key is looked up first, so another tenant's key id answers 404 whatever the method
    (never a 405 that would tell a key's pages from a missing one's)."""

    def decorate(view: KeyView) -> Callable[..., HttpResponseBase]:
        @wraps(view)
        def wrapped(request: HttpRequest, key_id: int) -> HttpResponse:
            key = page_key(request, key_id)
            if request.method not in methods:
                return HttpResponseNotAllowed(methods)
            return view(request, key)

        return reseller_page(wrapped)

    return decorate


def _is_live(request: HttpRequest) -> bool:
    """An htmx request (django-htmx's ``request.htmx``): answer the fragment it swaps."""
    return bool(request.htmx)  # type: ignore[attr-defined]


def _used_percent(used_nanos: int, limit_nanos: int | None) -> int | None:
    if not limit_nanos:
        return None
    return min(100, used_nanos * 100 // limit_nanos)


@dataclass(frozen=True, slots=True)
class KeyRow:
    """A key as the list and its page show it, every figure worked out once (a page of 50
    rows reads each several times)."""

    figures: KeyFigures
    runway: KeyRunway | None
    # What counts against the key's budget (prepaid) or its cap (wallet), and that limit.
    used_nanos: int
    limit_nanos: int | None
    used_percent: int | None
    bar_class: str
    is_internal_share: bool

    @property
    def key(self) -> ClientKey:
        return self.figures.key


def key_row(figures: KeyFigures, runway: KeyRunway | None = None) -> KeyRow:
    key = figures.key
    if key.is_prepaid:
        used, limit = figures.client_spent_nanos, figures.client_budget_nanos
    else:
        used, limit = figures.period_spent_nanos, figures.spend_cap_nanos
    percent = _used_percent(used, limit)
    bar = ""
    if (percent or 0) >= BAR_BAD_PERCENT:
        bar = "bar-bad"
    elif (percent or 0) >= BAR_WARN_PERCENT:
        bar = "bar-warn"
    return KeyRow(
        figures=figures,
        runway=runway,
        used_nanos=used,
        limit_nanos=limit,
        used_percent=percent,
        bar_class=bar,
        is_internal_share=ratio_is_internal_share(key.ratio),
    )


# ------------------------------------------------------------------------------ the list


@require_GET
@reseller_page
def key_list_page(request: HttpRequest) -> HttpResponse:
    tenant = page_tenant(request)
    filters = KeyFilterForm(request.GET, tags=key_tags(tenant=tenant))
    keys = key_list(tenant=tenant, **filters.filters())
    page = Paginator(keys, KEYS_PER_PAGE).get_page(request.GET.get("page"))
    now = timezone.now()
    figures = [key_figures(key=key, now=now) for key in page]
    runways = key_runways(tenant=tenant, figures=figures, now=now)
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "tenant": tenant,
        "filters": filters,
        "is_filtered": any(request.GET.get(name) for name in ("status", "tag", "q")),
        "rows": [key_row(f, runways[f.key.pk]) for f in figures],
        "page": page,
        "page_query": query.urlencode(),
        "runway_days": RUNWAY_WINDOW_DAYS,
        # Each row links to keys_url + its id: one reverse() for the page, not one per row.
        "keys_url": reverse("dashboard:key-list"),
    }
    template = "dashboard/keys/list.html"
    return render(request, f"{template}#results" if _is_live(request) else template, context)


# ------------------------------------------------------------------------------ creating


def _create_context(request: HttpRequest, form: KeyCreateForm) -> dict[str, Any]:
    """The form and, when its terms are valid, ``key_create_quote``'s preview and the token
    that confirms it."""
    tenant = page_tenant(request)
    context: dict[str, Any] = {"form": form, "quote": None, "preview_token": ""}
    if not form.is_valid():
        return context
    terms = form.service_terms()
    try:
        context["quote"] = key_create_quote(tenant=tenant, **terms)
    except ClientKeyInvalid as error:
        form.add_service_error(error)
        return context
    context["preview_token"] = preview_token(request, action=CREATE_ACTION, terms=terms)
    return context


def _live_create_form(request: HttpRequest) -> KeyCreateForm:
    """The form as typed so far, for the live preview: a key without a label yet still
    shows what it costs."""
    data = request.POST.copy()
    if not data.get("label", "").strip():
        data["label"] = UNNAMED_LABEL
    return KeyCreateForm(data, zone=page_tenant(request).zone)


@require_http_methods(["GET", "POST"])
@reseller_page
def key_create_page(request: HttpRequest) -> HttpResponse:
    tenant = page_tenant(request)
    template = "dashboard/keys/new.html"
    if request.method == "GET":
        return render(request, template, {"form": KeyCreateForm(zone=tenant.zone)})
    if _is_live(request):
        context = _create_context(request, _live_create_form(request))
        context["is_live"] = True
        is_prepaid = request.POST.get("funding", ClientKey.Funding.PREPAID) == "prepaid"
        amounts = (request.POST.get(name, "").strip() for name in ("client_budget", "your_cost"))
        context["needs_amounts"] = is_prepaid and not all(amounts)
        return render(request, f"{template}#preview", context)

    form = KeyCreateForm(request.POST, zone=tenant.zone)
    context = _create_context(request, form)
    quote = context["quote"]
    if quote is None or quote.refusal is not None:
        return render(request, template, context, status=400)
    terms = form.service_terms()
    if not preview_confirmed(request, action=CREATE_ACTION, terms=terms):
        return render(request, template, context)  # the preview, with a "Create key" button
    try:
        issued = key_create(tenant=tenant, actor=page_actor(request), **terms)
    except ClientKeyInvalid as error:
        form.add_service_error(error)
        return render(request, template, context, status=400)
    except InsufficientFunds as error:
        context["refusal"] = error
        return render(request, template, context, status=400)
    waiting = request.session.get(NEW_SECRETS_SESSION_KEY, {})
    waiting[str(issued.key.pk)] = issued.secret
    request.session[NEW_SECRETS_SESSION_KEY] = waiting
    return redirect("dashboard:key-created", key_id=issued.key.pk)


@never_cache
@key_page_view("GET")
def key_created_page(request: HttpRequest, key: ClientKey) -> HttpResponse:
    """The new key's secret, once: the first visit takes it out of the session."""
    waiting = request.session.get(NEW_SECRETS_SESSION_KEY, {})
    secret = waiting.pop(str(key.pk), None)
    if secret is not None:
        request.session[NEW_SECRETS_SESSION_KEY] = waiting
    origin = request.build_absolute_uri("/").rstrip("/")
    context = {
        "key": key,
        "secret": secret,
        "tenant": page_tenant(request),
        "portal_url": f"{origin}/portal/",
        "openai_base_url": f"{origin}/v1",
        "anthropic_base_url": origin,
    }
    return render(request, "dashboard/keys/created.html", context)


# ----------------------------------------------------------------------------- a key


def _statement_month(request: HttpRequest) -> str:
    return timezone.localtime(timezone.now(), page_tenant(request).zone).strftime("%Y-%m")


@key_page_view("GET")
def key_page(request: HttpRequest, key: ClientKey) -> HttpResponse:
    tenant = page_tenant(request)
    context = {
        "tenant": tenant,
        "key": key,
        "row": key_row(key_figures(key=key)),
        "top_up_form": KeyTopUpForm(),
        "statement_month": _statement_month(request),
    }
    key_alerts = key_alerts_get(tenant=tenant, key=key)
    context["key_alerts"] = key_alerts
    context["key_alerts_form"] = KeyAlertsForm.for_key(key_alerts)
    return render(request, "dashboard/keys/detail.html", context)


def _top_up_context(request: HttpRequest, key: ClientKey, form: KeyTopUpForm) -> dict[str, Any]:
    context: dict[str, Any] = {"key": key, "top_up_form": form, "quote": None}
    if not form.is_valid():
        return context
    amount = form.cleaned_data["client_amount"]
    try:
        context["quote"] = key_top_up_quote(
            tenant=page_tenant(request), key_id=key.pk, client_amount_nanos=amount
        )
    except ClientKeyInvalid as error:
        form.add_service_error(error)
    except ClientKeyStateConflict as error:
        form.add_error(None, str(error))
    else:
        context["preview_token"] = preview_token(
            request, action=TOP_UP_ACTION, terms={"key": key.pk, "client_amount": amount}
        )
    return context


@key_page_view("GET", "POST")
def key_top_up_page(request: HttpRequest, key: ClientKey) -> HttpResponse:
    """GET: the form alone; POST: the preview (a page, or the fragment htmx asks for), or,
    confirming a preview, the top-up."""
    template = "dashboard/keys/top_up.html"
    if request.method == "GET":
        return render(request, template, {"key": key, "top_up_form": KeyTopUpForm()})
    form = KeyTopUpForm(request.POST)
    context = _top_up_context(request, key, form)
    if _is_live(request):
        context["is_live"] = True
        return render(request, f"{template}#top-up-preview", context)
    quote = context["quote"]
    if quote is None or quote.refusal is not None:
        return render(request, template, context, status=400)
    terms = {"key": key.pk, "client_amount": quote.client_amount_nanos}
    if not preview_confirmed(request, action=TOP_UP_ACTION, terms=terms):
        return render(request, template, context)  # the preview, with a "Top up" button
    try:
        key_top_up(
            tenant=page_tenant(request),
            actor=page_actor(request),
            key_id=key.pk,
            client_amount_nanos=quote.client_amount_nanos,
        )
    except ClientKeyInvalid as error:
        form.add_service_error(error)
        return render(request, template, context, status=400)
    except (ClientKeyStateConflict, InsufficientFunds) as error:
        form.add_error(None, str(error))
        return render(request, template, context, status=400)
    messages.success(
        request,
        f"Added {usd(quote.client_amount_nanos)} to the client's budget; "
        f"{usd(quote.wallet_debit_nanos)} left your wallet.",
    )
    return redirect("dashboard:key-detail", key_id=key.pk)


@key_page_view("GET", "POST")
def key_limits_page(request: HttpRequest, key: ClientKey) -> HttpResponse:
    if key.status == ClientKey.Status.DELETED:
        messages.error(request, "This key was deleted; its limits no longer apply.")
        return redirect("dashboard:key-detail", key_id=key.pk)
    zone = page_tenant(request).zone
    form = KeyLimitsForm(request.POST or None, key=key, zone=zone)
    if request.method == "POST" and form.is_valid():
        try:
            key_update(
                tenant=page_tenant(request),
                actor=page_actor(request),
                key_id=key.pk,
                changes=form.changes(),
            )
        except ClientKeyInvalid as error:
            form.add_service_error(error)
        except ClientKeyStateConflict as error:
            form.add_error(None, str(error))
        else:
            messages.success(request, "Saved the key's settings.")
            return redirect("dashboard:key-detail", key_id=key.pk)
    status = 400 if request.method == "POST" else 200
    return render(request, "dashboard/keys/limits.html", {"key": key, "form": form}, status=status)


def _status_change(request: HttpRequest, key: ClientKey, status: str, done: str) -> HttpResponse:
    try:
        key_update(
            tenant=page_tenant(request),
            actor=page_actor(request),
            key_id=key.pk,
            changes={"status": status},
        )
    except ClientKeyStateConflict as error:
        messages.error(request, str(error))
    else:
        messages.success(request, done)
    return redirect("dashboard:key-detail", key_id=key.pk)


@key_page_view("POST")
def key_revoke(request: HttpRequest, key: ClientKey) -> HttpResponse:
    return _status_change(
        request, key, ClientKey.Status.REVOKED, "Revoked: the key is refused until re-activated."
    )


@key_page_view("POST")
def key_reactivate(request: HttpRequest, key: ClientKey) -> HttpResponse:
    return _status_change(request, key, ClientKey.Status.ACTIVE, "Re-activated the key.")


@key_page_view("GET", "POST")
def key_delete_page(request: HttpRequest, key: ClientKey) -> HttpResponse:
    """GET: the confirmation, stating the refund (``key_delete_quote``); POST: the delete."""
    tenant = page_tenant(request)
    if request.method == "GET":
        try:
            quote = key_delete_quote(tenant=tenant, key_id=key.pk)
        except ClientKeyStateConflict as error:
            messages.info(request, str(error))
            return redirect("dashboard:key-detail", key_id=key.pk)
        return render(request, "dashboard/keys/delete.html", {"key": key, "quote": quote})
    try:
        deleted = key_delete(tenant=tenant, actor=page_actor(request), key_id=key.pk)
    except ClientKeyStateConflict as error:
        messages.info(request, str(error))
    else:
        refund = f" {usd(deleted.refunded_nanos)} was refunded to your wallet."
        messages.success(request, f"Deleted {key.label}.{refund if deleted.refunded_nanos else ''}")
    return redirect("dashboard:key-detail", key_id=key.pk)
