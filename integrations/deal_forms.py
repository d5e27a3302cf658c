"""The form that closes a referral's deal by hand (integrations.closing)."""

from django import forms
from django.core.exceptions import ValidationError
from django.utils import timezone

from integrations.closing import OUTCOME_LABELS
from partnerhub.forms import HardenedForm
from partnerhub.money import MAX_MINOR, from_minor
from referrals.validation import clean_amount

# A deal above a trillion in any currency is a typing error (and would not fit the ledger's
# sums): refuse it in the form rather than in the database. The one limit is money's.
MAX_DEAL_MINOR = MAX_MINOR


class CloseDealForm(HardenedForm):
    outcome = forms.ChoiceField(label="Outcome")
    closed_on = forms.DateField(label="Closed on", required=False,
                                widget=forms.DateInput(attrs={"type": "date"}))
    amount = forms.CharField(label="Amount won", required=False, max_length=24,
                             help_text="What the customer signed for; the commission is "
                                       "computed from it.")
    reason = forms.CharField(label="Note", required=False, max_length=1000,
                             widget=forms.Textarea(attrs={"rows": 2}))

    def __init__(self, *args, referral, outcomes, reason_required=False, **kwargs):
        initial = {"closed_on": timezone.localdate(),
                   "amount": (from_minor(referral.amount_minor, referral.currency)
                              if referral.amount_minor is not None else "")}
        super().__init__(*args, initial={**initial, **kwargs.pop("initial", {})}, **kwargs)
        self.currency = referral.currency
        self.fields["outcome"].choices = [(o, OUTCOME_LABELS[o]) for o in outcomes]
        self.fields["amount"].label = f"Amount won ({referral.currency})"
        if reason_required:
            self.fields["reason"].label = "Why override the CRM"
            self.fields["reason"].required = True

    def clean_amount(self):
        minor = clean_amount(self.cleaned_data.get("amount"), self.currency)
        if minor is not None and minor > MAX_DEAL_MINOR:
            raise ValidationError("That amount is too large for a deal.")
        return minor
