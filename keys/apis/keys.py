"""Reseller REST API for client keys: validate → service → serialize, nothing else.

Shapes are checked here; key rules (amounts, ratio, limits, models, states) belong to
``keys.services``, whose domain errors ``config.exceptions`` turns into 400 / 402 / 409.
Every key is reached through ``keys.selectors`` with the caller's tenant, so another
tenant's key id answers 404.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.utils import timezone
from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import request_actor, request_tenant
from billing.money import format_usd
from billing.serializers import UsdField
from config.openapi import PAGE_PARAMETERS, error_responses, paginated
from config.pagination import Pagination
from config.serializers import (
    StrictCharField,
    StrictInputSerializer,
    StrictIntegerField,
    StrictQuerySerializer,
)
from keys.models import ClientKey
from keys.selectors import LISTABLE_STATUSES, key_figures, key_get, key_list
from keys.services import key_create, key_delete, key_top_up, key_update

# Sent to PATCH, these answer 400: a key's funding and price ratio never change.
FIXED_AT_CREATION = frozenset({"funding", "client_budget", "your_cost", "ratio", "margin"})
MODEL_NAME_MAX_LENGTH = 200


class KeyLimitsSerializer(serializers.Serializer):
    rpm = serializers.IntegerField(source="requests_per_minute")
    tpm = serializers.IntegerField(source="tokens_per_minute", allow_null=True)
    max_concurrency = serializers.IntegerField()
    models = serializers.ListField(source="allowed_models", child=serializers.CharField())
    expires_at = serializers.DateTimeField(allow_null=True)


class KeyOutputSerializer(serializers.Serializer):
    """The key object of every key endpoint; its instance is a ``keys.selectors.KeyFigures``.

    Money is a decimal string; ``client_budget`` is null for wallet-funded keys and
    ``client_remaining`` is null for a wallet-funded key without a spend cap.
    """

    id = serializers.IntegerField(source="key.id")
    label = serializers.CharField(source="key.label")  # type: ignore[assignment]
    prefix = serializers.CharField(source="key.prefix")
    last4 = serializers.CharField(source="key.last4")
    display = serializers.CharField(source="key.display_key")
    funding = serializers.CharField(source="key.funding")
    ratio = serializers.CharField()
    margin = serializers.CharField()
    margin_percent = serializers.CharField()
    client_budget = UsdField(source="client_budget_nanos", allow_null=True)
    client_spent = UsdField(source="client_spent_nanos")
    client_reserved = UsdField(source="client_reserved_nanos")
    client_remaining = UsdField(source="client_remaining_nanos", allow_null=True)
    cost_funded = UsdField(source="cost_funded_nanos")
    cost_spent = UsdField(source="cost_spent_nanos")
    cost_refunded = UsdField(source="cost_refunded_nanos")
    profit = UsdField(source="profit_nanos")
    spend_cap = UsdField(source="spend_cap_nanos", allow_null=True)
    budget_period = serializers.CharField(source="key.budget_period")
    period_spent = UsdField(source="period_spent_nanos")
    status = serializers.CharField()
    default_tag = serializers.CharField(source="key.default_tag")
    limits = KeyLimitsSerializer(source="key")
    created_at = serializers.DateTimeField(source="key.created_at")
    updated_at = serializers.DateTimeField(source="key.updated_at")


def _key_object(key: ClientKey) -> dict[str, Any]:
    return KeyOutputSerializer(key_figures(key=key)).data


class KeyCreateApi(APIView):
    """``POST /api/v1/keys``: mint a key (a prepaid one is funded from the wallet at once).

    The answer carries the secret as ``key``; no other response ever shows it.
    """

    class InputSerializer(StrictInputSerializer):
        label = StrictCharField(max_length=200)  # type: ignore[assignment]
        funding = serializers.ChoiceField(
            choices=ClientKey.Funding.choices, default=ClientKey.Funding.PREPAID
        )
        client_budget = UsdField(allow_null=True, default=None)
        your_cost = UsdField(allow_null=True, default=None)
        spend_cap = UsdField(allow_null=True, default=None)
        budget_period = serializers.ChoiceField(
            choices=ClientKey.BudgetPeriod.choices, default=ClientKey.BudgetPeriod.NONE
        )
        rpm = StrictIntegerField(default=settings.DEFAULT_KEY_RPM)
        tpm = StrictIntegerField(allow_null=True, default=None)
        max_concurrency = StrictIntegerField(default=settings.DEFAULT_KEY_MAX_CONCURRENCY)
        models = serializers.ListField(
            child=StrictCharField(max_length=MODEL_NAME_MAX_LENGTH), default=list
        )
        expires_at = serializers.DateTimeField(allow_null=True, default=None)
        default_tag = StrictCharField(max_length=100, allow_blank=True, default="")

    # The schema's account of the answer, which ``post`` builds as the key object + ``key``.
    class ResponseSerializer(KeyOutputSerializer):
        """A new key: the key object and its secret."""

        key = serializers.CharField(help_text="The secret client key, shown only here.")

    @extend_schema(
        summary="Create a key",
        tags=["keys"],
        request=InputSerializer,
        examples=[
            OpenApiExample(
                "A prepaid key",
                value={"label": "acme-corp-prod", "client_budget": "100", "your_cost": "60"},
                request_only=True,
            ),
            OpenApiExample(
                "A wallet-funded key with a monthly cap",
                value={
                    "label": "acme-corp-staging",
                    "funding": "wallet",
                    "spend_cap": "25.00",
                    "budget_period": "monthly",
                    "rpm": 120,
                },
                request_only=True,
            ),
        ],
        responses={201: ResponseSerializer, **error_responses(400, 402)},
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        issued = key_create(
            tenant=request_tenant(request),
            actor=request_actor(request),
            label=data["label"],
            funding=data["funding"],
            client_budget_nanos=data["client_budget"],
            your_cost_nanos=data["your_cost"],
            spend_cap_nanos=data["spend_cap"],
            budget_period=data["budget_period"],
            rpm=data["rpm"],
            tpm=data["tpm"],
            max_concurrency=data["max_concurrency"],
            models=data["models"],
            expires_at=data["expires_at"],
            default_tag=data["default_tag"],
        )
        body = {**_key_object(issued.key), "key": issued.secret}
        return Response(body, status=status.HTTP_201_CREATED)


class KeyListApi(APIView):
    """``GET /api/v1/keys``: the tenant's keys, newest first, paginated.

    Deleted keys are left out unless ``?status=deleted`` asks for them.
    """

    class FilterSerializer(StrictQuerySerializer):
        status = serializers.ChoiceField(choices=LISTABLE_STATUSES, required=False)

    @extend_schema(
        summary="List keys",
        tags=["keys"],
        parameters=[FilterSerializer, *PAGE_PARAMETERS],
        responses={200: paginated(KeyOutputSerializer), **error_responses(400, 404)},
    )
    def get(self, request: Request) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        keys = key_list(tenant=request_tenant(request), status=filters.validated_data.get("status"))
        paginator = Pagination()
        page = paginator.paginate_queryset(keys, request, view=self)
        now = timezone.now()
        figures = [key_figures(key=key, now=now) for key in page or []]
        return paginator.get_paginated_response(KeyOutputSerializer(figures, many=True).data)


class KeyDetailApi(APIView):
    """``GET /api/v1/keys/{id}``: one key, deleted ones included (status ``deleted``)."""

    @extend_schema(
        summary="Read a key",
        tags=["keys"],
        responses={200: KeyOutputSerializer, **error_responses(404)},
    )
    def get(self, request: Request, key_id: int) -> Response:
        key = key_get(tenant=request_tenant(request), key_id=key_id)
        return Response(_key_object(key))


class KeyUpdateApi(APIView):
    """``PATCH /api/v1/keys/{id}``: change label, tag, limits, cap or status.

    Only the fields sent change. Funding and the price ratio are fixed at creation:
    sending them (or any unknown field) is a 400, so a typo never passes for success.
    """

    class InputSerializer(StrictInputSerializer):
        label = StrictCharField(max_length=200, required=False)  # type: ignore[assignment]
        default_tag = StrictCharField(max_length=100, allow_blank=True, required=False)
        rpm = StrictIntegerField(required=False)
        tpm = StrictIntegerField(allow_null=True, required=False)
        max_concurrency = StrictIntegerField(required=False)
        models = serializers.ListField(
            child=StrictCharField(max_length=MODEL_NAME_MAX_LENGTH), required=False
        )
        expires_at = serializers.DateTimeField(allow_null=True, required=False)
        spend_cap = UsdField(allow_null=True, required=False)
        budget_period = serializers.ChoiceField(
            choices=ClientKey.BudgetPeriod.choices, required=False
        )
        status = serializers.ChoiceField(
            choices=[ClientKey.Status.ACTIVE, ClientKey.Status.REVOKED], required=False
        )

        def unknown_field_message(self, name: str) -> str:
            if name in FIXED_AT_CREATION:
                return "Fixed when the key was created; create a new key to change it."
            return "Unknown field; it cannot be changed."

    @extend_schema(
        summary="Change a key",
        tags=["keys"],
        request=InputSerializer,
        examples=[
            OpenApiExample(
                "Raise the cap and the rate limit",
                value={"spend_cap": "50.00", "rpm": 300},
                request_only=True,
            ),
        ],
        responses={200: KeyOutputSerializer, **error_responses(400, 404, 409)},
    )
    def patch(self, request: Request, key_id: int) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        key = key_update(
            tenant=request_tenant(request),
            actor=request_actor(request),
            key_id=key_id,
            changes=dict(serializer.validated_data),
        )
        return Response(_key_object(key))


class KeyDeleteApi(APIView):
    """``DELETE /api/v1/keys/{id}``: the key stops working; a prepaid key's unspent cost goes
    back to the wallet, shown as ``refunded``. A second delete is a 409."""

    # The schema's account of the answer, which ``delete`` builds as the key object + ``refunded``.
    class ResponseSerializer(KeyOutputSerializer):
        """A deleted key: the key object and what its deletion refunded."""

        refunded = UsdField(help_text="The unspent cost returned to the wallet (0 if none).")

    @extend_schema(
        summary="Delete a key",
        tags=["keys"],
        responses={200: ResponseSerializer, **error_responses(404, 409)},
    )
    def delete(self, request: Request, key_id: int) -> Response:
        deleted = key_delete(
            tenant=request_tenant(request), actor=request_actor(request), key_id=key_id
        )
        body = {**_key_object(deleted.key), "refunded": format_usd(deleted.refunded_nanos)}
        return Response(body)


class KeyTopUpApi(APIView):
    """``POST /api/v1/keys/{id}/top-up``: raise a prepaid key's client budget by
    ``client_amount``; the wallet pays that amount × the key's ratio (402 if it cannot).
    Wallet-funded keys have no budget to top up (409)."""

    class InputSerializer(StrictInputSerializer):
        client_amount = UsdField()

    @extend_schema(
        summary="Top up a prepaid key",
        tags=["keys"],
        request=InputSerializer,
        examples=[
            OpenApiExample("Fifty dollars", value={"client_amount": "50"}, request_only=True)
        ],
        responses={200: KeyOutputSerializer, **error_responses(400, 402, 404, 409)},
    )
    def post(self, request: Request, key_id: int) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        key = key_top_up(
            tenant=request_tenant(request),
            actor=request_actor(request),
            key_id=key_id,
            client_amount_nanos=serializer.validated_data["client_amount"],
        )
        return Response(_key_object(key))
