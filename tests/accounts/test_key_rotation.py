"""Rotating FIELD_ENCRYPTION_KEY: the former key in FIELD_ENCRYPTION_KEY_FALLBACKS still
decrypts, encryption always uses the current key, and ``manage.py reencrypt_secrets`` moves
every stored secret (upstream API keys, alert webhook secrets, authenticator keys) to the
current key, after which the fallback can go and everything still works through the code
that uses each secret: the proxy's route catalog, a signed webhook, a sign-in code."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from cryptography.fernet import InvalidToken
from django.apps import apps
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connections

from accounts import reencryption
from accounts.crypto import ENCRYPTED_COLUMNS, TOTP_KEYS, UPSTREAM_KEYS, decrypt, encrypt
from accounts.models import AuthenticatorDevice
from accounts.services import two_factor_confirm, two_factor_start, two_factor_verify
from alerts.models import AlertDelivery, AlertSettings
from alerts.services import DeliveryOutcome, alert_deliver, alert_settings_update, alert_test_send
from alerts.webhooks import SIGNATURE_HEADER
from billing import crypto as billing_crypto
from billing.models import Upstream
from billing.services import price_set, upstream_save
from proxy.admission import Catalog
from proxy.db import DjangoDatabase
from tests.alerts.conftest import receiver, verify  # noqa: F401 - receiver is a fixture
from tests.dashboard.auth_support import fresh_code, totp_code

pytestmark = pytest.mark.django_db

OLD = "the-old-field-encryption-key"
NEW = "the-new-field-encryption-key"
UPSTREAM_SECRET = "sk-upstream-secret-0123456789"
OPENAI_URL = "https://api.openai.com/v1"


@pytest.fixture
def old_key(settings: Any) -> Any:
    """Secrets made now are encrypted with OLD (the key before the rotation)."""
    settings.FIELD_ENCRYPTION_KEY = OLD
    settings.FIELD_ENCRYPTION_KEY_FALLBACKS = []
    return settings


def rotate_to_new(settings: Any) -> None:
    """What the operator deploys first: the new key, the old one as a fallback."""
    settings.FIELD_ENCRYPTION_KEY = NEW
    settings.FIELD_ENCRYPTION_KEY_FALLBACKS = [OLD]


def drop_fallback(settings: Any) -> None:
    settings.FIELD_ENCRYPTION_KEY = NEW
    settings.FIELD_ENCRYPTION_KEY_FALLBACKS = []


def reencrypt(*args: str) -> dict[str, Any]:
    out = StringIO()
    call_command("reencrypt_secrets", "--json", *args, stdout=out)
    return json.loads(out.getvalue())


def stored_tokens() -> dict[str, list[str]]:
    """Every stored ciphertext, per kind."""
    return {
        column.kind: sorted(
            apps.get_model(column.model)
            ._base_manager.exclude(**{column.field: ""})
            .values_list(column.field, flat=True)
        )
        for column in ENCRYPTED_COLUMNS
    }


def upstream_with_key(name: str = "openai", api_key: str = UPSTREAM_SECRET) -> Upstream:
    return upstream_save(name=name, kind="openai", base_url=OPENAI_URL, api_key=api_key)


def webhook_on(tenant: Any, url: str) -> str:
    saved = alert_settings_update(tenant=tenant, actor=None, changes={"webhook_url": url})
    assert saved.new_secret is not None
    return saved.new_secret


def authenticator_on(user: Any) -> AuthenticatorDevice:
    device = two_factor_start(user=user)
    device, _ = two_factor_confirm(user=user, code=totp_code(device))
    return device


# ------------------------------------------------------------------------ the key ring


def test_a_fallback_key_still_decrypts_what_it_encrypted(old_key):
    upstream_token = encrypt("sk-1", purpose=UPSTREAM_KEYS)
    totp_token = encrypt("00ff", purpose=TOTP_KEYS)

    rotate_to_new(old_key)
    assert decrypt(upstream_token, purpose=UPSTREAM_KEYS) == "sk-1"
    assert billing_crypto.decrypt(upstream_token) == "sk-1"
    assert decrypt(totp_token, purpose=TOTP_KEYS) == "00ff"
    # Each kind keeps its own key under every fallback too.
    with pytest.raises(InvalidToken):
        decrypt(totp_token, purpose=UPSTREAM_KEYS)

    drop_fallback(old_key)
    with pytest.raises(InvalidToken):
        decrypt(upstream_token, purpose=UPSTREAM_KEYS)


def test_several_fallbacks_are_each_tried(old_key):
    token = encrypt("sk-2")
    old_key.FIELD_ENCRYPTION_KEY = NEW
    old_key.FIELD_ENCRYPTION_KEY_FALLBACKS = ["an-unrelated-key", OLD]
    assert decrypt(token) == "sk-2"


def test_encryption_always_uses_the_current_key(old_key):
    rotate_to_new(old_key)
    token = billing_crypto.encrypt("sk-3")
    totp_token = encrypt("00ff", purpose=TOTP_KEYS)

    drop_fallback(old_key)  # the current key alone reads them
    assert billing_crypto.decrypt(token) == "sk-3"
    assert decrypt(totp_token, purpose=TOTP_KEYS) == "00ff"
    old_key.FIELD_ENCRYPTION_KEY = OLD  # the former key does not
    with pytest.raises(InvalidToken):
        billing_crypto.decrypt(token)


def settings_in_a_new_process(var_dir: Path, **env: str) -> list[str]:
    """FIELD_ENCRYPTION_KEY_FALLBACKS as config/settings.py reads it from ``env``."""
    code = (
        "import json; from config import settings; "
        "print(json.dumps(settings.FIELD_ENCRYPTION_KEY_FALLBACKS))"
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith("FIELD_ENCRYPTION_KEY")}
    result = subprocess.run(  # noqa: S603 - our own fixed command line
        [sys.executable, "-c", code],
        env={**base, "SECRET_KEY": "s", "TOLLGATE_VAR_DIR": str(var_dir), **env},
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    return json.loads(result.stdout)


def test_the_fallbacks_are_read_comma_separated_or_from_a_file(tmp_path):
    assert settings_in_a_new_process(tmp_path) == []
    assert settings_in_a_new_process(tmp_path, FIELD_ENCRYPTION_KEY_FALLBACKS=" k1, k2 ,,") == [
        "k1",
        "k2",
    ]
    secret_file = tmp_path / "fallbacks"
    secret_file.write_text("k3\nk4,k5\n")
    fallbacks_file = {"FIELD_ENCRYPTION_KEY_FALLBACKS_FILE": str(secret_file)}
    assert settings_in_a_new_process(tmp_path, **fallbacks_file) == [
        "k3",
        "k4",
        "k5",
    ]


def test_every_encrypted_column_is_rotated():
    """A model field holding ciphertext (named for it) that ``reencrypt_secrets`` does not
    know would become unreadable once the fallback is removed."""
    listed = {(c.model, c.field) for c in ENCRYPTED_COLUMNS}
    encrypted = {
        (model._meta.label, field.name)
        for model in apps.get_models()
        for field in model._meta.get_fields()
        if "encrypted" in field.name
    }
    assert encrypted == listed


# ------------------------------------------------------------------- reencrypt_secrets


@pytest.mark.usefixtures("old_key")
def test_reencrypt_secrets_moves_every_kind_to_the_current_key(
    settings,
    tenant,
    outsider,
    receiver,  # noqa: F811 - the fixture imported above
):
    settings.ALERT_WEBHOOK_ALLOW_PRIVATE = True
    upstream = upstream_with_key()
    upstream_save(name="from-env", kind="openai", base_url=OPENAI_URL, api_key_env="OPENAI_KEY")
    webhook_secret = webhook_on(tenant, receiver.url)
    AlertSettings.objects.create(tenant=outsider[0])  # no webhook: nothing to rotate
    device = authenticator_on(tenant.owner)
    bin_key = device.bin_key
    before = stored_tokens()

    rotate_to_new(settings)
    result = reencrypt()

    counts = {
        kind: (r["rotated"], r["current"], r["unreadable"]) for kind, r in result["kinds"].items()
    }
    assert counts == {
        "upstream_api_keys": (1, 0, 0),
        "alert_webhook_secrets": (1, 0, 0),
        "authenticator_keys": (1, 0, 0),
    }
    assert result["ok"] is True and result["dry_run"] is False
    after = stored_tokens()
    assert all(set(after[kind]).isdisjoint(before[kind]) for kind in after)

    drop_fallback(settings)
    # The upstream key, as the admin and the proxy read it.
    upstream.refresh_from_db()
    assert billing_crypto.decrypt(upstream.api_key_encrypted) == UPSTREAM_SECRET
    # The authenticator: same key, and a code from the phone still signs in.
    device.refresh_from_db()
    assert device.bin_key == bin_key
    assert two_factor_verify(user=tenant.owner, code=fresh_code(device)).pk == device.pk
    # The webhook: a delivery is signed with the same secret as before.
    alert_test_send(tenant=tenant, actor=None)
    delivery = AlertDelivery.objects.get(channel=AlertDelivery.Channel.WEBHOOK)
    assert alert_deliver(delivery_id=delivery.pk).outcome == DeliveryOutcome.SENT
    (request,) = receiver.requests
    assert verify(webhook_secret, request["body"], request["headers"][SIGNATURE_HEADER])


@pytest.mark.django_db(transaction=True)
def test_after_reencrypting_the_proxy_calls_the_upstream_with_the_same_key(old_key):
    upstream = upstream_with_key()
    price_set(model="gpt-4o", upstream=upstream, input_per_mtok_nanos=1, output_per_mtok_nanos=2)

    rotate_to_new(old_key)
    reencrypt()
    drop_fallback(old_key)

    async def routes() -> Any:
        try:
            return await Catalog(DjangoDatabase()).all_routes()
        finally:
            await sync_to_async(connections.close_all)()

    (route,) = asyncio.run(routes())["gpt-4o"]
    assert route.target.api_key == UPSTREAM_SECRET


def test_a_second_run_changes_nothing(old_key):
    upstream_with_key()
    rotate_to_new(old_key)
    assert reencrypt()["kinds"]["upstream_api_keys"]["rotated"] == 1
    tokens = stored_tokens()

    again = reencrypt()
    assert again["ok"] is True
    assert (
        again["kinds"]["upstream_api_keys"]["rotated"],
        again["kinds"]["upstream_api_keys"]["current"],
    ) == (0, 1)
    assert stored_tokens() == tokens


def test_a_dry_run_changes_nothing_and_says_what_would_move(old_key, tenant):
    upstream_with_key()
    authenticator_on(tenant.owner)
    tokens = stored_tokens()
    rotate_to_new(old_key)

    result = reencrypt("--dry-run")
    assert result["dry_run"] is True and result["ok"] is True
    assert result["kinds"]["upstream_api_keys"]["rotated"] == 1
    assert result["kinds"]["authenticator_keys"]["rotated"] == 1
    assert stored_tokens() == tokens

    out = StringIO()
    call_command("reencrypt_secrets", "--dry-run", stdout=out)
    assert "upstream API keys: 1 would rotate, 0 already current, 0 unreadable" in out.getvalue()
    assert "[dry run] nothing written" in out.getvalue()
    assert stored_tokens() == tokens


def test_a_secret_no_key_reads_is_reported_by_id_and_fails_the_run(old_key):
    readable = upstream_with_key("readable")
    lost = upstream_with_key("lost", api_key="sk-lost-secret")
    old_key.FIELD_ENCRYPTION_KEY = "a-key-nobody-kept"
    Upstream.objects.filter(pk=lost.pk).update(api_key_encrypted=encrypt("sk-lost-secret"))
    lost_token = Upstream.objects.get(pk=lost.pk).api_key_encrypted
    rotate_to_new(old_key)

    out, err = StringIO(), StringIO()
    with pytest.raises(CommandError) as failed:
        call_command("reencrypt_secrets", "--json", stdout=out, stderr=err)
    assert failed.value.returncode == 1
    assert f"billing.Upstream id {lost.pk} (no key can read it)" in str(failed.value)
    upstreams = json.loads(out.getvalue())["kinds"]["upstream_api_keys"]
    assert json.loads(out.getvalue())["ok"] is False
    assert (upstreams["rotated"], upstreams["unreadable"], upstreams["unreadable_ids"]) == (
        1,
        1,
        [lost.pk],
    )
    # The readable one moved; the lost one is left as it was.
    readable.refresh_from_db()
    drop_fallback(old_key)
    assert billing_crypto.decrypt(readable.api_key_encrypted) == UPSTREAM_SECRET
    assert Upstream.objects.get(pk=lost.pk).api_key_encrypted == lost_token
    # No secret, and no ciphertext, in anything printed.
    printed = out.getvalue() + err.getvalue() + str(failed.value)
    assert "sk-lost-secret" not in printed and UPSTREAM_SECRET not in printed
    assert lost_token not in printed


def test_the_text_report_names_each_kind_and_prints_no_secret(old_key):
    upstream_with_key()
    rotate_to_new(old_key)
    out = StringIO()
    call_command("reencrypt_secrets", stdout=out)
    assert out.getvalue().splitlines() == [
        "upstream API keys: 1 rotated, 0 already current, 0 unreadable",
        "alert webhook secrets: 0 rotated, 0 already current, 0 unreadable",
        "authenticator keys: 0 rotated, 0 already current, 0 unreadable",
        "every stored secret is under the current key",
    ]


def test_the_json_report_shape(old_key):
    upstream_with_key()
    rotate_to_new(old_key)
    assert reencrypt() == {
        "dry_run": False,
        "ok": True,
        "kinds": {
            "upstream_api_keys": {
                "model": "billing.Upstream",
                "field": "api_key_encrypted",
                "current": 0,
                "rotated": 1,
                "unreadable": 0,
                "unreadable_ids": [],
                "changed": 0,
                "changed_ids": [],
            },
            "alert_webhook_secrets": {
                "model": "alerts.AlertSettings",
                "field": "webhook_secret_encrypted",
                "current": 0,
                "rotated": 0,
                "unreadable": 0,
                "unreadable_ids": [],
                "changed": 0,
                "changed_ids": [],
            },
            "authenticator_keys": {
                "model": "accounts.AuthenticatorDevice",
                "field": "encrypted_key",
                "current": 0,
                "rotated": 0,
                "unreadable": 0,
                "unreadable_ids": [],
                "changed": 0,
                "changed_ids": [],
            },
        },
    }


def test_rows_are_read_in_batches(old_key):
    upstreams = [upstream_with_key(f"u{n}", api_key=f"sk-{n}") for n in range(5)]
    rotate_to_new(old_key)
    result = reencrypt("--batch-size", "2")
    assert result["kinds"]["upstream_api_keys"]["rotated"] == 5
    drop_fallback(old_key)
    for n, upstream in enumerate(upstreams):
        upstream.refresh_from_db()
        assert billing_crypto.decrypt(upstream.api_key_encrypted) == f"sk-{n}"


def test_a_secret_replaced_while_it_is_rotated_is_not_overwritten(old_key, monkeypatch):
    upstream = upstream_with_key(api_key="sk-before")
    rotate_to_new(old_key)
    real = reencryption.reencrypt

    def racing(token: str, *, purpose: bytes) -> str | None:
        fresh = real(token, purpose=purpose)
        if fresh is not None:
            # The operator saves a new key (with the new key, as every server now does)
            # between the command's read and its write.
            upstream_save(
                name=upstream.name, kind="openai", base_url=OPENAI_URL, api_key="sk-after"
            )
        return fresh

    monkeypatch.setattr(reencryption, "reencrypt", racing)
    result = reencrypt()
    assert (
        result["kinds"]["upstream_api_keys"]["rotated"],
        result["kinds"]["upstream_api_keys"]["current"],
    ) == (0, 1)

    drop_fallback(old_key)
    upstream.refresh_from_db()
    assert billing_crypto.decrypt(upstream.api_key_encrypted) == "sk-after"
