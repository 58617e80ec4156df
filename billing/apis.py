"""Reseller REST API for the wallet, its ledger and its card top-ups, always the caller's
tenant: validate → service → serialize (house rule 15)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import request_actor, request_tenant
from billing.models import LedgerEntry, TopUp, Wallet
from billing.selectors import ledger_entries, top_up_get, top_up_list, wallet_for_tenant
from billing.serializers import CURRENCY, UsdField
from billing.top_ups import top_up_create
from config.openapi import PAGE_PARAMETERS, error_responses, paginated
from config.pagination import Pagination
from config.serializers import StrictInputSerializer, StrictQuerySerializer


class WalletDetailApi(APIView):
    """``GET /api/v1/wallet``: balance, what in-flight requests hold, and what is left."""

    class OutputSerializer(serializers.Serializer):
        balance = UsdField(source="balance_nanos")
        reserved = UsdField(source="reserved_nanos")
        available = UsdField(source="available_nanos")
        currency = serializers.SerializerMethodField()

        def get_currency(self, wallet: Wallet) -> str:
            return CURRENCY

    @extend_schema(
        summary="The wallet",
        tags=["wallet"],
        responses={200: OutputSerializer, **error_responses()},
    )
    def get(self, request: Request) -> Response:
        wallet = wallet_for_tenant(tenant=request_tenant(request))
        return Response(self.OutputSerializer(wallet).data)


class LedgerEntryListApi(APIView):
    """``GET /api/v1/wallet/ledger``: every balance change, newest first, paginated;
    ``?kind=`` keeps one kind. Amounts are signed: debits are negative."""

    class FilterSerializer(StrictQuerySerializer):
        kind = serializers.ChoiceField(choices=LedgerEntry.Kind.choices, required=False)

    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        kind = serializers.CharField()
        amount = UsdField(source="amount_nanos")
        balance_after = UsdField(source="balance_after_nanos")
        reason = serializers.CharField()
        reference = serializers.CharField()
        key_id = serializers.IntegerField(source="client_key_id", allow_null=True)
        created_at = serializers.DateTimeField()

    @extend_schema(
        summary="The wallet's ledger",
        tags=["wallet"],
        parameters=[FilterSerializer, *PAGE_PARAMETERS],
        responses={200: paginated(OutputSerializer), **error_responses(400, 404)},
    )
    def get(self, request: Request) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        entries = ledger_entries(
            tenant=request_tenant(request), kind=filters.validated_data.get("kind")
        )
        paginator = Pagination()
        page = paginator.paginate_queryset(entries, request, view=self)
        return paginator.get_paginated_response(self.OutputSerializer(page, many=True).data)


# ----------------------------------------------------------------------------- card top-ups


class TopUpOutputSerializer(serializers.Serializer):
    """A card top-up. ``amount`` is what the wallet is credited, ``fee`` the operator's fee
    on it, ``total`` what the card pays. ``status``: ``pending`` until Stripe's webhook says
    the checkout was paid (``credited``), or it expired or failed. ``refunded`` and
    ``disputed`` are Stripe's figures; ``taken_back`` what they took from the wallet,
    ``dispute_returned`` what a won dispute gave back, ``shortfall`` what they could not
    take yet (collected from the next top-up), and ``to_earlier_shortfall`` what this
    top-up's credit paid towards earlier top-ups' shortfall."""

    id = serializers.IntegerField()
    amount = UsdField(source="amount_nanos")
    fee = UsdField(source="fee_nanos")
    total = UsdField(source="total_nanos")
    currency = serializers.SerializerMethodField()
    status = serializers.ChoiceField(choices=TopUp.Status.choices)
    checkout_url = serializers.SerializerMethodField(
        help_text="Stripe's checkout page to pay at; null until Stripe opened it."
    )
    stripe_session_id = serializers.CharField(allow_null=True)
    error = serializers.CharField(help_text="Why it failed or expired; empty otherwise.")
    refunded = UsdField(source="refunded_nanos")
    disputed = UsdField(source="disputed_nanos")
    taken_back = UsdField(source="reversed_nanos")
    dispute_returned = UsdField(
        source="reinstated_nanos",
        help_text="What a won dispute gave back to the wallet.",
    )
    shortfall = UsdField(
        source="shortfall_nanos",
        help_text=(
            "What a refund or dispute could not take back (the wallet no longer had it); "
            "collected from the next top-up."
        ),
    )
    to_earlier_shortfall = UsdField(
        source="earlier_shortfall_paid_nanos",
        help_text=(
            "What this top-up's credit paid towards earlier top-ups' shortfall, out of amount."
        ),
    )
    created_at = serializers.DateTimeField()
    credited_at = serializers.DateTimeField(allow_null=True)

    def get_currency(self, top_up: TopUp) -> str:
        return CURRENCY

    def get_checkout_url(self, top_up: TopUp) -> str | None:
        return top_up.checkout_url or None


class TopUpCreateApi(APIView):
    """``POST /api/v1/wallet/top-ups``: open a card top-up of ``amount`` (USD, whole cents,
    within the operator's minimum and maximum). Answers the pending top-up with Stripe's
    ``checkout_url``, where it is paid; the wallet is credited when Stripe's webhook says
    so. 503 when this server has no Stripe key; 502 when Stripe refused or did not answer
    (the top-up is left ``failed``, nothing charged)."""

    class InputSerializer(StrictInputSerializer):
        amount = UsdField()

    @extend_schema(
        summary="Top up the wallet by card",
        tags=["wallet"],
        request=InputSerializer,
        examples=[OpenApiExample("Fifty dollars", value={"amount": "50.00"}, request_only=True)],
        responses={201: TopUpOutputSerializer, **error_responses(400, 502, 503)},
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        top_up = top_up_create(
            tenant=request_tenant(request),
            actor=request_actor(request),
            amount_nanos=serializer.validated_data["amount"],
        )
        return Response(TopUpOutputSerializer(top_up).data, status=status.HTTP_201_CREATED)


class TopUpListApi(APIView):
    """``GET /api/v1/wallet/top-ups``: the tenant's card top-ups, newest first, paginated."""

    @extend_schema(
        summary="List card top-ups",
        tags=["wallet"],
        parameters=PAGE_PARAMETERS,
        responses={200: paginated(TopUpOutputSerializer), **error_responses(400, 404)},
    )
    def get(self, request: Request) -> Response:
        paginator = Pagination()
        page = paginator.paginate_queryset(
            top_up_list(tenant=request_tenant(request)), request, view=self
        )
        return paginator.get_paginated_response(TopUpOutputSerializer(page, many=True).data)


class TopUpDetailApi(APIView):
    """``GET /api/v1/wallet/top-ups/{id}``: one of the tenant's top-ups (404 for any other)."""

    @extend_schema(
        summary="A card top-up",
        tags=["wallet"],
        responses={200: TopUpOutputSerializer, **error_responses(404)},
    )
    def get(self, request: Request, top_up_id: int) -> Response:
        top_up = top_up_get(tenant=request_tenant(request), top_up_id=top_up_id)
        return Response(TopUpOutputSerializer(top_up).data)
