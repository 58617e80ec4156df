"""The wallet's card top-up form: it only reads the amount typed (dollars, exactly); the
range, the whole cents and the fee are ``billing.top_ups``' rules, whose TopUpInvalid comes
back onto the field."""

from __future__ import annotations

from billing.exceptions import TopUpInvalid
from dashboard.forms.keys import DashboardForm, DollarsField


class WalletTopUpForm(DashboardForm):
    amount = DollarsField(
        label="Amount ($)", help_text="What your wallet is credited, e.g. 50 or 120.50."
    )

    def add_top_up_error(self, error: TopUpInvalid) -> None:
        self.add_error("amount", str(error))
