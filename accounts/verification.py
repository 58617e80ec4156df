"""The link that verifies a sign-up's email: signed, expiring, single-use.

The token is Django's ``signing.dumps`` (HMAC with SECRET_KEY, a timestamp inside) of the
user's id and a digest of the account's state: its password hash, whether it is active and
its email. Verifying activates the account, and a newer sign-up for the same address sets
a new password, so either one voids every link sent before; ``EMAIL_VERIFICATION_SECONDS``
voids the rest.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.core import signing
from django.utils.crypto import constant_time_compare, salted_hmac

from accounts.selectors import user_awaits_verification

SALT = "tollgate.accounts.email-verification"


def _state(user: AbstractBaseUser) -> str:
    email = getattr(user, "email", "")
    return salted_hmac(SALT, f"{user.password}|{user.is_active}|{email}").hexdigest()[:24]


def email_verification_token(*, user: AbstractBaseUser) -> str:
    """A token for ``user``'s verification link (URL-safe: letters, digits, ``-_:``)."""
    return signing.dumps({"u": user.pk, "s": _state(user)}, salt=SALT)


def email_verification_user(*, token: str) -> AbstractBaseUser | None:
    """The account awaiting verification that ``token`` was made for, or None when the
    token is tampered with, expired, used, or superseded by a newer sign-up."""
    try:
        data = signing.loads(token, salt=SALT, max_age=settings.EMAIL_VERIFICATION_SECONDS)
    except signing.BadSignature:  # also SignatureExpired
        return None
    if not isinstance(data, dict) or not isinstance(data.get("s"), str):
        return None
    if not isinstance(data.get("u"), int):
        return None
    user = get_user_model().objects.filter(pk=data["u"]).first()
    if user is None or not constant_time_compare(_state(user), data["s"]):
        return None
    if not user_awaits_verification(user=user):
        return None
    return user
