"""``manage.py otp_enrol <email>``: give an account (an operator's, typically) an
authenticator app for two-factor sign-in, from the server's terminal.

Prints the otpauth:// URI (and its QR code) once, asks for the code the app then shows,
and on a right one turns two-factor sign-in on and prints the account's backup codes once.
Nothing printed is stored in clear (``accounts.models.AuthenticatorDevice``).
"""

from __future__ import annotations

import io
from base64 import b32encode
from typing import Any

import segno
from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.exceptions import CodeRefused, CodeThrottled
from accounts.selectors import two_factor_enabled, user_by_email
from accounts.services import two_factor_confirm, two_factor_start

ATTEMPTS = 3


class Command(BaseCommand):
    help = (
        "Enrol an authenticator app for two-factor sign-in (the admin asks operators for "
        "its codes): prints the otpauth URI once, then asks for a code from the app."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("email")
        parser.add_argument(
            "--replace",
            action="store_true",
            help="Replace the authenticator the account already has (once confirmed).",
        )
        parser.add_argument(
            "--no-qr", action="store_true", help="Print the URI and key only, no QR code."
        )

    def ask(self, prompt: str) -> str:
        """One line typed by the operator (tests put their answers here)."""
        return input(prompt)

    def handle(self, *args: Any, **options: Any) -> None:
        user = user_by_email(email=options["email"])
        if user is None:
            raise CommandError(f"no account with email {options['email']}")
        if two_factor_enabled(user=user) and not options["replace"]:
            raise CommandError(
                f"{user.email} already has an authenticator; --replace enrols a new one"
            )
        device = two_factor_start(user=user)
        uri = device.config_url
        self.stdout.write("Add this account to the authenticator app (shown once):\n")
        if not options["no_qr"]:
            art = io.StringIO()
            segno.make(uri, error="m").terminal(out=art, compact=True)
            self.stdout.write(art.getvalue())
        self.stdout.write(f"URI: {uri}\n")
        self.stdout.write(f"Key: {b32encode(device.bin_key).decode()}\n")
        for _ in range(ATTEMPTS):
            code = self.ask("Code the app shows now: ").strip()
            try:
                _, codes = two_factor_confirm(user=user, code=code)
            except CodeThrottled:
                self.stderr.write("Too many wrong codes: wait a few seconds, then try again.")
            except CodeRefused:
                self.stderr.write("That code does not match (is the server's clock right?).")
            else:
                self.stdout.write(
                    self.style.SUCCESS(f"Two-factor sign-in is on for {user.email}.") + "\n"
                    "Backup codes, each works once (shown once, keep them safe):\n"
                    + "\n".join(f"  {code}" for code in codes)
                )
                return
        raise CommandError(
            "not enrolled: no right code given (run the command again for a new key)"
        )
