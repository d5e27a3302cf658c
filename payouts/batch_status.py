"""Where a payout batch stands once sending has started, read from its payouts: `Progress`
(the counts, for the pages and their messages) and the status they make, `Progress.status`:
`sending` while a transfer is under way or an automatic retry is planned, then `sent` (every
payout that went out is paid), `partly_failed` (some paid, some failed), `failed` (none paid)
or `cancelled` (finance cancelled every payout). Cancelled payouts count as neither paid nor
failed; carried-over rows never count. Only reads: payouts.transfers.refresh_batch_status
writes the status, whenever a payout changes."""

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count, Min, Q

from payouts.models import Payout, PayoutBatch

# Still moving on its own: being sent, or failed with an automatic attempt planned.
UNDER_WAY = (Q(status__in=(Payout.READY, Payout.SENDING))
             | Q(status=Payout.FAILED, next_attempt_at__isnull=False))


def failures_subject(batch: PayoutBatch) -> str:
    """The notices of a batch's failed payouts (accounts.notifications.resolve)."""
    return f"payout_batch:{batch.public_id}:failures"


def payouts_text(n: int) -> str:
    return f"{n} payout" if n == 1 else f"{n} payouts"


def as_sentence(text: str) -> str:
    """Stripe's messages do not always end with a full stop; ours go on after them."""
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else f"{text}."


@dataclass(frozen=True)
class Progress:
    """Where a batch's payouts stand (carried-over rows aside)."""

    under_way: int = 0  # ready or sending
    retrying: int = 0  # failed, an automatic attempt planned
    paid: int = 0  # paid (and possibly reversed since)
    failed: int = 0  # failed, waiting for finance
    cancelled: int = 0
    next_attempt_at: datetime | None = None

    @property
    def status(self) -> str:
        if self.under_way or self.retrying:
            return PayoutBatch.SENDING
        if self.failed:
            return PayoutBatch.PARTLY_FAILED if self.paid else PayoutBatch.FAILED
        return PayoutBatch.SENT if self.paid else PayoutBatch.CANCELLED

    @property
    def total(self) -> int:
        return self.under_way + self.retrying + self.paid + self.failed + self.cancelled


def batch_progress(batch_id: int) -> Progress:
    """One aggregate over the batch's payouts (the payout (batch, status) index)."""
    failed = Q(status=Payout.FAILED)
    return Progress(**Payout.objects.filter(batch_id=batch_id).aggregate(
        under_way=Count("pk", filter=Q(status__in=(Payout.READY, Payout.SENDING))),
        retrying=Count("pk", filter=failed & Q(next_attempt_at__isnull=False)),
        paid=Count("pk", filter=Q(status__in=(Payout.PAID, Payout.REVERSED))),
        failed=Count("pk", filter=failed & Q(next_attempt_at__isnull=True)),
        cancelled=Count("pk", filter=Q(status=Payout.CANCELLED)),
        next_attempt_at=Min("next_attempt_at")))


def failure_reason(batch_id: int) -> str:
    """The most common failure message among the batch's failed payouts, for a sentence."""
    rows = list(Payout.objects.filter(batch_id=batch_id, status=Payout.FAILED).order_by()
                .values("failure_message").annotate(n=Count("pk"))
                .order_by("-n", "failure_message")[:2])
    if not rows:
        return ""
    reason = rows[0]["failure_message"] or "The transfer failed"
    if len(rows) > 1:
        reason = f"{reason.strip().rstrip('.')} (and other reasons: see the failed payouts)"
    return as_sentence(reason)
