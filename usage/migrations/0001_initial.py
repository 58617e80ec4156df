"""Trace joins the usage app. State only: the table ``proxy_trace`` the proxy app created,
its rows and its indexes stay as they are (``Trace.Meta.db_table``); the proxy app drops the
model from its state in ``proxy/migrations/0003_trace_moves_to_usage.py``, after this.

On a database that had the model in the proxy app, its content type moves with it, so the
permissions granted on traces and the admin's history of them still apply.
"""

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


def content_type_to_usage(apps, schema_editor):
    _content_type_move(apps, schema_editor, source="proxy", target="usage")


def content_type_to_proxy(apps, schema_editor):
    _content_type_move(apps, schema_editor, source="usage", target="proxy")


def _content_type_move(apps, schema_editor, *, source, target):
    # A fresh database has no content types yet (they are made after migrating); one where
    # the target already has its own is left alone.
    ContentType = apps.get_model("contenttypes", "ContentType")
    types = ContentType.objects.using(schema_editor.connection.alias)
    if not types.filter(app_label=target, model="trace").exists():
        types.filter(app_label=source, model="trace").update(app_label=target)


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('accounts', '0001_initial'),
        ('billing', '0006_price_cache_write_1h'),
        ('contenttypes', '0002_remove_content_type_name'),
        ('keys', '0002_hold_marker_and_claim_token'),
        # The table, with every column and index this model declares.
        ('proxy', '0002_trace_over_hold'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='Trace',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('request_id', models.CharField(max_length=64, unique=True)),
                        ('tag', models.CharField(blank=True, default='', max_length=100)),
                        ('endpoint', models.CharField(max_length=40)),
                        ('model', models.CharField(max_length=200)),
                        ('upstream_model', models.CharField(blank=True, default='', max_length=200)),
                        ('is_stream', models.BooleanField(default=False)),
                        ('input_tokens', models.PositiveIntegerField(default=0)),
                        ('output_tokens', models.PositiveIntegerField(default=0)),
                        ('cached_input_tokens', models.PositiveIntegerField(default=0)),
                        ('cache_write_tokens', models.PositiveIntegerField(default=0)),
                        ('is_usage_estimated', models.BooleanField(default=False)),
                        ('cost_nanos', models.BigIntegerField(default=0)),
                        ('client_nanos', models.BigIntegerField(default=0)),
                        ('is_over_hold', models.BooleanField(db_default=False, default=False)),
                        ('overrun_cost_nanos', models.BigIntegerField(db_default=0, default=0)),
                        ('status_code', models.PositiveSmallIntegerField()),
                        ('status', models.CharField(choices=[('ok', 'Completed'), ('upstream_error', 'Upstream error'), ('client_disconnected', 'Client disconnected'), ('refused', 'Refused before dispatch')], max_length=24)),
                        ('error_class', models.CharField(blank=True, default='', max_length=64)),
                        ('latency_ms', models.PositiveIntegerField(default=0)),
                        ('ttft_ms', models.PositiveIntegerField(blank=True, null=True)),
                        ('created_at', models.DateTimeField(default=django.utils.timezone.now)),
                        ('client_key', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='traces', to='keys.clientkey')),
                        ('price', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='billing.modelprice')),
                        ('tenant', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='accounts.tenant')),
                        ('upstream', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='billing.upstream')),
                    ],
                    options={
                        'db_table': 'proxy_trace',
                        'ordering': ['-created_at', '-id'],
                        'indexes': [models.Index(fields=['client_key', '-created_at'], name='proxy_trace_client__b74298_idx'), models.Index(fields=['tenant', '-created_at'], name='proxy_trace_tenant__b232c4_idx'), models.Index(fields=['created_at'], name='proxy_trace_created_489c52_idx'), models.Index(condition=models.Q(('is_over_hold', True)), fields=['upstream', '-created_at'], name='proxy_trace_over_hold')],
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(content_type_to_usage, content_type_to_proxy),
    ]
