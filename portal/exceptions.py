"""What the portal's services refuse, each with the words a visitor is shown.

A refused *send* of a code is deliberately not among them: asking for a code answers the
same whether it was sent, refused (throttle, cooldown) or the address is unknown, so
nothing here lets a page tell those apart. Only a send that failed in the mail server is
said (``CodeNotSent``): the visitor must know to try again.
"""

from __future__ import annotations

import math
from datetime import datetime

from django.utils import timezone


class PortalError(Exception):
    """Base of the portal's domain errors; ``str()`` is the message for the visitor."""


class CodeNotSent(PortalError):
    """The mail server did not take the code's email; no code works until a new one is
    sent."""

    def __init__(self) -> None:
        super().__init__("We could not send the email just now. Please try again in a minute.")


class CodeRefused(PortalError):
    """A sign-in code that does not sign in: see the subclasses."""


class CodeMissing(CodeRefused):
    """No code waits for the address: none was sent, or the last one was used already."""

    def __init__(self) -> None:
        super().__init__("There is no code waiting for this address. Send a new code.")


class CodeExpired(CodeRefused):
    def __init__(self) -> None:
        super().__init__("That code has expired. Send a new code.")


class CodeDead(CodeRefused):
    """Too many wrong codes: the code no longer works, even if the right one comes next."""

    def __init__(self) -> None:
        super().__init__("Too many wrong codes: this one no longer works. Send a new code.")


class CodeWrong(CodeRefused):
    """A wrong code; ``attempts_left`` more before the code dies."""

    def __init__(self, attempts_left: int) -> None:
        self.attempts_left = attempts_left
        tries = "try" if attempts_left == 1 else "tries"
        super().__init__(
            f"That code is not right. Check the newest email and enter its 6 digits "
            f"({attempts_left} {tries} left)."
        )


class CodeThrottled(CodeRefused):
    """A code came too soon after a wrong one (django-otp's throttle: 1, 2, 4 … seconds);
    it was not checked, and does not count as a try."""

    def __init__(self, until: datetime) -> None:
        self.until = until
        super().__init__(
            f"Too many tries too quickly: wait {self.wait_seconds} s, then enter the code again."
        )

    @property
    def wait_seconds(self) -> int:
        return max(1, math.ceil((self.until - timezone.now()).total_seconds()))


class KeyNotBindable(PortalError):
    """The pasted secret is not a key that works: unknown, revoked, deleted, expired, or its
    reseller's account is suspended. One message for all, so a page never tells which."""

    def __init__(self) -> None:
        super().__init__(
            "That key is not recognised or no longer active. Check that you pasted all of it."
        )


class BindThrottled(PortalError):
    def __init__(self) -> None:
        super().__init__("Too many attempts to add a key just now. Please try again later.")
