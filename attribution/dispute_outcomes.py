"""What deciding a dispute changes: the deal's attribution moves (or stays, now confirmed by a
person), or a rejected or expired registration is reinstated."""

from datetime import timedelta

from django.utils import timezone

from accounts.errors import ServiceError
from attribution.decisions import reassign_attribution
from attribution.dispute_subjects import REGISTRATION_CATEGORIES
from attribution.models import Attribution, Dispute
from referrals import conflicts
from referrals.models import Referral
from referrals.services.events import record_transition


def decide_attribution(actor, dispute, outcome, resolution, new_referral_public_id):
    """Apply the decision to the attribution; returns the credited referral before and after."""
    attribution = dispute.attribution
    previous = attribution.referral
    # Every partner in the deal may read the attribution's note: it says only that the network
    # reviewed it (the resolution stays with the dispute's participants).
    note = "Reviewed by the network."
    if outcome == Dispute.UPHELD:
        if dispute.side == Dispute.PARTNER:
            target = str(dispute.referral.public_id)
        else:
            target = str(new_referral_public_id) if new_referral_public_id else None
            current = str(previous.public_id) if previous else None
            if target == current:
                raise ServiceError("Upholding the vendor's dispute changes the attribution: "
                                   "choose another registration, or nobody.",
                                   field="new_referral")
        attribution = reassign_attribution(actor, attribution, target, note,
                                           via_dispute=dispute)
    elif attribution.status not in Attribution.HUMAN_DECIDED:
        # The claim is rejected: the same answer, now confirmed by a person. (Through
        # reassign_attribution, which accepts a dispute as the decider's authority.)
        attribution = reassign_attribution(
            actor, attribution, str(previous.public_id) if previous else None, note,
            via_dispute=dispute)
    return previous, attribution.referral


def reinstate(actor, dispute, resolution):
    """An upheld dispute of a rejection or an expiry: the registration is accepted again with a
    fresh protection window (a rejected one counts as accepted now; an expired one keeps its
    original acceptance date)."""
    referral = (Referral.objects.select_for_update(of=("self",))
                .select_related("program", "vendor", "partner")
                .get(pk=dispute.referral_id))
    if referral.status not in REGISTRATION_CATEGORIES:
        raise ServiceError("The registration is no longer rejected or expired; nothing to "
                           "reinstate.")
    _check_reinstatable(referral)
    from_status, now = referral.status, timezone.now()
    referral.status = Referral.ACCEPTED
    if from_status == Referral.REJECTED or referral.decided_at is None:
        referral.decided_at = now
    referral.protected_until = now + timedelta(days=referral.program.protection_days)
    referral.closed_at = referral.expiry_warned_at = None
    referral.rejection_code, referral.rejection_reason = "", ""
    referral.save(update_fields=["status", "decided_at", "protected_until", "closed_at",
                                 "expiry_warned_at", "rejection_code", "rejection_reason",
                                 "updated_at"])
    record_transition(referral, actor, from_status,
                      body=f"Reinstated after a dispute: {resolution}",
                      extra={"dispute": str(dispute.public_id),
                             "protected_until": referral.protected_until.isoformat()})
    from integrations.sync import enqueue_push

    enqueue_push(referral, "accepted")
    dispute.referral = referral


def _check_reinstatable(referral):
    """Reinstating is accepting again, so the account rule of acceptance holds: one active
    registration per partner, one accepted registration per account (under the vendor lock,
    as at submission and acceptance)."""
    conflicts.lock_vendor(referral.vendor_id)
    check = conflicts.check_conflicts(
        vendor_id=referral.vendor_id, domain=referral.domain,
        normalized_name=referral.normalized_name, threshold=referral.program.fuzzy_threshold,
        exclude_pk=referral.pk)
    own = check.own(referral.partner_id)
    if own is not None:
        raise ServiceError(
            f"{referral.partner.name} has registered this account again since "
            f"({own.referral.company_name}, {own.referral.get_status_display().lower()}): "
            "reinstating this registration would duplicate it. Decide the dispute as not "
            "upheld, or ask the partner to withdraw the newer registration first.")
    held = check.accepted()
    if held:
        raise ServiceError(
            "Another partner's registration of this account is accepted (protected until "
            f"{held[0].protected_until:%-d %B %Y}), and one account is protected for one "
            "partner at a time: it has to be withdrawn or expire before this one can be "
            "reinstated.")
