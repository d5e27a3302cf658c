"""Disputes: a partner or a vendor disagrees, a channel manager in scope decides.

    open -> vendor_responded -> under_review -> upheld | overturned
    open | vendor_responded | under_review -> withdrawn (by the disputing side)

A partner disputes, inside its program's dispute window, an attribution of a deal where its
referral was a candidate and the deal went to another partner or to nobody, or the rejection or
expiry of its registration. A vendor disputes an automatic attribution of its deal. `upheld`
means the claim is accepted and the attribution (or the registration) changes; `overturned`
means the claim is rejected and the attribution stays (confirmed by a person).

Participants are the disputing side, the vendor and the operators in scope. Partners never see
each other: a partner whose attribution changes learns only that it changed, never who
disputed, and the texts partners read may not name other partners.

Every action checks the permission, runs in one transaction, writes an audit event and a thread
entry, and notifies (rows now, emails after commit).

Around the actions: what can be disputed and until when (dispute_subjects), who takes part
and hears about it (dispute_people), what a decision changes (dispute_outcomes) and the
evidence files (evidence).
"""

from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from accounts import audit, roles
from accounts.errors import PermissionDenied, ServiceError
from accounts.models import Membership
from accounts.notifications import notify
from accounts.permissions import can
from accounts.services.guards import require
from attribution.dispute_outcomes import decide_attribution, reinstate
from attribution.dispute_people import (
    check_no_names,
    disputing_people,
    notify_about,
    participants,
    partner_names,
    partner_people,
    resolvers,
    vendor_people,
)
from attribution.dispute_subjects import (
    VENDOR_CATEGORIES,
    closed,
    dispute_deadline,
    partner_subjects,
    pick_subject,
)
from attribution.evidence import attach, check_evidence_files
from attribution.models import Attribution, Dispute, DisputeMessage
from referrals.models import Referral, TimelineEntry

SLA_BUSINESS_DAYS = 5  # a dispute should be decided within this many working days
MAX_TEXT = 10_000

TRANSITIONS = {
    Dispute.OPEN: {Dispute.VENDOR_RESPONDED, Dispute.UNDER_REVIEW, Dispute.WITHDRAWN},
    Dispute.VENDOR_RESPONDED: {Dispute.UNDER_REVIEW, Dispute.WITHDRAWN},
    Dispute.UNDER_REVIEW: {Dispute.UPHELD, Dispute.OVERTURNED, Dispute.WITHDRAWN},
}
CATEGORY_LABELS = dict(Dispute.CATEGORIES)


def add_business_days(start: datetime, days: int) -> datetime:
    """`days` working days (Monday to Friday) after `start`, at the same time of day."""
    moment, left = timezone.localtime(start), days
    while left > 0:
        moment += timedelta(days=1)
        if moment.weekday() < 5:
            left -= 1
    return moment


def _subject_name(dispute) -> str:
    if dispute.referral_id:
        return dispute.referral.company_name
    return dispute.attribution.snapshot.account_name or dispute.attribution.external_deal_id


def _clean_text(text, field, what="Explain") -> str:
    text = (text or "").strip()
    if not text:
        raise ServiceError(f"{what}: this cannot be empty.", field=field)
    if len(text) > MAX_TEXT:
        raise ServiceError("Keep it under 10,000 characters.", field=field)
    return text


# --- Moving a dispute ----------------------------------------------------------------------

def _lock(dispute) -> Dispute:
    return (Dispute.objects.select_for_update(of=("self",))
            .select_related("vendor", "partner", "opened_by_org", "opened_by", "referral",
                            "referral__program", "referral__submitted_by", "attribution",
                            "attribution__snapshot", "assigned_to__user")
            .get(pk=dispute.pk))


def _move(dispute, to_status) -> str:
    if to_status not in TRANSITIONS.get(dispute.status, ()):
        raise ServiceError(f"This dispute is {dispute.get_status_display().lower()}; it "
                           f"cannot become {dict(Dispute.STATUSES)[to_status].lower()} now.")
    from_status, dispute.status = dispute.status, to_status
    return from_status


def _entry(dispute, actor, body="", status_to="") -> DisputeMessage:
    return DisputeMessage.objects.create(
        dispute=dispute, author=actor.user if actor else None,
        author_organization_id=actor.organization_id if actor else None, body=body,
        status_to=status_to)


def _timeline(referral, actor, body, *, vendor_only=False):
    if referral is None:
        return
    TimelineEntry.objects.create(
        referral=referral, kind=TimelineEntry.EVENT, body=body,
        visibility=TimelineEntry.VENDOR_ONLY if vendor_only else TimelineEntry.EVERYONE,
        author=actor.user if actor else None,
        author_organization_id=actor.organization_id if actor else None)


def _audit(action, dispute, actor, before=None, after=None):
    audit.record(action, dispute, actor=actor, before=before, after=after,
                 network_id=dispute.network_id)


def _create(actor, **fields) -> Dispute:
    now = timezone.now()
    try:
        with transaction.atomic():
            return Dispute.objects.create(
                opened_by_org_id=actor.organization_id, opened_by=actor.user, created_at=now,
                sla_due_at=add_business_days(now, SLA_BUSINESS_DAYS), **fields)
    except IntegrityError:
        raise ServiceError("This is already disputed.", field="category") from None


@transaction.atomic
def open_partner_dispute(actor, referral: Referral, category: str, text: str, files=(), *,
                         attribution: Attribution | None = None, now=None) -> Dispute:
    """A partner disputes an attribution its referral lost (to another partner or to nobody),
    or its registration's rejection or expiry, inside the program's dispute window."""
    require(actor, roles.DISPUTE_OPEN, referral)
    if actor.organization.kind != roles.PARTNER or category not in dict(Dispute.CATEGORIES):
        raise ServiceError("Choose what you dispute.", field="category")
    text = _clean_text(text, "text")
    checked = check_evidence_files(files)
    referral = (Referral.objects.select_for_update(of=("self",))
                .select_related("program", "vendor", "partner", "submitted_by")
                .get(pk=referral.pk))
    subject = pick_subject(partner_subjects(referral, now), category, attribution)
    dispute = _create(actor, network_id=referral.network_id, vendor_id=referral.vendor_id,
                      partner_id=referral.partner_id, attribution=subject.attribution,
                      referral=referral, side=Dispute.PARTNER, category=category, text=text)
    attach(dispute, actor, checked)
    _audit("dispute.opened", dispute, actor, after={
        "side": dispute.side, "category": category, "referral": str(referral.public_id),
        "attribution": str(subject.attribution.public_id) if subject.attribution else None,
        "evidence": [f.name for f in checked]})
    _timeline(referral, actor, f"Dispute opened: {CATEGORY_LABELS[category]}.")
    title = f"{referral.partner.name} disputes {referral.company_name}"
    notify_about(vendor_people(dispute) + resolvers(dispute), "dispute_opened", dispute, title,
                 text, exclude=actor.user)
    return dispute


@transaction.atomic
def open_vendor_dispute(actor, attribution: Attribution, category: str, text: str, files=(),
                        *, now=None) -> Dispute:
    """A vendor disputes an automatic attribution of its deal, inside the dispute window."""
    require(actor, roles.DISPUTE_RESPOND, attribution)
    if actor.organization_id != attribution.vendor_id or category not in VENDOR_CATEGORIES:
        raise ServiceError("Choose what you dispute.", field="category")
    text = _clean_text(text, "text")
    checked = check_evidence_files(files)
    attribution = (Attribution.objects.select_for_update(of=("self",))
                   .select_related("referral", "referral__program", "snapshot")
                   .get(pk=attribution.pk))
    if attribution.status in Attribution.HUMAN_DECIDED:
        raise ServiceError("A person already decided this attribution; only automatic "
                           "attributions can be disputed.")
    blocked = closed(dispute_deadline(attribution), now or timezone.now())
    if blocked:
        raise ServiceError(blocked)
    if Dispute.objects.filter(attribution=attribution, side=Dispute.VENDOR) \
            .exclude(status=Dispute.WITHDRAWN).exists():
        raise ServiceError("This attribution is already disputed.")
    dispute = _create(actor, network_id=attribution.network_id, vendor_id=attribution.vendor_id,
                      partner_id=attribution.partner_id, attribution=attribution,
                      referral=attribution.referral, side=Dispute.VENDOR, category=category,
                      text=text)
    attach(dispute, actor, checked)
    _audit("dispute.opened", dispute, actor, after={
        "side": dispute.side, "category": category,
        "attribution": str(attribution.public_id), "evidence": [f.name for f in checked]})
    _timeline(attribution.referral, actor,
              f"The vendor disputes this deal's attribution: {CATEGORY_LABELS[category]}.",
              vendor_only=True)
    notify_about(vendor_people(dispute) + resolvers(dispute), "dispute_opened", dispute,
                 f"{actor.organization.name} disputes the attribution of {_subject_name(dispute)}",
                 text, exclude=actor.user)
    return dispute


@transaction.atomic
def vendor_respond(actor, dispute: Dispute, text: str, files=()) -> Dispute:
    """The vendor answers a partner's dispute (once; later words go in the thread)."""
    require(actor, roles.DISPUTE_RESPOND, dispute)
    dispute = _lock(dispute)
    if dispute.side != Dispute.PARTNER:
        raise ServiceError("Only partners' disputes wait for the vendor's response.")
    text = _clean_text(text, "text", "Write your response")
    check_no_names(text, partner_names(dispute), "text", dispute)
    checked = check_evidence_files(files)
    from_status = _move(dispute, Dispute.VENDOR_RESPONDED)
    dispute.save(update_fields=["status", "updated_at"])
    entry = _entry(dispute, actor, text, Dispute.VENDOR_RESPONDED)
    attach(dispute, actor, checked, entry)
    _audit("dispute.responded", dispute, actor, {"status": from_status},
           {"status": dispute.status})
    _timeline(dispute.referral, actor, "The vendor responded to the dispute.")
    notify_about(disputing_people(dispute) + resolvers(dispute), "dispute_updated", dispute,
                 f"{dispute.vendor.name} responded to the dispute on {_subject_name(dispute)}",
                 text, exclude=actor.user)
    return dispute


def participant_permission(membership, dispute) -> str | None:
    """The permission that makes this member a voice in the dispute's thread, if any."""
    kind = membership.organization.kind
    if kind == roles.PARTNER:
        return roles.DISPUTE_OPEN if dispute.side == Dispute.PARTNER else None
    if kind == roles.VENDOR:
        return roles.DISPUTE_RESPOND
    return roles.DISPUTE_RESOLVE


@transaction.atomic
def post_message(actor, dispute: Dispute, body: str, files=()) -> DisputeMessage:
    permission = participant_permission(actor, dispute)
    if permission is None:
        raise PermissionDenied()
    require(actor, permission, dispute)
    dispute = _lock(dispute)
    if not dispute.is_pending:
        raise ServiceError("This dispute is closed.")
    body = _clean_text(body, "body", "Write a message")
    if actor.organization.kind != roles.PARTNER and dispute.side == Dispute.PARTNER:
        check_no_names(body, partner_names(dispute), "body", dispute)
    checked = check_evidence_files(files)
    entry = _entry(dispute, actor, body)
    attach(dispute, actor, checked, entry)
    Dispute.objects.filter(pk=dispute.pk).update(updated_at=timezone.now())
    _audit("dispute.message", dispute, actor,
           after={"message": str(entry.public_id), "evidence": [f.name for f in checked]})
    notify_about(participants(dispute), "dispute_message", dispute,
                 f"New message on the dispute about {_subject_name(dispute)}", body,
                 exclude=actor.user)
    return entry


def may_take_over(actor, dispute) -> bool:
    """A dispute assigned to someone else is theirs; an admin may still step in."""
    return (dispute.assigned_to_id in (None, actor.pk)
            or can(actor, roles.PORTFOLIO_MANAGE))


def is_disputing_side(membership, dispute) -> bool:
    if dispute.side == Dispute.PARTNER:
        return membership.organization_id == dispute.opened_by_org_id
    return membership.organization_id == dispute.vendor_id


@transaction.atomic
def take_under_review(actor, dispute: Dispute) -> Dispute:
    """A channel manager in scope (or an admin) starts deciding; unassigned disputes become
    theirs."""
    require(actor, roles.DISPUTE_RESOLVE, dispute)
    dispute = _lock(dispute)
    if not may_take_over(actor, dispute):
        raise ServiceError(f"This dispute is assigned to "
                           f"{dispute.assigned_to.user.get_full_name()}.")
    from_status = _move(dispute, Dispute.UNDER_REVIEW)
    if dispute.assigned_to_id is None:
        dispute.assigned_to = actor
    dispute.save(update_fields=["status", "assigned_to", "updated_at"])
    _entry(dispute, actor, status_to=Dispute.UNDER_REVIEW)
    _audit("dispute.under_review", dispute, actor, {"status": from_status},
           {"status": dispute.status, "assigned_to": dispute.assigned_to.user.email})
    _timeline(dispute.referral, actor, "The dispute is under review by the network.",
              vendor_only=dispute.side == Dispute.VENDOR)
    users = disputing_people(dispute)
    if dispute.side == Dispute.PARTNER:
        users += vendor_people(dispute)
    notify_about(users, "dispute_updated", dispute,
                 f"The dispute about {_subject_name(dispute)} is under review", exclude=actor.user)
    return dispute


@transaction.atomic
def reassign(actor, dispute: Dispute, channel_manager: Membership) -> Dispute:
    """An operator admin hands the dispute to another channel manager whose scope covers it."""
    require(actor, roles.PORTFOLIO_MANAGE)
    require(actor, roles.DISPUTE_RESOLVE, dispute)
    dispute = _lock(dispute)
    if not dispute.is_pending:
        raise ServiceError("This dispute is already closed.")
    fits = (channel_manager.organization.kind == roles.OPERATOR
            and channel_manager.organization.network_id == dispute.network_id
            and can(channel_manager, roles.DISPUTE_RESOLVE, dispute))
    if not fits:
        raise ServiceError("Choose a channel manager whose portfolio covers this vendor or "
                           "partner.", field="channel_manager")
    before = dispute.assigned_to.user.email if dispute.assigned_to_id else None
    dispute.assigned_to = channel_manager
    dispute.save(update_fields=["assigned_to", "updated_at"])
    _entry(dispute, actor, f"Assigned to {channel_manager.user.get_full_name()}.")
    _audit("dispute.reassigned", dispute, actor, {"assigned_to": before},
           {"assigned_to": channel_manager.user.email})
    notify_about([channel_manager.user], "dispute_updated", dispute,
                 f"A dispute about {_subject_name(dispute)} is assigned to you", exclude=actor.user)
    return dispute


@transaction.atomic
def resolve(actor, dispute: Dispute, outcome: str, resolution: str,
            new_referral_public_id: str | None = None) -> Dispute:
    """Decide a dispute under review. `upheld` accepts the claim: a partner's attribution
    dispute gives the deal to the disputing referral; a vendor's gives it to
    `new_referral_public_id` (another candidate, or None for nobody); a registration dispute
    reinstates the registration. `overturned` rejects the claim: the attribution stays, now
    confirmed by a person."""
    require(actor, roles.DISPUTE_RESOLVE, dispute)
    if outcome not in Dispute.DECIDED:
        raise ServiceError("Choose whether the dispute is upheld or overturned.",
                           field="outcome")
    resolution = _clean_text(resolution, "resolution", "Write the resolution")
    dispute = _lock(dispute)
    if dispute.status != Dispute.UNDER_REVIEW:
        raise ServiceError("Take the dispute under review before deciding it.")
    if not may_take_over(actor, dispute):
        raise ServiceError(f"This dispute is assigned to "
                           f"{dispute.assigned_to.user.get_full_name()}.")
    if dispute.side == Dispute.PARTNER:
        check_no_names(resolution, partner_names(dispute), "resolution", dispute)
    previous = new = None
    if dispute.attribution_id:
        previous, new = decide_attribution(actor, dispute, outcome, resolution,
                                           new_referral_public_id)
    elif outcome == Dispute.UPHELD:
        reinstate(actor, dispute, resolution)
    from_status = _move(dispute, outcome)
    dispute.resolution = resolution
    dispute.decided_by, dispute.decided_at = actor.user, timezone.now()
    dispute.save(update_fields=["status", "resolution", "decided_by", "decided_at",
                                "updated_at"])
    _entry(dispute, actor, resolution, outcome)
    _audit(f"dispute.{outcome}", dispute, actor, {"status": from_status}, {
        "status": outcome, "resolution": resolution,
        "attribution_before": str(previous.public_id) if previous else None,
        "attribution_after": str(new.public_id) if new else None})
    verdict = "upheld" if outcome == Dispute.UPHELD else "not upheld"
    _timeline(dispute.referral, actor, f"Dispute {verdict}: {resolution}",
              vendor_only=dispute.side == Dispute.VENDOR)
    users = disputing_people(dispute)
    if dispute.side == Dispute.PARTNER:
        users += vendor_people(dispute)
    notify_about(users, "dispute_decided", dispute,
                 f"Dispute about {_subject_name(dispute)} {verdict}", resolution,
                 exclude=actor.user)
    if dispute.attribution_id and previous != new:
        _tell_partners_attribution_changed(dispute, actor, previous, new)
    return dispute


def _tell_partners_attribution_changed(dispute, actor, previous, new):
    """The partner that lost the deal learns that it changed, never who disputed or why; the
    one that gained it (unless it is the disputer, who has the decision) that it is theirs."""
    if previous is not None:
        _timeline(previous, actor, "After a review by the network, this deal is no longer "
                                   "credited to this referral.")
        notify(partner_people(previous.partner_id, previous), "attribution_changed",
               network_id=dispute.network_id,
               title=f"{previous.company_name}: the deal is no longer credited to your referral",
               body="The network reviewed the deal's attribution.",
               url=reverse("referrals:detail", args=[previous.public_id]))
    disputer = dispute.referral if dispute.side == Dispute.PARTNER else None
    if new is not None and new != disputer:
        _timeline(new, actor, "After a review by the network, this deal is credited to this "
                              "referral.")
        notify(partner_people(new.partner_id, new), "attribution_changed",
               network_id=dispute.network_id,
               title=f"{new.company_name}: the deal is now credited to your referral",
               body="The network reviewed the deal's attribution.",
               url=reverse("referrals:detail", args=[new.public_id]))


@transaction.atomic
def withdraw(actor, dispute: Dispute, reason: str = "") -> Dispute:
    """The disputing side takes its dispute back before a decision."""
    require(actor, roles.DISPUTE_OPEN if dispute.side == Dispute.PARTNER
            else roles.DISPUTE_RESPOND, dispute)
    if not is_disputing_side(actor, dispute):
        raise PermissionDenied()
    dispute = _lock(dispute)
    from_status = _move(dispute, Dispute.WITHDRAWN)
    dispute.save(update_fields=["status", "updated_at"])
    reason = (reason or "").strip()[:MAX_TEXT]
    _entry(dispute, actor, reason, Dispute.WITHDRAWN)
    _audit("dispute.withdrawn", dispute, actor, {"status": from_status},
           {"status": dispute.status, "reason": reason})
    _timeline(dispute.referral, actor, "Dispute withdrawn.",
              vendor_only=dispute.side == Dispute.VENDOR)
    users = resolvers(dispute)
    if dispute.side == Dispute.PARTNER:
        users += vendor_people(dispute)
    notify_about(users, "dispute_updated", dispute,
                 f"The dispute about {_subject_name(dispute)} was withdrawn", reason,
                 exclude=actor.user)
    return dispute
