"""The reseller REST API for client keys, split by sub-domain.

* ``keys``: client keys under ``/api/v1/keys``, money as decimal strings;
* ``sub_accounts``: the sub-account API's lifecycle under ``/v1/sub-accounts``
  (wallet-funded keys at ratio 1), money as integer cents. Its usage reports are
  ``usage.apis``.
"""
