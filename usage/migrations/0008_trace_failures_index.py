"""A partial index of a key's failed traces (every status but ``ok``), newest first: the
request list filtered to failures reads them alone instead of every success before them.
Built ``CONCURRENTLY`` on PostgreSQL (the proxy keeps writing), as 0007's indexes."""

from django.db import migrations, models

from config.online_indexes import AddIndexOnline


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("usage", "0007_trace_list_indexes"),
    ]

    operations = [
        AddIndexOnline(
            model_name="trace",
            index=models.Index(
                condition=models.Q(("status", "ok"), _negated=True),
                fields=["client_key", "-created_at", "-id"],
                name="usage_trace_key_failures",
            ),
        ),
    ]
