"""The Stripe webhook endpoint, ``POST /billing/stripe/webhook/``: Stripe's servers, not a
browser, call it, so it has no session, no CSRF token and no page; it translates the
delivery into ``billing.stripe_webhooks`` and its outcome into a status code."""

from __future__ import annotations

import logging

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from billing.exceptions import StripeWebhookRefused
from billing.stripe_webhooks import stripe_webhook_receive

logger = logging.getLogger(__name__)


# Safe: the signature over the raw body, not a cookie, says who is calling.
@csrf_exempt
@require_POST
def stripe_webhook(request: HttpRequest) -> JsonResponse:
    """200 when the event is handled (or was before, or is not Tollgate's, or names a
    top-up it disagrees with: no retry would help); 500 when handling failed and Stripe
    should send it again; 400 for a delivery that is not a genuine, recent Stripe event."""
    try:
        received = stripe_webhook_receive(
            payload=request.body, signature=request.headers.get("Stripe-Signature")
        )
    except StripeWebhookRefused as exc:
        logger.warning("Stripe webhook refused: %s", exc)
        return JsonResponse({"detail": str(exc), "code": exc.code}, status=400)
    event = received.event
    body = {"id": event.event_id, "status": event.status}
    return JsonResponse(body, status=500 if received.is_retry_wanted else 200)
