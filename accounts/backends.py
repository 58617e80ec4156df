"""Signing in with an email, whatever its case.

A user's username is their email as first typed ("Bob@example.com"); people type it back
in any case. ``EmailBackend`` is Django's ModelBackend (permissions, sessions) finding the
user by email case-insensitively, or by exact username. Called through
``django.contrib.auth.authenticate(request=...)`` after axes' backend, so every failure is
still counted and a locked-out account is refused before any password is checked.

One difference from ModelBackend: the right password of an account whose sign-up awaits
email verification (an inactive user with a pending ``SignUp``) returns that user, so the
form can say the email needs verifying instead of counting a failure; Django's
``AuthenticationForm.confirm_login_allowed`` still refuses every inactive user, and
``get_user`` (a session's user) still ignores them.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import User
from django.db.models import Q
from django.http import HttpRequest

from accounts.selectors import user_awaits_verification

# More users than this with one email (in different cases) is not something we create:
# tenant_create refuses an email that exists in any case. A bound on password checks.
MAX_CANDIDATES = 3


class EmailBackend(ModelBackend):
    def authenticate(  # type: ignore[override] # ModelBackend's own signature
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> User | None:
        user_model = get_user_model()
        if username is None:
            username = kwargs.get(user_model.USERNAME_FIELD)
        if not username or password is None:
            return None
        typed = username.strip()
        candidates = list(
            user_model.objects.filter(Q(email__iexact=typed) | Q(username=username)).order_by("pk")[
                :MAX_CANDIDATES
            ]
        )
        if not candidates:
            # Hash anyway, so an unknown email takes as long to refuse as a wrong password.
            user_model().set_password(password)
            return None
        for user in candidates:
            if user.check_password(password) and (
                self.user_can_authenticate(user) or user_awaits_verification(user=user)
            ):
                return user
        return None

    async def aauthenticate(  # type: ignore[override]
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> User | None:
        # ModelBackend's async version looks the user up by itself; use the rules above.
        return await sync_to_async(self.authenticate)(request, username, password, **kwargs)
