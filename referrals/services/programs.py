"""Vendor programs and partner enrolment."""

from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from accounts import audit, roles
from accounts.errors import ServiceError
from accounts.models import Membership
from accounts.notifications import notify, resolve
from accounts.services.guards import require
from referrals.models import OPTIONAL_FIELDS, Enrolment, Program
from referrals.services.events import members_with

PROGRAM_FIELDS = ["name", "terms", "status", "protection_days", "auto_accept",
                  "enrolment_requires_approval", "required_fields", "accepted_currencies",
                  "fuzzy_threshold"]


@transaction.atomic
def save_program(actor: Membership, program: Program | None, **data) -> Program:
    if program is None:
        require(actor, roles.PROGRAM_MANAGE, actor.organization)
        if actor.organization.kind != roles.VENDOR:
            raise ServiceError("Only vendors run referral programs.")
        program = Program(vendor_id=actor.organization_id)
        before = None
    else:
        require(actor, roles.PROGRAM_MANAGE, program)
        program = Program.objects.select_for_update().get(pk=program.pk)
        before = {f: getattr(program, f) for f in PROGRAM_FIELDS}
    unknown = set(data.get("required_fields", [])) - {f for f, _ in OPTIONAL_FIELDS}
    if unknown:
        raise ServiceError("Unknown required field.", field="required_fields")
    if not data.get("accepted_currencies"):
        raise ServiceError("Accept at least one currency.", field="accepted_currencies")
    for key in PROGRAM_FIELDS:
        if key in data:
            setattr(program, key, data[key])
    program.save()
    after = {f: getattr(program, f) for f in PROGRAM_FIELDS}
    if before != after:
        audit.record("program.created" if before is None else "program.updated", program,
                     actor=actor, before=before, after=after)
    return program


@transaction.atomic
def request_enrolment(actor: Membership, program: Program) -> Enrolment:
    """Join a program: at once, or after the vendor approves (per program)."""
    require(actor, roles.PROGRAM_ENROL, program)
    if not program.is_open:
        raise ServiceError(f"{program.name} is not taking new partners.")
    existing = Enrolment.objects.select_for_update().filter(
        program=program, partner_id=actor.organization_id).first()
    if existing and existing.status in (Enrolment.ACTIVE, Enrolment.PENDING):
        return existing
    if existing and existing.status == Enrolment.REJECTED:
        raise ServiceError(f"{program.vendor.name} declined your enrolment. Contact them if "
                           "your situation has changed.")
    auto = not program.enrolment_requires_approval
    now = timezone.now()
    enrolment = existing or Enrolment(program=program, partner_id=actor.organization_id)
    enrolment.status = Enrolment.ACTIVE if auto else Enrolment.PENDING
    enrolment.requested_by = actor.user
    enrolment.created_at = now
    enrolment.decided_at = now if auto else None
    try:
        with transaction.atomic():
            enrolment.save()
    except IntegrityError:  # a teammate enrolled at the same moment
        return Enrolment.objects.get(program=program, partner_id=actor.organization_id)
    audit.record("enrolment.requested" if not auto else "enrolment.joined", enrolment,
                 actor=actor, after={"status": enrolment.status, "program": program.name})
    if not auto:
        notify(members_with(program.vendor_id, roles.VENDOR, roles.PROGRAM_MANAGE),
               "enrolment_requested", network_id=program.vendor.network_id,
               title=f"{actor.organization.name} asks to join {program.name}",
               url=reverse("referrals:program_detail", args=[program.public_id]),
               subject=_enrolment_subject(enrolment))
    return enrolment


def _enrolment_subject(enrolment: Enrolment) -> str:
    return f"enrolment:{enrolment.pk}:decide"


@transaction.atomic
def decide_enrolment(actor: Membership, enrolment: Enrolment, approve: bool) -> Enrolment:
    require(actor, roles.PROGRAM_MANAGE, enrolment.program)
    enrolment = Enrolment.objects.select_for_update().select_related(
        "program", "partner").get(pk=enrolment.pk)
    if enrolment.status != Enrolment.PENDING:
        raise ServiceError("This enrolment was already decided.")
    enrolment.status = Enrolment.ACTIVE if approve else Enrolment.REJECTED
    enrolment.decided_by, enrolment.decided_at = actor.user, timezone.now()
    enrolment.save(update_fields=["status", "decided_by", "decided_at"])
    audit.record("enrolment.approved" if approve else "enrolment.declined", enrolment,
                 actor=actor, after={"status": enrolment.status})
    resolve(_enrolment_subject(enrolment))
    notify(members_with(enrolment.partner_id, roles.PARTNER, roles.PROGRAM_ENROL),
           "enrolment_decided", network_id=enrolment.partner.network_id,
           title=(f"You are enrolled in {enrolment.program.name}" if approve
                  else f"{enrolment.program.vendor.name} declined your enrolment"),
           url=reverse("referrals:program_detail", args=[enrolment.program.public_id]))
    return enrolment
