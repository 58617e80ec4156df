"""``manage.py reencrypt_secrets [--dry-run] [--json]``: encrypt every stored secret (upstream
API keys, alert webhook secrets, authenticator keys) again with the current
FIELD_ENCRYPTION_KEY, so that the former keys in FIELD_ENCRYPTION_KEY_FALLBACKS can be
removed. Exits 1 when a secret no key can read (reported by row id) or one that kept changing
under it remains. Prints counts and ids only, never a secret."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.reencryption import BATCH_SIZE, Reencryption, secrets_reencrypt


class Command(BaseCommand):
    help = (
        "Encrypt every stored secret again with the current FIELD_ENCRYPTION_KEY (those "
        "under a key of FIELD_ENCRYPTION_KEY_FALLBACKS); exit 1 if any no key can read."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="Change nothing; report.")
        parser.add_argument("--json", action="store_true", help="Print one JSON object.")
        parser.add_argument(
            "--batch-size", type=int, default=BATCH_SIZE, help="Rows read at a time."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1")
        result = secrets_reencrypt(dry_run=options["dry_run"], batch_size=options["batch_size"])
        if options["json"]:
            self.stdout.write(json.dumps(result.as_dict()))
        else:
            self._print(result)
        problems = [
            f"{c.column.model} id {', '.join(map(str, ids))} ({why})"
            for c in result.columns
            for ids, why in (
                (c.unreadable_ids, "no key can read it"),
                (c.changed_ids, "kept changing; run again"),
            )
            if ids
        ]
        if problems:
            raise CommandError("not every secret is under the current key: " + "; ".join(problems))

    def _print(self, result: Reencryption) -> None:
        rotated = "would rotate" if result.dry_run else "rotated"
        for c in result.columns:
            line = (
                f"{c.column.label}: {c.rotated_count} {rotated}, {c.current_count} already "
                f"current, {len(c.unreadable_ids)} unreadable"
            )
            if c.changed_ids:
                line += f", {len(c.changed_ids)} kept changing"
            self.stdout.write(line)
        if result.dry_run and any(c.rotated_count for c in result.columns):
            self.stdout.write("[dry run] nothing written")
        elif result.is_complete:
            self.stdout.write("every stored secret is under the current key")
