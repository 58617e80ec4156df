"""Reseller REST API for alerts: the tenant's settings, the webhook's signing secret, a
key's own shares and the delivery log. Validate → service or selector → serialize.

Shapes are checked here; the rules (ranges, the webhook URL's) are ``alerts.services``',
whose ``AlertSettingsInvalid`` ``config.exceptions`` turns into a 400 naming the field.
Keys are reached through ``keys.selectors.key_get`` with the caller's tenant, so another
tenant's key id answers 404.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import request_actor, request_tenant
from alerts.emails import alert_summary
from alerts.models import (
    EMAIL_MAX_LENGTH,
    RUNWAY_DAYS_MAX,
    RUNWAY_DAYS_MIN,
    THRESHOLD_PERCENT_MAX,
    THRESHOLD_PERCENT_MIN,
    THRESHOLDS_MAX_COUNT,
    WEBHOOK_URL_MAX_LENGTH,
    AlertDelivery,
    AlertSettings,
)
from alerts.selectors import (
    KeyAlerts,
    alert_settings_get,
    delivery_list,
    email_recipient,
    key_alerts_get,
)
from alerts.services import (
    SettingsSaved,
    alert_settings_update,
    key_alerts_set,
    webhook_secret_rotate,
)
from billing.serializers import UsdField
from config.openapi import PAGE_PARAMETERS, error_responses, paginated
from config.pagination import Pagination
from config.serializers import (
    StrictBooleanField,
    StrictCharField,
    StrictInputSerializer,
    StrictIntegerField,
    StrictQuerySerializer,
)
from keys.selectors import key_get

TAG = "alerts"


def _percents(**kwargs: Any) -> serializers.ListField:
    return serializers.ListField(
        child=StrictIntegerField(min_value=THRESHOLD_PERCENT_MIN, max_value=THRESHOLD_PERCENT_MAX),
        max_length=THRESHOLDS_MAX_COUNT,
        **kwargs,
    )


class AlertSettingsOutputSerializer(serializers.Serializer):
    """The tenant's alert settings (the defaults until it changes one)."""

    key_thresholds = serializers.ListField(
        child=serializers.IntegerField(),
        help_text="Shares of a key's budget (prepaid) or spend cap (wallet-funded), in whole "
        "percent, that send an alert; a key's own shares replace them.",
    )
    wallet_balance_below = UsdField(
        allow_null=True, help_text="An alert when the wallet's available money is under this."
    )
    wallet_runway_days_below = serializers.IntegerField(
        allow_null=True,
        help_text="An alert when the wallet lasts fewer whole days than this at the last "
        "7 days' pace.",
    )
    email = serializers.BooleanField(help_text="Whether alerts are emailed.")
    email_to = serializers.CharField(
        allow_null=True, help_text="The address alerts go to; null: the account owner's."
    )
    email_recipient = serializers.CharField(help_text="Where alert emails go now.")
    webhook_url = serializers.CharField(allow_null=True)
    webhook_secret_hint = serializers.CharField(
        allow_null=True, help_text="The signing secret's last 4 characters (`…abcd`)."
    )
    webhook_secret = serializers.CharField(
        allow_null=True,
        help_text="The webhook's signing secret (`whsec_…`), only in the answer that made it "
        "(the first webhook URL, or a rotation); null otherwise.",
    )


def _settings_object(saved: SettingsSaved) -> dict[str, Any]:
    row: AlertSettings = saved.alert_settings
    body = {
        "key_thresholds": row.key_thresholds,
        "wallet_balance_below": row.wallet_balance_below_nanos,
        "wallet_runway_days_below": row.wallet_runway_days_below,
        "email": row.is_email_on,
        "email_to": row.email_to or None,
        "email_recipient": email_recipient(alert_settings=row, tenant=row.tenant),
        "webhook_url": row.webhook_url or None,
        "webhook_secret_hint": f"…{row.webhook_secret_last4}" if row.webhook_secret_last4 else None,
        "webhook_secret": saved.new_secret,
    }
    return AlertSettingsOutputSerializer(body).data


class AlertSettingsDetailApi(APIView):
    """``GET /api/v1/alerts/settings``: the tenant's alert settings."""

    @extend_schema(
        summary="Read the alert settings",
        tags=[TAG],
        responses={200: AlertSettingsOutputSerializer, **error_responses()},
    )
    def get(self, request: Request) -> Response:
        row = alert_settings_get(tenant=request_tenant(request))
        return Response(_settings_object(SettingsSaved(alert_settings=row)))


class AlertSettingsUpdateApi(APIView):
    """``PATCH /api/v1/alerts/settings``: change the alert settings; only the fields sent
    change, any other field is a 400 naming it.

    A webhook URL must be `https` and its host must resolve to public addresses only (no
    private, loopback, link-local, reserved or multicast one); the first one set makes the
    signing secret, shown in this answer only (`webhook_secret`).
    """

    class InputSerializer(StrictInputSerializer):
        key_thresholds = _percents(
            required=False,
            help_text="Whole percents of a key's budget or cap, each once; [] for none.",
        )
        wallet_balance_below = UsdField(allow_null=True, required=False)
        wallet_runway_days_below = StrictIntegerField(
            min_value=RUNWAY_DAYS_MIN, max_value=RUNWAY_DAYS_MAX, allow_null=True, required=False
        )
        email = StrictBooleanField(required=False)
        email_to = StrictCharField(
            max_length=EMAIL_MAX_LENGTH,
            allow_null=True,
            required=False,
            help_text="An email address; null for the account owner's.",
        )
        webhook_url = StrictCharField(
            max_length=WEBHOOK_URL_MAX_LENGTH,
            allow_null=True,
            required=False,
            help_text="An https URL; null removes the webhook.",
        )

    @extend_schema(
        summary="Change the alert settings",
        tags=[TAG],
        request=InputSerializer,
        examples=[
            OpenApiExample(
                "Warn at half and at the end of each key; a wallet under $50 or 3 days",
                value={
                    "key_thresholds": [50, 100],
                    "wallet_balance_below": "50.00",
                    "wallet_runway_days_below": 3,
                    "webhook_url": "https://example.com/hooks/tollgate",
                },
                request_only=True,
            ),
        ],
        responses={200: AlertSettingsOutputSerializer, **error_responses(400)},
    )
    def patch(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        saved = alert_settings_update(
            tenant=request_tenant(request),
            actor=request_actor(request),
            changes=dict(serializer.validated_data),
        )
        return Response(_settings_object(saved))


class WebhookSecretRotateApi(APIView):
    """``POST /api/v1/alerts/webhook-secret``: a new signing secret for the webhook,
    shown in this answer only (`webhook_secret`). Deliveries are signed with it from now
    on, retries of earlier alerts included."""

    @extend_schema(
        summary="Make a new webhook signing secret",
        tags=[TAG],
        request=None,
        responses={200: AlertSettingsOutputSerializer, **error_responses()},
    )
    def post(self, request: Request) -> Response:
        saved = webhook_secret_rotate(tenant=request_tenant(request), actor=request_actor(request))
        return Response(_settings_object(saved))


# ------------------------------------------------------------------------------ a key's


class KeyThresholdStateSerializer(serializers.Serializer):
    threshold = serializers.IntegerField(source="percent")
    crossed_at = serializers.DateTimeField(
        allow_null=True,
        help_text="When the key crossed it and its alert was sent; null: armed (it alerts "
        "when the key crosses it).",
    )


class KeyAlertsOutputSerializer(serializers.Serializer):
    """A key's alert shares; its instance is ``alerts.selectors.KeyAlerts``."""

    key_id = serializers.IntegerField(source="key.pk")
    thresholds = serializers.ListField(
        source="override",
        child=serializers.IntegerField(),
        allow_null=True,
        help_text="The key's own shares; null: the account's default.",
    )
    default_thresholds = serializers.ListField(source="default", child=serializers.IntegerField())
    effective_thresholds = serializers.ListField(
        source="effective", child=serializers.IntegerField()
    )
    states = KeyThresholdStateSerializer(many=True)


def _key_alerts_object(alerts: KeyAlerts) -> dict[str, Any]:
    return KeyAlertsOutputSerializer(alerts).data


class KeyAlertsDetailApi(APIView):
    """``GET /api/v1/keys/{id}/alerts``: the key's alert shares and where each stands."""

    @extend_schema(
        summary="Read a key's alerts",
        tags=[TAG],
        responses={200: KeyAlertsOutputSerializer, **error_responses(404)},
    )
    def get(self, request: Request, key_id: int) -> Response:
        tenant = request_tenant(request)
        key = key_get(tenant=tenant, key_id=key_id)
        return Response(_key_alerts_object(key_alerts_get(tenant=tenant, key=key)))


class KeyAlertsUpdateApi(APIView):
    """``PATCH /api/v1/keys/{id}/alerts``: the key's own shares (`[]` for no alerts about
    it), or null for the account's default again; without `thresholds` nothing changes. A
    deleted key's is a 409."""

    class InputSerializer(StrictInputSerializer):
        thresholds = _percents(
            allow_null=True,
            required=False,
            help_text="Whole percents of the key's budget or cap, each once; null: the "
            "account's default.",
        )

    @extend_schema(
        summary="Change a key's alerts",
        tags=[TAG],
        request=InputSerializer,
        examples=[
            OpenApiExample("Half, 90 % and the end", value={"thresholds": [50, 90, 100]}),
            OpenApiExample("The account's default", value={"thresholds": None}),
        ],
        responses={200: KeyAlertsOutputSerializer, **error_responses(400, 404, 409)},
    )
    def patch(self, request: Request, key_id: int) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        tenant = request_tenant(request)
        if "thresholds" not in serializer.validated_data:
            key = key_get(tenant=tenant, key_id=key_id)
            return Response(_key_alerts_object(key_alerts_get(tenant=tenant, key=key)))
        alerts = key_alerts_set(
            tenant=tenant,
            actor=request_actor(request),
            key_id=key_id,
            thresholds=serializer.validated_data["thresholds"],
        )
        return Response(_key_alerts_object(alerts))


# ------------------------------------------------------------------------ the delivery log


class AlertDeliveryOutputSerializer(serializers.Serializer):
    """One delivery of one alert on one channel; its instance is an ``AlertDelivery``."""

    id = serializers.IntegerField()
    event_id = serializers.CharField(
        source="event.public_id",
        help_text="The alert's id: the webhook's `id` and `Tollgate-Event-Id`, the same on "
        "both channels and every try.",
    )
    type = serializers.CharField(source="event.type")
    summary = serializers.SerializerMethodField()
    key_id = serializers.IntegerField(source="event.key_id", allow_null=True)
    channel = serializers.ChoiceField(choices=AlertDelivery.Channel.choices)
    status = serializers.ChoiceField(choices=AlertDelivery.Status.choices)
    attempts = serializers.IntegerField()
    target = serializers.CharField(help_text="The address or URL of the last try.")
    http_status = serializers.IntegerField(allow_null=True)
    last_error = serializers.CharField()
    created_at = serializers.DateTimeField()
    last_attempt_at = serializers.DateTimeField(allow_null=True)
    next_attempt_at = serializers.DateTimeField(
        allow_null=True, help_text="When it is tried next (pending or retrying)."
    )
    sent_at = serializers.DateTimeField(allow_null=True)

    def get_summary(self, delivery: AlertDelivery) -> str:
        """What it says, in one line (the email's subject)."""
        return alert_summary(delivery.event)


class AlertDeliveryListApi(APIView):
    """``GET /api/v1/alerts/deliveries``: every delivery of the tenant's alerts, newest
    first, paginated: sent, retrying (with the next try's time) or failed (with the last
    error)."""

    class FilterSerializer(StrictQuerySerializer):
        status = serializers.ChoiceField(choices=AlertDelivery.Status.choices, required=False)
        channel = serializers.ChoiceField(choices=AlertDelivery.Channel.choices, required=False)

    @extend_schema(
        summary="List alert deliveries",
        tags=[TAG],
        parameters=[FilterSerializer, *PAGE_PARAMETERS],
        responses={200: paginated(AlertDeliveryOutputSerializer), **error_responses(400, 404)},
    )
    def get(self, request: Request) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        deliveries = delivery_list(tenant=request_tenant(request), **filters.validated_data)
        paginator = Pagination()
        page = paginator.paginate_queryset(deliveries, request, view=self)
        return paginator.get_paginated_response(AlertDeliveryOutputSerializer(page, many=True).data)
