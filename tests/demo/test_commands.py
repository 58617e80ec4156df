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
from billing.models import LedgerEntry, ModelPrice, ModelRoute, Upstream
from billing.money import parse_usd
from billing.selectors import wallet_for_tenant
from billing.services import upstream_save


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

    # $100 credited once.
    assert (first["credited"], second["credited"]) == (True, False)
    assert wallet_for_tenant(tenant=tenant).balance_nanos == parse_usd("100")
    assert LedgerEntry.objects.filter(wallet__tenant=tenant).count() == 1
    assert second["wallet_balance"] == "100.00"

    # Upstreams created once and priced offline; the second run posts no new version.
    assert first["upstreams_created"] == ["openai", "anthropic"]
    assert second["upstreams_created"] == []
    assert set(Upstream.objects.values_list("name", "api_key_env")) == {
        ("openai", "OPENAI_API_KEY"),
        ("anthropic", "ANTHROPIC_API_KEY"),
    }
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
    text = run_text("seed_demo")
    token = ApiToken.objects.get(name="make-run", revoked_at__isnull=True)
    password = (var_dir / "demo_admin_password").read_text().strip()
    assert "http://127.0.0.1:8000" in text
    assert "http://127.0.0.1:8000/admin/" in text
    assert f"admin@example.com / {password}" in text
    assert "demo@example.com / " in text
    assert f"{token.prefix}" in text
    assert "/api/v1/wallet" in text and "curl -H" in text
