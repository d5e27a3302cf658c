from django.db import models
from django.utils import timezone

from accounts.models import Organization, public_id_field
from attribution.querysets import AttributionQuerySet
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


class Attribution(models.Model):
    """Who earned a closed-won deal, by which rule, and why: one row per deal, re-evaluated
    when the deal changes, never overwriting a person's decision."""

    AUTO_CONFIRMED, NEEDS_REVIEW = "auto_confirmed", "needs_review"
    CONFIRMED, OVERTURNED = "confirmed", "overturned"
    STATUSES = [(AUTO_CONFIRMED, "Confirmed automatically"), (NEEDS_REVIEW, "Needs review"),
                (CONFIRMED, "Confirmed by a person"), (OVERTURNED, "Overturned")]
    HUMAN_DECIDED = (CONFIRMED, OVERTURNED)

    public_id = public_id_field()
    network = models.ForeignKey("accounts.Network", on_delete=models.PROTECT, related_name="+")
    vendor = models.ForeignKey(Organization, on_delete=models.CASCADE,
                               related_name="attributions")
    provider = models.CharField(max_length=20)
    external_deal_id = models.CharField(max_length=100)
    snapshot = models.ForeignKey(DealSnapshot, on_delete=models.PROTECT, related_name="+",
                                 help_text="The deal version last evaluated.")
    referral = models.ForeignKey(Referral, null=True, blank=True, on_delete=models.SET_NULL,
                                 related_name="attributions")
    partner = models.ForeignKey(Organization, null=True, blank=True, on_delete=models.SET_NULL,
                                related_name="earned_attributions")
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

    attribution = models.ForeignKey(Attribution, on_delete=models.CASCADE,
                                    related_name="candidates")
    referral = models.ForeignKey(Referral, on_delete=models.CASCADE, related_name="+")
    partner = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
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
                                    related_name="changes")
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
