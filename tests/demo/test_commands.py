"""The seed_demo command ``make run`` uses."""

from __future__ import annotations

import json
import stat
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from accounts.models import ApiToken, Tenant
from accounts.selectors import api_token_authenticate
from billing.models import DEMO_BASE_URL, LedgerEntry, ModelPrice, ModelRoute, Upstream
from billing.money import parse_usd
from billing.selectors import wallet_for_tenant
from billing.services import upstream_save
from keys.models import ClientKey
from keys.selectors import key_for_secret
from keys.services import key_create, key_update


def run(*args: str) -> dict[str, Any]:
    out = StringIO()
    call_command(*args, "--json", stdout=out)
    return json.loads(out.getvalue())


def run_text(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


# ----------------------------------------------------------------------------- seed_demo


@pytest.fixture
def var_dir(db, settings, tmp_path, monkeypatch):
    settings.VAR_DIR = tmp_path
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    monkeypatch.delenv("DEMO_ADMIN_PASSWORD", raising=False)
    monkeypatch.delenv("DEMO_PASSWORD", raising=False)
    return tmp_path


@pytest.mark.usefixtures("books_balance")
def test_seed_demo_twice_is_idempotent_but_mints_a_new_token(var_dir):
    first = run("seed_demo")
    routes, prices = ModelRoute.objects.count(), ModelPrice.objects.count()
    second = run("seed_demo")

    # Same logins, kept in var/ (owner-only), and they work.
    assert first["admin"] == second["admin"]
    assert first["reseller"] == second["reseller"]
    assert (var_dir / "demo_admin_password").read_text().strip() == first["admin"]["password"]
    assert stat.S_IMODE((var_dir / "demo_password").stat().st_mode) == 0o600
    admin = get_user_model().objects.get(email="admin@example.com")
    assert admin.is_superuser and admin.is_staff
    assert admin.check_password(first["admin"]["password"])
    tenant = Tenant.objects.get(owner__email="demo@example.com")
    assert tenant.owner.check_password(first["reseller"]["password"])

    # $100 credited once; the demo client key bought once: a $10 budget for $6.
    assert (first["credited"], second["credited"]) == (True, False)
    assert wallet_for_tenant(tenant=tenant).balance_nanos == parse_usd("94")
    entries = LedgerEntry.objects.filter(wallet__tenant=tenant).order_by("id")
    assert [(e.kind, e.amount_nanos) for e in entries] == [
        (LedgerEntry.Kind.MANUAL_CREDIT, parse_usd("100")),
        (LedgerEntry.Kind.KEY_FUNDING, -parse_usd("6")),
    ]
    assert second["wallet_balance"] == "94.00"
    key = ClientKey.objects.get(tenant=tenant)
    assert (key.label, key.client_budget_nanos, key.cost_funded_nanos) == (
        "Demo key",
        parse_usd("10"),
        parse_usd("6"),
    )
    assert first["client_key"] == second["client_key"]
    assert key_for_secret(tenant=tenant, secret=second["client_key"]) == key
    assert (var_dir / "demo_client_key").read_text().strip() == first["client_key"]
    assert stat.S_IMODE((var_dir / "demo_client_key").stat().st_mode) == 0o600

    # Upstreams created once and priced offline; the second run posts no new version.
    assert first["upstreams_created"] == ["openai", "anthropic"]
    assert second["upstreams_created"] == []
    assert set(Upstream.objects.values_list("name", "kind", "api_key_env")) == {
        ("openai", "openai", "OPENAI_API_KEY"),
        ("anthropic", "anthropic", "ANTHROPIC_API_KEY"),
        ("tollgate-demo", "demo", ""),
    }
    # The demo model, priced once at its posted price, with a small output limit.
    (demo_price,) = ModelPrice.objects.filter(route__model="tollgate-demo")
    assert (demo_price.input_per_mtok_nanos, demo_price.output_per_mtok_nanos) == (
        parse_usd("2.50"),
        parse_usd("10"),
    )
    assert demo_price.route.upstream.name == "tollgate-demo"
    assert demo_price.route.max_output_tokens == 1024
    assert (first["demo_model"], first["demo_model_on"]) == ("tollgate-demo", True)
    assert ModelRoute.objects.filter(upstream__name="openai", model="gpt-4o").exists()
    assert ModelRoute.objects.filter(
        upstream__name="anthropic", model__startswith="claude"
    ).exists()
    assert (ModelRoute.objects.count(), ModelPrice.objects.count()) == (routes, prices)

    # A fresh token each run; the previous "make-run" token stops working.
    assert first["api_token"] != second["api_token"]
    assert api_token_authenticate(secret=first["api_token"]) is None
    token = api_token_authenticate(secret=second["api_token"])
    assert token is not None and token.tenant_id == tenant.pk and token.name == "make-run"
    assert second["curl"] == (
        f'curl -H "Authorization: Bearer {second["api_token"]}" http://127.0.0.1:8000/api/v1/wallet'
    )
    assert second["demo_curl"] == (
        "curl http://127.0.0.1:8000/v1/chat/completions"
        f' -H "Authorization: Bearer {second["client_key"]}" -H "content-type: application/json"'
        """ -d '{"model": "tollgate-demo", "messages": [{"role": "user", "content": "Hello, Tollgate!"}]}'"""
    )


def test_seed_demo_passwords_come_from_the_environment(var_dir, monkeypatch):
    monkeypatch.setenv("DEMO_ADMIN_PASSWORD", "admin-from-env")
    monkeypatch.setenv("DEMO_PASSWORD", "demo-from-env")
    result = run("seed_demo")
    assert result["admin"]["password"] == "admin-from-env"
    assert result["reseller"]["password"] == "demo-from-env"
    assert get_user_model().objects.get(email="demo@example.com").check_password("demo-from-env")
    assert not (var_dir / "demo_admin_password").exists()


def test_seed_demo_keeps_an_operators_changes_to_the_upstreams(var_dir):
    upstream_save(name="openai", kind="openai", base_url="http://127.0.0.1:9/v1")
    result = run("seed_demo")
    assert result["upstreams_created"] == ["anthropic"]
    assert Upstream.objects.get(name="openai").base_url == "http://127.0.0.1:9/v1"
    assert not ModelRoute.objects.filter(upstream__name="openai").exists()


def test_seed_demo_banner_has_urls_logins_token_and_curl(var_dir):
    text = run_text("seed_demo", "--url", "http://localhost:9000/")
    token = ApiToken.objects.get(name="make-run", revoked_at__isnull=True)
    password = (var_dir / "demo_admin_password").read_text().strip()
    assert "http://localhost:9000/\n" in text  # the front page, where to start
    assert "http://localhost:9000/admin/" in text
    assert "http://localhost:9000/dashboard/" in text
    assert "Client portal    http://localhost:9000/portal/" in text
    assert f"admin@example.com / {password}" in text
    assert "demo@example.com / " in text
    assert f"{token.prefix}" in text
    assert "/api/v1/wallet" in text and "curl -H" in text
    # The first call a newcomer makes: the demo model with the demo client key, one line.
    secret = (var_dir / "demo_client_key").read_text().strip()
    assert secret.startswith("tg-") and f"Demo client key  {secret}" in text
    (curl,) = [line.strip() for line in text.splitlines() if "/v1/chat/completions" in line]
    assert curl.startswith("curl http://localhost:9000/v1/chat/completions ")
    assert f'-H "Authorization: Bearer {secret}"' in curl and '"model": "tollgate-demo"' in curl
    assert "tollgate-demo" in text and "$2.50 in / $10.00 out per 1M tokens; on" in text


@pytest.mark.usefixtures("books_balance")
def test_seed_demo_mints_the_demo_key_again_only_when_the_kept_one_stops_working(var_dir):
    first = run("seed_demo")
    tenant = Tenant.objects.get(owner__email="demo@example.com")
    kept = var_dir / "demo_client_key"

    # The kept secret lost: a new key (the old one stays, unspent, for its owner to delete).
    kept.unlink()
    second = run("seed_demo")
    assert second["client_key"] != first["client_key"]
    assert kept.read_text().strip() == second["client_key"]
    assert ClientKey.objects.filter(tenant=tenant, label="Demo key").count() == 2

    # Its key revoked (in the dashboard, say): another.
    revoked = key_for_secret(tenant=tenant, secret=second["client_key"])
    assert revoked is not None
    key_update(tenant=tenant, actor=None, key_id=revoked.pk, changes={"status": "revoked"})
    third = run("seed_demo")
    assert third["client_key"] not in (first["client_key"], second["client_key"])
    assert run("seed_demo")["client_key"] == third["client_key"]


@pytest.mark.usefixtures("books_balance")
def test_seed_demo_without_the_money_for_a_key_still_serves_the_rest(var_dir):
    run("seed_demo")
    tenant = Tenant.objects.get(owner__email="demo@example.com")
    # The wallet spent on other keys, and the demo key's secret lost.
    key_create(
        tenant=tenant,
        actor=None,
        label="big",
        client_budget_nanos=parse_usd("94"),
        your_cost_nanos=parse_usd("94"),
    )
    (var_dir / "demo_client_key").unlink()
    result = run("seed_demo")
    assert (result["client_key"], result["demo_curl"]) == (None, None)
    assert not (var_dir / "demo_client_key").exists()
    assert "No demo client key: the demo wallet cannot fund one." in run_text("seed_demo")


def test_seed_demo_leaves_the_demo_model_off_once_an_operator_turned_it_off(var_dir):
    run("seed_demo")
    upstream_save(name="tollgate-demo", kind="demo", base_url=DEMO_BASE_URL, is_active=False)
    result = run("seed_demo")
    assert result["demo_model_on"] is False
    assert not Upstream.objects.get(name="tollgate-demo").is_active
    assert ModelPrice.objects.filter(route__model="tollgate-demo").count() == 1
    text = run_text("seed_demo")
    assert "per 1M tokens; off (turned off in the admin)" in text
