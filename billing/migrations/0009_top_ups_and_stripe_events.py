"""Card top-ups through Stripe Checkout (``TopUp``), the Stripe webhook events behind them
(``StripeEvent``, unique by Stripe's event id), and the ledger kinds a top-up posts (its fee,
refunds and disputes). New tables only, and a choices change (no SQL) on the ledger."""

import django.db.models.deletion
import django.utils.timezone
import uuid
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0003_sign_up'),
        ('billing', '0008_ledger_wallet_time_index'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AlterField(
            model_name='ledgerentry',
            name='kind',
            field=models.CharField(choices=[('top_up', 'Top-up'), ('top_up_fee', 'Top-up fee'), ('top_up_refund', 'Top-up refund'), ('top_up_dispute', 'Top-up dispute'), ('manual_credit', 'Manual credit'), ('key_funding', 'Key funding'), ('key_refund', 'Key refund'), ('usage', 'Usage'), ('adjustment', 'Adjustment')], max_length=20),
        ),
        migrations.CreateModel(
            name='StripeEvent',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('event_id', models.CharField(max_length=255, unique=True)),
                ('type', models.CharField(max_length=100)),
                ('payload', models.JSONField()),
                ('status', models.CharField(choices=[('received', 'Received'), ('processed', 'Processed'), ('failed', 'Failed'), ('ignored', 'Ignored')], default='received', max_length=10)),
                ('error', models.TextField(blank=True, default='')),
                ('note', models.CharField(blank=True, default='', max_length=500)),
                ('attempts', models.PositiveIntegerField(default=0)),
                ('is_livemode', models.BooleanField(default=False)),
                ('received_at', models.DateTimeField(db_index=True, default=django.utils.timezone.now)),
                ('processed_at', models.DateTimeField(blank=True, null=True)),
            ],
            options={
                'ordering': ['-received_at', '-id'],
                'indexes': [models.Index(condition=models.Q(('status', 'failed')), fields=['received_at'], name='stripe_event_failed')],
            },
        ),
        migrations.CreateModel(
            name='TopUp',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('amount_nanos', models.BigIntegerField()),
                ('fee_nanos', models.BigIntegerField(default=0)),
                ('currency', models.CharField(default='usd', max_length=3)),
                ('status', models.CharField(choices=[('pending', 'Pending'), ('credited', 'Credited'), ('failed', 'Failed'), ('expired', 'Expired')], default='pending', max_length=10)),
                ('idempotency_key', models.UUIDField(default=uuid.uuid4, editable=False, unique=True)),
                ('stripe_session_id', models.CharField(blank=True, max_length=255, null=True, unique=True)),
                ('stripe_payment_intent', models.CharField(blank=True, default='', max_length=255)),
                ('checkout_url', models.TextField(blank=True, default='')),
                ('refunded_nanos', models.BigIntegerField(default=0)),
                ('disputed_nanos', models.BigIntegerField(default=0)),
                ('reversed_nanos', models.BigIntegerField(default=0)),
                ('error', models.TextField(blank=True, default='')),
                ('created_at', models.DateTimeField(default=django.utils.timezone.now)),
                ('credited_at', models.DateTimeField(blank=True, null=True)),
                ('updated_at', models.DateTimeField(default=django.utils.timezone.now)),
                ('actor', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                ('tenant', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='+', to='accounts.tenant')),
                ('wallet', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='top_ups', to='billing.wallet')),
            ],
            options={
                'ordering': ['-created_at', '-id'],
                'indexes': [models.Index(fields=['tenant', '-id'], name='top_up_tenant_recent'), models.Index(condition=models.Q(('stripe_payment_intent', ''), _negated=True), fields=['stripe_payment_intent'], name='top_up_payment_intent')],
                'constraints': [models.CheckConstraint(condition=models.Q(('amount_nanos__gt', 0), ('fee_nanos__gte', 0)), name='top_up_amounts_positive'), models.CheckConstraint(condition=models.Q(('reversed_nanos__gte', 0), ('reversed_nanos__lte', models.F('amount_nanos'))), name='top_up_reversal_within_credit'), models.CheckConstraint(condition=models.Q(models.Q(('credited_at__isnull', False), ('status', 'credited')), models.Q(models.Q(('status', 'credited'), _negated=True), ('credited_at__isnull', True)), _connector='OR'), name='top_up_credited_at_iff_credited')],
            },
        ),
    ]
