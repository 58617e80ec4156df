"""Writes for client keys: create (and fund), top up, change limits, revoke, delete (and refund),
split by what they do:

* ``create``: a new key's terms, ``key_create`` and its quote;
* ``top_up``: ``key_top_up`` and its quote;
* ``update``: ``key_update``, a key's label, tag, limits, cap and status (revoke, re-activate);
* ``delete``: ``key_delete`` (and its refund), its quote, and the sweep of refunds still owed;
* ``_common``: the input rules and refusals more than one write shares, and a quote's
  ``WalletEffect``.

Every flow that moves money runs under ``transaction.atomic(durable=True)`` and changes the
wallet only through ``billing.ledger.ledger_post_op`` (a conditional update: a wallet can
never be overdrawn). Key rows are claimed with conditional updates too, so concurrent
top-ups, deletes and reservations serialise on the key's row lock in the order key → wallet.

A quote is what a write would do, answered without writing (the dashboard shows it before
the reseller confirms); each lives beside its write and runs the write's own rules.
"""

from __future__ import annotations

from keys.services._common import KEY_ALREADY_DELETED, KEY_DELETED, MAX_LIMIT, WalletEffect
from keys.services.create import (
    MAX_MARKUP,
    PREFIX_COLLISION_RETRIES,
    IssuedKey,
    KeyCreateQuote,
    KeyTerms,
    key_create,
    key_create_quote,
)
from keys.services.delete import (
    Deleted,
    KeyDeleteQuote,
    deleted_keys_refund,
    key_delete,
    key_delete_quote,
)
from keys.services.top_up import KeyTopUpQuote, key_top_up, key_top_up_quote
from keys.services.update import UPDATABLE_FIELDS, KeyLimits, key_update

__all__ = [
    "KEY_ALREADY_DELETED",
    "KEY_DELETED",
    "MAX_LIMIT",
    "MAX_MARKUP",
    "PREFIX_COLLISION_RETRIES",
    "UPDATABLE_FIELDS",
    "Deleted",
    "IssuedKey",
    "KeyCreateQuote",
    "KeyDeleteQuote",
    "KeyLimits",
    "KeyTerms",
    "KeyTopUpQuote",
    "WalletEffect",
    "deleted_keys_refund",
    "key_create",
    "key_create_quote",
    "key_delete",
    "key_delete_quote",
    "key_top_up",
    "key_top_up_quote",
    "key_update",
]
