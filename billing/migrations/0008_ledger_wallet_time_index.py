"""The wallet's ledger in time order, ``(wallet, created_at, id)``: the dashboard's ledger
pages, its date filter and the balance over time read a range of it instead of every entry.
Built ``CONCURRENTLY`` on PostgreSQL: every settled request of a wallet-funded key writes an
entry, so a plain CREATE INDEX would hold them up for the whole build."""

from django.db import migrations, models

from config.online_indexes import AddIndexOnline


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("billing", "0007_upstream_kind_demo"),
    ]

    operations = [
        AddIndexOnline(
            model_name="ledgerentry",
            index=models.Index(fields=["wallet", "created_at", "id"], name="ledger_wallet_time"),
        ),
    ]
