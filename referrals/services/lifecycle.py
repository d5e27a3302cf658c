"""The referral lifecycle: draft -> submitted -> accepted | rejected; accepted -> won | lost |
expired; submitted or accepted -> withdrawn; a dispute reinstates a rejected or expired
registration (-> accepted). Nothing else changes a referral's status (tests/test_state_owners.py
walks the code to keep it so).

People decide registrations here; deals decide outcomes. Won, lost and reopened come only from
a deal snapshot (`apply_deal_outcome`, called by attribution.services.record_snapshot), whichever
door the deal closed through: a CRM webhook or poll, the built-in pipeline, or a vendor's manual
close (integrations.closing). So a won referral always has the snapshot that pays for it."""

from dataclasses import asdict, dataclass
from datetime import date, timedelta

from django.db import transaction
from django.urls import reverse
from django.utils import timezone
from guardian.shortcuts import assign_perm

from accounts import audit, roles
from accounts.errors import ServiceError
from accounts.models import Membership, Organization
from accounts.notifications import notify, resolve
from accounts.services.guards import require
from referrals import conflicts
from referrals.models import Enrolment, Program, Referral, TimelineEntry
from referrals.normalize import normalize_company_name, normalize_domain
from referrals.other_partners import check_referral_text
from referrals.services.events import (
    decision_subject,
    notify_submitter,
    notify_vendor_deciders,
    record_transition,
)
from referrals.validation import validate_for_program

# What people move a referral to (accepted -> won | lost comes from the deal, below).
TRANSITIONS = {
    Referral.DRAFT: {Referral.SUBMITTED},
    Referral.SUBMITTED: {Referral.ACCEPTED, Referral.REJECTED, Referral.WITHDRAWN},
    Referral.ACCEPTED: {Referral.EXPIRED, Referral.WITHDRAWN},
}
# What the deal moves a referral to, and from where (apply_deal_outcome): won and lost, also
# after the other or after the protection ran out (attribution judges whether the deal was
# protected), and back to accepted when the deal is reopened.
DEAL_TRANSITIONS = {
    Referral.ACCEPTED: {Referral.WON, Referral.LOST},
    Referral.EXPIRED: {Referral.WON, Referral.LOST},
    Referral.WON: {Referral.LOST, Referral.ACCEPTED},
    Referral.LOST: {Referral.WON, Referral.ACCEPTED},
}
DEAL_OUTCOMES = {"won": Referral.WON, "lost": Referral.LOST, "open": Referral.ACCEPTED}
# An upheld dispute accepts a rejected or expired registration again (reinstate_registration).
REINSTATEMENTS = {Referral.REJECTED: {Referral.ACCEPTED}, Referral.EXPIRED: {Referral.ACCEPTED}}
VERBS = {Referral.SUBMITTED: "submitted", Referral.ACCEPTED: "accepted",
         Referral.REJECTED: "rejected", Referral.WITHDRAWN: "withdrawn",
         Referral.WON: "marked won", Referral.LOST: "marked lost", Referral.EXPIRED: "expired"}
# Where a closed deal leaves a referral (closed_at is set and the submitter is told).
CLOSED_BY_DEAL = (Referral.WON, Referral.LOST)
EDITABLE = (Referral.DRAFT, Referral.SUBMITTED)
WARN_DAYS_BEFORE_EXPIRY = 7


@dataclass
class ReferralData:
    company_name: str
    website: str = ""
    country: str = ""
    contact_name: str = ""
    contact_email: str = ""
    contact_phone: str = ""
    contact_title: str = ""
    amount_minor: int | None = None
    currency: str = ""
    expected_close: date | None = None
    notes: str = ""


class ConflictBlocked(ServiceError):
    """The same partner already registered this account: show them their referral."""

    def __init__(self, existing: Referral):
        super().__init__("Your organization already registered this account with this vendor.")
        self.existing = existing


def _lock(referral) -> Referral:
    return (Referral.objects.select_for_update(of=("self",))
            .select_related("program", "vendor", "partner", "submitted_by")
            .get(pk=referral.pk))


def _move(referral, to_status: str, moves=TRANSITIONS) -> str:
    if to_status not in moves.get(referral.status, ()):
        raise ServiceError(f"This referral is {referral.get_status_display().lower()}; it "
                           f"cannot be {VERBS[to_status]} now.")
    from_status = referral.status
    referral.status = to_status
    return from_status


def _account_check(referral) -> conflicts.ConflictCheck:
    """Who else holds this referral's account, under the vendor lock (taken here, held to the
    end of the transaction), so that two registrations of one account never both pass."""
    conflicts.lock_vendor(referral.vendor_id)
    return conflicts.check_conflicts(
        vendor_id=referral.vendor_id, domain=referral.domain,
        normalized_name=referral.normalized_name, threshold=referral.program.fuzzy_threshold,
        exclude_pk=referral.pk)


def _flag_conflicts(referral, check: conflicts.ConflictCheck) -> None:
    """Refuse a second registration by the same partner; flag one held by another partner."""
    own = check.own(referral.partner_id)
    if own is not None:
        raise ConflictBlocked(own.referral)
    other = check.earliest_other(referral.partner_id)
    referral.conflict = other is not None
    referral.conflict_with = other.referral if other else None


def _apply(referral, data: ReferralData) -> None:
    for key, value in asdict(data).items():
        setattr(referral, key, value if value is not None else None)
    referral.domain = normalize_domain(data.website)
    referral.normalized_name = normalize_company_name(data.company_name)


def _check_program(actor, program: Program) -> None:
    if not program.is_open:
        raise ServiceError(f"{program.name} is not open for referrals.", field="program")
    enrolled = Enrolment.objects.filter(program=program, partner_id=actor.organization_id,
                                        status=Enrolment.ACTIVE).exists()
    if not enrolled:
        raise ServiceError("Your organization is not enrolled in this program yet.",
                           field="program")


def _validate(program, data):
    errors = validate_for_program(program, data)
    if errors:
        field, message = next(iter(errors.items()))
        raise ServiceError(message, field=field)


@transaction.atomic
def save_draft(actor: Membership, program: Program, data: ReferralData) -> Referral:
    require(actor, roles.REFERRAL_SUBMIT)
    _check_program(actor, program)
    referral = Referral(network_id=actor.organization.network_id, program=program,
                        vendor_id=program.vendor_id, partner_id=actor.organization_id,
                        submitted_by=actor.user, status=Referral.DRAFT)
    _apply(referral, data)
    referral.save()
    return referral


@transaction.atomic
def submit_referral(actor: Membership, program: Program, data: ReferralData,
                    draft: Referral | None = None, notify_vendor: bool = True) -> Referral:
    """Register the deal. Raises ConflictBlocked when this partner already holds the account;
    flags a conflict (and stays submitted) when another partner does. Bulk imports pass
    notify_vendor=False and send one summary instead of a notification per row."""
    require(actor, roles.REFERRAL_SUBMIT)
    if draft is not None:
        require(actor, roles.REFERRAL_EDIT, draft)
        referral = _lock(draft)
        if referral.status != Referral.DRAFT:
            raise ServiceError("This referral has already been submitted.")
        program = referral.program
    else:
        referral = Referral(network_id=actor.organization.network_id, program=program,
                            vendor_id=program.vendor_id, partner_id=actor.organization_id,
                            submitted_by=actor.user)
    _check_program(actor, program)
    _validate(program, data)
    _apply(referral, data)
    _flag_conflicts(referral, _account_check(referral))
    from_status = _move(referral, Referral.SUBMITTED)
    referral.submitted_at = timezone.now()
    referral.save()
    record_transition(referral, actor, from_status,
                      extra={"conflict": referral.conflict})
    Organization.objects.filter(pk=actor.organization_id, first_referral_at__isnull=True) \
        .update(first_referral_at=referral.submitted_at)
    _push_to_crm(referral, "submitted")
    if notify_vendor:
        notify_vendor_deciders(
            referral, "referral_submitted",
            f"New referral from {referral.partner.name}: {referral.company_name}",
            "Conflicts with an earlier registration: decide which partner holds the account."
            if referral.conflict else "", exclude=actor.user,
            subject=decision_subject(referral))
    if program.auto_accept and not referral.conflict:
        _accept(referral, actor=None)
    return referral


def conflict_notice(referral: Referral) -> str | None:
    """What the submitter may learn about a conflict: that it exists and until when, never
    who holds it."""
    earlier = referral.conflict_with
    if (not referral.conflict or earlier is None or referral.status != Referral.SUBMITTED
            or earlier.status not in Referral.ACTIVE_STATUSES):
        return None  # the conflict is over: decided, withdrawn or expired
    if earlier.status == Referral.ACCEPTED and earlier.protected_until:
        until = f"protected until {earlier.protected_until:%-d %B %Y}"
    else:
        until = "awaiting the vendor's review"
    return (f"This account is already registered with {referral.vendor.name} ({until}). "
            "The vendor will decide which registration holds it.")


@transaction.atomic
def update_referral(actor: Membership, referral: Referral, data: ReferralData) -> Referral:
    """Edit a draft or a submitted referral. A submitted one is re-checked for conflicts when
    the account (name or website) changes."""
    require(actor, roles.REFERRAL_EDIT, referral)
    referral = _lock(referral)
    if referral.status not in EDITABLE:
        raise ServiceError("Only drafts and submitted referrals can be edited.")
    before = {"company_name": referral.company_name, "domain": referral.domain}
    if referral.status == Referral.SUBMITTED:
        _validate(referral.program, data)
    _apply(referral, data)
    if referral.status == Referral.SUBMITTED and (
            before["domain"] != referral.domain
            or normalize_company_name(before["company_name"]) != referral.normalized_name):
        _flag_conflicts(referral, _account_check(referral))
    referral.save()
    if referral.status == Referral.SUBMITTED:
        audit.record("referral.edited", referral, actor=actor, before=before,
                     after={"company_name": referral.company_name, "domain": referral.domain})
    return referral


@transaction.atomic
def withdraw_referral(actor: Membership, referral: Referral, reason: str = "") -> Referral:
    require(actor, roles.REFERRAL_WITHDRAW, referral)
    referral = _lock(referral)
    from_status = _move(referral, Referral.WITHDRAWN)
    referral.closed_at = timezone.now()
    referral.save(update_fields=["status", "closed_at", "updated_at"])
    record_transition(referral, actor, from_status, body=reason.strip())
    resolve(decision_subject(referral))  # nothing left for the vendor to decide
    notify_vendor_deciders(referral, "referral_withdrawn",
                           f"{referral.partner.name} withdrew {referral.company_name}",
                           reason.strip(), exclude=actor.user)
    return referral


def _accept(referral, actor) -> None:
    if referral.status == Referral.SUBMITTED:
        held = _account_check(referral).accepted()
        if held:
            raise ServiceError(
                "Another registration of this account is already accepted (protected until "
                f"{held[0].protected_until:%-d %B %Y}). Reject this one, or withdraw the "
                "other first: one account is protected for one partner at a time.")
    from_status = _move(referral, Referral.ACCEPTED)
    now = timezone.now()
    referral.decided_at = now
    referral.protected_until = now + timedelta(days=referral.program.protection_days)
    referral.save(update_fields=["status", "decided_at", "protected_until", "updated_at"])
    record_transition(referral, actor, from_status,
                      extra={"protected_until": referral.protected_until.isoformat()})
    resolve(decision_subject(referral))
    _push_to_crm(referral, "accepted")
    notify_submitter(referral, "referral_accepted",
                     f"{referral.vendor.name} accepted {referral.company_name}",
                     f"The account is protected for you until "
                     f"{referral.protected_until:%-d %B %Y}.")


@transaction.atomic
def accept_referral(actor: Membership, referral: Referral) -> Referral:
    require(actor, roles.REFERRAL_ACCEPT, referral)
    referral = _lock(referral)
    _accept(referral, actor)
    return referral


@transaction.atomic
def reject_referral(actor: Membership, referral: Referral, code: str, text: str) -> Referral:
    require(actor, roles.REFERRAL_REJECT, referral)
    if code not in dict(Referral.REJECTION_REASONS):
        raise ServiceError("Choose a reason.", field="code")
    text = (text or "").strip()
    if code == "other" and not text:
        raise ServiceError("Explain the reason to the partner.", field="text")
    check_referral_text(text, referral, "text")  # the partner reads it
    referral = _lock(referral)
    from_status = _move(referral, Referral.REJECTED)
    referral.rejection_code, referral.rejection_reason = code, text
    referral.decided_at = referral.closed_at = timezone.now()
    referral.save(update_fields=["status", "rejection_code", "rejection_reason", "decided_at",
                                 "closed_at", "updated_at"])
    label = dict(Referral.REJECTION_REASONS)[code]
    record_transition(referral, actor, from_status, body=f"{label}. {text}".strip(),
                      extra={"reason": code})
    resolve(decision_subject(referral))
    notify_submitter(referral, "referral_rejected",
                     f"{referral.vendor.name} rejected {referral.company_name}",
                     f"Reason: {label}. {text}".strip())
    return referral


@transaction.atomic
def assign_referral(actor: Membership, referral: Referral, assignee: Membership) -> Referral:
    """Give a vendor sales rep the referral to work (an `assigned` object grant)."""
    require(actor, roles.REFERRAL_ASSIGN, referral)
    referral = _lock(referral)
    if referral.status not in (Referral.SUBMITTED, Referral.ACCEPTED):
        raise ServiceError("Only open referrals can be assigned.")
    ok = (assignee.organization_id == referral.vendor_id and assignee.is_active
          and roles.REFERRAL_UPDATE_STAGE in assignee.role_def.permissions)
    if not ok:
        raise ServiceError("Choose an active member of your sales team.", field="assignee")
    assign_perm("referrals.work_referral", assignee.user, referral)
    audit.record("referral.assigned", referral, actor=actor,
                 after={"assignee": assignee.user.email}, network_id=referral.network_id)
    TimelineEntry.objects.create(
        referral=referral, kind=TimelineEntry.EVENT, visibility=TimelineEntry.VENDOR_ONLY,
        author=actor.user, author_organization_id=actor.organization_id,
        body=f"Assigned to {assignee.user.get_full_name()}")
    notify([assignee.user], "referral_assigned", network_id=referral.network_id,
           title=f"{referral.company_name} is assigned to you",
           url=reverse("referrals:detail", args=[referral.public_id]), exclude_user=actor.user)
    return referral


@transaction.atomic
def extend_protection(actor: Membership, referral: Referral, days: int) -> Referral:
    require(actor, roles.REFERRAL_ACCEPT, referral)
    if not 1 <= days <= 365:
        raise ServiceError("Extend by 1 to 365 days.", field="days")
    referral = _lock(referral)
    if referral.status != Referral.ACCEPTED:
        raise ServiceError("Only accepted registrations have a protection window.")
    before = referral.protected_until
    base = max(before or timezone.now(), timezone.now())
    referral.protected_until = base + timedelta(days=days)
    referral.expiry_warned_at = None
    referral.save(update_fields=["protected_until", "expiry_warned_at", "updated_at"])
    audit.record("referral.protection_extended", referral, actor=actor,
                 before={"protected_until": before.isoformat() if before else None},
                 after={"protected_until": referral.protected_until.isoformat()},
                 network_id=referral.network_id)
    TimelineEntry.objects.create(
        referral=referral, kind=TimelineEntry.EVENT, author=actor.user,
        author_organization_id=actor.organization_id,
        body=f"Protection extended by {days} days, until {referral.protected_until:%-d %B %Y}")
    return referral


def apply_deal_outcome(referral: Referral, outcome: str, *, source: str, actor=None) -> bool:
    """A deal snapshot says the deal is won, lost or open again: move the referral there
    (DEAL_TRANSITIONS) and tell the submitter. The one way a referral is won, lost or reopened;
    `actor` is the vendor member who closed it by hand, None when a CRM or the pipeline did.
    Returns whether the status changed. Draft, submitted, withdrawn and rejected registrations
    are left for attribution to judge (a deal does not accept a registration)."""
    if outcome not in DEAL_OUTCOMES:
        return False
    referral = _lock(referral)
    to_status = DEAL_OUTCOMES[outcome]
    if to_status not in DEAL_TRANSITIONS.get(referral.status, ()):
        return False
    from_status = _move(referral, to_status, DEAL_TRANSITIONS)
    referral.closed_at = timezone.now() if to_status in CLOSED_BY_DEAL else None
    referral.save(update_fields=["status", "closed_at", "updated_at"])
    record_transition(referral, actor, from_status, body=source,
                      event="reopened" if to_status == Referral.ACCEPTED else "")
    if to_status in CLOSED_BY_DEAL:
        notify_submitter(referral, f"referral_{to_status}",
                         f"{referral.company_name}: the deal with {referral.vendor.name} was "
                         f"{to_status}", exclude=actor.user if actor else None)
    return True


@transaction.atomic
def reinstate_registration(actor: Membership, referral: Referral, *, body: str,
                           extra: dict | None = None) -> Referral:
    """An upheld dispute of a rejection or an expiry: the registration is accepted again with
    a fresh protection window (a rejected one counts as accepted now; an expired one keeps its
    original acceptance date). Reinstating is accepting again, so acceptance's account rule
    holds: one active registration per partner, one accepted registration per account. The
    caller (attribution's dispute decision) has checked the actor's authority."""
    referral = _lock(referral)
    if referral.status not in REINSTATEMENTS:
        raise ServiceError("The registration is no longer rejected or expired; nothing to "
                           "reinstate.")
    check = _account_check(referral)
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
    from_status, now = _move(referral, Referral.ACCEPTED, REINSTATEMENTS), timezone.now()
    if from_status == Referral.REJECTED or referral.decided_at is None:
        referral.decided_at = now
    referral.protected_until = now + timedelta(days=referral.program.protection_days)
    referral.closed_at = referral.expiry_warned_at = None
    referral.rejection_code, referral.rejection_reason = "", ""
    referral.save(update_fields=["status", "decided_at", "protected_until", "closed_at",
                                 "expiry_warned_at", "rejection_code", "rejection_reason",
                                 "updated_at"])
    record_transition(referral, actor, from_status, body=body, event="reinstated",
                      extra={**(extra or {}),
                             "protected_until": referral.protected_until.isoformat()})
    _push_to_crm(referral, "accepted")
    return referral


def _push_to_crm(referral: Referral, event: str) -> None:
    from integrations.sync import enqueue_push

    enqueue_push(referral, event)


def warn_expiring_registrations(now=None) -> int:
    """Tell submitters 7 days ahead that their protection ends. Safe to run twice: each
    registration is claimed with a conditional UPDATE before it is notified."""
    now = now or timezone.now()
    horizon = now + timedelta(days=WARN_DAYS_BEFORE_EXPIRY)
    due = list(Referral.objects.filter(status=Referral.ACCEPTED, expiry_warned_at__isnull=True,
                                       protected_until__gt=now, protected_until__lte=horizon)
               .values_list("pk", flat=True)[:5000])
    warned = 0
    for pk in due:
        with transaction.atomic():
            claimed = Referral.objects.filter(pk=pk, expiry_warned_at__isnull=True,
                                              status=Referral.ACCEPTED).update(
                expiry_warned_at=now)
            if not claimed:
                continue
            referral = Referral.objects.select_related("vendor", "submitted_by").get(pk=pk)
            notify_submitter(referral, "protection_expiring",
                             f"Protection for {referral.company_name} ends "
                             f"{referral.protected_until:%-d %B}",
                             f"Ask {referral.vendor.name} to extend it if the deal is still "
                             "open.")
            warned += 1
    return warned


def expire_stale_registrations(now=None) -> int:
    """Expire accepted registrations whose protection has ended. Idempotent."""
    now = now or timezone.now()
    due = list(Referral.objects.filter(status=Referral.ACCEPTED, protected_until__lte=now)
               .values_list("pk", flat=True)[:5000])
    expired = 0
    for pk in due:
        with transaction.atomic():
            referral = (Referral.objects.select_for_update(skip_locked=True, of=("self",))
                        .select_related("program", "vendor", "partner", "submitted_by")
                        .filter(pk=pk, status=Referral.ACCEPTED, protected_until__lte=now)
                        .first())
            if referral is None:
                continue
            from_status = _move(referral, Referral.EXPIRED)
            referral.closed_at = now
            referral.save(update_fields=["status", "closed_at", "updated_at"])
            record_transition(referral, None, from_status, body="Protection window ended.")
            notify_submitter(referral, "referral_expired",
                             f"Registration of {referral.company_name} expired")
            expired += 1
    return expired
