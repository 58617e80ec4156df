"""Move two-factor devices off django-otp's TOTPDevice / StaticDevice, which keep secrets in
clear: each authenticator's key is encrypted into an AuthenticatorDevice, each unused
backup code becomes its keyed hash under a BackupCodeDevice; the clear rows are deleted.

Sessions verified with an old device ask for a code again (their device id is gone).
Backwards: authenticators move back (keys decrypted); backup codes cannot (only hashes are
left), so their owners make new ones on the Security page.
"""

from django.db import migrations

from accounts.crypto import TOTP_KEYS, decrypt, encrypt
from accounts.hashing import backup_code_digest

DEVICE_FIELDS = [
    "user_id",
    "name",
    "confirmed",
    "throttling_failure_timestamp",
    "throttling_failure_count",
    "created_at",
    "last_used_at",
]
TOTP_FIELDS = ["step", "t0", "digits", "tolerance", "drift", "last_t"]


def _normalize(code):
    # As accounts.services.code_normalize writes a typed code.
    return "".join(code.split()).replace("-", "").lower()


def forwards(apps, schema_editor):
    TOTPDevice = apps.get_model("otp_totp", "TOTPDevice")
    StaticDevice = apps.get_model("otp_static", "StaticDevice")
    StaticToken = apps.get_model("otp_static", "StaticToken")
    AuthenticatorDevice = apps.get_model("accounts", "AuthenticatorDevice")
    BackupCodeDevice = apps.get_model("accounts", "BackupCodeDevice")
    BackupCode = apps.get_model("accounts", "BackupCode")
    for old in TOTPDevice.objects.order_by("pk").iterator():
        values = {name: getattr(old, name) for name in DEVICE_FIELDS + TOTP_FIELDS}
        AuthenticatorDevice.objects.create(
            encrypted_key=encrypt(old.key, purpose=TOTP_KEYS), **values
        )
    TOTPDevice.objects.all().delete()
    for old in StaticDevice.objects.order_by("pk").iterator():
        device = BackupCodeDevice.objects.create(
            **{name: getattr(old, name) for name in DEVICE_FIELDS}
        )
        digests = {
            backup_code_digest(_normalize(token))
            for token in StaticToken.objects.filter(device_id=old.pk).values_list(
                "token", flat=True
            )
        }
        BackupCode.objects.bulk_create(
            BackupCode(device=device, digest=digest) for digest in digests
        )
    StaticDevice.objects.all().delete()


def backwards(apps, schema_editor):
    TOTPDevice = apps.get_model("otp_totp", "TOTPDevice")
    AuthenticatorDevice = apps.get_model("accounts", "AuthenticatorDevice")
    BackupCodeDevice = apps.get_model("accounts", "BackupCodeDevice")
    for new in AuthenticatorDevice.objects.order_by("pk").iterator():
        values = {name: getattr(new, name) for name in DEVICE_FIELDS + TOTP_FIELDS}
        TOTPDevice.objects.create(key=decrypt(new.encrypted_key, purpose=TOTP_KEYS), **values)
    AuthenticatorDevice.objects.all().delete()
    BackupCodeDevice.objects.all().delete()


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0004_two_factor_devices"),
        ("otp_totp", "0003_add_timestamps"),
        ("otp_static", "0003_add_timestamps"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
