"""The forms of signing in, signing up, resetting a password and two-factor sign-in. They
only parse and check input; the pages call the accounts services with what they clean."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib.auth import password_validation
from django.contrib.auth.forms import (
    AuthenticationForm,
    PasswordChangeForm,
    PasswordResetForm,
    SetPasswordForm,
)
from django.contrib.auth.models import User
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError

from accounts.models import TENANT_NAME_MAX_LENGTH
from accounts.selectors import user_awaits_verification, users_for_password_reset
from accounts.throttle import throttle_allow

EMAIL_MAX_LENGTH = 254
CODE_MAX_LENGTH = 32
# What AUTH_PASSWORD_VALIDATORS ask, in one line (Django's own help is a list).
PASSWORD_HELP = (
    "At least 8 characters; not a common password, not only digits, and not too like your email."  # noqa: S105
)


def email_field(**kwargs: Any) -> forms.EmailField:
    return forms.EmailField(
        label="Email",
        max_length=EMAIL_MAX_LENGTH,
        widget=forms.EmailInput(attrs={"autocomplete": "email"}),
        **kwargs,
    )


class SignInForm(AuthenticationForm):
    """Email and password. ``django.contrib.auth.authenticate(request=...)`` checks them
    (axes counts the failures; ``accounts.backends.EmailBackend`` ignores the email's case);
    an account whose sign-up is not verified yet is told so, with the right password only."""

    error_messages = {
        "invalid_login": "Enter the correct email and password (the password is case-sensitive).",
        "inactive": "This account is not active. Ask the operator of this Tollgate.",
        "unverified": "Your email address needs verifying before you can sign in: follow the "
        "link in the email we sent you, or ask for a new one below.",
    }

    def __init__(self, request: Any = None, *args: Any, **kwargs: Any) -> None:
        super().__init__(request, *args, **kwargs)
        self.fields["username"].label = "Email"

    def confirm_login_allowed(self, user: User) -> None:  # type: ignore[override]
        if not user.is_active and user_awaits_verification(user=user):
            raise ValidationError(self.error_messages["unverified"], code="unverified")
        super().confirm_login_allowed(user)

    @property
    def needs_verifying(self) -> bool:
        return self.has_error(NON_FIELD_ERRORS, "unverified")


class SignUpForm(forms.Form):
    email = email_field()
    password = forms.CharField(
        label="Password",
        strip=False,
        help_text=PASSWORD_HELP,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )
    display_name = forms.CharField(
        label="Business name (optional)",
        required=False,
        max_length=TENANT_NAME_MAX_LENGTH,
        help_text="What your clients see on their portal; you can change it later.",
        widget=forms.TextInput(attrs={"autocomplete": "organization"}),
    )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        email, password = cleaned.get("email"), cleaned.get("password")
        if email and password:
            # Django's validators (AUTH_PASSWORD_VALIDATORS), the similarity one against
            # the account about to exist.
            candidate = User(username=email, email=email)
            try:
                password_validation.validate_password(password, user=candidate)
            except ValidationError as exc:
                self.add_error("password", exc)
        return cleaned


class EmailForm(forms.Form):
    """One address: for a new verification link."""

    email = email_field()


class CodeForm(forms.Form):
    code = forms.CharField(
        label="Authentication code",
        help_text="The 6 digits your app shows now, or one of your backup codes.",
        max_length=CODE_MAX_LENGTH,
        widget=forms.TextInput(
            attrs={"autocomplete": "one-time-code", "autocapitalize": "off", "spellcheck": "false"}
        ),
    )


class TwoFactorConfirmForm(forms.Form):
    code = forms.CharField(
        label="The 6-digit code your app shows now",
        max_length=CODE_MAX_LENGTH,
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric"}),
    )


class TwoFactorOffForm(forms.Form):
    password = forms.CharField(
        label="Your password",
        required=False,
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
    )
    code = forms.CharField(
        label="or a code from your app (or a backup code)",
        required=False,
        max_length=CODE_MAX_LENGTH,
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code"}),
    )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if not cleaned.get("password") and not cleaned.get("code"):
            raise ValidationError("Give your password or a code to turn two-factor sign-in off.")
        return cleaned


class DashboardPasswordResetForm(PasswordResetForm):
    """Django's reset form for the accounts ``users_for_password_reset`` allows (resellers,
    also those without a password yet), at most ACCOUNT_EMAILS_PER_HOUR emails per address;
    the page answers the same whether or not an email went out."""

    email = email_field()

    def get_users(self, email: str) -> list[User]:  # type: ignore[override]
        return users_for_password_reset(email=email)

    def save(self, *args: Any, **kwargs: Any) -> None:
        email = self.cleaned_data["email"]
        if throttle_allow(
            scope="email:password-reset", who=email, limit=settings.ACCOUNT_EMAILS_PER_HOUR
        ):
            super().save(*args, **kwargs)


class DashboardSetPasswordForm(SetPasswordForm):  # type: ignore[type-arg]
    """Django's new-password form (the validators, typed twice) with a one-line help."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["new_password1"].help_text = PASSWORD_HELP
        self.fields["new_password2"].label = "New password again"


class DashboardPasswordChangeForm(PasswordChangeForm):
    """Django's password change (the current password, then a new one twice)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["old_password"].label = "Current password"
        self.fields["new_password1"].help_text = PASSWORD_HELP
        self.fields["new_password2"].label = "New password again"
