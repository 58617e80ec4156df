"""The reseller REST API for what the proxy recorded, split by sub-domain.

* ``reports``: a key's requests and usage, usage by tag and earnings under ``/api/v1/``,
  money as decimal strings;
* ``sub_accounts``: the sub-account API under ``/v1/`` (wallet-funded keys at ratio 1),
  money as integer cents;
* ``windows``: the ``?window=`` both take, and the window fields both answer with.
"""
