from django.db import transaction
from django.utils import timezone

from accounts import roles
from accounts.errors import ServiceError
from accounts.services.guards import require
from integrations.inbound import ingest_change
from integrations.models import CrmConnection
from integrations.providers.base import DealChange
from referrals.models import Referral, TimelineEntry

# A deal is worked from acceptance on, also after its registration's protection ran out (the
# attribution then judges whether the deal was protected when it was created).
WORKABLE = (Referral.ACCEPTED, Referral.WON, Referral.LOST, Referral.EXPIRED)


def current_stage(referral) -> str:
    latest = referral.deal_snapshots.filter(provider="builtin").order_by("-received_at",
                                                                          "-pk").first()
    return latest.stage if latest else "new"


@transaction.atomic
def move_stage(actor, referral, stage: str):
    """A vendor user moves the referral's deal in the built-in pipeline; this produces the
    same deal snapshot a CRM would."""
    require(actor, roles.REFERRAL_UPDATE_STAGE, referral)
    connection = CrmConnection.objects.live().filter(vendor_id=referral.vendor_id,
                                                     provider="builtin").first()
    if connection is None:
        raise ServiceError("This vendor does not use the built-in pipeline.")
    if stage not in connection.stage_labels:
        raise ServiceError("Choose one of the pipeline's stages.", field="stage")
    if referral.status not in WORKABLE:
        raise ServiceError("Accept the referral before working the deal.")
    now = timezone.now()
    outcome = connection.outcome_for_stage(stage)
    change = DealChange(
        external_deal_id=str(referral.public_id), version=now.isoformat(), stage=stage,
        referral_id=str(referral.public_id), account_domain=referral.domain,
        account_name=referral.company_name, amount_minor=referral.amount_minor,
        currency=referral.currency, deal_created_at=referral.decided_at,
        closed_at=now if outcome in ("won", "lost") else None,
        raw={"stage": stage, "moved_by": actor.user.email})
    label = connection.stage_labels.get(stage, stage)
    before = referral.status
    snapshot = ingest_change(connection, change, actor=actor,
                             source=f"Deal moved to {label} in the pipeline.")
    referral.refresh_from_db(fields=["status"])
    if referral.status == before:
        # No status change to show it: partners follow the deal's progress here.
        TimelineEntry.objects.create(
            referral=referral, kind=TimelineEntry.EVENT, author=actor.user,
            author_organization_id=actor.organization_id, body=f"Deal stage: {label}")
    return snapshot
