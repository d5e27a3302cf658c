from django import forms
from django.core.exceptions import ValidationError
from django_countries import countries

from accounts.forms import DateInput
from partnerhub.forms import HardenedForm
from partnerhub.money import MAX_MINOR
from referrals import validation
from referrals.models import CURRENCIES, OPTIONAL_FIELDS, Program, Referral
from referrals.services import ReferralData

_COUNTRIES = [("", "Choose a country")] + list(countries)


class ProgramForm(HardenedForm):
    name = forms.CharField(max_length=120)
    terms = forms.CharField(widget=forms.Textarea(attrs={"rows": 6}),
                            help_text="What partners agree to when they enrol.")
    status = forms.ChoiceField(choices=Program.STATUSES)
    protection_days = forms.IntegerField(min_value=1, max_value=730, initial=90,
                                         label="Protection window (days)")
    auto_accept = forms.BooleanField(required=False,
                                     label="Accept submissions without review",
                                     help_text="Conflicting submissions still wait for review.")
    enrolment_requires_approval = forms.BooleanField(
        required=False, initial=True, label="Partners need our approval to enrol")
    required_fields = forms.MultipleChoiceField(
        choices=OPTIONAL_FIELDS, required=False, widget=forms.CheckboxSelectMultiple,
        help_text="Company, website, country and the contact's name and email are always "
                  "required.")
    accepted_currencies = forms.MultipleChoiceField(
        choices=[(c, c) for c in CURRENCIES], widget=forms.CheckboxSelectMultiple,
        initial=["USD"])
    fuzzy_threshold = forms.IntegerField(
        min_value=50, max_value=100, initial=90, label="Name similarity threshold",
        help_text="How similar (50-100) two company names must be to count as the same "
                  "account (attribution also wants a distinctive word in common, spelled the "
                  "same or one typo apart). 100 turns fuzzy matching off.")

    @classmethod
    def initial_from(cls, program: Program) -> dict:
        return {f: getattr(program, f) for f in cls.base_fields}


class ReferralForm(HardenedForm):
    program = forms.ChoiceField(label="Vendor program")
    company_name = forms.CharField(max_length=160, label="Customer company")
    website = forms.CharField(max_length=200, label="Company website", required=False,
                              widget=forms.TextInput(attrs={"placeholder": "customer.com"}))
    country = forms.ChoiceField(choices=_COUNTRIES, required=False)
    contact_name = forms.CharField(max_length=150, required=False, label="Contact name")
    contact_email = forms.CharField(max_length=254, required=False, label="Contact email",
                                    widget=forms.EmailInput)
    contact_phone = forms.CharField(max_length=40, required=False, label="Contact phone")
    contact_title = forms.CharField(max_length=120, required=False, label="Contact title")
    amount = forms.CharField(max_length=24, required=False, label="Estimated deal value",
                             widget=forms.TextInput(attrs={"inputmode": "decimal",
                                                           "placeholder": "25000"}))
    currency = forms.ChoiceField(required=False)
    expected_close = forms.CharField(required=False, label="Expected close month",
                                     widget=forms.DateInput(attrs={"type": "month"}))
    notes = forms.CharField(widget=forms.Textarea(attrs={"rows": 4}), required=False,
                            max_length=5000)

    def __init__(self, *args, programs, draft: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.programs = {str(p.public_id): p for p in programs}
        self.fields["program"].choices = [("", "Choose a program")] + [
            (key, f"{p.vendor.name} · {p.name}") for key, p in self.programs.items()]
        currencies = sorted({c for p in programs for c in p.accepted_currencies}) or ["USD"]
        self.fields["currency"].choices = [(c, c) for c in currencies]
        self.draft = draft

    def clean_website(self):
        return validation.clean_website(self.cleaned_data["website"])

    def clean_contact_email(self):
        try:
            return validation.clean_email(self.cleaned_data["contact_email"])
        except ValidationError:
            raise ValidationError("Enter a valid email address, e.g. jane@customer.com.") \
                from None

    def clean_expected_close(self):
        return validation.clean_month(self.cleaned_data["expected_close"])

    def clean(self):
        data = super().clean()
        program = self.programs.get(data.get("program") or "")
        if program is None:
            self.add_error("program", "Choose one of the programs you are enrolled in.")
            return data
        data["program_obj"] = program
        try:
            data["contact_phone"] = validation.clean_phone(data.get("contact_phone", ""),
                                                           data.get("country", ""))
        except ValidationError as exc:
            self.add_error("contact_phone", exc)
        currency = data.get("currency") or ""
        try:
            data["amount_minor"] = validation.clean_amount(data.get("amount"), currency)
        except ValidationError as exc:
            self.add_error("amount", exc)
            return data
        if data["amount_minor"] is None:
            currency = ""
        data["currency"] = currency
        if not self.draft and not self.errors:
            for field, message in validation.validate_for_program(
                    program, self.to_data()).items():
                self.add_error(field if field in self.fields else None, message)
        return data

    def to_data(self) -> ReferralData:
        d = self.cleaned_data
        return ReferralData(
            company_name=d.get("company_name", "").strip(), website=d.get("website", ""),
            country=d.get("country", ""), contact_name=d.get("contact_name", "").strip(),
            contact_email=d.get("contact_email", ""), contact_phone=d.get("contact_phone", ""),
            contact_title=d.get("contact_title", "").strip(),
            amount_minor=d.get("amount_minor"), currency=d.get("currency", ""),
            expected_close=d.get("expected_close"), notes=d.get("notes", "").strip())

    @staticmethod
    def initial_from(referral: Referral) -> dict:
        from partnerhub.money import from_minor

        return {
            "program": str(referral.program.public_id),
            "company_name": referral.company_name, "website": referral.website,
            "country": str(referral.country or ""), "contact_name": referral.contact_name,
            "contact_email": referral.contact_email, "contact_phone": referral.contact_phone,
            "contact_title": referral.contact_title,
            "amount": (from_minor(referral.amount_minor, referral.currency)
                       if referral.amount_minor is not None else ""),
            "currency": referral.currency or None,
            "expected_close": (referral.expected_close.strftime("%Y-%m")
                               if referral.expected_close else ""),
            "notes": referral.notes,
        }


class RejectReferralForm(HardenedForm):
    code = forms.ChoiceField(choices=[("", "Choose a reason")] + Referral.REJECTION_REASONS,
                             label="Reason")
    text = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False,
                           max_length=2000, label="Message to the partner")


class WithdrawReferralForm(HardenedForm):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False,
                             max_length=2000, label="Why (optional)")


class AssignForm(HardenedForm):
    assignee = forms.ChoiceField(label="Assign to")

    def __init__(self, *args, members, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["assignee"].choices = [(str(m.public_id), m.user.get_full_name())
                                           for m in members]


class ExtendForm(HardenedForm):
    days = forms.IntegerField(min_value=1, max_value=365, initial=30, label="Extend by (days)")


class MessageForm(HardenedForm):
    body = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), label="Message",
                           max_length=5000)
    internal = forms.BooleanField(required=False, label="Internal note (only your team sees it)")


SORTS = [("-submitted_at", "Newest first"), ("submitted_at", "Oldest first"),
         ("-amount_minor", "Largest value"), ("company_name", "Company A–Z")]


MAX_FILTER_VALUE = MAX_MINOR // 100  # the value filters read as USD, in major units


class ReferralFilterForm(HardenedForm):
    q = forms.CharField(required=False, label="Search")
    status = forms.ChoiceField(required=False, choices=[("", "Any status")] + Referral.STATUSES)
    counterpart = forms.ChoiceField(required=False)
    conflict = forms.ChoiceField(required=False, label="Conflicts",
                                 choices=[("", "All"), ("yes", "Conflicts only"),
                                          ("no", "No conflict")])
    since = forms.DateField(required=False, widget=DateInput, label="Submitted from")
    until = forms.DateField(required=False, widget=DateInput, label="to")
    min_value = forms.DecimalField(required=False, min_value=0, max_value=MAX_FILTER_VALUE,
                                   decimal_places=2, label="Value from")
    max_value = forms.DecimalField(required=False, min_value=0, max_value=MAX_FILTER_VALUE,
                                   decimal_places=2, label="to")
    sort = forms.ChoiceField(required=False, choices=SORTS)

    def __init__(self, *args, counterpart_label, counterparts, triage=False, **kwargs):
        super().__init__(*args, **kwargs)
        default = "Conflicts first, oldest first" if triage else "Latest first"
        self.fields["sort"].choices = [("", default)] + SORTS
        self.fields["counterpart"].label = counterpart_label
        self.fields["counterpart"].choices = [("", f"Any {counterpart_label.lower()}")] + [
            (str(o.public_id), o.name) for o in counterparts]
