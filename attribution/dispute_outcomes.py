"""What deciding a dispute changes: the deal's attribution moves (or stays, now confirmed by a
person), or a rejected or expired registration is reinstated."""

from accounts.errors import ServiceError
from attribution.decisions import reassign_attribution
from attribution.models import Attribution, Dispute
from referrals.services import reinstate_registration


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
    """An upheld dispute of a rejection or an expiry: the registration is accepted again (the
    referrals lifecycle owns that move and its account rule)."""
    dispute.referral = reinstate_registration(
        actor, dispute.referral, body=f"Reinstated after a dispute: {resolution}",
        extra={"dispute": str(dispute.public_id)})
