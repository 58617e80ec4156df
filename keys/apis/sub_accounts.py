"""The sub-account API's lifecycle under ``/v1/`` (PRODUCT.md §5): create, list, read,
change and delete. A sub-account is a wallet-funded key at price ratio 1, so what its
client is charged is what the reseller pays, and the API speaks one amount in integer
cents. Its usage reports (``/v1/sub-accounts/{id}/usage``, ``/v1/usage/by-tag``) are in
``usage.apis``.

Validate → selector or service → serialize, nothing else. Sub-accounts are reached through
``keys.selectors`` with the caller's tenant (another tenant's key, or a prepaid or
marked-up key, answers 404); writes go through ``keys.services``. Money is nano-dollars
inside and whole cents outside (``billing.serializers.CentsField``: half up).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import request_actor, request_tenant
from billing.money import MAX_AMOUNT_NANOS, NANOS_PER_CENT, cents_to_nanos
from billing.serializers import CentsField
from config.openapi import PAGE_PARAMETERS, error_responses, paginated
from config.pagination import Pagination
from config.serializers import StrictCharField, StrictInputSerializer, StrictIntegerField
from keys.models import TAG_MAX_LENGTH, ClientKey
from keys.selectors import sub_account_get, sub_account_list
from keys.services import MAX_LIMIT, key_create, key_delete, key_update

SUB_ACCOUNT_NAME_MAX_LENGTH = 200
MAX_SPEND_CAP_CENTS = MAX_AMOUNT_NANOS // NANOS_PER_CENT


class SubAccountOutputSerializer(serializers.Serializer):
    """The sub-account object; its instance is the wallet-funded ``ClientKey``.

    ``spend_cap_cents`` is null without a cap; ``spent_cents`` is all the client price
    it has been charged.
    """

    id = serializers.IntegerField()
    name = serializers.CharField(source="label")
    spend_cap_cents = CentsField(source="spend_cap_nanos", allow_null=True)
    rate_limit_rpm = serializers.IntegerField(source="requests_per_minute")
    default_tag = serializers.CharField()
    status = serializers.CharField(source="effective_status")
    spent_cents = CentsField(source="client_spent_nanos")
    created_at = serializers.DateTimeField()


class SubAccountCreateApi(APIView):
    """``POST /v1/sub-accounts``: a wallet-funded key at ratio 1:1, drawing live from the
    wallet up to ``spend_cap_cents`` (no cap when left out or null). The answer carries
    the secret as ``key``; no other response shows it."""

    class InputSerializer(StrictInputSerializer):
        name = StrictCharField(max_length=SUB_ACCOUNT_NAME_MAX_LENGTH)
        spend_cap_cents = StrictIntegerField(
            min_value=0, max_value=MAX_SPEND_CAP_CENTS, allow_null=True, default=None
        )
        rate_limit_rpm = StrictIntegerField(
            min_value=1, max_value=MAX_LIMIT, default=settings.DEFAULT_KEY_RPM
        )
        default_tag = StrictCharField(max_length=TAG_MAX_LENGTH, allow_blank=True, default="")

    # The schema's account of the answer, which ``post`` builds as the sub-account + ``key``.
    class ResponseSerializer(SubAccountOutputSerializer):
        """A new sub-account and its secret."""

        key = serializers.CharField(help_text="The secret client key, shown only here.")

    @extend_schema(
        summary="Create a sub-account",
        tags=["sub-accounts"],
        request=InputSerializer,
        examples=[
            OpenApiExample(
                "Twenty-five dollars a month",
                value={"name": "team-a", "spend_cap_cents": 2500, "rate_limit_rpm": 60},
                request_only=True,
            ),
        ],
        responses={201: ResponseSerializer, **error_responses(400)},
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        cap = data["spend_cap_cents"]
        issued = key_create(
            tenant=request_tenant(request),
            actor=request_actor(request),
            label=data["name"],
            funding=ClientKey.Funding.WALLET,
            spend_cap_nanos=None if cap is None else cents_to_nanos(cap),
            rpm=data["rate_limit_rpm"],
            default_tag=data["default_tag"],
        )
        body = {**SubAccountOutputSerializer(issued.key).data, "key": issued.secret}
        return Response(body, status=status.HTTP_201_CREATED)


class SubAccountListApi(APIView):
    """``GET /v1/sub-accounts``: the tenant's sub-accounts, newest first, paginated."""

    @extend_schema(
        summary="List sub-accounts",
        tags=["sub-accounts"],
        parameters=PAGE_PARAMETERS,
        responses={200: paginated(SubAccountOutputSerializer), **error_responses(400, 404)},
    )
    def get(self, request: Request) -> Response:
        paginator = Pagination()
        page = paginator.paginate_queryset(
            sub_account_list(tenant=request_tenant(request)), request, view=self
        )
        return paginator.get_paginated_response(SubAccountOutputSerializer(page, many=True).data)


class SubAccountDetailApi(APIView):
    """``GET /v1/sub-accounts/{id}``: one sub-account (a deleted one shows ``deleted``)."""

    @extend_schema(
        summary="Read a sub-account",
        tags=["sub-accounts"],
        responses={200: SubAccountOutputSerializer, **error_responses(404)},
    )
    def get(self, request: Request, key_id: int) -> Response:
        key = sub_account_get(tenant=request_tenant(request), key_id=key_id)
        return Response(SubAccountOutputSerializer(key).data)


class SubAccountUpdateApi(APIView):
    """``PATCH /v1/sub-accounts/{id}``: change ``name``, ``spend_cap_cents`` (null: no cap),
    ``rate_limit_rpm`` or ``default_tag``; only the fields sent change."""

    class InputSerializer(StrictInputSerializer):
        name = StrictCharField(max_length=SUB_ACCOUNT_NAME_MAX_LENGTH, required=False)
        spend_cap_cents = StrictIntegerField(
            min_value=0, max_value=MAX_SPEND_CAP_CENTS, allow_null=True, required=False
        )
        rate_limit_rpm = StrictIntegerField(min_value=1, max_value=MAX_LIMIT, required=False)
        default_tag = StrictCharField(max_length=TAG_MAX_LENGTH, allow_blank=True, required=False)

    @extend_schema(
        summary="Change a sub-account",
        tags=["sub-accounts"],
        request=InputSerializer,
        responses={200: SubAccountOutputSerializer, **error_responses(400, 404, 409)},
    )
    def patch(self, request: Request, key_id: int) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        changes: dict[str, Any] = {}
        if "name" in data:
            changes["label"] = data["name"]
        if "spend_cap_cents" in data:
            cap = data["spend_cap_cents"]
            changes["spend_cap"] = None if cap is None else cents_to_nanos(cap)
        if "rate_limit_rpm" in data:
            changes["rpm"] = data["rate_limit_rpm"]
        if "default_tag" in data:
            changes["default_tag"] = data["default_tag"]
        tenant = request_tenant(request)
        key = sub_account_get(tenant=tenant, key_id=key_id)
        key = key_update(
            tenant=tenant, actor=request_actor(request), key_id=key.pk, changes=changes
        )
        return Response(SubAccountOutputSerializer(key).data)


class SubAccountDeleteApi(APIView):
    """``DELETE /v1/sub-accounts/{id}``: the key stops working at once; 204. A wallet-funded
    key set nothing aside, so nothing is refunded. A second delete is a 409."""

    @extend_schema(
        summary="Delete a sub-account",
        tags=["sub-accounts"],
        responses={204: None, **error_responses(404, 409)},
    )
    def delete(self, request: Request, key_id: int) -> Response:
        tenant = request_tenant(request)
        key = sub_account_get(tenant=tenant, key_id=key_id)
        key_delete(tenant=tenant, actor=request_actor(request), key_id=key.pk)
        return Response(status=status.HTTP_204_NO_CONTENT)
