from django.db import models
from django.utils import timezone

from accounts.models import Organization, public_id_field
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
