"""The account emails the dashboard sends: a sign-up's verification link, and the note to an
address's owner that someone tried to sign up with it. (Password resets go through
Django's PasswordResetForm with this app's templates.)

Sent at once with Django's email backend (the console in ``make run``), after the
transaction that made the link valid has committed.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import User
from django.core.mail import send_mail
from django.http import HttpRequest
from django.template.loader import render_to_string
from django.urls import reverse

from accounts.verification import email_verification_token


def duration_text(seconds: int) -> str:
    """How long a link works, as a person says it: "2 days", "1 hour", "30 minutes"."""
    for unit, size in (("day", 86400), ("hour", 3600)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'' if count == 1 else 's'}"
    count = max(1, round(seconds / 60))
    return f"{count} minute{'' if count == 1 else 's'}"


TEMPLATES = "dashboard/account/email"


def _send(*, kind: str, to: str, context: dict[str, object]) -> None:
    # A header cannot hold a newline; a template's trailing one is no part of the subject.
    subject = " ".join(render_to_string(f"{TEMPLATES}/{kind}_subject.txt", context).split())
    body = render_to_string(f"{TEMPLATES}/{kind}.txt", context)
    send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, [to])


def verification_link_send(*, request: HttpRequest, user: User) -> None:
    """The link that verifies ``user``'s sign-up and signs them in."""
    path = reverse(
        "dashboard:verify-email-link", kwargs={"token": email_verification_token(user=user)}
    )
    _send(
        kind="verify_email",
        to=user.email,
        context={
            "link": request.build_absolute_uri(path),
            "lifetime": duration_text(settings.EMAIL_VERIFICATION_SECONDS),
            "user": user,
        },
    )


def sign_up_notice_send(*, request: HttpRequest, user: User) -> None:
    """To the owner of an account: someone tried to open another with their address."""
    _send(
        kind="sign_up_attempt",
        to=user.email,
        context={
            "sign_in": request.build_absolute_uri(reverse("dashboard:sign-in")),
            "reset": request.build_absolute_uri(reverse("dashboard:password-reset")),
            "user": user,
        },
    )
