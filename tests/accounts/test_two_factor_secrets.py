"""Two-factor secrets at rest: backup codes are kept as keyed hashes only and work once,
even given at the same moment by several requests; authenticator keys are kept encrypted
with their own derived key and a code is accepted once; devices stored in clear by
django-otp's TOTPDevice / StaticDevice move to these on migration."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from cryptography.fernet import InvalidToken
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django_otp.oath import TOTP

from accounts.crypto import TOTP_KEYS, UPSTREAM_KEYS, decrypt
from accounts.exceptions import CodeRefused, CodeThrottled
from accounts.hashing import backup_code_digest
from accounts.models import AuthenticatorDevice, BackupCode, BackupCodeDevice
from accounts.services import two_factor_confirm, two_factor_start, two_factor_verify
from billing import crypto as billing_crypto
from billing.services import reseller_open
from tests.dashboard.auth_support import totp_code
from tests.keys.test_concurrency import run_together, successes

PASSWORD = "correct-horse-battery-9"
THREADS = 6


@pytest.fixture
def user(db: None, settings: Any) -> Any:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    tenant, _ = reseller_open(email="eve@example.com", password=PASSWORD)
    return tenant.owner


def turn_on(user: Any) -> tuple[AuthenticatorDevice, list[str]]:
    device = two_factor_start(user=user)
    return two_factor_confirm(user=user, code=totp_code(device))


def all_text_in_the_database() -> str:
    """Every column of both device tables and the codes', as one string."""
    rows = [
        *AuthenticatorDevice.objects.values_list(),
        *BackupCodeDevice.objects.values_list(),
        *BackupCode.objects.values_list(),
    ]
    return repr(rows)


def test_backup_codes_are_stored_as_keyed_hashes_only(user: Any) -> None:
    _, codes = turn_on(user)
    stored = all_text_in_the_database()
    assert len(codes) == 10 == len(set(codes))
    assert not any(code in stored or code.upper() in stored for code in codes)
    assert set(BackupCode.objects.values_list("digest", flat=True)) == {
        backup_code_digest(code) for code in codes
    }


def test_a_backup_code_works_once(user: Any) -> None:
    _, codes = turn_on(user)
    assert isinstance(two_factor_verify(user=user, code=codes[3]), BackupCodeDevice)
    assert BackupCode.objects.count() == 9
    with pytest.raises(CodeRefused):
        two_factor_verify(user=user, code=codes[3])


def test_the_authenticator_key_is_encrypted_with_its_own_key(user: Any) -> None:
    device, _ = turn_on(user)
    key = device.bin_key
    assert len(key) == 20
    stored = AuthenticatorDevice.objects.values_list("encrypted_key", flat=True).get()
    assert key.hex() not in stored and key.hex() not in all_text_in_the_database()
    assert decrypt(stored, purpose=TOTP_KEYS) == key.hex()
    # The upstream keys' derived key cannot read it.
    with pytest.raises(InvalidToken):
        decrypt(stored, purpose=UPSTREAM_KEYS)
    with pytest.raises(InvalidToken):
        billing_crypto.decrypt(stored)
    assert device.config_url.startswith("otpauth://totp/Tollgate%3Aeve%40example.com?secret=")


def test_an_authenticator_code_is_accepted_once(user: Any) -> None:
    device, _ = turn_on(user)
    AuthenticatorDevice.objects.filter(pk=device.pk).update(last_t=-1)
    code = totp_code(device)
    assert two_factor_verify(user=user, code=code).pk == device.pk
    device.refresh_from_db()
    assert device.last_t >= 0
    with pytest.raises(CodeRefused):
        two_factor_verify(user=user, code=code)


def test_a_code_one_step_off_is_accepted_and_the_drift_is_kept(user: Any) -> None:
    device, _ = turn_on(user)
    AuthenticatorDevice.objects.filter(pk=device.pk).update(last_t=-1)
    device.refresh_from_db()
    assert device.verify_token(totp_code(device, steps_ahead=1))
    device.refresh_from_db()
    assert device.drift == 1
    # Two steps off is outside the tolerance (one step either side of the drift).
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, 0)
    totp.time = time.time() + 4 * device.step
    assert not device.verify_token(f"{totp.token():06d}")


@pytest.mark.postgres
def test_one_backup_code_given_at_once_by_many_requests_works_once(
    transactional_db: None, settings: Any
) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    user = reseller_open(email="race@example.com", password=PASSWORD)[0].owner
    _, codes = turn_on(user)

    def sign_in(_: int) -> int:
        return two_factor_verify(user=user, code=codes[0]).pk

    outcomes = run_together(THREADS, sign_in)
    assert len(successes(outcomes)) == 1
    # The others are refused: the code is gone (and the throttle then refuses any code).
    refused = (CodeRefused, CodeThrottled)
    assert all(isinstance(value, refused) for status, value in outcomes if status == "error")
    assert BackupCode.objects.count() == 9


@pytest.mark.postgres
def test_the_device_alone_consumes_a_code_once_without_the_services_lock(
    transactional_db: None, settings: Any
) -> None:
    """The device's own check (no row lock taken first, as django-otp's forms call it)
    deletes the code's row conditionally: one caller of many wins."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.OTP_STATIC_THROTTLE_FACTOR = 0
    user = reseller_open(email="race2@example.com", password=PASSWORD)[0].owner
    _, codes = turn_on(user)

    def check(_: int) -> bool:
        with transaction.atomic():
            return BackupCodeDevice.objects.get(user=user).verify_token(codes[1])

    outcomes = run_together(THREADS, check)
    assert sorted(successes(outcomes)) == [False] * (THREADS - 1) + [True]
    assert BackupCode.objects.count() == 9


# ---------------------------------------------------------------- the data migration

BEFORE = [("accounts", "0004_two_factor_devices")]
OTP_STATE = [*BEFORE, ("otp_totp", "0003_add_timestamps"), ("otp_static", "0003_add_timestamps")]


def migrate(targets: Sequence[tuple[str, str | None]]) -> MigrationExecutor:
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    return MigrationExecutor(connection)


@pytest.fixture
def before_the_move(transactional_db: None) -> Iterator[Any]:
    executor = migrate(BEFORE)
    yield executor.loader.project_state(OTP_STATE).apps
    executor = MigrationExecutor(connection)
    migrate(executor.loader.graph.leaf_nodes())


def test_the_migration_encrypts_keys_and_hashes_codes_stored_in_clear(
    before_the_move: Any,
) -> None:
    apps = before_the_move
    TOTPDevice = apps.get_model("otp_totp", "TOTPDevice")
    StaticDevice = apps.get_model("otp_static", "StaticDevice")
    StaticToken = apps.get_model("otp_static", "StaticToken")
    owner = get_user_model().objects.create_user(username="old@example.com", password="x")
    key = "3132333435363738393031323334353637383930"
    TOTPDevice.objects.create(
        user_id=owner.pk, name="Authenticator app", confirmed=True, key=key, last_t=1234, drift=1
    )
    static = StaticDevice.objects.create(user_id=owner.pk, name="Backup codes", confirmed=True)
    StaticToken.objects.create(device=static, token="abcdefgh")
    StaticToken.objects.create(device=static, token="ijklmnop")

    migrate([("accounts", "0005_two_factor_secrets_at_rest")])

    assert not TOTPDevice.objects.exists() and not StaticToken.objects.exists()
    device = AuthenticatorDevice.objects.get(user_id=owner.pk)
    assert device.confirmed and device.last_t == 1234 and device.drift == 1
    assert device.bin_key.hex() == key and key not in device.encrypted_key
    backup = BackupCodeDevice.objects.get(user_id=owner.pk)
    assert backup.confirmed
    assert set(backup.codes.values_list("digest", flat=True)) == {
        backup_code_digest("abcdefgh"),
        backup_code_digest("ijklmnop"),
    }
    # The migrated code works once, typed as a person would.
    assert two_factor_verify(user=owner, code="ABCD-EFGH").pk == backup.pk
    with pytest.raises(CodeRefused):
        two_factor_verify(user=owner, code="abcdefgh")
