from celery import shared_task

from attribution.models import DealSnapshot
from attribution.runner import attribute_deal


@shared_task(acks_late=True)
def attribute_snapshot(snapshot_id: int) -> str | None:
    """Idempotent: the runner compares an inputs digest, so a retry writes nothing."""
    snapshot = (DealSnapshot.objects.select_related("vendor", "referral", "referral__program")
                .filter(pk=snapshot_id).first())
    if snapshot is None:
        return None
    attribution = attribute_deal(snapshot)
    return str(attribution.public_id) if attribution else None
