"""Forms of the CRM admin pages: one credentials form per provider, the stage mapping.

Secrets are write-only: the forms never render a saved value back. When the vendor reconnects
the same provider, a secret left blank keeps the saved one (the field shows "saved").
"""

import re

from django import forms
from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from integrations.connections import DEFAULT_REFERRAL_ID_FIELD, OBJECT_MODES
from integrations.models import CrmConnection, SyncRecord

SAVED_PLACEHOLDER = "Saved — leave blank to keep"
_FIELD_NAME = re.compile(r"^[A-Za-z0-9_]+$")  # API names; Pipedrive keys are hex


class SecretTextarea(forms.Textarea):
    """A textarea that, like PasswordInput, never renders a value back (a private key)."""

    def format_value(self, value):
        return None


def _secret(label, *, textarea=False, help_text=""):
    widget = (SecretTextarea(attrs={"rows": 6, "autocomplete": "off", "spellcheck": "false"})
              if textarea else forms.PasswordInput(render_value=False,
                                                   attrs={"autocomplete": "new-password"}))
    field = forms.CharField(label=label, widget=widget, strip=True, help_text=help_text)
    field.secret = True
    return field


class ConnectForm(forms.Form):
    """The settings every provider shares; subclasses add their credential fields and list
    them in `credential_fields`."""

    provider = ""
    credential_fields: tuple = ()
    optional_credentials: tuple = ()
    referral_id_help = ""

    base_url = forms.URLField(
        assume_scheme="https",
        required=False, label="API base URL",
        help_text="Leave blank for the provider's own API. Set it for a sandbox or a proxy.")
    object_mode = forms.ChoiceField(label="What to create in the CRM")
    referral_id_field = forms.CharField(max_length=100, label="Referral id field")
    push_on = forms.ChoiceField(choices=CrmConnection.PUSH_ON, initial="accepted",
                                label="Send referrals")

    def __init__(self, *args, saved: dict | None = None, **kwargs):
        """`saved`: the credentials of the live connection to the same provider, if any.
        Only their names are used in the page; their values fill fields left blank."""
        super().__init__(*args, **kwargs)
        self.saved = {k: v for k, v in (saved or {}).items() if v}
        self.fields["object_mode"].choices = OBJECT_MODES[self.provider]
        self.fields["referral_id_field"].initial = DEFAULT_REFERRAL_ID_FIELD[self.provider]
        self.fields["referral_id_field"].help_text = self.referral_id_help
        for name in self.credential_fields:
            field = self.fields[name]
            field.required = name not in self.optional_credentials and name not in self.saved
            if name in self.saved:
                field.widget.attrs["placeholder"] = SAVED_PLACEHOLDER
                field.saved = True

    def clean_referral_id_field(self):
        value = self.cleaned_data["referral_id_field"].strip()
        if not _FIELD_NAME.match(value):
            raise ValidationError("Use the field's API name: letters, digits and underscores.")
        return value

    def credentials(self) -> dict:
        """The credentials to store: what was typed, and saved values for blank fields."""
        data = {}
        for name in self.credential_fields:
            value = self.cleaned_data.get(name) or self.saved.get(name, "")
            if value:
                data[name] = value
        return data

    def settings(self) -> dict:
        return {key: self.cleaned_data[key] for key in
                ("base_url", "object_mode", "referral_id_field", "push_on")}

    @property
    def credential_groups(self):
        """(heading, css class, bound fields) for the page; one untitled group by default."""
        return [("", "", [self[name] for name in self.credential_fields])] \
            if self.credential_fields else []

    @property
    def setting_bound_fields(self):
        return [self[name] for name in self.fields if name not in self.credential_fields]


class HubSpotForm(ConnectForm):
    provider = CrmConnection.HUBSPOT
    credential_fields = ("access_token", "client_secret")
    optional_credentials = ("client_secret",)
    referral_id_help = ("Internal name of a company and deal property with unique values "
                        "(create it in HubSpot first).")

    access_token = _secret(
        "Private app access token",
        help_text="Settings → Integrations → Private apps. Scopes: crm.objects.companies, "
                  "contacts and deals (read and write), crm.schemas.deals.read.")
    client_secret = _secret(
        "Client secret", help_text="Only for webhooks: HubSpot signs each delivery with it.")


class SalesforceForm(ConnectForm):
    provider = CrmConnection.SALESFORCE
    JWT, SESSION = "jwt", "session"
    credential_fields = ("consumer_key", "username", "private_key", "instance_url", "session_id")
    referral_id_help = "API name of an External ID field on the objects we create."
    DOMAINS = [("login", "Production (login.salesforce.com)"),
               ("test", "Sandbox (test.salesforce.com)"),
               ("custom", "My Domain")]

    auth = forms.ChoiceField(
        label="Sign in with", widget=forms.RadioSelect, initial=JWT,
        choices=[(JWT, "JWT bearer flow (a connected app with a certificate)"),
                 (SESSION, "An existing session (instance URL and session id)")])
    consumer_key = _secret("Consumer key")
    username = forms.CharField(max_length=254, label="Integration user's username")
    private_key = _secret("Private key (PEM)", textarea=True,
                          help_text="The key whose certificate you uploaded to the connected "
                                    "app.")
    domain_kind = forms.ChoiceField(choices=DOMAINS, initial="login", label="Log in at")
    custom_domain = forms.CharField(
        required=False, max_length=200, label="My Domain",
        help_text="For example <code>acme.my</code> (for acme.my.salesforce.com).")
    instance_url = forms.URLField(required=False, label="Instance URL", assume_scheme="https")
    session_id = _secret("Session id")

    # Which credentials each sign-in method stores.
    BY_AUTH = {JWT: ("consumer_key", "username", "private_key", "domain"),
               SESSION: ("instance_url", "session_id")}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name in self.credential_fields:
            self.fields[name].required = False  # checked per sign-in method in clean()
        if self.saved.get("auth") in self.BY_AUTH:
            self.fields["auth"].initial = self.saved["auth"]
        domain = self.saved.get("domain")  # where to log in is no secret: show it
        if domain:
            known = domain in ("login", "test")
            self.fields["domain_kind"].initial = domain if known else "custom"
            self.fields["custom_domain"].initial = "" if known else domain

    def clean(self):
        data = super().clean()
        auth = data.get("auth")
        if auth == self.JWT:
            kind = data.get("domain_kind")
            domain = kind
            if kind == "custom":
                domain = (data.get("custom_domain") or "").strip().lower()
                domain = domain.removeprefix("https://").removesuffix(".salesforce.com")
                if not re.fullmatch(r"[a-z0-9-]+(\.[a-z0-9-]+)*", domain):
                    self.add_error("custom_domain", "Enter your My Domain, e.g. acme.my.")
            data["domain"] = domain
            key = data.get("private_key") or ""
            if key and "-----BEGIN" not in key:
                self.add_error("private_key", "Paste the whole PEM file, BEGIN and END lines "
                                              "included.")
        for name in self.BY_AUTH.get(auth, ()):
            if name != "domain" and not data.get(name) and not self.saved.get(name):
                self.add_error(name, "This field is required.")
        return data

    def credentials(self) -> dict:
        auth = self.cleaned_data["auth"]
        data = {"auth": auth}
        for name in self.BY_AUTH[auth]:
            value = self.cleaned_data.get(name) or (
                self.saved.get(name, "") if self.saved.get("auth") == auth else "")
            if value:
                data[name] = value
        return data

    @property
    def credential_groups(self):
        # The page shows only the chosen method's group (CSS :has on the radio).
        return [("", "", [self["auth"]]),
                ("JWT bearer flow", "sf-jwt",
                 [self[n] for n in ("consumer_key", "username", "private_key", "domain_kind",
                                    "custom_domain")]),
                ("Existing session", "sf-session",
                 [self[n] for n in ("instance_url", "session_id")])]

    @property
    def setting_bound_fields(self):
        return [self[n] for n in ("base_url", "object_mode", "referral_id_field", "push_on")]


class PipedriveForm(ConnectForm):
    provider = CrmConnection.PIPEDRIVE
    credential_fields = ("api_token", "webhook_user", "webhook_password")
    optional_credentials = ("webhook_user", "webhook_password")

    def clean_referral_id_field(self):
        value = self.cleaned_data["referral_id_field"].strip().lower()
        if not re.fullmatch(r"[0-9a-f]{40}", value):
            raise ValidationError("Paste the custom field's API key: 40 letters and digits, "
                                  "shown in Pipedrive under Settings → Data fields.")
        return value
    referral_id_help = ("Key of a custom field on deals and leads (the 40-character key in "
                        "Pipedrive's data fields settings).")

    api_token = _secret("API token", help_text="Personal preferences → API.")
    webhook_user = _secret("Webhook user",
                           help_text="HTTP basic auth user you set on the Pipedrive webhook.")
    webhook_password = _secret("Webhook password")

    def clean(self):
        data = super().clean()
        user = data.get("webhook_user") or self.saved.get("webhook_user")
        password = data.get("webhook_password") or self.saved.get("webhook_password")
        if bool(user) != bool(password):
            self.add_error("webhook_password" if user else "webhook_user",
                           "Set both the webhook user and password, or neither.")
        return data


class BuiltinForm(ConnectForm):
    provider = CrmConnection.BUILTIN

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Nothing leaves PartnerHub: no API to point at, no field to key by.
        del self.fields["base_url"]
        del self.fields["referral_id_field"]

    def settings(self) -> dict:
        return {"object_mode": self.cleaned_data["object_mode"],
                "push_on": self.cleaned_data["push_on"]}


CONNECT_FORMS = {form.provider: form for form in
                 (HubSpotForm, SalesforceForm, PipedriveForm, BuiltinForm)}


class MappingForm(forms.Form):
    """Pick the pipeline's meaning of each stage. Built for one pipeline: one select per
    stage, named by position (stage ids can hold any character)."""

    OUTCOMES = [("open", "Open"), ("won", "Won"), ("lost", "Lost")]

    pipeline = forms.CharField(widget=forms.HiddenInput)
    owners = forms.CharField(
        required=False, label="Deal owners",
        widget=forms.Textarea(attrs={"rows": 5, "spellcheck": "false",
                                     "placeholder": "jane@acme.example = 12345"}),
        help_text="One line per sales rep: <code>email = CRM owner id</code>. A referral "
                  "assigned to that person gets that owner in the CRM.")

    def __init__(self, *args, pipeline, connection, **kwargs):
        super().__init__(*args, **kwargs)
        self.pipeline = pipeline
        same = connection.pipeline_id == pipeline.id
        self.fields["pipeline"].initial = pipeline.id
        self.fields["owners"].initial = "\n".join(
            f"{email} = {owner}" for email, owner in sorted(connection.owner_mapping.items()))
        self.stage_fields = []
        for index, stage in enumerate(pipeline.stages):
            name = f"stage_{index}"
            default = "won" if stage.won else "lost" if stage.closed else "open"
            if same and str(stage.id) in connection.stage_mapping:
                default = connection.stage_mapping[str(stage.id)]
            self.fields[name] = forms.ChoiceField(choices=self.OUTCOMES, initial=default,
                                                  label=stage.label)
            self.stage_fields.append((stage, name))

    @property
    def stage_rows(self):
        return [(stage, self[name]) for stage, name in self.stage_fields]

    def clean_pipeline(self):
        if self.cleaned_data["pipeline"] != str(self.pipeline.id):
            raise ValidationError("The pipeline changed in the CRM; choose it again.")
        return self.cleaned_data["pipeline"]

    def clean_owners(self):
        mapping, errors = {}, []
        for number, line in enumerate(self.cleaned_data["owners"].splitlines(), start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            email, sep, owner = (part.strip() for part in line.partition("="))
            try:
                validate_email(email)
            except ValidationError:
                email = ""
            if not sep or not email or not owner:
                errors.append(f"Line {number}: write it as “email = owner id”.")
                continue
            mapping[email.lower()] = owner
        if errors:
            raise ValidationError(errors)
        return mapping

    def mapping(self) -> dict:
        stages = {str(stage.id): self.cleaned_data[name] for stage, name in self.stage_fields}
        labels = {str(stage.id): stage.label for stage, _ in self.stage_fields}
        return {"pipeline_id": str(self.pipeline.id), "stage_mapping": stages,
                "stage_labels": labels, "owner_mapping": self.cleaned_data["owners"]}


class SyncFilterForm(forms.Form):
    status = forms.ChoiceField(required=False, label="Status",
                               choices=[("", "All")] + SyncRecord.STATUSES)
