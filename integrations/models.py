from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from accounts.models import Organization, public_id_field
from integrations.crypto import decrypt_json, encrypt_json
from integrations.querysets import CrmConnectionQuerySet, SyncRecordQuerySet
from referrals.models import Referral


class CrmConnection(models.Model):
    """A vendor's link to its CRM. At most one per vendor is not disabled."""

    HUBSPOT, SALESFORCE, PIPEDRIVE, BUILTIN = "hubspot", "salesforce", "pipedrive", "builtin"
    PROVIDERS = [(HUBSPOT, "HubSpot"), (SALESFORCE, "Salesforce"), (PIPEDRIVE, "Pipedrive"),
                 (BUILTIN, "Built-in pipeline")]
    ACTIVE, ERROR, DISABLED = "active", "error", "disabled"
    STATUSES = [(ACTIVE, "Active"), (ERROR, "Needs attention"), (DISABLED, "Disabled")]
    PUSH_ON = [("accepted", "When we accept a referral"),
               ("submitted", "As soon as a partner submits")]

    public_id = public_id_field()
    vendor = models.ForeignKey(Organization, on_delete=models.CASCADE,
                               related_name="crm_connections")
    provider = models.CharField(max_length=12, choices=PROVIDERS)
    status = models.CharField(max_length=10, choices=STATUSES, default=ACTIVE)
    base_url = models.URLField(blank=True, help_text="API base URL (sandboxes, tests).")
    credentials_encrypted = models.TextField(blank=True, editable=False)
    # What to create: hubspot "company_contact_deal"; salesforce "lead" or
    # "account_contact_opportunity"; pipedrive "deal" or "lead"; builtin "deal".
    object_mode = models.CharField(max_length=40, blank=True)
    referral_id_field = models.CharField(
        max_length=100, default="partnerhub_referral_id",
        help_text="The CRM field that holds our referral id (unique / External ID).")
    push_on = models.CharField(max_length=10, choices=PUSH_ON, default="accepted")
    pipeline_id = models.CharField(max_length=100, blank=True)
    # {crm stage id: "won" | "lost" | "open"} and {stage id: label}
    stage_mapping = models.JSONField(default=dict, blank=True)
    stage_labels = models.JSONField(default=dict, blank=True)
    # jsonb keeps no key order, so the pipeline's stage order is stored on its own.
    stage_order = models.JSONField(default=list, blank=True)
    owner_mapping = models.JSONField(default=dict, blank=True,
                                     help_text="{PartnerHub user email: CRM owner id}")
    webhook_token = models.CharField(max_length=64, blank=True,
                                     help_text="Part of the webhook URL; not a secret alone.")
    poll_cursor = models.CharField(max_length=100, blank=True)
    last_polled_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL,
                                   related_name="+")

    objects = CrmConnectionQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(
            fields=["vendor"], condition=~Q(status="disabled"),
            name="one_live_crm_connection_per_vendor")]
        indexes = [models.Index(fields=["provider", "status"])]

    def __str__(self):
        return f"{self.vendor} → {self.get_provider_display()}"

    @property
    def credentials(self) -> dict:
        return decrypt_json(self.credentials_encrypted)

    @credentials.setter
    def credentials(self, value: dict) -> None:
        self.credentials_encrypted = encrypt_json(value)

    @property
    def stages(self) -> list[tuple[str, str]]:
        """(stage id, label) in pipeline order."""
        labels = self.stage_labels
        ordered = [key for key in self.stage_order if key in labels]
        ordered += sorted(key for key in labels if key not in set(ordered))
        return [(key, labels[key]) for key in ordered]

    def outcome_for_stage(self, stage_id: str) -> str:
        return self.stage_mapping.get(str(stage_id), "open")


class SyncRecord(models.Model):
    """The outbox: one row per referral and connection, holding what must be pushed and what
    the CRM gave back. Written in the same transaction as the referral change."""

    PENDING, RUNNING, DONE, FAILED, DEAD = "pending", "running", "done", "failed", "dead"
    STATUSES = [(PENDING, "Waiting"), (RUNNING, "Sending"), (DONE, "In the CRM"),
                (FAILED, "Failed (needs attention)"), (DEAD, "Gave up after retries")]

    public_id = public_id_field()
    connection = models.ForeignKey(CrmConnection, on_delete=models.CASCADE,
                                   related_name="sync_records")
    referral = models.ForeignKey(Referral, on_delete=models.CASCADE, related_name="sync_records")
    status = models.CharField(max_length=8, choices=STATUSES, default=PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    last_error = models.TextField(blank=True)
    external_ids = models.JSONField(default=dict, blank=True)
    external_url = models.URLField(blank=True, max_length=500)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    synced_at = models.DateTimeField(null=True, blank=True)

    objects = SyncRecordQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["connection", "referral"],
                                               name="one_sync_record_per_referral")]
        indexes = [
            models.Index(fields=["connection", "status", "next_attempt_at"]),
            models.Index(fields=["status", "next_attempt_at"]),
        ]

    def __str__(self):
        return f"{self.referral_id} → {self.connection_id}: {self.status}"


class SyncAttempt(models.Model):
    """The per-referral sync log the vendor admin reads."""

    record = models.ForeignKey(SyncRecord, on_delete=models.CASCADE, related_name="log")
    at = models.DateTimeField(default=timezone.now)
    outcome = models.CharField(max_length=10)  # ok | retry | failed | dead
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    message = models.TextField(blank=True)

    class Meta:
        indexes = [models.Index(fields=["record", "-at"])]
        ordering = ["-at", "-pk"]

    def __str__(self):
        return f"{self.at:%Y-%m-%d %H:%M} {self.outcome}"


class WebhookEvent(models.Model):
    """Deliveries received, deduplicated by the provider's event id (replays are stored once)."""

    connection = models.ForeignKey(CrmConnection, on_delete=models.CASCADE,
                                   related_name="webhook_events")
    event_id = models.CharField(max_length=200)
    received_at = models.DateTimeField(default=timezone.now)
    payload = models.JSONField(default=dict)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["connection", "event_id"],
                                               name="one_webhook_event_per_id")]

    def __str__(self):
        return f"{self.connection_id}:{self.event_id}"
