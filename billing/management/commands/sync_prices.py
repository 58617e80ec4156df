"""``manage.py sync_prices [--upstream NAME] [--provider ID] [--only-existing]
[--override-manual] [--dry-run] [--json]``: seed prices from genai-prices (offline)."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from billing.exceptions import BillingError
from billing.models import Upstream
from billing.pricing_sync import PricesSyncSummary, prices_sync


class Command(BaseCommand):
    help = (
        "Post prices from the bundled genai-prices database for every active upstream whose "
        "base URL it recognises: new routes, and a new price version where the price changed. "
        "Prices set by hand are kept unless --override-manual."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--upstream", help="Only this upstream (by name).")
        parser.add_argument(
            "--provider", help="Force a genai-prices provider id (needs --upstream)."
        )
        parser.add_argument(
            "--only-existing", action="store_true", help="Only models that already have a route."
        )
        parser.add_argument(
            "--override-manual", action="store_true", help="Replace prices set by hand too."
        )
        parser.add_argument("--dry-run", action="store_true", help="Change nothing; report.")
        parser.add_argument("--json", action="store_true", help="Print one JSON object.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            summary = prices_sync(
                upstream_name=options["upstream"],
                provider_id=options["provider"],
                only_existing=options["only_existing"],
                override_manual=options["override_manual"],
                dry_run=options["dry_run"],
            )
        except Upstream.DoesNotExist as exc:
            raise CommandError(f"No upstream named {options['upstream']!r}.") from exc
        except BillingError as exc:
            raise CommandError(str(exc)) from exc
        if options["json"]:
            self.stdout.write(json.dumps(asdict(summary)))
            return
        self.stdout.write(_describe(summary))


def _describe(summary: PricesSyncSummary) -> str:
    lines = []
    prefix = "[dry run] would post" if summary.dry_run else "posted"
    if not summary.upstreams:
        lines.append("No active upstreams.")
    for result in summary.upstreams:
        if result.provider is None:
            lines.append(f"{result.upstream}: {result.note}")
            continue
        lines.append(
            f"{result.upstream} (genai-prices provider {result.provider}): {prefix} "
            f"{len(result.created)} new model(s), {len(result.updated)} price change(s); "
            f"{len(result.unchanged)} unchanged, {len(result.skipped_manual)} kept manual, "
            f"{len(result.skipped_unpriced)} without a token price."
        )
        if result.skipped_manual:
            lines.append(f"  kept manual prices: {', '.join(result.skipped_manual)}")
        if result.tiered:
            lines.append(f"  with long-prompt tiers: {', '.join(result.tiered)}")
    return "\n".join(lines)
