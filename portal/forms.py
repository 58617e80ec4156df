"""The portal's forms: an email address to send a code to, the code, a key to bind. They
only parse; the views call ``portal.services`` with what they clean."""

from __future__ import annotations

import re

from django import forms

from accounts.hashing import PREFIX_LENGTH
from portal.services import CODE_DIGITS

EMAIL_MAX_LENGTH = 254
# A pasted key is ~46 characters; room for a stray space or newline, not for a novel.
KEY_MAX_LENGTH = 200
# Spaces and dashes people type or paste inside a code ("123 456", "123-456").
CODE_SEPARATORS = re.compile(r"[\s-]+")


class EmailForm(forms.Form):
    email = forms.EmailField(
        label="Email",
        max_length=EMAIL_MAX_LENGTH,
        error_messages={
            "required": "Enter your email address.",
            "invalid": "Enter a valid email address, like name@example.com.",
        },
    )


class CodeForm(forms.Form):
    code = forms.CharField(
        label="Code", max_length=32, error_messages={"required": "Enter the code from the email."}
    )

    def clean_code(self) -> str:
        code = CODE_SEPARATORS.sub("", self.cleaned_data["code"])
        if len(code) != CODE_DIGITS or not code.isascii() or not code.isdigit():
            raise forms.ValidationError(f"Enter the {CODE_DIGITS} digits from the email.")
        return code


class BindForm(forms.Form):
    key = forms.CharField(
        label="API key",
        max_length=KEY_MAX_LENGTH,
        error_messages={"required": "Paste the API key you were given."},
    )

    def clean_key(self) -> str:
        # Pasted from a chat or an email, a key may arrive split by a line break or a space.
        key = "".join(self.cleaned_data["key"].split())
        if len(key) <= PREFIX_LENGTH:
            raise forms.ValidationError(
                "That is too short to be an API key: paste all of it (it starts with tg-)."
            )
        return key
