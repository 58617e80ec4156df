"""The accounts rules behind the dashboard's account pages: signing up (billing's
``reseller_sign_up`` over accounts' building blocks), the verification token, signing in
by email, the two-factor devices, and the courtesy throttle."""

from __future__ import annotations

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.core.cache import cache
from django.test import RequestFactory

from accounts.exceptions import CodeRefused, CodeThrottled, PasswordRefused
from accounts.hashing import backup_code_digest
from accounts.models import (
    ApiToken,
    AuthenticatorDevice,
    BackupCode,
    SignUp,
    Tenant,
)
from accounts.selectors import two_factor_enabled, user_awaits_verification
from accounts.services import (
    SignUpOutcome,
    backup_codes_regenerate,
    sign_up_verify,
    two_factor_confirm,
    two_factor_disable,
    two_factor_start,
    two_factor_verify,
)
from accounts.throttle import throttle_allow
from accounts.verification import email_verification_token, email_verification_user
from billing.models import Wallet
from billing.services import reseller_open, reseller_sign_up
from tests.dashboard.auth_support import fresh_code, throttle_forget, totp_code

PASSWORD = "correct-horse-battery-9"


@pytest.fixture(autouse=True)
def fast_hasher(settings) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    cache.clear()


def sign_in(email: str, password: str):
    return authenticate(RequestFactory().post("/"), username=email, password=password)


def test_a_sign_up_opens_an_inactive_account_with_a_wallet_and_no_token(db: None) -> None:
    result = reseller_sign_up(email="Ann@Example.com", password=PASSWORD, name="Ann's AI")
    assert result.outcome == SignUpOutcome.OPENED
    user = result.user
    assert (user.username, user.email, user.is_active) == (
        "Ann@example.com",
        "Ann@example.com",
        False,
    )
    tenant = Tenant.objects.get(owner=user)
    assert tenant.name == "Ann's AI"
    assert Wallet.objects.filter(tenant=tenant).exists()
    assert not ApiToken.objects.exists()
    assert user_awaits_verification(user=user)


def test_a_second_sign_up_renews_a_pending_one_and_leaves_an_account_alone(db: None) -> None:
    first = reseller_sign_up(email="ann@example.com", password=PASSWORD)
    again = reseller_sign_up(email="ANN@example.com", password="second-phrase-88", name="Ann")
    assert again.outcome == SignUpOutcome.RENEWED
    assert again.user.pk == first.user.pk
    again.user.refresh_from_db()
    assert again.user.check_password("second-phrase-88")
    assert Tenant.objects.get(owner=again.user).name == "Ann"

    tenant, _ = reseller_open(email="bob@example.com", password=PASSWORD)
    taken = reseller_sign_up(email="Bob@example.com", password="other-phrase-77", name="Evil")
    assert taken.outcome == SignUpOutcome.TAKEN
    tenant.refresh_from_db()
    tenant.owner.refresh_from_db()
    assert tenant.owner.check_password(PASSWORD) and tenant.name == "bob@example.com"
    assert get_user_model().objects.count() == 2


def test_verifying_activates_once(db: None) -> None:
    user = reseller_sign_up(email="ann@example.com", password=PASSWORD).user
    assert sign_up_verify(user=user) is True
    assert sign_up_verify(user=user) is False
    user.refresh_from_db()
    assert user.is_active and SignUp.objects.get(user=user).is_verified
    assert not user_awaits_verification(user=user)


def test_the_verification_token_is_single_use_and_bound_to_the_pending_password(
    db: None,
) -> None:
    user = reseller_sign_up(email="ann@example.com", password=PASSWORD).user
    token = email_verification_token(user=user)
    assert email_verification_user(token=token) == user

    reseller_sign_up(email="ann@example.com", password="newer-phrase-55")
    assert email_verification_user(token=token) is None
    user.refresh_from_db()
    newer = email_verification_token(user=user)
    assert email_verification_user(token=newer) == user
    sign_up_verify(user=user)
    assert email_verification_user(token=newer) is None

    operator_made, _ = reseller_open(email="op-made@example.com", password=PASSWORD)
    assert email_verification_user(token=email_verification_token(user=operator_made.owner)) is None
    assert email_verification_user(token="garbage") is None


def test_signing_in_by_email_in_any_case(db: None) -> None:
    tenant, _ = reseller_open(email="Cy@Example.com", password=PASSWORD)
    assert sign_in("cy@example.com", PASSWORD) == tenant.owner
    assert sign_in("CY@EXAMPLE.COM", PASSWORD) == tenant.owner
    assert sign_in("cy@example.com", "wrong") is None
    assert sign_in("nobody@example.com", PASSWORD) is None
    # Inactive: refused, unless it is a sign-up awaiting verification (the form says so).
    get_user_model().objects.filter(pk=tenant.owner_id).update(is_active=False)
    assert sign_in("cy@example.com", PASSWORD) is None
    pending = reseller_sign_up(email="dee@example.com", password=PASSWORD).user
    assert sign_in("dee@example.com", PASSWORD) == pending
    assert sign_in("dee@example.com", "wrong") is None


@pytest.fixture
def user(db: None):
    tenant, _ = reseller_open(email="eve@example.com", password=PASSWORD)
    return tenant.owner


def test_two_factor_is_on_only_once_a_code_confirms_it(user) -> None:
    device = two_factor_start(user=user)
    assert not two_factor_enabled(user=user)
    with pytest.raises(CodeRefused):
        two_factor_confirm(user=user, code="000000")
    throttle_forget(device)
    confirmed, codes = two_factor_confirm(user=user, code=totp_code(device))
    assert confirmed.pk == device.pk and confirmed.confirmed
    assert len(codes) == 10 and BackupCode.objects.count() == 10
    assert two_factor_enabled(user=user)
    # A later setup (a new phone) replaces the device once confirmed.
    newer = two_factor_start(user=user)
    two_factor_confirm(user=user, code=totp_code(newer))
    assert list(AuthenticatorDevice.objects.values_list("pk", flat=True)) == [newer.pk]


def test_confirming_without_a_setup_is_refused(user) -> None:
    with pytest.raises(CodeRefused):
        two_factor_confirm(user=user, code="123456")


def test_codes_at_sign_in_are_throttled_after_a_wrong_one(user) -> None:
    device = two_factor_start(user=user)
    _, codes = two_factor_confirm(user=user, code=totp_code(device))
    with pytest.raises(CodeRefused):
        two_factor_verify(user=user, code="111111")
    device.refresh_from_db()
    assert device.throttling_failure_count == 1  # kept although the call raised
    with pytest.raises(CodeThrottled) as throttled:
        two_factor_verify(user=user, code=fresh_code(device))
    assert throttled.value.until is not None
    throttle_forget(device)
    assert two_factor_verify(user=user, code=fresh_code(device)).pk == device.pk

    backup = two_factor_verify(user=user, code=f" {codes[0].upper()} ")
    assert backup.__class__.__name__ == "BackupCodeDevice"
    with pytest.raises(CodeRefused):
        two_factor_verify(user=user, code=codes[0])


def test_backup_codes_are_regenerated_only_with_two_factor_on(user) -> None:
    with pytest.raises(CodeRefused):
        backup_codes_regenerate(user=user)
    device = two_factor_start(user=user)
    _, old = two_factor_confirm(user=user, code=totp_code(device))
    new = backup_codes_regenerate(user=user)
    assert not set(new) & set(old)
    assert set(BackupCode.objects.values_list("digest", flat=True)) == {
        backup_code_digest(code) for code in new
    }


def test_turning_two_factor_off_needs_a_proof(user) -> None:
    device = two_factor_start(user=user)
    two_factor_confirm(user=user, code=totp_code(device))
    with pytest.raises(PasswordRefused):
        two_factor_disable(user=user)
    with pytest.raises(PasswordRefused):
        two_factor_disable(user=user, password="wrong")
    with pytest.raises(CodeRefused):
        two_factor_disable(user=user, code="999999")
    assert two_factor_enabled(user=user)
    two_factor_disable(user=user, password=PASSWORD)
    assert not two_factor_enabled(user=user)
    assert not BackupCode.objects.exists()


def test_the_courtesy_throttle_counts_per_scope_and_who() -> None:
    cache.clear()
    assert [throttle_allow(scope="t", who="a@example.com", limit=2) for _ in range(3)] == [
        True,
        True,
        False,
    ]
    assert throttle_allow(scope="t", who="A@EXAMPLE.COM ", limit=2) is False  # same address
    assert throttle_allow(scope="t", who="b@example.com", limit=2) is True
    assert throttle_allow(scope="other", who="a@example.com", limit=2) is True
