from django import forms
from django.contrib.auth import password_validation
from django.contrib.auth.forms import AuthenticationForm
from django_countries import countries

from accounts import roles
from accounts.models import Network, Organization
from partnerhub.forms import HardenedForm, HardenedMixin

_COUNTRY_CHOICES = [("", "Choose a country")] + list(countries)


class EmailLoginForm(HardenedMixin, AuthenticationForm):
    username = forms.EmailField(
        label="Email", widget=forms.EmailInput(attrs={"autofocus": True, "autocomplete": "email"})
    )

    error_messages = {
        **AuthenticationForm.error_messages,
        "invalid_login": "That email and password do not match an account. Check both, or reset "
        "your password.",
    }


class ApplicationForm(HardenedForm):
    company_name = forms.CharField(max_length=160, label="Company name")
    website = forms.CharField(max_length=200, label="Company website",
                              help_text="We match this against your email domain.",
                              widget=forms.TextInput(attrs={"placeholder": "acme.com"}))
    country = forms.ChoiceField(choices=_COUNTRY_CHOICES)
    partner_type = forms.ChoiceField(
        choices=[("", "What kind of partner are you?")] + Organization.PARTNER_TYPES,
        label="Partner type",
    )
    full_name = forms.CharField(max_length=150, label="Your name")
    email = forms.EmailField(label="Work email")
    password = forms.CharField(widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
                               help_text=password_validation.password_validators_help_text_html())
    password_confirm = forms.CharField(
        label="Confirm password",
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )

    def __init__(self, *args, kind: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.kind = kind
        if kind != roles.PARTNER:
            del self.fields["partner_type"]

    def clean(self):
        data = super().clean()
        password, confirm = data.get("password"), data.get("password_confirm")
        if password and confirm and password != confirm:
            self.add_error("password_confirm", "The two passwords do not match.")
        elif password:
            from accounts.models import User

            applicant = User(email=data.get("email", ""), full_name=data.get("full_name", ""))
            try:
                password_validation.validate_password(password, applicant)
            except forms.ValidationError as exc:
                self.add_error("password", exc)
        return data


class SignupForInvitationForm(HardenedForm):
    full_name = forms.CharField(max_length=150, label="Your name")
    password = forms.CharField(widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}))

    def clean_password(self):
        password = self.cleaned_data["password"]
        password_validation.validate_password(password)
        return password


class InviteForm(HardenedForm):
    email = forms.EmailField()
    role = forms.ChoiceField()

    def __init__(self, *args, kind: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["role"].choices = roles.role_choices(kind)
        self.fields["role"].initial = roles.DEFAULT_INVITE_ROLE[kind]


class RoleForm(HardenedForm):
    role = forms.ChoiceField()

    def __init__(self, *args, kind: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["role"].choices = roles.role_choices(kind)


REJECTION_REASONS = [
    ("", "Choose a reason"),
    ("unverifiable", "We could not verify the company"),
    ("duplicate", "The company already has an organization here"),
    ("not_a_fit", "Not a fit for this network"),
    ("incomplete", "The application is incomplete"),
    ("other", "Other"),
]


class RejectForm(HardenedForm):
    reason_code = forms.ChoiceField(choices=REJECTION_REASONS, label="Reason")
    details = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), required=False,
                              help_text="Sent to the applicant.")

    def clean(self):
        data = super().clean()
        if data.get("reason_code") == "other" and not data.get("details", "").strip():
            self.add_error("details", "Explain the reason to the applicant.")
        return data

    def reason_text(self) -> str:
        label = dict(REJECTION_REASONS)[self.cleaned_data["reason_code"]]
        details = self.cleaned_data.get("details", "").strip()
        return f"{label}. {details}".strip() if details else label


class NetworkSettingsForm(HardenedForm):
    name = forms.CharField(max_length=120, label="Network name")
    auto_approve_matching_domains = forms.BooleanField(
        required=False,
        label="Auto-approve applicants whose verified email domain matches their website",
        help_text="Free-mail domains never qualify. Auto-approvals are flagged for later review.",
    )
    two_factor_policy = forms.ChoiceField(
        choices=Network.TWO_FACTOR_POLICIES, label="Two-factor sign-in",
        help_text="Members who must use it and have not set it up yet are sent to set it up "
        "right after their password. Anyone may turn it on for themselves.",
    )


class PortfolioAssignForm(HardenedForm):
    channel_manager = forms.ChoiceField(label="Channel manager")

    def __init__(self, *args, managers, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["channel_manager"].choices = [
            (str(m.public_id), m.user.get_full_name()) for m in managers
        ]


class DateInput(forms.DateInput):
    input_type = "date"


class AuditFilterForm(HardenedForm):
    actor = forms.CharField(required=False, label="Actor email")
    action = forms.CharField(required=False)
    target_type = forms.CharField(required=False, label="Object type")
    target_id = forms.CharField(required=False, label="Object id")
    since = forms.DateField(required=False, widget=DateInput, label="From")
    until = forms.DateField(required=False, widget=DateInput, label="To")


class OrganizationFilterForm(HardenedForm):
    q = forms.CharField(required=False, label="Search")
    kind = forms.ChoiceField(required=False, choices=[("", "All kinds")] + roles.KINDS)
    status = forms.ChoiceField(required=False,
                               choices=[("", "All statuses")] + Organization.STATUSES)


class LookupForm(HardenedForm):
    q = forms.CharField(required=False, label="Email, name or organization",
                        widget=forms.TextInput(attrs={"autofocus": True}))
