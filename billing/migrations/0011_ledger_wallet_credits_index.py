"""A wallet's credits in time order, ``(wallet, created_at)`` for top-ups and manual
credits only: the alerts' check asks whether a wallet was credited since an alert was
claimed, which ``ledger_wallet_time`` answers only by reading every request's entry since.
Built ``CONCURRENTLY`` on PostgreSQL, as ``0008``."""

import django.db.models
from django.db import migrations, models

from config.online_indexes import AddIndexOnline


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("billing", "0010_top_up_disputes_won_and_shortfalls"),
    ]

    operations = [
        AddIndexOnline(
            model_name="ledgerentry",
            index=models.Index(
                condition=django.db.models.Q(
                    ("amount_nanos__gt", 0), ("kind__in", ["top_up", "manual_credit"])
                ),
                fields=["wallet", "created_at"],
                name="ledger_wallet_credits",
            ),
        ),
    ]
