"""Money: commission plans, the commission ledger, payout batches, Stripe Connect accounts and
tax profiles. Amounts are integers in minor units next to an ISO 4217 currency code."""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from accounts.models import Network, Organization, public_id_field
from payouts.querysets import (
    BatchQuerySet,
    CommissionQuerySet,
    LedgerQuerySet,
    PartnerMoneyQuerySet,
    PayoutQuerySet,
)
from referrals.models import Program, Referral


class CommissionPlan(models.Model):
    """One version of a program's commission plan. Versions never change once written: a plan
    change is a new version, effective for deals won from then on, so a commission keeps the
    version it was computed with."""

    PERCENT, FLAT, TIERED = "percent", "flat", "tiered"
    KINDS = [(PERCENT, "Percent of the deal amount"), (FLAT, "Flat amount per won deal"),
             (TIERED, "Percent by partner tier")]

    public_id = public_id_field()
    vendor = models.ForeignKey(Organization, on_delete=models.CASCADE,
                               related_name="commission_plans")
    program = models.ForeignKey(Program, on_delete=models.CASCADE,
                                related_name="commission_plans")
    version = models.PositiveIntegerField()
    kind = models.CharField(max_length=10, choices=KINDS)
    # Rates in basis points (1 = 0.01 %): integers, like the money they multiply.
    rate_bp = models.PositiveIntegerField(null=True, blank=True)
    flat_minor = models.BigIntegerField(null=True, blank=True)
    tier_rates_bp = models.JSONField(default=dict, blank=True,
                                     help_text="Partner tier -> rate in basis points.")
    cap_minor = models.BigIntegerField(null=True, blank=True)
    currency = models.CharField(max_length=3)
    holding_days = models.PositiveIntegerField(default=30)
    clawback_days = models.PositiveIntegerField(default=90)
    payout_minimum_minor = models.BigIntegerField(default=5000)
    effective_from = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["program", "version"],
                                               name="one_plan_row_per_version")]
        indexes = [models.Index(fields=["program", "-effective_from"])]
        ordering = ["program", "-version"]

    def __str__(self):
        return f"{self.program} plan v{self.version}"


class Commission(models.Model):
    """What a partner earns for one attributed won deal, under one plan version.

    Its amount never changes: when the deal or the attribution changes, the commission is
    cancelled (unpaid) or clawed back (paid) and, if something is still earned, a new one is
    written. Every money movement is a LedgerEntry; the status is the workflow around it."""

    PENDING, PAYABLE, APPROVED, REJECTED = "pending", "payable", "approved", "rejected"
    PAID, CANCELLED, CLAWED_BACK = "paid", "cancelled", "clawed_back"
    STATUSES = [(PENDING, "Pending (holding period)"), (PAYABLE, "Payable, awaiting approval"),
                (APPROVED, "Approved"), (REJECTED, "Rejected"), (PAID, "Paid"),
                (CANCELLED, "Cancelled"), (CLAWED_BACK, "Clawed back")]
    # The partner still has the money, or will: what counts in its balance.
    EARNING = (PENDING, PAYABLE, APPROVED, PAID)
    UNPAID = (PENDING, PAYABLE, APPROVED)
    # Retired: a newer commission (or none) replaced it; the attribution may earn again.
    RETIRED = (CANCELLED, CLAWED_BACK)

    public_id = public_id_field()
    # Every row rewrite (a batch attaching 500,000 commissions) touches every index: the
    # foreign keys that lead a composite index below carry no index of their own.
    network = models.ForeignKey(Network, on_delete=models.PROTECT, related_name="+",
                                db_index=False)
    vendor = models.ForeignKey(Organization, on_delete=models.PROTECT,
                               related_name="commissions_owed", db_index=False)
    partner = models.ForeignKey(Organization, on_delete=models.PROTECT,
                                related_name="commissions", db_index=False)
    program = models.ForeignKey(Program, on_delete=models.PROTECT, related_name="commissions")
    plan = models.ForeignKey(CommissionPlan, on_delete=models.PROTECT, related_name="commissions")
    attribution = models.ForeignKey("attribution.Attribution", on_delete=models.PROTECT,
                                    related_name="commissions")
    referral = models.ForeignKey(Referral, null=True, blank=True, on_delete=models.SET_NULL,
                                 related_name="commissions")
    external_deal_id = models.CharField(max_length=100)
    deal_name = models.CharField(max_length=200, blank=True)
    deal_amount_minor = models.BigIntegerField()
    amount_minor = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    basis = models.JSONField(default=dict, help_text="How the amount was computed.")
    earned_at = models.DateTimeField(help_text="When the deal was won.")
    payable_at = models.DateTimeField(help_text="End of the holding period.")
    clawback_until = models.DateTimeField()
    status = models.CharField(max_length=12, choices=STATUSES, default=PENDING)
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="+", db_index=False)
    decided_at = models.DateTimeField(null=True, blank=True)
    rejection_reason = models.TextField(blank=True)
    retired_reason = models.CharField(max_length=200, blank=True)
    retired_at = models.DateTimeField(null=True, blank=True)
    payout = models.ForeignKey("Payout", null=True, blank=True, on_delete=models.SET_NULL,
                               related_name="commissions")
    created_at = models.DateTimeField(default=timezone.now)

    objects = CommissionQuerySet.as_manager()

    class Meta:
        constraints = [
            # At most one live commission per deal: a re-run or a retried task finds it.
            models.UniqueConstraint(fields=["attribution"],
                                    condition=~Q(status__in=["cancelled", "clawed_back"]),
                                    name="one_live_commission_per_attribution"),
            models.CheckConstraint(condition=Q(amount_minor__gte=0),
                                   name="commission_amount_not_negative"),
        ]
        indexes = [
            models.Index(fields=["vendor", "status", "payable_at"]),
            models.Index(fields=["partner", "status", "-earned_at"]),
            models.Index(fields=["network", "status", "payable_at"]),
            models.Index(fields=["partner", "-earned_at"]),
            models.Index(fields=["status", "payable_at"], name="commission_release_due",
                         condition=Q(status="pending")),
            # The batch builder's scan: approved, unassigned, by partner and currency.
            models.Index(fields=["network", "partner", "currency"],
                         name="commission_batchable",
                         condition=Q(status="approved", payout__isnull=True)),
        ]
        ordering = ["-earned_at", "-pk"]

    def __str__(self):
        return f"{self.amount_minor} {self.currency} to {self.partner_id} ({self.status})"


class LedgerEntry(models.Model):
    """One movement in a partner's account with the network, append-only (the database refuses
    UPDATE and DELETE). Positive: the network owes the partner more."""

    EARNED, REJECTED, CANCELLED = "earned", "rejected", "cancelled"
    CLAWBACK, PAID, RECOVERED = "clawback", "paid", "recovered"
    KINDS = [(EARNED, "Commission earned"), (REJECTED, "Commission rejected"),
             (CANCELLED, "Commission cancelled"), (CLAWBACK, "Clawback of a paid commission"),
             (PAID, "Payout sent"), (RECOVERED, "Recovered by a transfer reversal")]

    network = models.ForeignKey(Network, on_delete=models.PROTECT, related_name="+")
    partner = models.ForeignKey(Organization, on_delete=models.PROTECT,
                                related_name="ledger_entries")
    currency = models.CharField(max_length=3)
    amount_minor = models.BigIntegerField()
    kind = models.CharField(max_length=10, choices=KINDS)
    commission = models.ForeignKey(Commission, null=True, blank=True, on_delete=models.PROTECT,
                                   related_name="entries")
    payout = models.ForeignKey("Payout", null=True, blank=True, on_delete=models.PROTECT,
                               related_name="entries")
    memo = models.CharField(max_length=200, blank=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                              on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    objects = LedgerQuerySet.as_manager()

    class Meta:
        indexes = [models.Index(fields=["partner", "currency", "-created_at"]),
                   models.Index(fields=["commission"]), models.Index(fields=["payout"])]
        constraints = [
            # One paid entry per payout and one entry of each kind per commission: a retried
            # task that gets this far is refused by the database, never double-counted.
            models.UniqueConstraint(fields=["payout"], condition=Q(kind="paid"),
                                    name="one_paid_entry_per_payout"),
            models.UniqueConstraint(fields=["commission", "kind"],
                                    condition=Q(commission__isnull=False),
                                    name="one_entry_per_commission_and_kind"),
        ]
        ordering = ["-created_at", "-pk"]

    def __str__(self):
        return f"{self.kind} {self.amount_minor} {self.currency}"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise ValueError("Ledger entries are append-only: post a correcting entry.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValueError("Ledger entries are append-only: post a correcting entry.")


class Balance(models.Model):
    """The running sum of a partner's ledger in one currency, updated in the same transaction
    as every entry (`manage.py check_ledger` proves it equals the sum)."""

    partner = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="balances")
    network = models.ForeignKey(Network, on_delete=models.PROTECT, related_name="+")
    currency = models.CharField(max_length=3)
    amount_minor = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    objects = PartnerMoneyQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["partner", "currency"],
                                               name="one_balance_per_partner_currency")]

    def __str__(self):
        return f"{self.partner_id}: {self.amount_minor} {self.currency}"


class PayoutBatch(models.Model):
    """Operator finance gathers approved, released commissions into one batch; a second person
    approves it before anything is sent.

    Building and cancelling run in Celery (payouts.batches): a batch is `building` from the
    request until the task has gathered it (then `draft`, or `build_failed` with the reason in
    `build_error`), and `cancelling` from the decision until its commissions are released.

    Once sending has started the status summarises the payouts (payouts.transfers.
    refresh_batch_status, whenever one changes): `sending` while a transfer is under way or an
    automatic retry is planned, then `sent` (every payout that went out is paid),
    `partly_failed`, `failed` (nothing paid) or `cancelled` (finance cancelled every payout)."""

    DRAFT, APPROVED, SENDING, SENT, CANCELLED = "draft", "approved", "sending", "sent", "cancelled"
    BUILDING, BUILD_FAILED, CANCELLING = "building", "build_failed", "cancelling"
    PARTLY_FAILED, FAILED = "partly_failed", "failed"
    STATUSES = [(BUILDING, "Building"), (BUILD_FAILED, "Build failed"),
                (DRAFT, "Awaiting approval"), (APPROVED, "Approved"), (SENDING, "Sending"),
                (SENT, "Sent"), (PARTLY_FAILED, "Partly failed"), (FAILED, "Failed"),
                (CANCELLING, "Cancelling"), (CANCELLED, "Cancelled")]
    # A task is (or should be) working on the batch: its pages follow it.
    IN_PROGRESS = (BUILDING, APPROVED, SENDING, CANCELLING)
    # Sending has started: the payouts may be sent (and retried); the status follows them.
    STARTED = (SENDING, SENT, PARTLY_FAILED, FAILED)

    public_id = public_id_field()
    network = models.ForeignKey(Network, on_delete=models.PROTECT, related_name="+")
    period_end = models.DateField(help_text="Commissions released on or before this day.")
    status = models.CharField(max_length=16, choices=STATUSES, default=DRAFT)
    build_error = models.TextField(blank=True, help_text="Why the build failed, for finance.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT,
                                   related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    approved_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                    on_delete=models.PROTECT, related_name="+")
    approved_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    totals = models.JSONField(default=dict, help_text="Currency -> net amount to send.")
    payout_count = models.PositiveIntegerField(default=0)
    carried_over_count = models.PositiveIntegerField(default=0)

    objects = BatchQuerySet.as_manager()

    class Meta:
        indexes = [models.Index(fields=["network", "-created_at"]),
                   models.Index(fields=["network", "status"])]
        constraints = [
            # One build at a time per network: the second would gather the same commissions.
            models.UniqueConstraint(fields=["network"], condition=Q(status="building"),
                                    name="one_building_batch_per_network"),
        ]
        ordering = ["-created_at", "-pk"]

    def __str__(self):
        return f"Batch {self.public_id} ({self.status})"

    @property
    def transfer_group(self) -> str:
        return f"batch_{self.public_id.hex}"

    @property
    def is_in_progress(self) -> bool:
        return self.status in self.IN_PROGRESS


class Payout(models.Model):
    """What one partner receives in one currency from one batch: one Stripe Transfer. Partners
    that cannot be paid this time (below the minimum, no payout account, tax profile missing,
    owing more than they earned) get a carried-over row that says why."""

    CARRIED_OVER, READY, SENDING, PAID = "carried_over", "ready", "sending", "paid"
    FAILED, CANCELLED, REVERSED = "failed", "cancelled", "reversed"
    STATUSES = [(CARRIED_OVER, "Carried over"), (READY, "Ready to send"), (SENDING, "Sending"),
                (PAID, "Paid"), (FAILED, "Failed"), (CANCELLED, "Cancelled"),
                (REVERSED, "Reversed")]
    # Carried-over reasons.
    BELOW_MINIMUM, NO_ACCOUNT, ACCOUNT_NOT_READY = "below_minimum", "no_account", "account"
    TAX_PROFILE, OWES = "tax_profile", "owes"

    public_id = public_id_field()
    batch = models.ForeignKey(PayoutBatch, on_delete=models.PROTECT, related_name="payouts")
    network = models.ForeignKey(Network, on_delete=models.PROTECT, related_name="+")
    partner = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="payouts")
    currency = models.CharField(max_length=3)
    gross_minor = models.BigIntegerField(help_text="Sum of the commissions included.")
    offset_minor = models.BigIntegerField(default=0,
                                          help_text="Clawbacks netted against this payout.")
    amount_minor = models.BigIntegerField(help_text="What is transferred: gross - offset.")
    commission_count = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=12, choices=STATUSES, default=READY)
    carry_reason = models.CharField(max_length=20, blank=True)
    stripe_account_id = models.CharField(max_length=64, blank=True)
    stripe_transfer_id = models.CharField(max_length=64, blank=True)
    failure_code = models.CharField(max_length=64, blank=True)
    failure_message = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    # Bumped after each refusal Stripe saved under the idempotency key (it would replay the
    # refusal for 24 hours); a retry then sends under the next key (see payouts/transfers.py).
    key_generation = models.PositiveIntegerField(default=1)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    # After a transient failure (Stripe unreachable, 5xx, 429): when the sweep sends it again,
    # with backoff, until `transient_failures` passes SEND_MAX_RETRIES (payouts/transfers.py).
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    transient_failures = models.PositiveIntegerField(
        default=0, help_text="Transient failures in a row since the payout was last started "
                             "(by the batch or by finance's Retry).")
    paid_at = models.DateTimeField(null=True, blank=True)
    reversed_minor = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)

    objects = PayoutQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["batch", "partner", "currency"],
                                               name="one_payout_per_partner_currency")]
        indexes = [models.Index(fields=["partner", "-created_at"]),
                   models.Index(fields=["batch", "status"]),
                   models.Index(fields=["network", "status"]),
                   models.Index(fields=["stripe_transfer_id"]),
                   # The yearly tax report: what was paid in a calendar year.
                   models.Index(fields=["network", "paid_at"], name="payout_paid_in_period",
                                condition=Q(status__in=["paid", "reversed"])),
                   # The sweep's automatic retries that are due.
                   models.Index(fields=["next_attempt_at"], name="payout_retry_due",
                                condition=Q(next_attempt_at__isnull=False))]
        ordering = ["-created_at", "-pk"]

    def __str__(self):
        return f"Payout {self.public_id} {self.amount_minor} {self.currency} ({self.status})"

    @property
    def idempotency_key(self) -> str:
        """Stable across every retry of this payout: Stripe replays the first answer."""
        return f"payout-{self.public_id}"

    @property
    def transfer_key(self) -> str:
        """The key of the current generation (the first one is `idempotency_key`)."""
        if self.key_generation <= 1:
            return self.idempotency_key
        return f"{self.idempotency_key}-{self.key_generation}"


class PayoutAccount(models.Model):
    """A partner's Stripe connected account (Stripe-hosted onboarding; the platform pays the
    fees), with the status Stripe last reported."""

    partner = models.OneToOneField(Organization, on_delete=models.PROTECT,
                                   related_name="payout_account")
    network = models.ForeignKey(Network, on_delete=models.PROTECT, related_name="+")
    stripe_account_id = models.CharField(max_length=64, unique=True)
    country = models.CharField(max_length=2, blank=True)
    default_currency = models.CharField(max_length=3, blank=True)
    details_submitted = models.BooleanField(default=False)
    payouts_enabled = models.BooleanField(default=False)
    transfers_active = models.BooleanField(default=False)
    requirements_due = models.JSONField(default=list, blank=True)
    disabled_reason = models.CharField(max_length=100, blank=True)
    last_bank_payout_status = models.CharField(max_length=20, blank=True)
    last_bank_payout_failure = models.CharField(max_length=200, blank=True)
    synced_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    objects = PartnerMoneyQuerySet.as_manager()

    def __str__(self):
        return f"{self.stripe_account_id} for {self.partner_id}"

    @property
    def can_receive_transfers(self) -> bool:
        return self.details_submitted and self.transfers_active


class TaxProfile(models.Model):
    """What reporting needs about a payee. The TIN itself is collected by Stripe's onboarding
    and never stored here."""

    W9, W8BEN, W8BENE = "w9", "w8ben", "w8bene"
    FORMS = [(W9, "W-9 (US person)"), (W8BEN, "W-8BEN (foreign individual)"),
             (W8BENE, "W-8BEN-E (foreign entity)")]
    ENTITY_TYPES = [
        ("individual", "Individual"), ("sole_proprietor", "Sole proprietor / single-member LLC"),
        ("partnership", "Partnership"), ("llc", "LLC taxed as a partnership"),
        ("c_corporation", "C corporation"), ("s_corporation", "S corporation"),
        ("trust", "Trust or estate"), ("other", "Other entity"),
    ]
    CORPORATIONS = ("c_corporation", "s_corporation")
    FORM_STATUSES = [("missing", "Not provided"), ("received", "Received"),
                     ("expired", "Expired")]

    partner = models.OneToOneField(Organization, on_delete=models.PROTECT,
                                   related_name="tax_profile")
    network = models.ForeignKey(Network, on_delete=models.PROTECT, related_name="+")
    country = models.CharField(max_length=2, blank=True)
    entity_type = models.CharField(max_length=20, choices=ENTITY_TYPES, blank=True)
    us_person = models.BooleanField(null=True)
    form = models.CharField(max_length=6, choices=FORMS, blank=True)
    form_status = models.CharField(max_length=10, choices=FORM_STATUSES, default="missing")
    form_signed_on = models.DateField(null=True, blank=True)
    legal_name = models.CharField(max_length=200, blank=True)
    address_line1 = models.CharField(max_length=200, blank=True)
    address_line2 = models.CharField(max_length=200, blank=True)
    city = models.CharField(max_length=100, blank=True)
    region = models.CharField(max_length=100, blank=True)
    postal_code = models.CharField(max_length=20, blank=True)
    updated_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="+")
    updated_at = models.DateTimeField(default=timezone.now)

    objects = PartnerMoneyQuerySet.as_manager()

    def __str__(self):
        return f"Tax profile of {self.partner_id}"


class StripeEvent(models.Model):
    """A Stripe webhook event, kept once by its id: a redelivery finds it and does nothing."""

    event_id = models.CharField(max_length=100, unique=True)
    type = models.CharField(max_length=100)
    account = models.CharField(max_length=64, blank=True, help_text="Connected account, if any.")
    payload = models.JSONField()
    received_at = models.DateTimeField(default=timezone.now)
    processed_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        indexes = [models.Index(fields=["-received_at"])]

    def __str__(self):
        return f"{self.type} {self.event_id}"
