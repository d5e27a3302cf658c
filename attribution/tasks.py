from celery import shared_task

from attribution.models import DealSnapshot
from attribution.name_keys import refresh_common_words
from attribution.runner import attribute_deal
from attribution.services import attribution_changed


@shared_task(acks_late=True)
def attribute_snapshot(snapshot_id: int) -> str | None:
    """Idempotent: the runner compares an inputs digest, so a retry writes nothing."""
    given = DealSnapshot.objects.filter(pk=snapshot_id).first()
    if given is None:
        return None
    # Always judge the deal's newest version: a late retry for an older one must not undo
    # what a newer snapshot (say, a reopened deal) already decided.
    snapshot = (DealSnapshot.objects.select_related("vendor", "referral", "referral__program")
                .filter(vendor_id=given.vendor_id, provider=given.provider,
                        external_deal_id=given.external_deal_id)
                .order_by("-received_at", "-pk").first())
    attribution = attribute_deal(snapshot)
    if attribution is not None:
        # Also when the runner kept a person's decision: the deal itself may have been lost,
        # and commissions follow the deal.
        attribution_changed([attribution.pk])
    return str(attribution.public_id) if attribution else None


@shared_task
def recount_common_words() -> int:
    """Nightly: which words are too common among each vendor's registrations to link deals by
    name (attribution.name_keys). A stale list makes the lookup slower (a word became
    common) or narrower (a word stopped being common)."""
    return refresh_common_words()
