"""``manage.py seed_demo [--url URL] [--json]``: the demo ``make run`` prints (idempotent).

Passwords come from ``DEMO_ADMIN_PASSWORD`` / ``DEMO_PASSWORD``, or are generated once
and kept in ``var/`` (mode 0600) so every run prints the same logins.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from billing.money import format_usd
from billing.selectors import wallet_for_tenant
from demo.services import DEMO_ADMIN_EMAIL, DEMO_RESELLER_EMAIL, DEMO_UPSTREAMS, demo_seed

ADMIN_PASSWORD_ENV, ADMIN_PASSWORD_FILE = "DEMO_ADMIN_PASSWORD", "demo_admin_password"
RESELLER_PASSWORD_ENV, RESELLER_PASSWORD_FILE = "DEMO_PASSWORD", "demo_password"


def demo_password(env_name: str, filename: str) -> str:
    """The password from the environment, else the one kept in var/, else a new one kept there."""
    from_env = os.environ.get(env_name, "").strip()
    if from_env:
        return from_env
    path = Path(settings.VAR_DIR) / filename
    if path.exists():
        kept = path.read_text().strip()
        if kept:
            return kept
    path.parent.mkdir(parents=True, exist_ok=True)
    generated = secrets.token_urlsafe(12)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(generated + "\n")
    return generated


class Command(BaseCommand):
    help = (
        "Seed the demo: operator superuser, demo reseller with $100, OpenAI and Anthropic "
        "upstreams priced from genai-prices, and a fresh reseller API token. Idempotent."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--url", default="http://127.0.0.1:8000", help="Where the server listens."
        )
        parser.add_argument("--json", action="store_true", help="Print one JSON object.")

    def handle(self, *args: Any, **options: Any) -> None:
        admin_password = demo_password(ADMIN_PASSWORD_ENV, ADMIN_PASSWORD_FILE)
        reseller_password = demo_password(RESELLER_PASSWORD_ENV, RESELLER_PASSWORD_FILE)
        seed = demo_seed(admin_password=admin_password, reseller_password=reseller_password)
        balance = format_usd(wallet_for_tenant(tenant=seed.tenant).balance_nanos)
        url = options["url"].rstrip("/")
        token = seed.token.secret
        curl = f'curl -H "Authorization: Bearer {token}" {url}/api/v1/wallet'
        priced = {
            result.upstream: len(result.created) + len(result.updated) + len(result.unchanged)
            for result in seed.prices.upstreams
        }
        if options["json"]:
            payload = {
                "url": url,
                "admin_url": f"{url}/admin/",
                "admin": {"email": DEMO_ADMIN_EMAIL, "password": admin_password},
                "reseller": {
                    "email": DEMO_RESELLER_EMAIL,
                    "password": reseller_password,
                    "tenant_id": seed.tenant.pk,
                },
                "api_token": token,
                "wallet_balance": balance,
                "credited": seed.credited,
                "upstreams_created": seed.upstreams_created,
                "priced_models": priced,
                "curl": curl,
            }
            self.stdout.write(json.dumps(payload))
            return
        upstreams = []
        for demo in DEMO_UPSTREAMS:
            key_state = "set" if os.environ.get(demo.api_key_env) else "not set: calls will fail"
            models = priced.get(demo.name, 0)
            upstreams.append(
                f"  {demo.name:<10} {models} models priced;"
                f" key from ${demo.api_key_env} ({key_state})"
            )
        rule = "=" * 72
        lines = [
            rule,
            f"  Tollgate is ready on {url}",
            rule,
            f"  Operator admin   {url}/admin/",
            f"                   login {DEMO_ADMIN_EMAIL} / {admin_password}",
            f"  Demo reseller    login {DEMO_RESELLER_EMAIL} / {reseller_password}"
            f"   (wallet {balance} USD)",
            "  Reseller API token (new on every run; the previous one is revoked):",
            f"                   {token}",
            "  Try it:",
            f"    {curl}",
            f"    OpenAI SDK: base_url={url}/v1   Anthropic SDK: base_url={url}",
            "  Upstreams:",
            *upstreams,
            rule,
        ]
        self.stdout.write("\n".join(lines))
