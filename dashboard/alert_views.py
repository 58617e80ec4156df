"""The reseller's alerts in the dashboard: the delivery log (``/dashboard/alerts/``), the
alert settings (a section of ``/dashboard/settings/`` whose forms post here), and a key's
own shares (a panel of the key's page, posting to ``/dashboard/keys/<id>/alerts/``).

Thin: reads come from ``alerts.selectors``, writes are the ``alerts.services`` calls the
REST API makes, and each refusal comes back onto its form. Every form is a plain POST
(CSRF-checked) that works without JavaScript and ends in a redirect, except the answers
that show a new webhook signing secret: rendered once, never stored by the browser.
"""

from __future__ import annotations

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from alerts.emails import alert_summary
from alerts.exceptions import AlertSettingsInvalid, KeyAlertsConflict
from alerts.models import AlertDelivery
from alerts.selectors import delivery_list, key_alerts_get
from alerts.services import (
    alert_settings_update,
    alert_test_send,
    key_alerts_set,
    webhook_secret_rotate,
)
from dashboard.access import page_actor, page_tenant, reseller_page
from dashboard.forms.alerts import AlertSettingsForm, KeyAlertsForm, percents_text
from dashboard.key_views import key_page_view
from dashboard.settings_views import settings_page
from keys.models import ClientKey

DELIVERIES_PER_PAGE = 50
SETTINGS_ALERTS = "/dashboard/settings/#alerts"


# ------------------------------------------------------------------------------ the log


@require_GET
@reseller_page
def alerts_log(request: HttpRequest) -> HttpResponse:
    """Every delivery of the tenant's alerts, newest first, 50 a page; ``?status=`` and
    ``?channel=`` narrow it (unknown values are ignored)."""
    tenant = page_tenant(request)
    status = request.GET.get("status") or None
    channel = request.GET.get("channel") or None
    if status not in AlertDelivery.Status.values:
        status = None
    if channel not in AlertDelivery.Channel.values:
        channel = None
    deliveries = delivery_list(tenant=tenant, status=status, channel=channel)
    page = Paginator(deliveries, DELIVERIES_PER_PAGE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "dashboard/alerts/log.html",
        {
            "tenant": tenant,
            "rows": [(delivery, alert_summary(delivery.event)) for delivery in page],
            "page": page,
            "page_query": query.urlencode(),
            "status": status or "",
            "channel": channel or "",
            "statuses": AlertDelivery.Status.choices,
            "channels": AlertDelivery.Channel.choices,
            "is_filtered": bool(status or channel),
        },
    )


# -------------------------------------------------------------------------- the settings


@require_POST
@reseller_page
def alert_settings_save(request: HttpRequest) -> HttpResponse:
    """Save the alert settings (``alert_settings_update``, as ``PATCH
    /api/v1/alerts/settings``). The first webhook URL makes the signing secret: that answer
    shows it, once."""
    tenant = page_tenant(request)
    form = AlertSettingsForm(request.POST)
    form.describe_owner(tenant.owner.email)
    if form.is_valid():
        try:
            saved = alert_settings_update(
                tenant=tenant, actor=page_actor(request), changes=form.changes()
            )
        except AlertSettingsInvalid as error:
            form.add_service_error(error)
        else:
            messages.success(request, "Alert settings saved.")
            if saved.new_secret is not None:
                return settings_page(request, new_secret=saved.new_secret)
            return redirect(SETTINGS_ALERTS)
    return settings_page(request, alerts_form=form, status=400)


@require_POST
@reseller_page
def webhook_secret_new(request: HttpRequest) -> HttpResponse:
    """A new signing secret for the webhook (``webhook_secret_rotate``), shown once."""
    saved = webhook_secret_rotate(tenant=page_tenant(request), actor=page_actor(request))
    messages.success(
        request, "A new signing secret: alerts are signed with it from now on, the old one stops."
    )
    return settings_page(request, new_secret=saved.new_secret)


@require_POST
@reseller_page
def webhook_test(request: HttpRequest) -> HttpResponse:
    """Send a test event to the webhook (``alert_test_send``); the log shows how it went."""
    try:
        alert_test_send(tenant=page_tenant(request), actor=page_actor(request))
    except AlertSettingsInvalid as error:
        messages.error(request, str(error))
        return redirect(SETTINGS_ALERTS)
    messages.success(
        request, "A test event is on its way to your webhook; the log shows how it went."
    )
    return redirect("dashboard:alerts")


# ------------------------------------------------------------------------------- a key's


@key_page_view("POST")
def key_alerts_save(request: HttpRequest, key: ClientKey) -> HttpResponse:
    """Save a key's own shares, or the default again (``key_alerts_set``, as ``PATCH
    /api/v1/keys/{id}/alerts``), back to the key's page."""
    tenant = page_tenant(request)
    form = KeyAlertsForm(request.POST)
    if form.is_valid():
        try:
            alerts = key_alerts_set(
                tenant=tenant,
                actor=page_actor(request),
                key_id=key.pk,
                thresholds=form.thresholds_chosen(),
            )
        except AlertSettingsInvalid as error:
            form.add_error("thresholds", str(error))
        except KeyAlertsConflict as error:
            messages.error(request, str(error))
            return redirect("dashboard:key-detail", key_id=key.pk)
        else:
            where = "the account's default" if alerts.uses_default else "its own"
            at = f"at {percents_text(alerts.effective)} %" if alerts.effective else "none"
            messages.success(request, f"Alerts for {key.label}: {where}, {at}.")
            return redirect(reverse("dashboard:key-detail", args=[key.pk]) + "#alerts")
    return render(
        request,
        "dashboard/alerts/key.html",
        {
            "tenant": tenant,
            "key": key,
            "key_alerts": key_alerts_get(tenant=tenant, key=key),
            "key_alerts_form": form,
        },
        status=400,
    )
