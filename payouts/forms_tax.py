"""Forms for the tax pages: the partner's tax profile and the operator's report filters. The
rules (which form goes with which payee, dates, expiry) live in payouts.tax; these only parse."""

from datetime import date

from django import forms
from django.utils import timezone
from django_countries import countries

from accounts.forms import DateInput
from partnerhub.forms import DATE_MAX, DateBetween, HardenedForm
from payouts import tax
from payouts.models import TaxProfile

_COUNTRIES = [("", "Choose a country")] + list(countries)
_US_PERSON = [("", "Choose"), ("yes", "Yes: a US citizen, resident, or US entity"),
              ("no", "No: a foreign individual or entity")]


def _us_person(value):
    return {"yes": True, "no": False}.get(value)


class TaxProfileForm(HardenedForm):
    legal_name = forms.CharField(
        max_length=200, required=False, label="Legal name",
        help_text="As it appears on the tax form: a person's full name or the entity's "
                  "registered name.")
    entity_type = forms.ChoiceField(choices=[("", "Choose")] + TaxProfile.ENTITY_TYPES,
                                    required=False, label="Entity type")
    us_person = forms.TypedChoiceField(
        choices=_US_PERSON, coerce=_us_person, empty_value=None, required=False,
        label="US person for tax purposes?")
    form = forms.ChoiceField(
        choices=[("", "Not signed yet")] + TaxProfile.FORMS, required=False, label="Tax form",
        help_text="W-9 for US persons, W-8BEN for foreign individuals, W-8BEN-E for foreign "
                  "entities. A W-8 stays valid until the end of the third calendar year after "
                  "the year it was signed.")
    form_signed_on = forms.DateField(
        required=False, label="Date signed", widget=DateInput,
        validators=[DateBetween(date(tax.MIN_YEAR, 1, 1), DATE_MAX,
                                f"Enter the date the form was signed (from {tax.MIN_YEAR}).")])
    country = forms.ChoiceField(choices=_COUNTRIES, required=False, label="Country")
    address_line1 = forms.CharField(max_length=200, required=False, label="Address")
    address_line2 = forms.CharField(max_length=200, required=False, label="Address (line 2)")
    city = forms.CharField(max_length=100, required=False)
    region = forms.CharField(max_length=100, required=False, label="State, province or region")
    postal_code = forms.CharField(max_length=20, required=False, label="Postal code")

    @staticmethod
    def initial_from(profile: TaxProfile | None) -> dict:
        if profile is None:
            return {}
        initial = {name: getattr(profile, name) for name in tax.PROFILE_FIELDS}
        initial["us_person"] = {True: "yes", False: "no"}.get(profile.us_person, "")
        return initial


def _year_choices():
    last = timezone.now().year
    return [(y, str(y)) for y in range(last, tax.MIN_YEAR - 1, -1)]


class TaxReportFilterForm(HardenedForm):
    year = forms.TypedChoiceField(coerce=int, required=False, empty_value=None)
    nec_due = forms.BooleanField(required=False, label="Only 1099-NEC due")
    country = forms.ChoiceField(choices=[("", "Any country")] + list(countries), required=False)
    q = forms.CharField(max_length=100, required=False, label="Name",
                        widget=forms.TextInput(attrs={"type": "search",
                                                      "placeholder": "Partner or legal name"}))

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["year"].choices = _year_choices()

    @staticmethod
    def default_year() -> int:
        return timezone.now().year - 1
