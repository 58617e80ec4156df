"""Moving every stored secret to the current FIELD_ENCRYPTION_KEY (``manage.py
reencrypt_secrets``), the second half of a key rotation (``accounts.crypto``).

Each column of ``ENCRYPTED_COLUMNS`` is read in batches in primary-key order. A secret
already under the current key is left alone, so a second run changes nothing; one under a
fallback key is encrypted again with the current key (same secret) and written only if the
row still holds what was read, so a secret replaced meanwhile (a new upstream key, a new
webhook secret) is never overwritten with the old one. One no key can read is reported by
its row's id. No secret is ever logged or returned.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from cryptography.fernet import InvalidToken
from django.apps import apps
from django.db import models

from accounts.crypto import ENCRYPTED_COLUMNS, EncryptedColumn, reencrypt

BATCH_SIZE = 500
# Tries per row whose secret keeps changing between our read and our write.
ATTEMPTS = 5


class Outcome(enum.Enum):
    CURRENT = "current"
    ROTATED = "rotated"
    UNREADABLE = "unreadable"
    CHANGED = "changed"  # changed under us on every try
    GONE = "gone"  # deleted, or its secret removed, meanwhile: nothing left to move


@dataclass
class ColumnReencryption:
    column: EncryptedColumn
    current_count: int = 0
    rotated_count: int = 0
    unreadable_ids: list[Any] = field(default_factory=list)
    changed_ids: list[Any] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.column.model,
            "field": self.column.field,
            "current": self.current_count,
            "rotated": self.rotated_count,
            "unreadable": len(self.unreadable_ids),
            "unreadable_ids": self.unreadable_ids,
            "changed": len(self.changed_ids),
            "changed_ids": self.changed_ids,
        }


@dataclass
class Reencryption:
    """What a run found, per kind of secret. With ``dry_run``, ``rotated`` counts the
    secrets that would be encrypted again and nothing was written."""

    dry_run: bool
    columns: list[ColumnReencryption]

    @property
    def is_complete(self) -> bool:
        """Every stored secret is under the current key (or would be, in a dry run): the
        fallback keys can be removed."""
        return not any(c.unreadable_ids or c.changed_ids for c in self.columns)

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "ok": self.is_complete,
            "kinds": {c.column.kind: c.as_dict() for c in self.columns},
        }


def secrets_reencrypt(*, dry_run: bool = False, batch_size: int = BATCH_SIZE) -> Reencryption:
    """Encrypt every stored secret that a fallback key encrypted again with the current
    FIELD_ENCRYPTION_KEY (nothing written with ``dry_run``), and report per kind how many
    were current, rotated, unreadable with every key (by row id) or kept changing under us.
    Idempotent: a second run finds everything current."""
    return Reencryption(
        dry_run=dry_run,
        columns=[
            _column_reencrypt(column, dry_run=dry_run, batch_size=batch_size)
            for column in ENCRYPTED_COLUMNS
        ],
    )


def _column_reencrypt(
    column: EncryptedColumn, *, dry_run: bool, batch_size: int
) -> ColumnReencryption:
    # The base manager: every row, whatever a default manager would filter out.
    rows = apps.get_model(column.model)._base_manager.exclude(**{column.field: ""})
    report = ColumnReencryption(column=column)
    last_pk: Any = None
    while True:
        batch = rows.order_by("pk")
        if last_pk is not None:
            batch = batch.filter(pk__gt=last_pk)
        found = list(batch.values_list("pk", column.field)[:batch_size])
        for pk, token in found:
            outcome = _row_reencrypt(rows, column, pk, token, dry_run=dry_run)
            if outcome is Outcome.CURRENT:
                report.current_count += 1
            elif outcome is Outcome.ROTATED:
                report.rotated_count += 1
            elif outcome is Outcome.UNREADABLE:
                report.unreadable_ids.append(pk)
            elif outcome is Outcome.CHANGED:
                report.changed_ids.append(pk)
        if len(found) < batch_size:
            return report
        last_pk = found[-1][0]


def _row_reencrypt(
    rows: models.QuerySet[Any],
    column: EncryptedColumn,
    pk: Any,
    token: str,
    *,
    dry_run: bool,
) -> Outcome:
    for _ in range(ATTEMPTS):
        try:
            fresh = reencrypt(token, purpose=column.purpose)
        except InvalidToken:
            return Outcome.UNREADABLE
        if fresh is None:
            return Outcome.CURRENT
        if dry_run:
            return Outcome.ROTATED
        # Compare-and-set rather than a lock held while we decrypt: written only if the row
        # still holds the token we read, so a secret replaced since (saved by a server with
        # the new key) is never overwritten with the old secret.
        if rows.filter(pk=pk, **{column.field: token}).update(**{column.field: fresh}):
            return Outcome.ROTATED
        token = rows.filter(pk=pk).values_list(column.field, flat=True).first() or ""
        if not token:
            return Outcome.GONE
    return Outcome.CHANGED
