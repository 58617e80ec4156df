"""``manage.py rollup_usage [--check] [--json]``: roll every unrolled trace up into its
15-minute bucket and local day; with ``--check``, audit the rollups against the retained
traces, and the daily rows against the 15-minute rows, instead (exit 1 on any mismatch)."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from usage.selectors import rollups_audit
from usage.services import usage_roll_up


class Command(BaseCommand):
    help = (
        "Add every trace not rolled up yet into its usage rollup; --check recomputes the "
        "rollups of the buckets whose traces are all retained, and the daily rows from the "
        "15-minute rows (exit 1 on any mismatch)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--check", action="store_true", help="Audit the rollups instead of rolling up."
        )
        parser.add_argument("--json", action="store_true", help="Print one JSON object.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["check"]:
            self._check(as_json=options["json"])
            return
        result = usage_roll_up()
        if options["json"]:
            self.stdout.write(json.dumps(result.as_dict()))
        else:
            self.stdout.write(
                f"rolled up {result.traces} trace(s) into {result.buckets} bucket row(s)"
            )

    def _check(self, *, as_json: bool) -> None:
        problems = rollups_audit()
        if as_json:
            payload = {"ok": not problems, "problems": [p.as_dict() for p in problems]}
            self.stdout.write(json.dumps(payload))
        else:
            for problem in problems:
                self.stdout.write(problem.message)
        if problems:
            raise CommandError(f"rollup audit failed: {len(problems)} bucket(s) or day(s) disagree")
        if not as_json:
            self.stdout.write("rollups ok")
