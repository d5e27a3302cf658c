"""People's decisions on attributions: confirm what the engine found, or give the deal to
another candidate (or to nobody). A decision is final for the engine: re-runs never touch it.
Disputes resolve through these same functions."""

from django.db import transaction
from django.utils import timezone

from accounts import audit, roles
from accounts.errors import ServiceError
from accounts.services.guards import require
from attribution.models import Attribution, AttributionCandidate, AttributionChange
from attribution.services import attribution_changed
from referrals.other_partners import OtherPartner, check_no_other_partner


def _summary(a: Attribution) -> dict:
    return {"referral": str(a.referral.public_id) if a.referral_id else None,
            "partner": a.partner.name if a.partner_id else None, "status": a.status}


def _lock(attribution) -> Attribution:
    return (Attribution.objects.select_for_update(of=("self",))
            .select_related("referral", "partner", "vendor").get(pk=attribution.pk))


@transaction.atomic
def confirm_attribution(actor, attribution: Attribution, note: str = "", *,
                        via_dispute=None) -> Attribution:
    """A vendor decider or a channel manager in scope agrees with the engine. Through a
    dispute the dispute service has already checked the decider."""
    if via_dispute is None:
        _require_decider(actor, attribution)
    attribution = _lock(attribution)
    if attribution.status in Attribution.HUMAN_DECIDED:
        raise ServiceError("This attribution was already decided by a person.")
    _check_note(attribution, note)
    before = _summary(attribution)
    attribution.status = Attribution.CONFIRMED
    attribution.decided_by, attribution.decided_at = actor.user, timezone.now()
    attribution.decision_note = note.strip()
    attribution.save(update_fields=["status", "decided_by", "decided_at", "decision_note",
                                    "updated_at"])
    _record(actor, attribution, "attribution.confirmed", before, note)
    return attribution


@transaction.atomic
def reassign_attribution(actor, attribution: Attribution, referral_public_id: str | None,
                         note: str, *, via_dispute=None) -> Attribution:
    """Give the deal to another candidate referral (or to nobody: None). Status becomes
    `overturned` when the winner changes, `confirmed` when it stays."""
    if via_dispute is None:
        _require_decider(actor, attribution)
    note = (note or "").strip()
    if not note:
        raise ServiceError("Write down why, for the partners and the audit trail.",
                           field="note")
    attribution = _lock(attribution)
    if (via_dispute is None and actor.organization.kind == roles.VENDOR
            and attribution.status in Attribution.HUMAN_DECIDED):
        raise ServiceError("A person already decided this attribution; open a dispute to "
                           "change it.")
    _check_note(attribution, note)
    new_referral = None
    if referral_public_id:
        candidate = (AttributionCandidate.objects.select_related("referral", "partner")
                     .filter(attribution=attribution,
                             referral__public_id=referral_public_id).first())
        if candidate is None:
            raise ServiceError("Choose one of the referrals considered for this deal.")
        new_referral = candidate.referral
    before = _summary(attribution)
    changed = (new_referral.pk if new_referral else None) != attribution.referral_id
    attribution.referral = new_referral
    attribution.partner_id = new_referral.partner_id if new_referral else None
    attribution.status = Attribution.OVERTURNED if changed else Attribution.CONFIRMED
    attribution.decided_by, attribution.decided_at = actor.user, timezone.now()
    attribution.decision_note = note
    attribution.save(update_fields=["referral", "partner", "status", "decided_by",
                                    "decided_at", "decision_note", "updated_at"])
    AttributionCandidate.objects.filter(attribution=attribution).update(kept=False)
    if new_referral:
        AttributionCandidate.objects.filter(attribution=attribution,
                                            referral=new_referral).update(kept=True)
    _record(actor, attribution, "attribution.overturned" if changed
            else "attribution.confirmed", before, note)
    return attribution


def _check_note(attribution, note):
    """Every partner considered for the deal reads the note: it names none of them."""
    candidates = [OtherPartner(name, domain or "") for name, domain in
                  AttributionCandidate.objects.filter(attribution=attribution)
                  .values_list("partner__name", "partner__website_domain").distinct()]
    check_no_other_partner(note or "", candidates, "note", readers_may_see=(
        attribution.vendor.name, attribution.snapshot.account_name))


def _require_decider(actor, attribution):
    """Vendor deciders (referral.accept) of this vendor, or operators who resolve disputes
    (channel managers in whose portfolio it falls, network admins)."""
    if actor.organization.kind == roles.VENDOR:
        require(actor, roles.REFERRAL_ACCEPT, attribution)
    else:
        require(actor, roles.DISPUTE_RESOLVE, attribution)


def _record(actor, attribution, action, before, note):
    after = _summary(attribution)
    audit.record(action, attribution, actor=actor, before=before,
                 after={**after, "note": note}, network_id=attribution.network_id)
    AttributionChange.objects.create(attribution=attribution, actor=actor.user,
                                     reason=action.split(".")[1], before=before, after=after)
    attribution_changed([attribution.pk])
