"""The portal's writes: signing in with an emailed code, binding and unbinding keys.

Design overview
---------------
*Codes.* ``code_send`` gives an address a 6-digit code (django-otp's
``random_number_token``) by email and keeps only HMAC-SHA256(TOKEN_HASH_KEY, address and
code) in the address's one ``PortalCode`` row, valid ``PORTAL_CODE_SECONDS``. A new code
replaces the last. ``code_verify`` checks a code under the row's lock, so parallel guesses
are counted one after the other: a wrong code makes the next wait (django-otp's throttle)
and ``PORTAL_CODE_MAX_ATTEMPTS`` of them empty the digest (the code is dead, even to the
right digits); the right code empties it too (single use). Because the address is part of
what is hashed, a code sent to one address never signs in another.

*No enumeration.* Asking for a code answers the same whatever happens: sent, refused by
the per-IP or per-address hourly counts (``accounts.throttle``) or the cooldown between two
codes (django-otp's ``CooldownMixin``), for an address that has signed in before or never.
Refusals are logged, never shown. A ``PortalClient`` is made at the first sign-in, not when
a code is asked for.

*Mail failure.* The row is written and committed first, then the email goes out (no SMTP
conversation while the row is locked). If the mail server refuses or cannot be reached, the
new code is emptied again and the cooldown undone before ``CodeNotSent`` is raised: the
visitor is told to try again, may do so at once, and a code we said was not sent never
works (were the message delivered after all, its code answers "send a new code").

*Binding.* The secret a client pastes is looked up like the proxy does (indexed prefix,
keyed hash compared in constant time) across every reseller, and binds only a key that
works now: active, not expired, its reseller not suspended. Every other case gets one
message. Attempts are counted per client and per IP address; the secret is never logged.
"""

from __future__ import annotations

import hmac
import logging
import smtplib
from datetime import datetime, timedelta

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db import transaction
from django.template.loader import render_to_string
from django.utils import timezone
from django_otp.util import random_number_token

from accounts.hashing import secret_digest
from accounts.throttle import throttle_allow
from keys.models import ClientKey
from keys.selectors import key_for_any_secret
from portal.exceptions import (
    BindThrottled,
    CodeDead,
    CodeExpired,
    CodeMissing,
    CodeNotSent,
    CodeRefused,
    CodeThrottled,
    CodeWrong,
    KeyNotBindable,
)
from portal.models import PortalBinding, PortalClient, PortalCode
from portal.selectors import binding_get

logger = logging.getLogger(__name__)

CODE_DIGITS = 6
# accounts.throttle scopes: codes asked for per address and per IP address, bind attempts
# per signed-in client and per IP address.
CODES_PER_EMAIL_SCOPE = "portal-code:email"
CODES_PER_IP_SCOPE = "portal-code:ip"
BINDS_PER_CLIENT_SCOPE = "portal-bind:client"
BINDS_PER_IP_SCOPE = "portal-bind:ip"
# What a code's digest is keyed under, so it can never equal another secret's digest.
CODE_DIGEST_CONTEXT = "portal-code"
EMAIL_TEMPLATES = "portal/email"


def email_normalize(email: str) -> str:
    """An address as the portal keeps it: one client (and one code) per mailbox whatever
    case it is typed in."""
    return email.strip().lower()


def _code_digest(*, email: str, code: str) -> str:
    return secret_digest(f"{CODE_DIGEST_CONTEXT}:{email}:{code}")


def duration_text(seconds: int) -> str:
    """ "10 minutes", "1 hour": a code's lifetime or cooldown as a person says it (the
    email and the code page say the same)."""
    if seconds >= 3600 and seconds % 3600 == 0:
        hours = seconds // 3600
        return f"{hours} hour{'' if hours == 1 else 's'}"
    minutes = max(1, round(seconds / 60))
    return f"{minutes} minute{'' if minutes == 1 else 's'}"


def _code_mail_send(*, email: str, code: str) -> None:
    context = {"code": code, "lifetime": duration_text(settings.PORTAL_CODE_SECONDS)}
    # A header cannot hold a newline; a template's trailing one is no part of the subject.
    subject = " ".join(render_to_string(f"{EMAIL_TEMPLATES}/code_subject.txt", context).split())
    message = EmailMultiAlternatives(
        subject,
        render_to_string(f"{EMAIL_TEMPLATES}/code.txt", context),
        settings.DEFAULT_FROM_EMAIL,
        [email],
    )
    message.attach_alternative(
        render_to_string(f"{EMAIL_TEMPLATES}/code.html", context), "text/html"
    )
    message.send()


def code_send(*, email: str, ip: str | None) -> None:
    """Email ``email`` a new sign-in code, unless sending is refused for now: more than
    PORTAL_CODES_PER_IP_PER_HOUR asks from ``ip`` or PORTAL_CODES_PER_EMAIL_PER_HOUR codes to
    the address this hour, or a code sent less than PORTAL_CODE_COOLDOWN_SECONDS ago (the
    last code then still works). A refusal returns like a send, so no page can tell them
    apart; it is only logged. Raises CodeNotSent when the mail server did not take the
    email (no code works then)."""
    email = email_normalize(email)
    # Every ask from the address counts, refused or not: it bounds what one network can ask.
    if not throttle_allow(
        scope=CODES_PER_IP_SCOPE, who=ip or "", limit=settings.PORTAL_CODES_PER_IP_PER_HOUR
    ):
        logger.info("portal code to %s not sent: too many asked from %s this hour", email, ip)
        return
    code = random_number_token(CODE_DIGITS)
    digest = _code_digest(email=email, code=code)
    with transaction.atomic(durable=True):
        # Locked: two asks at once cannot both pass the cooldown and send two codes.
        row, _ = PortalCode.objects.select_for_update().get_or_create(email=email)
        allowed, _ = row.generate_is_allowed()
        if not allowed:
            logger.info("portal code to %s not sent: the last one is within the cooldown", email)
            return
        # Counted after the cooldown, so clicking "send" twice in a minute costs one code of
        # the address's hourly allowance, not two.
        if not throttle_allow(
            scope=CODES_PER_EMAIL_SCOPE, who=email, limit=settings.PORTAL_CODES_PER_EMAIL_PER_HOUR
        ):
            logger.info("portal code to %s not sent: too many codes this hour", email)
            return
        last_generated_at = row.last_generated_timestamp
        row.digest = digest
        row.valid_until = timezone.now() + timedelta(seconds=settings.PORTAL_CODE_SECONDS)
        row.throttle_reset(commit=False)
        row.cooldown_set(commit=False)
        row.save()
    try:
        _code_mail_send(email=email, code=code)
    except (smtplib.SMTPException, OSError) as exc:
        _code_withdraw(row=row, digest=digest, last_generated_at=last_generated_at)
        logger.warning("portal code email to %s failed: %s", email, type(exc).__name__)
        raise CodeNotSent() from exc
    logger.info("portal code sent to %s", email)


def _code_withdraw(*, row: PortalCode, digest: str, last_generated_at: datetime | None) -> None:
    """Undo a code whose email was not sent: it stops working, and the cooldown it started
    is lifted so the visitor can ask again at once. Only while it is still that code."""
    PortalCode.objects.filter(pk=row.pk, digest=digest).update(
        digest="", valid_until=None, last_generated_timestamp=last_generated_at
    )


def _code_check(*, row: PortalCode | None, email: str, code: str) -> CodeRefused | None:
    """Check ``code`` against the locked ``row`` and record the outcome on it; the refusal,
    or None when the code is right (and now used up)."""
    if row is None:
        return CodeMissing()
    if not row.digest:
        # Emptied by a right code (used), or by the last wrong one allowed (dead).
        if row.throttling_failure_count >= settings.PORTAL_CODE_MAX_ATTEMPTS:
            return CodeDead()
        return CodeMissing()
    if row.valid_until is None or row.valid_until <= timezone.now():
        return CodeExpired()
    allowed, details = row.verify_is_allowed()
    if not allowed:
        until = (details or {}).get("locked_until")
        return CodeThrottled(until=until if isinstance(until, datetime) else timezone.now())
    if not hmac.compare_digest(_code_digest(email=email, code=code), row.digest):
        row.throttle_increment(commit=False)
        attempts_left = settings.PORTAL_CODE_MAX_ATTEMPTS - row.throttling_failure_count
        if attempts_left <= 0:
            row.digest = ""
            row.valid_until = None
        row.save()
        return CodeDead() if attempts_left <= 0 else CodeWrong(attempts_left)
    row.digest = ""
    row.valid_until = None
    row.throttle_reset(commit=False)
    row.save()
    return None


def code_verify(*, email: str, code: str) -> PortalClient:
    """The client ``email`` signs in as, given the right code sent to it: made at its first
    sign-in, its ``last_sign_in_at`` set. Raises a CodeRefused: CodeMissing (none sent, or
    used already), CodeExpired, CodeThrottled (a wrong code came just before: not checked,
    not counted), CodeWrong (counted) or CodeDead (PORTAL_CODE_MAX_ATTEMPTS wrong codes:
    a new one must be sent)."""
    email = email_normalize(email)
    client: PortalClient | None = None
    with transaction.atomic(durable=True):
        # Locked: parallel guesses are checked and counted one after the other, so none
        # gets past the attempt limit unseen and a right code is accepted once.
        row = PortalCode.objects.select_for_update().filter(email=email).first()
        refusal = _code_check(row=row, email=email, code=code)
        if refusal is None:
            client, _ = PortalClient.objects.get_or_create(email=email)
            client.last_sign_in_at = timezone.now()
            client.save(update_fields=["last_sign_in_at"])
    # Raised after the commit: a wrong code's count must be kept, not rolled back with it.
    if client is None:
        assert refusal is not None  # noqa: S101 - no client without a refusal
        logger.info("portal sign-in of %s refused: %s", email, type(refusal).__name__)
        raise refusal
    logger.info("portal sign-in of %s", email)
    return client


def key_bind(*, client: PortalClient, secret: str, ip: str | None) -> PortalBinding:
    """Bind the key whose secret is ``secret`` (any reseller's) to ``client``, or return the
    binding it has already. Raises BindThrottled past PORTAL_BINDS_PER_HOUR attempts by the
    client or from ``ip`` this hour, and KeyNotBindable for a secret that is no working key
    (unknown, revoked, deleted, expired, or its reseller suspended)."""
    limit = settings.PORTAL_BINDS_PER_HOUR
    if not (
        throttle_allow(scope=BINDS_PER_CLIENT_SCOPE, who=str(client.pk), limit=limit)
        and throttle_allow(scope=BINDS_PER_IP_SCOPE, who=ip or "", limit=limit)
    ):
        logger.info("portal client %s: key binding throttled (from %s)", client.pk, ip)
        raise BindThrottled()
    key = key_for_any_secret(secret=secret.strip())
    if key is None or key.effective_status != ClientKey.Status.ACTIVE or not key.tenant.is_active:
        # Never the secret, nor any part of it.
        logger.info("portal client %s: a key that cannot be bound was pasted", client.pk)
        raise KeyNotBindable()
    binding, created = PortalBinding.objects.get_or_create(client=client, key=key)
    if created:
        logger.info("portal client %s bound key %s", client.pk, key.pk)
    return binding


def key_unbind(*, client: PortalClient, key_id: int) -> None:
    """Remove ``client``'s binding of key ``key_id`` (its alert choices go with it); the key
    and other clients' bindings of it stay. A key the client has not bound raises Http404."""
    binding_get(client=client, key_id=key_id).delete()
    logger.info("portal client %s unbound key %s", client.pk, key_id)
