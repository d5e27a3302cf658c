"""Payout work for Celery (queue `payouts`). Every task takes ids and is safe to run twice."""

from celery import shared_task
from django.db.models import Count
from django.utils import timezone

from accounts import roles
from accounts.notifications import notify
from payouts import ledger
from payouts.models import Commission


@shared_task
def sync_commissions(attribution_ids: list[int]) -> None:
    """Attributions changed (the attribution app calls this on commit)."""
    for attribution_id in attribution_ids:
        ledger.sync_commission(attribution_id)


@shared_task
def release_commissions() -> int:
    """Hourly: holding periods that ended make commissions payable; each vendor's finance
    people hear once how many now wait for them."""
    now = timezone.now()
    due = list(Commission.objects.filter(status=Commission.PENDING, payable_at__lte=now)
               .values("vendor_id", "network_id").annotate(n=Count("pk")))
    released = ledger.release_due(now)
    if released:
        from payouts.approvals import payable_subject
        from referrals.services.events import members_with

        for row in due:
            notify(members_with(row["vendor_id"], roles.VENDOR, roles.COMMISSION_APPROVE),
                   "commissions_payable", network_id=row["network_id"],
                   title=f"{row['n']} commission(s) are ready for approval",
                   url="/commissions/?status=payable",
                   subject=payable_subject(row["vendor_id"]))
    return released


@shared_task
def reconcile_commissions(hours: int = 48) -> int:
    """Nightly safety net: re-sync every attribution touched lately (a lost on-commit task
    cannot leave a commission behind its attribution)."""
    from datetime import timedelta

    from attribution.models import Attribution

    since = timezone.now() - timedelta(hours=hours)
    ids = list(Attribution.objects.filter(updated_at__gte=since).values_list("pk", flat=True))
    for attribution_id in ids:
        ledger.sync_commission(attribution_id)
    return len(ids)


# --- Sending payouts and Stripe events (payouts.transfers, payouts.webhooks) ---------------

@shared_task
def send_batch(batch_id: int) -> int:
    """An approved batch: start sending (one send_payout task per ready payout)."""
    from payouts import transfers

    return len(transfers.send_batch(batch_id))


@shared_task(acks_late=True)
def send_payout(payout_id: int) -> str:
    """Send one payout. Whatever Stripe answers is recorded on the payout and nothing is raised
    (with eager Celery a retry raised out of `.delay()` would be lost): a transient failure
    plans the next attempt in the database, with backoff, which `sweep_stuck_payouts` makes
    when it is due; after the last one, or a refusal, the payout stays failed with Stripe's
    message for finance."""
    from payouts import transfers

    payout = transfers.send_payout(payout_id)
    return payout.status if payout is not None else "skipped"


@shared_task
def sweep_stuck_payouts() -> int:
    """Every minute: failed payouts whose automatic retry is due and payouts stuck in sending
    are sent again (safe: same idempotency key, and the transfer group is searched first),
    approved batches whose send task was lost start, and Stripe events whose processing failed
    are applied again."""
    from payouts import transfers, webhooks

    webhooks.reprocess_pending()
    return len(transfers.sweep_stuck())


@shared_task(acks_late=True)
def process_stripe_event(event_pk: int) -> None:
    """Apply a stored Stripe event (the webhook does it inline; this re-runs one that failed)."""
    from payouts import webhooks

    webhooks.process(event_pk)


@shared_task
def expire_tax_forms() -> int:
    """Daily: W-8 forms past their validity become `expired` (payouts already treat them as
    expired by date; this keeps the stored status and the audit trail in step)."""
    from payouts.tax import expire_w8_forms

    return expire_w8_forms()


# --- Building and cancelling payout batches (payouts.batches) ------------------------------

@shared_task(acks_late=True)
def build_payout_batch(batch_id: int) -> str | None:
    """Build a batch left `building` by batches.request_batch: it becomes a draft (and the
    approvers hear of it) or `build_failed` with the reason. Twice is harmless: the second run
    finds the batch built, or held by the first, and does nothing."""
    from payouts import batches

    return batches.run_build(batch_id)


@shared_task(acks_late=True)
def cancel_payout_batch(batch_id: int) -> int | None:
    """Release the commissions of a batch left `cancelling` by batches.request_cancel."""
    from payouts import batches

    return batches.run_cancel(batch_id)


@shared_task
def sweep_stuck_batches() -> dict:
    """Every 5 minutes: batches whose build or cancel task was lost or whose worker died are
    handed to their task again; a build unfinished after two hours fails with a message."""
    from payouts import batches

    return batches.sweep_stuck_batches()
