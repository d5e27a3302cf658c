from django.db import models
from django.utils import timezone

from accounts.models import Organization, public_id_field
from attribution.querysets import AttributionQuerySet, DisputeQuerySet
from referrals.models import Referral


class DealSnapshot(models.Model):
    """One observed state of a deal in a vendor's CRM (or the built-in pipeline).

    Snapshots are append-only facts: the CRM said this, at this version. They drive referral
    status (won/lost) and, later, attribution.
    """

    OPEN, WON, LOST = "open", "won", "lost"
    OUTCOMES = [(OPEN, "Open"), (WON, "Won"), (LOST, "Lost")]

    public_id = public_id_field()
    vendor = models.ForeignKey(Organization, on_delete=models.CASCADE,
                               related_name="deal_snapshots")
    provider = models.CharField(max_length=20)
    external_deal_id = models.CharField(max_length=100)
    version = models.CharField(max_length=100, help_text="The CRM's modification marker.")
    referral = models.ForeignKey(Referral, null=True, blank=True, on_delete=models.SET_NULL,
                                 related_name="deal_snapshots")
    account_domain = models.CharField(max_length=253, blank=True)
    account_name = models.CharField(max_length=200, blank=True)
    amount_minor = models.BigIntegerField(null=True, blank=True)
    currency = models.CharField(max_length=3, blank=True)
    stage = models.CharField(max_length=100, blank=True)
    outcome = models.CharField(max_length=5, choices=OUTCOMES, default=OPEN)
    deal_created_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    raw = models.JSONField(default=dict)
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(
            fields=["vendor", "provider", "external_deal_id", "version"],
            name="one_snapshot_per_deal_version")]
        indexes = [
            models.Index(fields=["vendor", "external_deal_id", "-received_at"]),
            models.Index(fields=["referral", "-received_at"]),
            models.Index(fields=["vendor", "outcome", "closed_at"]),
        ]

    def __str__(self):
        return f"{self.provider}:{self.external_deal_id}@{self.version} {self.outcome}"


class CommonNameWord(models.Model):
    """A word too many of the vendor's registrations use to link a deal to them by name
    ("logistics"): the fuzzy-name lookup leaves it out (attribution.name_keys). Recounted
    nightly and before each backfill; the rows are the whole list, replaced per vendor."""

    vendor = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    word = models.CharField(max_length=160)
    referrals = models.PositiveIntegerField(help_text="Registrations using it when counted.")
    counted_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["vendor", "word"],
                                               name="one_common_word_per_vendor")]

    def __str__(self):
        return f"{self.vendor_id}:{self.word}"


class Attribution(models.Model):
    """Who earned a closed-won deal, by which rule, and why: one row per deal, re-evaluated
    when the deal changes, never overwriting a person's decision."""

    AUTO_CONFIRMED, NEEDS_REVIEW = "auto_confirmed", "needs_review"
    CONFIRMED, OVERTURNED = "confirmed", "overturned"
    STATUSES = [(AUTO_CONFIRMED, "Confirmed automatically"), (NEEDS_REVIEW, "Needs review"),
                (CONFIRMED, "Confirmed by a person"), (OVERTURNED, "Overturned")]
    HUMAN_DECIDED = (CONFIRMED, OVERTURNED)

    public_id = public_id_field()
    # No single-column index on network, vendor or partner: the composite indexes in Meta
    # lead with them (each index is paid on every insert of a backfill).
    network = models.ForeignKey("accounts.Network", on_delete=models.PROTECT, related_name="+",
                                db_index=False)
    vendor = models.ForeignKey(Organization, on_delete=models.CASCADE,
                               related_name="attributions", db_index=False)
    provider = models.CharField(max_length=20)
    external_deal_id = models.CharField(max_length=100)
    snapshot = models.ForeignKey(DealSnapshot, on_delete=models.PROTECT, related_name="+",
                                 help_text="The deal version last evaluated.")
    referral = models.ForeignKey(Referral, null=True, blank=True, on_delete=models.SET_NULL,
                                 related_name="attributions")
    partner = models.ForeignKey(Organization, null=True, blank=True, on_delete=models.SET_NULL,
                                related_name="earned_attributions", db_index=False)
    rule = models.CharField(max_length=20)
    match = models.CharField(max_length=10)
    confidence = models.PositiveSmallIntegerField(default=0)
    status = models.CharField(max_length=15, choices=STATUSES)
    decision = models.JSONField(default=dict, help_text="The engine's decision, with every "
                                                        "candidate and its reason.")
    inputs_digest = models.CharField(max_length=64, help_text="Hash of what was decided on.")
    decided_by = models.ForeignKey("accounts.User", null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="+")
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_note = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    objects = AttributionQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(
            fields=["vendor", "provider", "external_deal_id"], name="one_attribution_per_deal")]
        indexes = [models.Index(fields=["vendor", "status", "-created_at"]),
                   models.Index(fields=["partner", "-created_at"]),
                   models.Index(fields=["network", "status", "-created_at"])]

    def __str__(self):
        return f"{self.provider}:{self.external_deal_id} → {self.referral_id or 'nobody'}"


class AttributionCandidate(models.Model):
    """A referral the engine considered for a deal: lets each partner find (and only see) its
    own side of an attribution."""

    # attribution and partner lead the unique constraint and the index below.
    attribution = models.ForeignKey(Attribution, on_delete=models.CASCADE,
                                    related_name="candidates", db_index=False)
    referral = models.ForeignKey(Referral, on_delete=models.CASCADE, related_name="+")
    partner = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+",
                                db_index=False)
    kept = models.BooleanField(default=False)
    match = models.CharField(max_length=10)
    reason = models.CharField(max_length=200)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["attribution", "referral"],
                                               name="one_candidate_row_per_referral")]
        indexes = [models.Index(fields=["partner", "attribution"])]

    def __str__(self):
        return f"{self.referral_id} ({'kept' if self.kept else 'dropped'})"


class AttributionChange(models.Model):
    """The attribution's own history: every re-evaluation that changed something, and every
    human decision, with before and after."""

    attribution = models.ForeignKey(Attribution, on_delete=models.CASCADE,
                                    related_name="changes", db_index=False)  # see Meta
    at = models.DateTimeField(default=timezone.now)
    actor = models.ForeignKey("accounts.User", null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="+")
    reason = models.CharField(max_length=200)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["attribution", "-at"])]
        ordering = ["-at", "-pk"]

    def __str__(self):
        return f"{self.attribution_id} {self.reason}"


# --- Disputes ------------------------------------------------------------------------------

class Dispute(models.Model):
    """A partner's or a vendor's disagreement with an attribution, or a partner's with the
    rejection or expiry of its registration, decided by a channel manager in scope.

    `partner` is the partner organization the dispute concerns (the disputing partner, or for a
    vendor dispute the partner credited at the time): it puts the dispute in the portfolios that
    cover that partner. Partners only ever see their own side's disputes."""

    PARTNER, VENDOR = "partner", "vendor"
    SIDES = [(PARTNER, "Partner"), (VENDOR, "Vendor")]

    OPEN, VENDOR_RESPONDED, UNDER_REVIEW = "open", "vendor_responded", "under_review"
    UPHELD, OVERTURNED, WITHDRAWN = "upheld", "overturned", "withdrawn"
    STATUSES = [(OPEN, "Open"), (VENDOR_RESPONDED, "Vendor responded"),
                (UNDER_REVIEW, "Under review"), (UPHELD, "Upheld"),
                (OVERTURNED, "Overturned"), (WITHDRAWN, "Withdrawn")]
    PENDING = (OPEN, VENDOR_RESPONDED, UNDER_REVIEW)  # waiting for a decision
    DECIDED = (UPHELD, OVERTURNED)

    # What a partner may claim about an attribution, and about its registration.
    TO_ANOTHER_PARTNER, TO_NO_ONE = "attributed_to_another_partner", "attributed_to_no_one"
    WRONGLY_REJECTED, WRONGLY_EXPIRED = "wrongly_rejected", "wrongly_expired"
    # What a vendor may claim about an automatic attribution.
    WRONG_PARTNER, NOT_A_REFERRAL_DEAL = "wrong_partner", "not_a_referral_deal"
    OTHER = "other"
    CATEGORIES = [
        (TO_ANOTHER_PARTNER, "The deal was credited to another partner"),
        (TO_NO_ONE, "The deal was credited to no one"),
        (WRONGLY_REJECTED, "The registration was wrongly rejected"),
        (WRONGLY_EXPIRED, "The registration was wrongly expired"),
        (WRONG_PARTNER, "The deal was credited to the wrong partner"),
        (NOT_A_REFERRAL_DEAL, "The deal did not come from a referral"),
        (OTHER, "Something else"),
    ]

    public_id = public_id_field()
    network = models.ForeignKey("accounts.Network", on_delete=models.PROTECT, related_name="+")
    vendor = models.ForeignKey(Organization, on_delete=models.CASCADE,
                               related_name="disputes_as_vendor")
    partner = models.ForeignKey(Organization, null=True, blank=True, on_delete=models.SET_NULL,
                                related_name="disputes_as_partner")
    attribution = models.ForeignKey(Attribution, null=True, blank=True,
                                    on_delete=models.CASCADE, related_name="disputes")
    referral = models.ForeignKey(Referral, null=True, blank=True, on_delete=models.CASCADE,
                                 related_name="disputes")
    side = models.CharField(max_length=7, choices=SIDES)
    opened_by_org = models.ForeignKey(Organization, on_delete=models.CASCADE,
                                      related_name="disputes_opened")
    opened_by = models.ForeignKey("accounts.User", on_delete=models.PROTECT, related_name="+")
    category = models.CharField(max_length=40, choices=CATEGORIES)
    text = models.TextField()
    status = models.CharField(max_length=20, choices=STATUSES, default=OPEN)
    assigned_to = models.ForeignKey("accounts.Membership", null=True, blank=True,
                                    on_delete=models.SET_NULL, related_name="assigned_disputes")
    sla_due_at = models.DateTimeField()
    resolution = models.TextField(blank=True)
    decided_by = models.ForeignKey("accounts.User", null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="+")
    decided_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    objects = DisputeQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["referral", "attribution"], name="one_open_partner_dispute_per_deal",
                condition=models.Q(side="partner", status__in=["open", "vendor_responded",
                                                               "under_review"])),
            models.UniqueConstraint(
                fields=["referral"], name="one_open_dispute_per_registration",
                condition=models.Q(side="partner", attribution__isnull=True,
                                   status__in=["open", "vendor_responded", "under_review"])),
            models.UniqueConstraint(
                fields=["attribution"], name="one_open_vendor_dispute_per_deal",
                condition=models.Q(side="vendor", status__in=["open", "vendor_responded",
                                                              "under_review"])),
        ]
        indexes = [
            # The queues, by due date: network, vendor, partner and assignee scopes; the
            # pending ones (and so the overdue filter) read straight off a partial index.
            models.Index(fields=["network", "sla_due_at"], name="dispute_pending_due",
                         condition=models.Q(status__in=["open", "vendor_responded",
                                                        "under_review"])),
            models.Index(fields=["network", "status", "sla_due_at"]),
            models.Index(fields=["vendor", "status", "sla_due_at"]),
            models.Index(fields=["partner", "status", "sla_due_at"]),
            models.Index(fields=["opened_by_org", "status", "sla_due_at"]),
            models.Index(fields=["assigned_to", "status", "sla_due_at"]),
        ]

    def __str__(self):
        return f"Dispute {self.public_id} ({self.status})"

    @property
    def is_pending(self) -> bool:
        return self.status in self.PENDING

    @property
    def overdue(self) -> bool:
        return self.is_pending and self.sla_due_at < timezone.now()

    @property
    def is_about_attribution(self) -> bool:
        return self.attribution_id is not None


class DisputeMessage(models.Model):
    """One entry of a dispute's thread, seen by every participant (the disputing side, the
    vendor and the operators in scope). `status_to` marks the entries that moved the dispute."""

    public_id = public_id_field()
    dispute = models.ForeignKey(Dispute, on_delete=models.CASCADE, related_name="messages")
    author = models.ForeignKey("accounts.User", null=True, blank=True, on_delete=models.SET_NULL,
                               related_name="+")
    author_organization = models.ForeignKey(Organization, null=True, blank=True,
                                            on_delete=models.SET_NULL, related_name="+")
    body = models.TextField(blank=True)
    status_to = models.CharField(max_length=20, blank=True, choices=Dispute.STATUSES)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["dispute", "created_at"])]
        ordering = ["created_at", "pk"]

    def __str__(self):
        return f"{self.dispute_id} {self.status_to or 'message'}"


class DisputeEvidence(models.Model):
    """A file attached to a dispute: type- and size-checked on the way in, stored under a random
    name, and served only through a view that checks the dispute is visible."""

    public_id = public_id_field()
    dispute = models.ForeignKey(Dispute, on_delete=models.CASCADE, related_name="evidence")
    message = models.ForeignKey(DisputeMessage, null=True, blank=True, on_delete=models.SET_NULL,
                                related_name="evidence")
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    uploaded_by = models.ForeignKey("accounts.User", null=True, on_delete=models.SET_NULL,
                                    related_name="+")
    file = models.FileField(upload_to="dispute-evidence/%Y/%m/", max_length=200)
    name = models.CharField(max_length=200, help_text="The file's name as uploaded.")
    size = models.PositiveBigIntegerField()
    content_type = models.CharField(max_length=100)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["dispute", "created_at"])]
        ordering = ["created_at", "pk"]

    def __str__(self):
        return self.name
