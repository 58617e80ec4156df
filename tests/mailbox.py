"""The mailbox a server or worker writes with Django's file email backend, read here as a
person reads their inbox: the settings that point it at a folder, its messages in the order
they were written, and the newest one to an address that says what a test waits for."""

from __future__ import annotations

import email
import re
import time
from email import policy
from email.message import EmailMessage
from pathlib import Path

# Django's file email backend ends each message with a line of 79 dashes.
MESSAGE_END = "\n" + "-" * 79 + "\n"
MAIL_WAIT_SECONDS = 10


def file_email_env(mailbox: Path) -> dict[str, str]:
    """The settings (environment) of a server or worker that sends its email as files."""
    return {
        "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
        "EMAIL_FILE_PATH": str(mailbox),
    }


def inbox(mailbox: Path) -> list[EmailMessage]:
    """Every message written to ``mailbox``, oldest file first.

    By the time each file was written: the backend names a file by the second it opened it
    and a number of its own, so two files of the same second would sort by chance.
    """
    messages = []
    for path in sorted(
        mailbox.glob("*.log"), key=lambda path: (path.stat().st_mtime_ns, path.name)
    ):
        for raw in path.read_text().split(MESSAGE_END):
            if raw.strip():
                messages.append(email.message_from_string(raw, policy=policy.default))
    return messages  # type: ignore[return-value]


def plain_text(message: EmailMessage) -> str:
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    return str(body.get_content())


def wait_for_mail(mailbox: Path, *, to: str, having: re.Pattern[str]) -> str:
    """The text of the newest message to ``to`` in which ``having`` is found; waited for
    (the server writes it while answering, a file the test may read half-written)."""
    deadline = time.monotonic() + MAIL_WAIT_SECONDS
    while time.monotonic() < deadline:
        if mailbox.exists():
            for message in reversed(inbox(mailbox)):
                if message["To"] == to and having.search(text := plain_text(message)):
                    return text
        time.sleep(0.1)
    raise AssertionError(f"no email to {to} with {having.pattern}")
