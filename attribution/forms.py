"""Dispute forms: opening one (partner, vendor), the thread, the channel manager's decision and
the queue's filters. Evidence is checked here for a clear form error, and again by the
service (attribution.evidence.check_evidence)."""

from django import forms
from django.core.exceptions import ValidationError

from accounts.errors import ServiceError
from attribution import dispute_subjects, disputes, evidence
from attribution.models import Dispute
from partnerhub.forms import HardenedForm

CATEGORY_LABELS = dict(Dispute.CATEGORIES)


class MultipleFileInput(forms.FileInput):
    allow_multiple_selected = True


class EvidenceField(forms.FileField):
    """Several files at once, each type- and size-checked by its extension and first bytes."""

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        kwargs.setdefault("label", "Evidence")
        kwargs.setdefault("help_text", evidence.EVIDENCE_HELP)
        super().__init__(widget=MultipleFileInput(attrs={
            "accept": ",".join(sorted(evidence.EVIDENCE_TYPES))}), **kwargs)

    def clean(self, data, initial=None):
        files = [f for f in (data if isinstance(data, list | tuple) else [data]) if f]
        files = [super(EvidenceField, self).clean(f, initial) for f in files]
        try:
            evidence.check_evidence_files(files)
        except ServiceError as exc:
            raise ValidationError(exc.message) from None
        return files


def _text(label, rows=6, help_text=""):
    return forms.CharField(label=label, max_length=disputes.MAX_TEXT, help_text=help_text,
                           widget=forms.Textarea(attrs={"rows": rows}))


class PartnerDisputeForm(HardenedForm):
    """What the partner disputes (the choices this referral offers now) and why."""

    subject = forms.ChoiceField(label="What do you dispute?", widget=forms.RadioSelect)
    text = _text("Why", help_text="Tell the network what happened: when you registered, whom "
                                  "you spoke to, what the vendor said.")
    files = EvidenceField()

    def __init__(self, *args, subjects, **kwargs):
        super().__init__(*args, **kwargs)
        self.subjects = {}
        choices = []
        for subject in subjects:
            if not subject.open:
                continue
            key = str(subject.attribution.public_id) if subject.attribution else "registration"
            for category in subject.categories:
                value = f"{key}:{category}"
                self.subjects[value] = (subject, category)
                label = CATEGORY_LABELS[category]
                if subject.attribution and category == Dispute.OTHER:
                    label = "Something else about this deal's attribution"
                elif category == Dispute.OTHER:
                    label = "Something else about this registration's decision"
                if subject.attribution:
                    deal = subject.attribution.snapshot.account_name
                    label = f"{label} ({deal}, closed " \
                            f"{subject.attribution.snapshot.closed_at:%-d %b %Y})" \
                        if subject.attribution.snapshot.closed_at else f"{label} ({deal})"
                choices.append((value, label))
        self.fields["subject"].choices = choices
        if len(choices) == 1:
            self.fields["subject"].initial = choices[0][0]

    def chosen(self):
        """(attribution or None, category) of the chosen subject."""
        subject, category = self.subjects[self.cleaned_data["subject"]]
        return subject.attribution, category


class VendorDisputeForm(HardenedForm):
    category = forms.ChoiceField(
        label="What is wrong?", widget=forms.RadioSelect,
        choices=[(c, CATEGORY_LABELS[c]) for c in dispute_subjects.VENDOR_CATEGORIES])
    text = _text("Why", help_text="The network's channel manager decides. Partners do not see "
                                  "vendor disputes.")
    files = EvidenceField()


class ResponseForm(HardenedForm):
    text = _text("Your response", help_text="The disputing partner reads this: do not name "
                                            "other partners.")
    files = EvidenceField()


class MessageForm(HardenedForm):
    body = _text("Message", rows=3)
    files = EvidenceField()


class WithdrawForm(HardenedForm):
    reason = forms.CharField(label="Why (optional)", required=False,
                             max_length=disputes.MAX_TEXT)


class ResolveForm(HardenedForm):
    outcome = forms.ChoiceField(label="Decision", widget=forms.RadioSelect, choices=[
        (Dispute.UPHELD, "Uphold: the claim is right, change the outcome"),
        (Dispute.OVERTURNED, "Overturn: the claim is wrong, the outcome stands")])
    resolution = _text("Resolution", rows=4,
                       help_text="Both sides read this (partners too: leave out partners' "
                                 "names).")
    new_referral = forms.ChoiceField(label="Credit the deal to", required=False)

    def __init__(self, *args, candidates=None, **kwargs):
        """`candidates`: (public id, label) of the deal's candidate referrals, for a vendor's
        dispute (upheld means the deal goes to one of them, or to nobody)."""
        super().__init__(*args, **kwargs)
        if candidates is None:
            del self.fields["new_referral"]
        else:
            self.fields["new_referral"].choices = [("", "Nobody")] + list(candidates)


class ReassignForm(HardenedForm):
    channel_manager = forms.ChoiceField(label="Assign to")

    def __init__(self, *args, managers=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["channel_manager"].choices = [
            (str(m.public_id), m.user.get_full_name() or m.user.email) for m in managers]


PENDING = ""
STATUS_FILTERS = [(PENDING, "Awaiting a decision"), ("all", "All")] + list(Dispute.STATUSES)


class DisputeFilterForm(HardenedForm):
    status = forms.ChoiceField(choices=STATUS_FILTERS, required=False)
    vendor = forms.ChoiceField(required=False)
    overdue = forms.BooleanField(required=False, label="Overdue only")
    mine = forms.BooleanField(required=False, label="Assigned to me")

    def __init__(self, *args, vendors=None, assignable=False, **kwargs):
        super().__init__(*args, **kwargs)
        if vendors is None:
            del self.fields["vendor"]
        else:
            self.fields["vendor"].choices = [("", "All vendors")] + [
                (str(v.public_id), v.name) for v in vendors]
        if not assignable:
            del self.fields["mine"]
