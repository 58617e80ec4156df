"""The reseller's account pages: its REST API tokens, the settings its clients see, and
(below them, posting to ``dashboard.alert_views``) its alert settings.

Writes go through ``accounts.services`` (``api_token_create``, ``api_token_revoke``,
``tenant_update``), as the REST API's do; a token id of another tenant answers 404 and
changes nothing. Every form is a plain POST (CSRF-checked) that works without JavaScript,
followed by a redirect, except the one answer that shows a new token's secret: that page
is rendered once, never stored by the browser (``no-store``), and the secret is not kept.
"""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.cache import add_never_cache_headers
from django.views.decorators.http import require_http_methods

from accounts.exceptions import TenantInvalid
from accounts.models import ApiToken
from accounts.selectors import api_token_get, api_token_list
from accounts.services import api_token_create, api_token_revoke, tenant_update
from alerts.selectors import alert_settings_get, email_recipient
from dashboard.access import page_actor, page_tenant, reseller_page
from dashboard.forms.alerts import AlertSettingsForm
from dashboard.forms.settings import SettingsForm, TokenCreateForm


def _tokens_page(
    request: HttpRequest, form: TokenCreateForm, *, status: int = 200, **context: object
) -> HttpResponse:
    tenant = page_tenant(request)
    return render(
        request,
        "dashboard/tokens/tokens.html",
        {"tenant": tenant, "tokens": api_token_list(tenant=tenant), "form": form, **context},
        status=status,
    )


@require_http_methods(["GET", "POST"])
@reseller_page
def tokens(request: HttpRequest) -> HttpResponse:
    """The tenant's tokens, and a form for a new one; its secret is shown on the answer to
    the POST and nowhere else."""
    if request.method != "POST":
        return _tokens_page(request, TokenCreateForm())
    form = TokenCreateForm(request.POST)
    if not form.is_valid():
        return _tokens_page(request, form, status=400)
    issued = api_token_create(tenant=page_tenant(request), name=form.cleaned_data["name"])
    response = _tokens_page(request, TokenCreateForm(), issued=issued)
    add_never_cache_headers(response)  # Cache-Control: no-store (and no-cache, private)
    return response


def _token(request: HttpRequest, token_id: int) -> ApiToken:
    try:
        return api_token_get(tenant=page_tenant(request), token_id=token_id)
    except ApiToken.DoesNotExist:
        raise Http404("No such token.") from None


@require_http_methods(["GET", "POST"])
@reseller_page
def token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    """GET: what revoking the token does, and a button to do it; POST: revoke it."""
    token = _token(request, token_id)
    if request.method != "POST":
        return render(
            request,
            "dashboard/tokens/revoke.html",
            {"tenant": page_tenant(request), "token": token},
        )
    if token.is_revoked:
        messages.info(request, f"The token {token.name} was already revoked.")
    else:
        api_token_revoke(tenant=page_tenant(request), token_id=token.pk)
        messages.success(request, f"The token {token.name} is revoked: it no longer works.")
    return redirect("dashboard:tokens")


@require_http_methods(["GET", "POST"])
@reseller_page
def account_settings(request: HttpRequest) -> HttpResponse:
    """Display name, support email and time zone (``tenant_update``, as ``PATCH
    /api/v1/account``): what the tenant's clients see, and the zone of its reports."""
    tenant = page_tenant(request)
    if request.method != "POST":
        form = SettingsForm.for_tenant(tenant)
    else:
        form = SettingsForm(request.POST)
        if form.is_valid():
            try:
                tenant_update(tenant=tenant, actor=page_actor(request), **form.cleaned_data)
            except TenantInvalid as exc:
                form.add_error(exc.field, str(exc))
            else:
                messages.success(request, "Settings saved.")
                return redirect("dashboard:settings")
    return settings_page(request, form=form, status=400 if form.errors else 200)


def settings_page(
    request: HttpRequest,
    *,
    form: SettingsForm | None = None,
    alerts_form: AlertSettingsForm | None = None,
    status: int = 200,
    new_secret: str | None = None,
) -> HttpResponse:
    """The settings page: the account's form and the alerts' (each as saved, unless given
    as posted with its errors). ``new_secret``: a webhook signing secret just made, shown
    this once (the answer is never stored by the browser)."""
    tenant = page_tenant(request)
    alert_settings = alert_settings_get(tenant=tenant)
    if alerts_form is None:
        alerts_form = AlertSettingsForm.for_settings(alert_settings, owner_email=tenant.owner.email)
    response = render(
        request,
        "dashboard/settings/settings.html",
        {
            "tenant": tenant,
            "form": form or SettingsForm.for_tenant(tenant),
            "alerts_form": alerts_form,
            "alert_settings": alert_settings,
            "alert_recipient": email_recipient(alert_settings=alert_settings, tenant=tenant),
            "new_secret": new_secret,
        },
        status=status,
    )
    if new_secret is not None:
        add_never_cache_headers(response)  # Cache-Control: no-store (and no-cache, private)
    return response
