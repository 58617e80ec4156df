"""Trace now belongs to the usage app (``usage/migrations/0001_initial.py``). State only:
the table ``proxy_trace``, its rows and its indexes stay; the usage app's model names it."""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('proxy', '0002_trace_over_hold'),
        ('usage', '0001_initial'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.DeleteModel(
                    name='Trace',
                ),
            ],
            database_operations=[],
        ),
    ]
