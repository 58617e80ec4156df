"""Operator commands of the billing app, through ``call_command`` as ``manage.py`` runs them."""

from __future__ import annotations

import json
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from accounts.models import ApiToken, Tenant
from accounts.selectors import api_token_authenticate
from billing import crypto
from billing.models import LedgerEntry, ModelPrice, ModelRoute, Upstream
from billing.money import parse_usd
from billing.selectors import price_current, wallet_for_tenant
from billing.services import price_set, upstream_save

OPENAI_URL = "https://api.openai.com/v1"


def run(*args: str, **options: Any) -> dict[str, Any]:
    """Run a command with ``--json`` and parse the one JSON object it prints."""
    out = StringIO()
    call_command(*args, "--json", stdout=out, **options)
    return json.loads(out.getvalue())


def run_text(*args: str, **options: Any) -> str:
    out = StringIO()
    call_command(*args, stdout=out, **options)
    return out.getvalue()


# ----------------------------------------------------------------------------- create_reseller


def test_create_reseller_prints_ids_and_a_working_token(db):
    result = run(
        "create_reseller", "new@example.com", "--password", "s3cret-pass", "--name", "Acme"
    )

    tenant = Tenant.objects.get(pk=result["id"])
    assert result["tenant_id"] == tenant.pk
    assert result["user_id"] == tenant.owner_id
    assert result["email"] == "new@example.com"
    assert result["api_token"].startswith("tgr-")
    assert tenant.name == "Acme"
    assert tenant.owner.check_password("s3cret-pass")
    assert wallet_for_tenant(tenant=tenant).balance_nanos == 0
    token = api_token_authenticate(secret=result["api_token"])
    assert token is not None and token.tenant_id == tenant.pk


def test_create_reseller_without_password_has_no_usable_password(db):
    result = run("create_reseller", "nopw@example.com")
    assert not Tenant.objects.get(pk=result["id"]).owner.has_usable_password()


def test_create_reseller_human_output_shows_the_token_once(db):
    text = run_text("create_reseller", "h@example.com")
    (token,) = ApiToken.objects.all()
    assert f"tenant id {token.tenant_id}" in text and "tgr-" in text


def test_create_reseller_refuses_an_existing_email(reseller):
    with pytest.raises(CommandError, match="already exists"):
        run("create_reseller", "ALICE@example.com")
    assert Tenant.objects.count() == 1


def test_create_reseller_refuses_an_invalid_email(db):
    with pytest.raises(CommandError, match="not a valid email"):
        run("create_reseller", "not-an-email")
    assert not Tenant.objects.exists()


# ----------------------------------------------------------------------------- credit_wallet


@pytest.mark.usefixtures("books_balance")
class TestCreditWallet:
    def test_credit_posts_an_entry_and_prints_decimal_strings(self, tenant):
        result = run("credit_wallet", "alice@example.com", "100", "--reason", "opening credit")

        entry = LedgerEntry.objects.get(pk=result["entry_id"])
        assert result == {
            "tenant_id": tenant.pk,
            "entry_id": entry.pk,
            "amount": "100.00",
            "balance": "100.00",
        }
        assert entry.kind == LedgerEntry.Kind.MANUAL_CREDIT
        assert entry.amount_nanos == parse_usd("100")
        assert entry.reason == "opening credit"

    def test_negative_adjustment_lowers_the_balance(self, tenant):
        run("credit_wallet", "alice@example.com", "10.50", "--reason", "credit")
        result = run(
            "credit_wallet", "alice@example.com", "-0.25", "--reason", "fix", "--kind", "adjustment"
        )
        assert result["amount"] == "-0.25"
        assert result["balance"] == "10.25"

    def test_idempotency_key_credits_once(self, tenant):
        first = run(
            "credit_wallet",
            "alice@example.com",
            "5",
            "--reason",
            "x",
            "--idempotency-key",
            "ticket-42",
        )
        second = run(
            "credit_wallet",
            "alice@example.com",
            "5",
            "--reason",
            "x",
            "--idempotency-key",
            "ticket-42",
        )
        assert first["entry_id"] == second["entry_id"]
        assert wallet_for_tenant(tenant=tenant).balance_nanos == parse_usd("5")

    def test_idempotency_key_of_another_credit_is_refused(self, tenant, outsider):
        run("credit_wallet", "alice@example.com", "5", "--reason", "x", "--idempotency-key", "k")
        with pytest.raises(CommandError, match="already used"):
            run(
                "credit_wallet",
                "mallory@example.com",
                "5",
                "--reason",
                "x",
                "--idempotency-key",
                "k",
            )
        with pytest.raises(CommandError, match="already used"):
            run(
                "credit_wallet", "alice@example.com", "6", "--reason", "x", "--idempotency-key", "k"
            )

    def test_human_output(self, tenant):
        text = run_text("credit_wallet", "alice@example.com", "1", "--reason", "r")
        assert "1.00 USD" in text and "balance 1.00 USD" in text

    @pytest.mark.parametrize("amount", ["abc", "1.0000000001", "NaN", "1e400"])
    def test_bad_amount_is_refused(self, tenant, amount):
        with pytest.raises(CommandError, match="Invalid amount"):
            run("credit_wallet", "alice@example.com", amount, "--reason", "r")
        assert not LedgerEntry.objects.exists()

    def test_non_positive_manual_credit_is_refused(self, tenant):
        with pytest.raises(CommandError, match="positive"):
            run("credit_wallet", "alice@example.com", "-5", "--reason", "r")

    def test_adjustment_cannot_overdraw(self, tenant):
        with pytest.raises(CommandError, match="available"):
            run("credit_wallet", "alice@example.com", "-1", "--reason", "r", "--kind", "adjustment")

    def test_unknown_email_is_refused(self, db):
        with pytest.raises(CommandError, match="No reseller with email nobody@example.com"):
            run("credit_wallet", "nobody@example.com", "1", "--reason", "r")

    def test_blank_reason_is_refused(self, tenant):
        with pytest.raises(CommandError, match="reason"):
            run("credit_wallet", "alice@example.com", "1", "--reason", "  ")

    def test_errors_exit_with_status_1(self, db):
        with pytest.raises(CommandError) as excinfo:
            run("credit_wallet", "nobody@example.com", "1", "--reason", "r")
        assert excinfo.value.returncode == 1


# ----------------------------------------------------------------------------- add_upstream


class TestAddUpstream:
    def test_creates_an_openai_upstream_reading_its_key_from_env(self, db):
        result = run(
            "add_upstream",
            "openai",
            "--kind",
            "openai",
            "--base-url",
            OPENAI_URL + "/",
            "--api-key-env",
            "OPENAI_API_KEY",
        )

        upstream = Upstream.objects.get(name="openai")
        assert result["id"] == upstream.pk
        assert result["created"] is True
        assert result["base_url"] == OPENAI_URL
        assert result["api_key_env"] == "OPENAI_API_KEY"
        assert result["has_stored_api_key"] is False

    def test_key_from_stdin_is_stored_encrypted_and_never_printed(self, db):
        secret = "sk-test-very-secret-0123456789"
        out = StringIO()
        call_command(
            "add_upstream",
            "anthropic",
            "--kind",
            "anthropic",
            "--base-url",
            "https://api.anthropic.com",
            "--api-key-stdin",
            "--json",
            stdin=StringIO(secret + "\n"),
            stdout=out,
        )

        upstream = Upstream.objects.get(name="anthropic")
        assert secret not in out.getvalue()
        assert secret not in upstream.api_key_encrypted
        assert crypto.decrypt(upstream.api_key_encrypted) == secret
        assert json.loads(out.getvalue())["has_stored_api_key"] is True

    def test_second_run_updates_and_keeps_the_key(self, db):
        upstream_save(
            name="gw",
            kind="openai",
            base_url="https://gw.example/v1",
            api_key_env="GW_KEY",
            api_key="sk-1",
        )
        result = run(
            "add_upstream",
            "gw",
            "--kind",
            "openai",
            "--base-url",
            "https://gw2.example/v1",
            "--timeout",
            "30",
        )

        upstream = Upstream.objects.get(name="gw")
        assert result["created"] is False
        assert (upstream.base_url, upstream.timeout_seconds) == ("https://gw2.example/v1", 30)
        assert upstream.api_key_env == "GW_KEY"
        assert crypto.decrypt(upstream.api_key_encrypted) == "sk-1"

    @pytest.mark.parametrize(
        ("kind", "url", "message"),
        [
            ("openai", "ftp://api.openai.com/v1", "http"),
            ("openai", "https://user:pw@api.openai.com/v1", "credentials"),
            ("anthropic", "https://api.anthropic.com/v1", "without /v1"),
            ("openai", "https://api.openai.com/v1?x=1", "query"),
        ],
    )
    def test_invalid_base_url_is_refused_with_the_service_message(self, db, kind, url, message):
        with pytest.raises(CommandError, match=message):
            run("add_upstream", "bad", "--kind", kind, "--base-url", url)
        assert not Upstream.objects.exists()

    def test_the_demo_kind_is_not_offered(self, db):
        # Only `manage.py seed_demo` makes the built-in demo upstream.
        with pytest.raises(CommandError, match="invalid choice: 'demo'"):
            run("add_upstream", "demo2", "--kind", "demo", "--base-url", OPENAI_URL)
        assert not Upstream.objects.exists()

    def test_invalid_name_is_refused(self, db):
        with pytest.raises(CommandError, match="slug"):
            run("add_upstream", "not a slug", "--kind", "openai", "--base-url", OPENAI_URL)
        assert not Upstream.objects.exists()

    def test_empty_stdin_is_refused(self, db):
        with pytest.raises(CommandError, match="no API key"):
            call_command(
                "add_upstream",
                "x",
                "--kind",
                "openai",
                "--base-url",
                OPENAI_URL,
                "--api-key-stdin",
                stdin=StringIO(""),
                stdout=StringIO(),
            )

    def test_human_output_names_no_secret(self, db):
        text = run_text(
            "add_upstream",
            "x",
            "--kind",
            "openai",
            "--base-url",
            OPENAI_URL,
            "--api-key-stdin",
            stdin=StringIO("sk-hidden\n"),
        )
        assert "Created upstream x" in text and "sk-hidden" not in text


# ----------------------------------------------------------------------------- set_price


class TestSetPrice:
    def test_posts_a_manual_price_version_each_call(self, upstream):
        first = run(
            "set_price",
            "gpt-x",
            "--upstream",
            upstream.name,
            "--input",
            "2.50",
            "--output",
            "10",
            "--cached-input",
            "1.25",
            "--max-output-tokens",
            "4096",
        )
        second = run(
            "set_price", "gpt-x", "--upstream", upstream.name, "--input", "3", "--output", "12"
        )

        assert first["input"] == "2.50" and first["output"] == "10.00"
        assert first["cached_input"] == "1.25" and first["cache_write"] is None
        assert first["cache_write_1h"] is None
        assert first["max_output_tokens"] == 4096
        assert first["source"] == "manual"
        assert second["id"] != first["id"] and second["route_id"] == first["route_id"]
        route = ModelRoute.objects.get(pk=first["route_id"])
        assert route.prices.count() == 2
        current = price_current(route=route)
        assert current is not None and current.input_per_mtok_nanos == parse_usd("3")

    def test_unknown_upstream_is_refused(self, db):
        with pytest.raises(CommandError, match="No upstream named 'nope'"):
            run("set_price", "m", "--upstream", "nope", "--input", "1", "--output", "1")

    @pytest.mark.parametrize("flag", ["--input", "--output", "--cached-input", "--cache-write"])
    def test_bad_price_is_refused(self, upstream, flag):
        args = {"--input": "1", "--output": "1", flag: "one"}
        with pytest.raises(CommandError, match=f"Invalid {flag}"):
            run(
                "set_price",
                "m",
                "--upstream",
                upstream.name,
                *[x for kv in args.items() for x in kv],
            )

    def test_negative_price_is_refused(self, upstream):
        with pytest.raises(CommandError, match="between 0"):
            run("set_price", "m", "--upstream", upstream.name, "--input", "-1", "--output", "1")
        assert not ModelPrice.objects.exists()

    def test_tiers_are_posted_with_the_price(self, upstream):
        posted = run(
            "set_price",
            "claude-x",
            "--upstream",
            upstream.name,
            "--input",
            "3",
            "--output",
            "15",
            "--tier",
            "200000:6:22.5:0.6:7.5",
            "--tier",
            "500000:9:30",
        )

        assert posted["tiers"] == [
            {
                "above_prompt_tokens": 200_000,
                "input": "6.00",
                "output": "22.50",
                "cached_input": "0.60",
                "cache_write": "7.50",
                "cache_write_1h": None,
            },
            {
                "above_prompt_tokens": 500_000,
                "input": "9.00",
                "output": "30.00",
                "cached_input": None,
                "cache_write": None,
                "cache_write_1h": None,
            },
        ]
        tiers = ModelPrice.objects.get(pk=posted["id"]).as_prices().tiers
        assert [tier.above_prompt_tokens for tier in tiers] == [200_000, 500_000]

    def test_one_hour_cache_write_rate(self, upstream):
        posted = run(
            "set_price", "claude-x", "--upstream", upstream.name, "--input", "3",
            "--output", "15", "--cache-write", "3.75", "--cache-write-1h", "6",
            "--tier", "200000:6:22.5:0.6:7.5:12",
        )  # fmt: skip
        assert (posted["cache_write"], posted["cache_write_1h"]) == ("3.75", "6.00")
        assert posted["tiers"][0]["cache_write_1h"] == "12.00"
        price = ModelPrice.objects.get(pk=posted["id"])
        assert price.as_prices().cache_write_1h_rate == parse_usd("6")

    def test_context_window_is_set_on_the_route(self, upstream):
        args = ["set_price", "m", "--upstream", upstream.name, "--input", "1", "--output", "2"]
        assert run(*args)["context_window"] is None
        assert run(*args, "--context-window", "200000")["context_window"] == 200_000
        # Not given: left as it was.
        assert run(*args)["context_window"] == 200_000
        with pytest.raises(CommandError, match="at least 1"):
            run(*args, "--context-window", "0")

    @pytest.mark.parametrize(
        ("tier", "message"),
        [
            ("200000:6", "expected ABOVE:INPUT:OUTPUT"),
            ("lots:6:22", "positive number of prompt tokens"),
            ("0:6:22", "positive number of prompt tokens"),
        ],
    )
    def test_bad_tier_is_refused(self, upstream, tier, message):
        with pytest.raises(CommandError, match=message):
            run(
                "set_price", "m", "--upstream", upstream.name, "--input", "3", "--output", "15",
                "--tier", tier,
            )  # fmt: skip
        assert not ModelPrice.objects.exists()


# ----------------------------------------------------------------------------- sync_prices


@pytest.fixture
def openai_upstream(db) -> Upstream:
    return upstream_save(name="openai", kind="openai", base_url=OPENAI_URL)


class TestSyncPrices:
    def test_seeds_routes_and_prices_for_an_openai_upstream(self, openai_upstream):
        result = run("sync_prices")

        (synced,) = result["upstreams"]
        assert synced["upstream"] == "openai" and synced["provider"] == "openai"
        assert "gpt-4o" in synced["created"]
        price = price_current(
            route=ModelRoute.objects.get(model="gpt-4o", upstream=openai_upstream)
        )
        assert price is not None and price.source == ModelPrice.Source.GENAI_PRICES
        assert price.input_per_mtok_nanos > 0 and price.output_per_mtok_nanos > 0
        assert ModelRoute.objects.count() == len(synced["created"])

    def test_second_run_posts_no_new_version(self, openai_upstream):
        run("sync_prices")
        versions = ModelPrice.objects.count()

        result = run("sync_prices")

        (synced,) = result["upstreams"]
        assert synced["created"] == [] and synced["updated"] == []
        assert len(synced["unchanged"]) == ModelRoute.objects.count()
        assert ModelPrice.objects.count() == versions

    def test_keeps_manual_prices_unless_told_to_override(self, openai_upstream):
        run("set_price", "gpt-4o", "--upstream", "openai", "--input", "99", "--output", "99")

        kept = run("sync_prices")["upstreams"][0]
        route = ModelRoute.objects.get(model="gpt-4o")
        assert "gpt-4o" in kept["skipped_manual"]
        kept_price = price_current(route=route)
        assert kept_price is not None
        assert kept_price.source == ModelPrice.Source.MANUAL

        replaced = run("sync_prices", "--override-manual")["upstreams"][0]
        assert replaced["updated"] == ["gpt-4o"]
        replaced_price = price_current(route=route)
        assert replaced_price is not None
        assert replaced_price.source == ModelPrice.Source.GENAI_PRICES
        assert route.prices.count() == 2

    def test_only_existing_touches_only_routed_models(self, openai_upstream):
        price_set(
            model="gpt-4o",
            upstream=openai_upstream,
            input_per_mtok_nanos=1,
            output_per_mtok_nanos=1,
            source=ModelPrice.Source.GENAI_PRICES,
        )

        result = run("sync_prices", "--only-existing")["upstreams"][0]

        assert result["created"] == [] and result["updated"] == ["gpt-4o"]
        assert ModelRoute.objects.count() == 1

    def test_dry_run_writes_nothing(self, openai_upstream):
        result = run("sync_prices", "--dry-run")
        assert result["dry_run"] is True and result["upstreams"][0]["created"]
        assert not ModelRoute.objects.exists() and not ModelPrice.objects.exists()

    def test_upstream_without_a_matching_provider_is_skipped_with_a_note(self, upstream):
        result = run("sync_prices")
        (synced,) = result["upstreams"]
        assert synced["provider"] is None and "no genai-prices provider" in synced["note"]
        assert not ModelRoute.objects.exists()
        assert "no genai-prices provider matches" in run_text("sync_prices")

    def test_provider_can_be_forced_for_one_upstream(self, upstream):
        result = run("sync_prices", "--upstream", upstream.name, "--provider", "anthropic")
        (synced,) = result["upstreams"]
        assert synced["provider"] == "anthropic"
        assert ModelRoute.objects.filter(upstream=upstream, model__startswith="claude").exists()

    def test_inactive_upstreams_are_left_alone(self, openai_upstream):
        Upstream.objects.filter(pk=openai_upstream.pk).update(is_active=False)
        assert run("sync_prices")["upstreams"] == []

    def test_unknown_upstream_is_refused(self, db):
        with pytest.raises(CommandError, match="No upstream named 'nope'"):
            run("sync_prices", "--upstream", "nope")

    def test_unknown_provider_is_refused(self, upstream):
        with pytest.raises(CommandError, match="no provider 'nope'"):
            run("sync_prices", "--upstream", upstream.name, "--provider", "nope")

    def test_provider_needs_an_upstream(self, db):
        with pytest.raises(CommandError, match="single upstream"):
            run("sync_prices", "--provider", "openai")
