"""Forms of the attribution pages: the list's filters and a decider's confirm / reassign."""

import uuid

from django import forms
from django.core.exceptions import ValidationError

from accounts.forms import DateInput
from attribution.models import Attribution
from partnerhub.forms import HardenedForm

MATCHES = [("exact", "Exact (referral id)"), ("domain", "Same domain"),
           ("fuzzy", "Similar name"), ("none", "None")]
# What a partner sees of the outcome: its own side only, never who else was credited.
OUTCOMES = [("you", "Credited to you"), ("other", "Credited to another partner"),
            ("none", "Credited to no one")]
NOBODY = "nobody"


class AttributionFilterForm(HardenedForm):
    """Filters of /attributions/. Which counterpart filter exists depends on the side: a vendor
    picks a partner, a partner a vendor (and its own outcome), an operator a vendor (and a
    partner by id, from links)."""

    q = forms.CharField(required=False, label="Company",
                        widget=forms.TextInput(attrs={"type": "search",
                                                      "placeholder": "Name or domain"}))
    status = forms.ChoiceField(required=False,
                               choices=[("", "Any status")] + Attribution.STATUSES)
    match = forms.ChoiceField(required=False, choices=[("", "Any match")] + MATCHES)
    vendor = forms.ChoiceField(required=False)
    partner = forms.ChoiceField(required=False)
    outcome = forms.ChoiceField(required=False, label="Outcome",
                                choices=[("", "Any outcome")] + OUTCOMES)
    disputed = forms.ChoiceField(required=False, label="Disputes",
                                 choices=[("", "All"), ("yes", "Disputed"),
                                          ("no", "Not disputed")])
    closed_from = forms.DateField(required=False, widget=DateInput, label="Closed from")
    closed_to = forms.DateField(required=False, widget=DateInput, label="to")
    # Set by the dashboard's metric links (metrics count attributions by when they were made).
    attributed_from = forms.DateField(required=False, widget=forms.HiddenInput)
    attributed_to = forms.DateField(required=False, widget=forms.HiddenInput)
    reviewed = forms.ChoiceField(required=False, choices=[("", ""), ("yes", "yes")],
                                 widget=forms.HiddenInput)

    def __init__(self, *args, vendors=None, partners=None, partner_by_id=False,
                 outcome=False, disputes=False, **kwargs):
        """`vendors` / `partners`: organizations to offer (None drops the filter);
        `partner_by_id`: accept ?partner=<id> without offering a list (operators: a network
        has too many partners for a select)."""
        super().__init__(*args, **kwargs)
        if vendors is None:
            del self.fields["vendor"]
        else:
            self.fields["vendor"].choices = [("", "Any vendor")] + [
                (str(o.public_id), o.name) for o in vendors]
        if partners is not None:
            self.fields["partner"].choices = [("", "Any partner")] + [
                (str(o.public_id), o.name) for o in partners]
        elif partner_by_id:
            self.fields["partner"] = forms.CharField(required=False, widget=forms.HiddenInput)
        else:
            del self.fields["partner"]
        if not outcome:
            del self.fields["outcome"]
        if not disputes:
            del self.fields["disputed"]

    def clean_partner(self):
        value = self.cleaned_data.get("partner") or ""
        if value and not _is_uuid(value):
            raise ValidationError("Unknown partner.")
        return value


class ConfirmAttributionForm(HardenedForm):
    note = forms.CharField(required=False, max_length=2000, label="Note (optional)",
                           widget=forms.Textarea(attrs={
                               "rows": 2, "aria-label": "Note (optional)",
                               "placeholder": "Note for the partners involved (optional)"}))


class ReassignAttributionForm(HardenedForm):
    referral = forms.ChoiceField(label="Credit the deal to", widget=forms.RadioSelect)
    note = forms.CharField(max_length=2000, label="Why",
                           widget=forms.Textarea(attrs={"rows": 3}),
                           error_messages={"required": "Write down why, for the partners and "
                                                       "the audit trail."},
                           help_text="Shown to the partners involved (each sees only its "
                                     "own side: do not name another partner) and kept in the "
                                     "audit trail.")

    def __init__(self, *args, candidates, **kwargs):
        """`candidates`: the AttributionCandidate rows (with referral and partner)."""
        super().__init__(*args, **kwargs)
        self.fields["referral"].choices = [
            (str(c.referral.public_id), f"{c.partner.name} — {c.referral.company_name}")
            for c in candidates] + [(NOBODY, "Nobody: no partner earns this deal")]

    def clean_note(self):
        note = self.cleaned_data["note"].strip()
        if not note:
            raise ValidationError("Write down why, for the partners and the audit trail.")
        return note

    def referral_public_id(self) -> str | None:
        value = self.cleaned_data["referral"]
        return None if value == NOBODY else value


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(str(value))
    except (TypeError, ValueError):
        return False
    return True
