"""Client alerts: an email to a portal client when a key it bound passes the share of its
budget the client chose, and when it is exhausted.

Design overview
---------------
A binding (``PortalBinding``) carries the client's two choices, ``alert_percent`` (1–100,
None: off) and ``alert_exhausted``, and one stamp for each, ``*_alerted_at``: when the
alert was claimed for the current crossing (None: armed).

* What is measured is what the portal shows (``portal.figures``): a prepaid key's client
  spend against its client budget; a wallet-funded key's spend this budget period against
  its spend cap. A wallet-funded key without a cap has no budget of its own (only its
  reseller's wallet bounds it), so it has no share to pass and is never exhausted.
* ``client_alerts_check`` (Celery beat, every ``CLIENT_ALERTS_SECONDS``) reads every
  binding with an alert on, with its key, in one query, and measures each key once. An
  armed alert whose key has reached it is **claimed** by a conditional update (only one
  of two concurrent checks can set a stamp that was None) and its email is enqueued once
  the claim has committed (``client_alert_send_task``). A claimed alert whose key is back
  below it (a top-up, a raised cap, a new budget period) is **re-armed** (stamp cleared),
  so the next crossing sends again: once per crossing.
* ``alert_send`` (the task) sends only for the claim it was enqueued for: the stamp it
  carries must still be on the binding, so an alert turned off, changed or re-armed
  meanwhile sends nothing, and it moves the stamp on (a second conditional update) before
  sending, so a task run twice sends once. A send that keeps failing (SMTP down) gives
  the claim back (``alert_claim_release``) and the next check claims it again.
* ``alert_preferences_set`` (the key page's form) changes the choices; a changed choice
  starts armed.

Emails speak for the reseller (its display name, Reply-To its support email) and show the
key's money in client prices only: budget, spent, remaining; never its cost or profit.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Collection
from datetime import datetime
from email.headerregistry import Address
from email.utils import parseaddr
from functools import partial

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db import models, transaction
from django.db.models import Q
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from alerts.emails import CAP_PERIOD_PHRASE
from keys.models import ClientKey
from keys.selectors import KeyUse, key_use
from portal.figures import ClientKeyFigures, client_key_figures
from portal.models import PortalBinding

logger = logging.getLogger(__name__)

# The share the client may choose, in whole percent of the budget (or cap); the model's
# check constraint says the same. (The form suggests 50, 80 and 90.) What a key has used
# is ``keys.selectors.key_use``, compared exactly (``KeyUse.has_reached``).
PERCENT_MIN = 1
PERCENT_MAX = 100

# Bindings read per round trip by the check (the scan streams, it never holds all rows).
CHECK_CHUNK_SIZE = 500

EMAIL_TEMPLATES = "portal/email"
# The sender's name when the reseller's cannot be shown safely (see ``sender_name``).
FALLBACK_SENDER_NAME = "Tollgate"
SENDER_NAME_MAX_LENGTH = 78


class AlertKind(models.TextChoices):
    PERCENT = "percent", "Share of the budget"
    EXHAUSTED = "exhausted", "Budget exhausted"


# Each kind's stamp on the binding: when its alert was claimed for the current crossing.
STAMP_FIELD = {
    AlertKind.PERCENT: "percent_alerted_at",
    AlertKind.EXHAUSTED: "exhausted_alerted_at",
}


class AlertSendOutcome(models.TextChoices):
    """What ``alert_send`` did (logged by the task)."""

    SENT = "sent", "Sent"
    GONE = "gone", "The binding or its key is gone"
    OFF = "off", "The alert was turned off"
    RECLAIMED = "reclaimed", "The claim was re-armed or replaced"
    BELOW = "below", "The key is back below the alert"


class AlertChoiceInvalid(ValueError):
    """A choice the alert form cannot save; ``field`` names the input (None: the form)."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field


def _has_reached(binding: PortalBinding, kind: AlertKind, use: KeyUse | None) -> bool:
    if use is None:
        return False
    if kind == AlertKind.PERCENT:
        return binding.alert_percent is not None and use.has_reached(binding.alert_percent)
    return use.is_exhausted


def _is_on(binding: PortalBinding, kind: AlertKind) -> bool:
    if kind == AlertKind.PERCENT:
        return binding.alert_percent is not None
    return binding.alert_exhausted


def _enqueue_send(binding_id: int, kind: str, claimed_at: datetime) -> None:
    # Tasks import this module; the task module is imported only when there is work.
    from portal.tasks import client_alert_send_task

    try:
        client_alert_send_task.delay(binding_id, kind, claimed_at.isoformat())
    except Exception:
        # Not enqueued (the broker out of reach) or, with tasks run in process
        # (development), not sent: no task holds the claim, so it goes back and the next
        # check claims the alert again. The other claims of this check carry on.
        alert_claim_release(binding_id=binding_id, kind=kind, claimed_at=claimed_at)
        logger.exception("Client alert %s of binding %s not sent; claim released", kind, binding_id)


def client_alerts_check(
    *, key_ids: Collection[int] | None = None, now: datetime | None = None
) -> list[tuple[int, AlertKind]]:
    """Claim every armed alert whose key has reached it, and enqueue its email once the
    claim has committed; re-arm every claimed alert whose key is back below it. Keys
    measured at ``now`` (default: now); only ``key_ids`` when given. Deleted keys are left
    alone. Returns the (binding id, kind) pairs claimed by this run, whose emails it sent.

    Safe to re-run and to run twice at once: an alert is claimed by one conditional update,
    so it is sent once per crossing whoever runs the check.
    """
    now = now or timezone.now()
    bindings = (
        PortalBinding.objects.filter(Q(alert_percent__isnull=False) | Q(alert_exhausted=True))
        .exclude(key__status=ClientKey.Status.DELETED)
        .select_related("key")
        .order_by("key_id", "pk")
    )
    if key_ids is not None:
        bindings = bindings.filter(key_id__in=list(key_ids))
    uses: dict[int, KeyUse | None] = {}
    claimed: list[tuple[int, AlertKind]] = []
    for binding in bindings.iterator(chunk_size=CHECK_CHUNK_SIZE):
        if binding.key_id not in uses:
            uses[binding.key_id] = key_use(key=binding.key, now=now)
        use = uses[binding.key_id]
        for kind in AlertKind:
            stamp_field = STAMP_FIELD[kind]
            stamp = getattr(binding, stamp_field)
            reached = _has_reached(binding, kind, use)
            if stamp is None and reached and _is_on(binding, kind):
                if _claim(binding, kind):
                    claimed.append((binding.pk, kind))
            elif stamp is not None and not reached:
                # Re-arm: cleared only if the stamp is still the one read with the key in
                # one statement (one snapshot), which proves the key was below the alert
                # *after* that claim was made, so the next crossing is a new one. A claim
                # made since (another check, another crossing, its email sent) has another
                # stamp and is left alone.
                PortalBinding.objects.filter(pk=binding.pk, **{stamp_field: stamp}).update(
                    **{stamp_field: None}
                )
    return claimed


def _claim(binding: PortalBinding, kind: AlertKind) -> bool:
    """Claim ``kind`` of ``binding`` for this crossing; enqueue its email on commit."""
    stamp_field = STAMP_FIELD[kind]
    claimed_at = timezone.now()
    # The claim: only an armed alert (stamp None), with the choice this check measured
    # against, becomes claimed. Two checks that both saw the key cross race here and one
    # update matches the row: one email per crossing. A choice changed meanwhile
    # (``alert_preferences_set``) no longer matches, and the next check measures it anew.
    choice = (
        {"alert_percent": binding.alert_percent}
        if kind == AlertKind.PERCENT
        else {"alert_exhausted": True}
    )
    updated = PortalBinding.objects.filter(
        pk=binding.pk, **{f"{stamp_field}__isnull": True}, **choice
    ).update(**{stamp_field: claimed_at})
    if updated != 1:
        return False
    transaction.on_commit(partial(_enqueue_send, binding.pk, kind.value, claimed_at))
    return True


def alert_claim_release(*, binding_id: int, kind: str, claimed_at: datetime) -> bool:
    """Give back a claim whose email could not be sent, so the next check claims it again
    (if the key is still past the alert). Returns whether it was still this claim."""
    stamp_field = STAMP_FIELD[AlertKind(kind)]
    # Only this claim: one made since (re-armed and crossed again) has its own email.
    released = PortalBinding.objects.filter(pk=binding_id, **{stamp_field: claimed_at}).update(
        **{stamp_field: None}
    )
    return released == 1


@transaction.atomic
def alert_preferences_set(
    *, binding: PortalBinding, percent: int | None, exhausted: bool
) -> PortalBinding:
    """Save the client's alert choices for the key of ``binding``: an email at ``percent``
    % of its budget (1–100; None: none) and one when it is exhausted. A choice that
    changes starts armed (the next check sends it if the key is already past it); one that
    stays keeps its state. Raises AlertChoiceInvalid (nothing saved)."""
    if percent is not None and not PERCENT_MIN <= percent <= PERCENT_MAX:
        raise AlertChoiceInvalid(
            "alert_percent", f"Choose a whole number from {PERCENT_MIN} to {PERCENT_MAX}."
        )
    # The binding's row locked (not its key's, which requests keep busy), so the choices
    # are compared with the row as it is, and a check's claim (an update of this row)
    # waits: it then sees the new choice and stamp.
    current = (
        PortalBinding.objects.select_for_update(of=("self",))
        .select_related("key")
        .get(pk=binding.pk)
    )
    turning_on = (percent is not None and percent != current.alert_percent) or (
        exhausted and not current.alert_exhausted
    )
    if turning_on and current.key.status == ClientKey.Status.DELETED:
        raise AlertChoiceInvalid(None, "This key is deleted: it sends no more alerts.")
    changes: dict[str, object] = {"alert_percent": percent, "alert_exhausted": exhausted}
    if percent != current.alert_percent:
        changes["percent_alerted_at"] = None
    if exhausted != current.alert_exhausted:
        changes["exhausted_alerted_at"] = None
    PortalBinding.objects.filter(pk=current.pk).update(**changes)
    current.refresh_from_db()
    return current


# ----------------------------------------------------------------------------- the email


def sender_name(reseller_name: str) -> str:
    """The From name of a reseller's alerts: its display name when that reads as a name,
    else ``DEFAULT_FROM_EMAIL``'s own name (or Tollgate). Not shown: a name that holds an
    ``@`` (it could pose as another address), angle brackets, control characters, or one
    too long for a header line."""
    name = " ".join(reseller_name.split())
    if (
        name
        and len(name) <= SENDER_NAME_MAX_LENGTH
        and not any(c in name for c in "@<>")
        and not any(unicodedata.category(c).startswith("C") for c in name)
    ):
        return name
    default_name, _ = parseaddr(settings.DEFAULT_FROM_EMAIL)
    return default_name or FALLBACK_SENDER_NAME


def _from_email(reseller_name: str) -> str:
    _, address = parseaddr(settings.DEFAULT_FROM_EMAIL)
    return str(Address(display_name=sender_name(reseller_name), addr_spec=address))


def portal_url(path: str) -> str:
    """An absolute link into the portal for an email (``PUBLIC_URL`` + path)."""
    return f"{settings.PUBLIC_URL.rstrip('/')}{path}"


def alert_message(
    *, binding: PortalBinding, kind: AlertKind, figures: ClientKeyFigures
) -> EmailMultiAlternatives:
    """The alert email of ``kind`` to the client of ``binding``, from ``figures`` (client
    prices only), under the reseller's name."""
    key = figures.key
    context = {
        "kind": kind.value,
        "percent": binding.alert_percent,
        "figures": figures,
        "key": key,
        "reseller_name": figures.reseller_name,
        "support_email": figures.support_email,
        "is_cap": not key.is_prepaid,
        "period_phrase": CAP_PERIOD_PHRASE.get(key.budget_period, ""),
        "key_url": portal_url(f"/portal/keys/{key.pk}/"),
        "alerts_url": portal_url(reverse("portal:key-alerts", args=[key.pk])),
        "email": binding.client.email,
    }
    # A header holds no newline; a template's line breaks are no part of the subject.
    subject = " ".join(render_to_string(f"{EMAIL_TEMPLATES}/alert_subject.txt", context).split())
    message = EmailMultiAlternatives(
        subject=subject,
        body=render_to_string(f"{EMAIL_TEMPLATES}/alert_message.txt", context),
        from_email=_from_email(figures.reseller_name),
        to=[binding.client.email],
        reply_to=[figures.support_email] if figures.support_email else None,
    )
    message.attach_alternative(
        render_to_string(f"{EMAIL_TEMPLATES}/alert_message.html", context), "text/html"
    )
    return message


def alert_send(*, binding_id: int, kind: str, claimed_at: datetime) -> AlertSendOutcome:
    """Send the email of the alert claimed at ``claimed_at`` (``client_alerts_check``),
    unless the binding is gone (unbound, key deleted), the alert was turned off, its claim
    re-armed or replaced, or its email sent already, or the key is back below it (the next
    check re-arms it). Sending errors propagate (the task retries them), the claim intact.

    Sent at most once per claim: the send claims the alert's stamp (``claimed_at`` → the
    time it is sent), so a second run finds another stamp. A worker that dies between
    that claim and the mail server's answer loses that email.
    """
    alert = AlertKind(kind)
    stamp_field = STAMP_FIELD[alert]
    binding = (
        PortalBinding.objects.select_related("client", "key", "key__tenant")
        .filter(pk=binding_id)
        .first()
    )
    if binding is None or binding.key.status == ClientKey.Status.DELETED:
        return AlertSendOutcome.GONE
    if not _is_on(binding, alert):
        return AlertSendOutcome.OFF
    if getattr(binding, stamp_field) != claimed_at:
        return AlertSendOutcome.RECLAIMED
    now = timezone.now()
    if not _has_reached(binding, alert, key_use(key=binding.key, now=now)):
        return AlertSendOutcome.BELOW
    (figures,) = client_key_figures(keys=[binding.key], now=now)
    message = alert_message(binding=binding, kind=alert, figures=figures)
    sent_at = timezone.now()
    # The send's claim: of two runs of one send (a message delivered twice, a task run
    # again) only one moves the stamp on from the check's claim, and only that one sends.
    claimed = PortalBinding.objects.filter(pk=binding.pk, **{stamp_field: claimed_at}).update(
        **{stamp_field: sent_at}
    )
    if claimed != 1:
        return AlertSendOutcome.RECLAIMED
    try:
        message.send()
    except Exception:
        # Not sent: the claim goes back to the check's, for the task's next try (or for
        # ``alert_claim_release`` after its last).
        PortalBinding.objects.filter(pk=binding.pk, **{stamp_field: sent_at}).update(
            **{stamp_field: claimed_at}
        )
        raise
    return AlertSendOutcome.SENT
