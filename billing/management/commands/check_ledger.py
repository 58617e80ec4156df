from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from billing.selectors import ledger_mismatches


class Command(BaseCommand):
    help = "Check that every wallet balance equals the sum of its ledger entries (exit 1 if not)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        problems = ledger_mismatches()
        if options["json"]:
            self.stdout.write(json.dumps({"ok": not problems, "mismatches": [list(p) for p in problems]}))
        if problems:
            raise CommandError(f"{len(problems)} wallet(s) out of balance")
        if not options["json"]:
            self.stdout.write("ledger ok")
