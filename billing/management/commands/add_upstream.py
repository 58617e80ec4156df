"""``manage.py add_upstream NAME --kind openai|anthropic --base-url URL [--api-key-env VAR]
[--api-key-stdin] [--timeout SECONDS] [--json]``: create or update an upstream."""

from __future__ import annotations

import json
import sys
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from billing.exceptions import BillingError
from billing.models import PROVIDER_KINDS, Upstream
from billing.selectors import upstream_get
from billing.services import upstream_save


class Command(BaseCommand):
    help = (
        "Create or update an upstream provider account. Base URLs as the official SDKs take "
        "them: https://api.openai.com/v1 (OpenAI-compatible), https://api.anthropic.com."
    )
    # call_command(..., stdin=StringIO("sk-...")) feeds --api-key-stdin in tests.
    stealth_options = ("stdin",)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="A slug, e.g. openai.")
        parser.add_argument(
            "--kind", required=True, choices=[kind.value for kind in PROVIDER_KINDS]
        )
        parser.add_argument("--base-url", required=True)
        secret = parser.add_mutually_exclusive_group()
        secret.add_argument(
            "--api-key-env", help="Read the API key from this environment variable at dispatch."
        )
        secret.add_argument(
            "--api-key-stdin",
            action="store_true",
            help="Read the API key from the first line of stdin and store it encrypted.",
        )
        parser.add_argument("--timeout", type=int, help="Upstream timeout in seconds.")
        parser.add_argument("--json", action="store_true", help="Print one JSON object.")

    def handle(self, *args: Any, **options: Any) -> None:
        api_key = None
        if options["api_key_stdin"]:
            api_key = (options.get("stdin") or sys.stdin).readline().strip()
            if not api_key:
                raise CommandError("--api-key-stdin: no API key on stdin.")
        timeout = options["timeout"]
        if timeout is not None and not 1 <= timeout <= 3600:
            raise CommandError("--timeout must be between 1 and 3600 seconds.")
        try:
            upstream_get(name=options["name"])
            created = False
        except Upstream.DoesNotExist:
            created = True
        try:
            upstream = upstream_save(
                name=options["name"],
                kind=options["kind"],
                base_url=options["base_url"],
                api_key_env=options["api_key_env"],
                api_key=api_key,
                timeout_seconds=timeout,
            )
        except BillingError as exc:
            raise CommandError(str(exc)) from exc
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        if options["json"]:
            # Never the key itself: only whether one is stored.
            payload = {
                "id": upstream.pk,
                "name": upstream.name,
                "kind": upstream.kind,
                "base_url": upstream.base_url,
                "api_key_env": upstream.api_key_env,
                "has_stored_api_key": bool(upstream.api_key_encrypted),
                "timeout_seconds": upstream.timeout_seconds,
                "is_active": upstream.is_active,
                "created": created,
            }
            self.stdout.write(json.dumps(payload))
            return
        if upstream.api_key_encrypted:
            key_source = "an encrypted stored key"
        elif upstream.api_key_env:
            key_source = f"the key in ${upstream.api_key_env}"
        else:
            key_source = "no API key"
        self.stdout.write(
            f"{'Created' if created else 'Updated'} upstream {upstream.name} "
            f"({upstream.get_kind_display()}, {upstream.base_url}) with {key_source}."
        )
