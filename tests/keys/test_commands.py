"""Operator commands of the keys app, through ``call_command``: deactivate_reseller /
activate_reseller (a reseller's API tokens and client keys stop and come back) and
check_ledger (the audit of wallets and keys together)."""

from __future__ import annotations

import json
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db.models import F

from accounts.models import Tenant
from accounts.selectors import api_token_authenticate
from billing.models import Wallet
from billing.money import parse_usd
from billing.selectors import wallet_for_tenant
from keys.models import ClientKey
from keys.services import key_create


def run(*args: str) -> dict[str, Any]:
    out = StringIO()
    call_command(*args, "--json", stdout=out)
    return json.loads(out.getvalue())


def run_text(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


# ------------------------------------------------------- deactivate_reseller / activate_reseller


def test_deactivate_then_activate_reseller_stop_and_restore_its_token(reseller, outsider):
    tenant, token = reseller
    key_create(tenant=tenant, actor=None, label="one", funding=ClientKey.Funding.WALLET)

    stopped = run("deactivate_reseller", "Alice@Example.com")

    assert stopped == {
        "tenant_id": tenant.pk,
        "email": "alice@example.com",
        "is_active": False,
        "changed": True,
        "active_keys": 1,
    }
    assert api_token_authenticate(secret=token.secret) is None
    assert api_token_authenticate(secret=outsider[1].secret) is not None

    restored = run("activate_reseller", "alice@example.com")

    assert (restored["is_active"], restored["changed"]) == (True, True)
    assert api_token_authenticate(secret=token.secret) is not None
    assert ClientKey.objects.get(tenant=tenant).status == ClientKey.Status.ACTIVE


def test_deactivate_and_activate_reseller_run_twice_change_nothing_the_second_time(reseller):
    run("deactivate_reseller", "alice@example.com")

    again = run("deactivate_reseller", "alice@example.com")

    assert (again["is_active"], again["changed"]) == (False, False)
    assert "was already suspended" in run_text("deactivate_reseller", "alice@example.com")
    assert Tenant.objects.get(pk=reseller[0].pk).is_active is False
    run("activate_reseller", "alice@example.com")
    assert run("activate_reseller", "alice@example.com")["changed"] is False
    assert "was already reinstated" in run_text("activate_reseller", "alice@example.com")


def test_deactivate_reseller_human_output_says_what_stops(reseller):
    tenant = reseller[0]

    out = run_text("deactivate_reseller", "alice@example.com")

    assert out.strip() == (
        f"Suspended alice@example.com (tenant id {tenant.pk}): its API tokens and "
        "0 active client key(s) now answer 401."
    )
    assert run_text("activate_reseller", "alice@example.com").startswith("Reinstated ")


@pytest.mark.parametrize("command", ["deactivate_reseller", "activate_reseller"])
def test_unknown_email_is_an_error_that_changes_nothing(reseller, command):
    with pytest.raises(CommandError, match="No reseller with email nobody@example.com"):
        call_command(command, "nobody@example.com", "--json", stdout=StringIO())
    assert Tenant.objects.get(pk=reseller[0].pk).is_active is True


# ----------------------------------------------------------------------------- check_ledger


class TestCheckLedger:
    def test_balanced_books_pass(self, outsider):
        assert run("check_ledger") == {"ok": True, "problems": []}
        assert "ledger ok" in run_text("check_ledger")

    def test_tampered_balance_exits_1_and_names_the_wallet(self, tenant, outsider):
        run("credit_wallet", "alice@example.com", "10", "--reason", "r")
        wallet = wallet_for_tenant(tenant=tenant)
        Wallet.objects.filter(pk=wallet.pk).update(balance_nanos=parse_usd("1000"))

        out = StringIO()
        with pytest.raises(CommandError, match="ledger audit failed") as excinfo:
            call_command("check_ledger", "--json", stdout=out)

        assert excinfo.value.returncode == 1
        report = json.loads(out.getvalue())
        assert report["ok"] is False
        assert {
            "check": "wallet_balance",
            "model": "wallet",
            "id": wallet.pk,
            "expected": "10.00",
            "actual": "1000.00",
        }.items() <= report["problems"][0].items()

    def test_human_output_lists_each_problem(self, tenant):
        Wallet.objects.filter(tenant=tenant).update(balance_nanos=5, reserved_nanos=1)
        out = StringIO()
        with pytest.raises(CommandError):
            call_command("check_ledger", stdout=out)
        assert "wallet_balance" in out.getvalue() and "wallet_reserved" in out.getvalue()

    def test_a_tampered_key_counter_fails_it_too(self, tenant):
        """The keys' counters are audited with the wallets: check_ledger runs both."""
        run("credit_wallet", "alice@example.com", "10", "--reason", "r")
        key = key_create(
            tenant=tenant,
            actor=None,
            label="prepaid",
            client_budget_nanos=parse_usd("5"),
            your_cost_nanos=parse_usd("3"),
        ).key
        ClientKey.objects.filter(pk=key.pk).update(
            client_budget_nanos=F("client_budget_nanos") + 1,
            cost_funded_nanos=F("cost_funded_nanos") + 1,
        )

        out = StringIO()
        with pytest.raises(CommandError, match="ledger audit failed"):
            call_command("check_ledger", "--json", stdout=out)

        (problem,) = json.loads(out.getvalue())["problems"]
        assert (problem["check"], problem["id"]) == ("key_cost_funded", key.pk)
