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
        from referrals.services.events import members_with

        for row in due:
            notify(members_with(row["vendor_id"], roles.VENDOR, roles.COMMISSION_APPROVE),
                   "commissions_payable", network_id=row["network_id"],
                   title=f"{row['n']} commission(s) are ready for approval",
                   url="/commissions/?status=payable")
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
