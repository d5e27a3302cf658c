from django.conf import settings
from django.db import models
from django.utils import timezone
from django_countries.fields import CountryField
from guardian.models import UserObjectPermissionBase

from accounts.models import Network, Organization, public_id_field
from referrals.querysets import EnrolmentQuerySet, ProgramQuerySet, ReferralQuerySet

# Fields a program may make mandatory on top of the always-required ones.
OPTIONAL_FIELDS = [
    ("contact_phone", "Contact phone"),
    ("contact_title", "Contact title"),
    ("estimated_value", "Estimated deal value"),
    ("expected_close", "Expected close month"),
    ("notes", "Notes"),
]
CURRENCIES = ["USD", "EUR", "GBP", "CAD", "AUD", "CHF", "JPY", "SEK", "NOK", "DKK", "INR",
              "BRL", "SGD", "NZD"]


class Program(models.Model):
    """A vendor's referral program: the terms under which partners register deals."""

    DRAFT, ACTIVE, PAUSED, CLOSED = "draft", "active", "paused", "closed"
    STATUSES = [(DRAFT, "Draft"), (ACTIVE, "Open for referrals"), (PAUSED, "Paused"),
                (CLOSED, "Closed")]

    public_id = public_id_field()
    vendor = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="programs")
    name = models.CharField(max_length=120)
    terms = models.TextField(help_text="What partners agree to when they enrol.")
    status = models.CharField(max_length=10, choices=STATUSES, default=DRAFT)
    protection_days = models.PositiveIntegerField(
        default=90, help_text="How long an accepted registration protects the account.")
    auto_accept = models.BooleanField(
        default=False, help_text="Accept submissions without review (conflicts still wait).")
    enrolment_requires_approval = models.BooleanField(default=True)
    required_fields = models.JSONField(default=list, blank=True)
    accepted_currencies = models.JSONField(default=list)
    fuzzy_threshold = models.PositiveSmallIntegerField(
        default=90, help_text="Name similarity (0-100) at which two companies are the same.")
    # Attribution: how closed-won deals are credited (see attribution/engine.py).
    FIRST_ACCEPTED, FIRST_SUBMITTED, LAST_TOUCH = "first_accepted", "first_submitted", "last_touch"
    ATTRIBUTION_RULES = [(FIRST_ACCEPTED, "First accepted registration"),
                         (FIRST_SUBMITTED, "First submitted registration"),
                         (LAST_TOUCH, "Last registration before the deal")]
    attribution_rule = models.CharField(max_length=20, choices=ATTRIBUTION_RULES,
                                        default=FIRST_ACCEPTED)
    attribution_window_days = models.PositiveIntegerField(
        default=365, help_text="Days from registration to close within which a deal counts.")
    dispute_window_days = models.PositiveIntegerField(
        default=30, help_text="Days after an attribution during which it can be disputed.")
    fuzzy_needs_review = models.BooleanField(
        default=True, help_text="Attributions found by a similar name wait for a person.")
    time_zone = models.CharField(
        max_length=64, default="UTC",
        help_text="The vendor's time zone: attribution windows count its calendar days.")
    created_at = models.DateTimeField(default=timezone.now)

    objects = ProgramQuerySet.as_manager()

    class Meta:
        indexes = [models.Index(fields=["vendor", "status"])]

    def __str__(self):
        return f"{self.vendor.name}: {self.name}"

    @property
    def is_open(self):
        return self.status == self.ACTIVE


class Enrolment(models.Model):
    PENDING, ACTIVE, REJECTED, REMOVED = "pending", "active", "rejected", "removed"
    STATUSES = [(PENDING, "Awaiting vendor approval"), (ACTIVE, "Enrolled"),
                (REJECTED, "Declined"), (REMOVED, "Removed")]
    # The partner's tier in this program (set by the vendor): tiered commission plans pay by it.
    TIERS = [("registered", "Registered"), ("silver", "Silver"), ("gold", "Gold"),
             ("platinum", "Platinum")]

    public_id = public_id_field()
    program = models.ForeignKey(Program, on_delete=models.CASCADE, related_name="enrolments")
    partner = models.ForeignKey(Organization, on_delete=models.CASCADE,
                                related_name="enrolments")
    status = models.CharField(max_length=10, choices=STATUSES, default=PENDING)
    tier = models.CharField(max_length=10, choices=TIERS, default="registered")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT,
                                     related_name="+")
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    decided_at = models.DateTimeField(null=True, blank=True)

    objects = EnrolmentQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["program", "partner"],
                                               name="one_enrolment_per_program")]
        indexes = [models.Index(fields=["partner", "status"]),
                   models.Index(fields=["program", "status"])]

    def __str__(self):
        return f"{self.partner} in {self.program}"


class Referral(models.Model):
    """A deal registration: a partner refers a customer account to a vendor."""

    DRAFT, SUBMITTED, ACCEPTED, REJECTED = "draft", "submitted", "accepted", "rejected"
    WON, LOST, EXPIRED, WITHDRAWN = "won", "lost", "expired", "withdrawn"
    STATUSES = [
        (DRAFT, "Draft"), (SUBMITTED, "Submitted"), (ACCEPTED, "Accepted"),
        (REJECTED, "Rejected"), (WON, "Won"), (LOST, "Lost"), (EXPIRED, "Expired"),
        (WITHDRAWN, "Withdrawn"),
    ]
    # Registrations that hold the account against other partners.
    ACTIVE_STATUSES = (SUBMITTED, ACCEPTED)
    REJECTION_REASONS = [
        ("existing_customer", "Already a customer"),
        ("existing_opportunity", "Already in our pipeline"),
        ("duplicate", "Registered by another partner first"),
        ("not_qualified", "Not a qualified opportunity"),
        ("out_of_territory", "Outside the program's territory"),
        ("other", "Other"),
    ]

    public_id = public_id_field()
    network = models.ForeignKey(Network, on_delete=models.PROTECT, related_name="+")
    program = models.ForeignKey(Program, on_delete=models.PROTECT, related_name="referrals")
    vendor = models.ForeignKey(Organization, on_delete=models.PROTECT,
                               related_name="inbound_referrals")
    partner = models.ForeignKey(Organization, on_delete=models.PROTECT,
                                related_name="referrals")
    submitted_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT,
                                     related_name="referrals")
    status = models.CharField(max_length=10, choices=STATUSES, default=DRAFT)

    company_name = models.CharField(max_length=160)
    website = models.CharField(max_length=200, blank=True)
    country = CountryField(blank=True)
    domain = models.CharField(max_length=253, blank=True, help_text="Registrable domain.")
    normalized_name = models.CharField(max_length=160, blank=True)

    contact_name = models.CharField(max_length=150, blank=True)
    contact_email = models.EmailField(blank=True)
    contact_phone = models.CharField(max_length=32, blank=True, help_text="E.164")
    contact_title = models.CharField(max_length=120, blank=True)

    amount_minor = models.BigIntegerField(null=True, blank=True,
                                          help_text="Estimated deal value in minor units.")
    currency = models.CharField(max_length=3, blank=True)
    expected_close = models.DateField(null=True, blank=True, help_text="First of the month.")
    notes = models.TextField(blank=True)

    conflict = models.BooleanField(default=False)
    conflict_with = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL,
                                      related_name="+")
    rejection_code = models.CharField(max_length=30, blank=True, choices=REJECTION_REASONS)
    rejection_reason = models.TextField(blank=True)
    protected_until = models.DateTimeField(null=True, blank=True)
    expiry_warned_at = models.DateTimeField(null=True, blank=True)

    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)

    objects = ReferralQuerySet.as_manager()

    class Meta:
        permissions = [("work_referral", "Assigned to work this referral")]
        indexes = [
            # Partner lists: organization and own scopes, newest first.
            models.Index(fields=["partner", "-created_at"]),
            models.Index(fields=["partner", "submitted_by", "-created_at"]),
            models.Index(fields=["partner", "status", "-created_at"]),
            # Every sort the lists offer, per scope (partner, vendor, network).
            models.Index(fields=["partner", "-submitted_at"]),
            models.Index(fields=["partner", "company_name"]),
            models.Index(fields=["vendor", "company_name"]),
            models.Index(fields=["network", "-submitted_at"]),
            models.Index(fields=["network", "company_name"]),
            # Vendor inbox: the triage order (conflicts first, then oldest first) read straight
            # off the index; status filter, oldest first; value and partner filters (plus a
            # PostgreSQL-only value index, see migration 0004).
            models.Index(fields=["vendor", "-conflict", "submitted_at", "id"],
                         name="referral_vendor_triage"),
            models.Index(fields=["vendor", "status", "submitted_at"]),
            models.Index(fields=["vendor", "-submitted_at"]),
            models.Index(fields=["vendor", "partner", "-submitted_at"]),
            models.Index(fields=["vendor", "amount_minor"]),
            # Operator scope; newest first.
            models.Index(fields=["network", "status", "-submitted_at"]),
            models.Index(fields=["network", "-created_at"], name="referral_network_recent"),
            # Conflict checks: active registrations of a vendor by domain or name.
            models.Index(fields=["vendor", "domain"], name="referral_active_domain",
                         condition=models.Q(status__in=["submitted", "accepted"])),
            models.Index(fields=["vendor", "normalized_name"], name="referral_active_name",
                         condition=models.Q(status__in=["submitted", "accepted"])),
            # The daily protection job.
            models.Index(fields=["status", "protected_until"], name="referral_protection",
                         condition=models.Q(status="accepted")),
        ]

    def __str__(self):
        return f"{self.company_name} → {self.vendor.name if self.vendor_id else '?'}"

    @property
    def is_active_registration(self):
        return self.status in self.ACTIVE_STATUSES


class ReferralAssignment(UserObjectPermissionBase):
    """A vendor sales rep's `assigned` scope: guardian grants with a direct foreign key."""

    content_object = models.ForeignKey(Referral, on_delete=models.CASCADE,
                                       related_name="assignments")

    class Meta(UserObjectPermissionBase.Meta):
        indexes = [models.Index(fields=["user", "permission", "content_object"])]


class TimelineEntry(models.Model):
    """One line of a referral's history: a status change, a message between partner and vendor,
    or a vendor-internal note partners never see."""

    STATUS, MESSAGE, NOTE, EVENT = "status", "message", "note", "event"
    KINDS = [(STATUS, "Status change"), (MESSAGE, "Message"), (NOTE, "Internal note"),
             (EVENT, "Event")]
    EVERYONE, VENDOR_ONLY = "everyone", "vendor"

    public_id = public_id_field()
    referral = models.ForeignKey(Referral, on_delete=models.CASCADE, related_name="timeline")
    kind = models.CharField(max_length=10, choices=KINDS)
    visibility = models.CharField(max_length=10, default=EVERYONE,
                                  choices=[(EVERYONE, "Partner and vendor"),
                                           (VENDOR_ONLY, "Vendor only")])
    author = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                               on_delete=models.SET_NULL, related_name="+")
    author_organization = models.ForeignKey(Organization, null=True, blank=True,
                                            on_delete=models.SET_NULL, related_name="+")
    from_status = models.CharField(max_length=10, blank=True)
    to_status = models.CharField(max_length=10, blank=True)
    body = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["referral", "created_at"])]
        ordering = ["created_at", "pk"]

    def __str__(self):
        return f"{self.referral_id} {self.kind} {self.created_at:%Y-%m-%d}"


class ImportJobQuerySet(models.QuerySet):
    def visible_to(self, membership):
        """Partner members who may submit see their organization's imports; reps (own scope)
        only the ones they uploaded."""
        from accounts import roles
        from accounts.permissions import permissions_of

        if (roles.REFERRAL_SUBMIT not in permissions_of(membership)
                or membership.organization.kind != roles.PARTNER):
            return self.none()
        mine = self.filter(partner_id=membership.organization_id)
        if membership.role_def.scope == roles.OWN:
            return mine.filter(created_by_id=membership.user_id)
        return mine


class ImportJob(models.Model):
    """One uploaded CSV of referrals: validated into a preview, then imported row by row.

    The raw text is kept so that the preview and the import read exactly the same rows.
    `errors` holds {row, field, message} dicts; `stage` says whether the preview or the import
    found the problem, and `imported` marks rows that went in but conflict with another
    partner's registration."""

    VALIDATED, QUEUED, RUNNING, DONE, FAILED = "validated", "queued", "running", "done", "failed"
    STATUSES = [(VALIDATED, "Checked, waiting for confirmation"), (QUEUED, "Queued"),
                (RUNNING, "Importing"), (DONE, "Done"), (FAILED, "Failed")]

    public_id = public_id_field()
    partner = models.ForeignKey(Organization, on_delete=models.CASCADE,
                                related_name="import_jobs")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT,
                                   related_name="+")
    status = models.CharField(max_length=10, choices=STATUSES, default=VALIDATED)
    file_name = models.CharField(max_length=255)
    csv_text = models.TextField()
    total_rows = models.PositiveIntegerField(default=0)
    valid_rows = models.PositiveIntegerField(default=0)
    processed_rows = models.PositiveIntegerField(default=0)
    imported_rows = models.PositiveIntegerField(default=0)
    failed_rows = models.PositiveIntegerField(default=0)
    errors = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = ImportJobQuerySet.as_manager()

    class Meta:
        indexes = [models.Index(fields=["partner", "-created_at"]),
                   models.Index(fields=["partner", "created_by", "-created_at"])]

    def __str__(self):
        return f"{self.file_name} ({self.total_rows} rows)"

    @property
    def is_in_progress(self):
        return self.status in (self.QUEUED, self.RUNNING)
