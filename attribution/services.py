"""Deal snapshots in, attribution out.

`record_snapshot` stores one observed deal state (once per CRM version), moves the referral to
won, lost or back to accepted with the deal (the referrals lifecycle's `apply_deal_outcome`), and
hands won deals to the attribution engine. Every door to "won" comes through here: CRM webhooks
and polls (integrations.inbound), the built-in pipeline and a vendor's manual close
(integrations.builtin, integrations.closing).
"""

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils.module_loading import import_string

from attribution.models import Attribution, DealSnapshot


def attribution_changed(attribution_ids) -> None:
    """After commit, hand changed attributions to whoever follows them (the tasks listed in
    ATTRIBUTION_CHANGE_TASKS: the payouts app's commission sync). Named in settings rather
    than imported, so dependencies keep pointing one way (payouts builds on attribution)."""
    ids = sorted({pk for pk in attribution_ids if pk is not None})
    if not ids:
        return
    for path in settings.ATTRIBUTION_CHANGE_TASKS:
        task = import_string(path)
        transaction.on_commit(lambda task=task: task.delay(ids))


def schedule_attribution(snapshot: DealSnapshot) -> None:
    """Attribute after commit, in the attribution queue."""
    from attribution.tasks import attribute_snapshot

    transaction.on_commit(lambda: attribute_snapshot.delay(snapshot.pk))


@transaction.atomic
def record_snapshot(*, vendor_id: int, provider: str, change, referral, outcome: str,
                    actor=None, source: str = ""):
    """Store the change unless this exact version is already known. Returns the snapshot, or
    None for a duplicate (a replayed webhook or an overlapping poll). `actor` and `source` say
    on the referral's timeline who closed the deal (a person closing by hand) or where the
    change came from (default: the CRM and the deal's id)."""
    try:
        with transaction.atomic():
            snapshot = DealSnapshot.objects.create(
                vendor_id=vendor_id, provider=provider,
                external_deal_id=change.external_deal_id, version=change.version,
                referral=referral, account_domain=change.account_domain,
                account_name=change.account_name[:200], amount_minor=change.amount_minor,
                currency=change.currency, stage=change.stage, outcome=outcome,
                deal_created_at=change.deal_created_at, closed_at=change.closed_at,
                raw=change.raw)
    except IntegrityError:
        return None
    if referral is not None:
        from referrals.services import apply_deal_outcome

        apply_deal_outcome(referral, outcome, actor=actor, source=source or (
            f"From the CRM: {provider} deal {change.external_deal_id}."))
    # Won deals are attributed; later changes of an attributed deal are re-evaluated.
    if outcome == DealSnapshot.WON or Attribution.objects.filter(
            vendor_id=vendor_id, provider=provider,
            external_deal_id=change.external_deal_id).exists():
        schedule_attribution(snapshot)
    return snapshot
