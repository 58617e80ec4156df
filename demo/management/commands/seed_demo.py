"""``manage.py seed_demo [--url URL] [--json]``: the demo ``make run`` prints (idempotent).

Passwords come from ``DEMO_ADMIN_PASSWORD`` / ``DEMO_PASSWORD``, or are generated once
and kept in ``var/`` (mode 0600) so every run prints the same logins. The demo client
key's secret is kept there too (``var/demo_client_key``), so every run prints the same key
while it works, and with it a curl line that calls the built-in demo model.
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
from demo.services import (
    DEMO_ADMIN_EMAIL,
    DEMO_MODEL,
    DEMO_RESELLER_EMAIL,
    DEMO_UPSTREAMS,
    DemoSeed,
    demo_seed,
)

ADMIN_PASSWORD_ENV, ADMIN_PASSWORD_FILE = "DEMO_ADMIN_PASSWORD", "demo_admin_password"
RESELLER_PASSWORD_ENV, RESELLER_PASSWORD_FILE = "DEMO_PASSWORD", "demo_password"
CLIENT_KEY_FILE = "demo_client_key"
DEMO_PROMPT = "Hello, Tollgate!"


def demo_password(env_name: str, filename: str) -> str:
    """The password from the environment, else the one kept in var/, else a new one kept there."""
    from_env = os.environ.get(env_name, "").strip()
    if from_env:
        return from_env
    kept = _kept(filename)
    if kept:
        return kept
    generated = secrets.token_urlsafe(12)
    _keep(filename, generated)
    return generated


def _kept(filename: str) -> str:
    """What var/``filename`` keeps, or ""."""
    path = Path(settings.VAR_DIR) / filename
    return path.read_text().strip() if path.exists() else ""


def _keep(filename: str, value: str) -> None:
    """Keep ``value`` in var/``filename``, readable by its owner only."""
    path = Path(settings.VAR_DIR) / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")


def demo_curl(*, url: str, secret: str) -> str:
    """A chat completion of the demo model, as one line a shell takes."""
    body = json.dumps({"model": DEMO_MODEL, "messages": [{"role": "user", "content": DEMO_PROMPT}]})
    return (
        f'curl {url}/v1/chat/completions -H "Authorization: Bearer {secret}" '
        f"-H \"content-type: application/json\" -d '{body}'"
    )


def demo_model_state(seed: DemoSeed) -> str:
    model = seed.demo_model
    price = (
        f"${format_usd(model.price.input_per_mtok_nanos)} in / "
        f"${format_usd(model.price.output_per_mtok_nanos)} out per 1M tokens"
    )
    state = "on" if model.is_on else "off (turned off in the admin)"
    return f"model {DEMO_MODEL}, answered inside Tollgate (no provider key); {price}; {state}"


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
        seed = demo_seed(
            admin_password=admin_password,
            reseller_password=reseller_password,
            client_key_secret=_kept(CLIENT_KEY_FILE) or None,
        )
        if seed.client_key is not None and seed.client_key.created:
            _keep(CLIENT_KEY_FILE, seed.client_key.secret)
        balance = format_usd(wallet_for_tenant(tenant=seed.tenant).balance_nanos)
        url = options["url"].rstrip("/")
        token = seed.token.secret
        curl = f'curl -H "Authorization: Bearer {token}" {url}/api/v1/wallet'
        client_key = seed.client_key.secret if seed.client_key is not None else None
        try_demo = demo_curl(url=url, secret=client_key) if client_key else None
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
                "client_key": client_key,
                "demo_model": DEMO_MODEL,
                "demo_model_on": seed.demo_model.is_on,
                "demo_curl": try_demo,
                "portal_url": f"{url}/portal/",
            }
            self.stdout.write(json.dumps(payload))
            return
        upstreams = []
        for demo in DEMO_UPSTREAMS:
            key_state = "set" if os.environ.get(demo.api_key_env) else "not set: calls will fail"
            models = priced.get(demo.name, 0)
            upstreams.append(
                f"  {demo.name:<14} {models} models priced;"
                f" key from ${demo.api_key_env} ({key_state})"
            )
        upstreams.append(f"  {seed.demo_model.upstream.name:<14} {demo_model_state(seed)}")
        if try_demo is None:
            try_demo_lines = ["  (No demo client key: the demo wallet cannot fund one.)"]
        else:
            try_demo_lines = [
                "  Call the demo model, answered inside Tollgate (no provider key needed):",
                f"    {try_demo}",
            ]
        rule = "=" * 72
        lines = [
            rule,
            f"  Tollgate is ready on {url}",
            rule,
            f"  Start here       {url}/",
            f"  Operator admin   {url}/admin/",
            f"                   login {DEMO_ADMIN_EMAIL} / {admin_password}",
            f"  Demo reseller    {url}/dashboard/",
            f"                   login {DEMO_RESELLER_EMAIL} / {reseller_password}"
            f"   (wallet {balance} USD)",
            f"  Demo client key  {client_key or '(none)'}   (kept in var/{CLIENT_KEY_FILE})",
            f"  Client portal    {url}/portal/",
            "                   any email; the sign-in code appears in this console (no mail is",
            "                   sent in development); then paste the demo client key",
            "  Reseller API token (new on every run; the previous one is revoked):",
            f"                   {token}",
            *try_demo_lines,
            "  The reseller API:",
            f"    {curl}",
            f"    OpenAI SDK: base_url={url}/v1   Anthropic SDK: base_url={url}",
            "  Upstreams:",
            *upstreams,
            rule,
        ]
        self.stdout.write("\n".join(lines))
