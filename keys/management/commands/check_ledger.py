"""``manage.py check_ledger [--json]``: audit the books; exit 1 on any mismatch."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from keys.selectors import books_audit


class Command(BaseCommand):
    help = (
        "Recompute every wallet balance, reservation total, key counter and running balance "
        "from the ledger and reservations (exit 1 on any mismatch)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print one JSON object.")

    def handle(self, *args: Any, **options: Any) -> None:
        problems = books_audit()
        if options["json"]:
            payload = {"ok": not problems, "problems": [p.as_dict() for p in problems]}
            self.stdout.write(json.dumps(payload))
        else:
            for problem in problems:
                self.stdout.write(f"{problem.check}: {problem.message}")
        if problems:
            raise CommandError(f"ledger audit failed: {len(problems)} problem(s)")
        if not options["json"]:
            self.stdout.write("ledger ok")
