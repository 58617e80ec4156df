"""A bound key's alert choices: ``/portal/keys/<id>/alerts/``.

GET shows the choices and their form on a page of their own (the key's page shows the same
form, ``portal/keys/_alerts.html``); POST saves them through
``portal.alerts.alert_preferences_set`` and goes back to the key's page. A plain form,
CSRF-checked, that works without JavaScript; a key the client has not bound answers 404.
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from portal.access import client_page, page_client
from portal.alerts import AlertChoiceInvalid, alert_preferences_set
from portal.figures import client_key_figures
from portal.models import PortalBinding
from portal.selectors import binding_get


class AlertsForm(forms.Form):
    """The choices as typed: ``alert_preferences_set`` checks the range (as it would for
    any other caller), so the form only reads a whole number or nothing."""

    alert_percent = forms.IntegerField(
        required=False,
        label="Email me when the key has used this share of its budget (%)",
        error_messages={"invalid": "Enter a whole number of percent, or leave it empty."},
    )
    alert_exhausted = forms.BooleanField(
        required=False, label="Email me when the key has nothing left"
    )

    @classmethod
    def for_binding(cls, binding: PortalBinding) -> AlertsForm:
        return cls(
            initial={
                "alert_percent": binding.alert_percent,
                "alert_exhausted": binding.alert_exhausted,
            }
        )


def _alerts_page(
    request: HttpRequest, binding: PortalBinding, form: AlertsForm, *, status: int = 200
) -> HttpResponse:
    (figures,) = client_key_figures(keys=[binding.key])
    return render(
        request,
        "portal/keys/alerts.html",
        {
            "binding": binding,
            "key": binding.key,
            "figures": figures,
            "alerts_form": form,
        },
        status=status,
    )


def _saved_message(label: str, saved: PortalBinding) -> str:
    chosen = []
    if saved.alert_percent is not None:
        chosen.append(f"at {saved.alert_percent} % of its budget")
    if saved.alert_exhausted:
        chosen.append("when it runs out")
    if not chosen:
        return f"Alerts for {label} are off."
    return f"Alerts saved: an email about {label} {' and '.join(chosen)}."


@require_http_methods(["GET", "POST"])
@client_page
def key_alerts(request: HttpRequest, key_id: int) -> HttpResponse:
    binding = binding_get(client=page_client(request), key_id=key_id)
    if request.method != "POST":
        return _alerts_page(request, binding, AlertsForm.for_binding(binding))
    form = AlertsForm(request.POST)
    if form.is_valid():
        try:
            saved = alert_preferences_set(
                binding=binding,
                percent=form.cleaned_data["alert_percent"],
                exhausted=form.cleaned_data["alert_exhausted"],
            )
        except AlertChoiceInvalid as exc:
            form.add_error(exc.field, str(exc))
        else:
            messages.success(request, _saved_message(binding.key.label, saved))
            return redirect(f"/portal/keys/{binding.key_id}/")
    return _alerts_page(request, binding, form, status=400)
