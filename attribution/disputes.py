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
"""

import os
import re
import uuid
import zipfile
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.db.models import Case, When
from django.urls import reverse
from django.utils import timezone

from accounts import audit, roles
from accounts.errors import PermissionDenied, ServiceError
from accounts.models import Membership, OrganizationPortfolioGrant
from accounts.notifications import notify
from accounts.permissions import can
from accounts.services.guards import require
from attribution.decisions import reassign_attribution
from attribution.models import (
    Attribution,
    AttributionCandidate,
    Dispute,
    DisputeEvidence,
    DisputeMessage,
)
from referrals import conflicts
from referrals.models import Program, Referral, TimelineEntry
from referrals.services.events import record_transition

SLA_BUSINESS_DAYS = 5  # a dispute should be decided within this many working days
MAX_TEXT = 10_000
MAX_EVIDENCE_BYTES = 10 * 1024 * 1024
MAX_EVIDENCE_FILES = 10

TRANSITIONS = {
    Dispute.OPEN: {Dispute.VENDOR_RESPONDED, Dispute.UNDER_REVIEW, Dispute.WITHDRAWN},
    Dispute.VENDOR_RESPONDED: {Dispute.UNDER_REVIEW, Dispute.WITHDRAWN},
    Dispute.UNDER_REVIEW: {Dispute.UPHELD, Dispute.OVERTURNED, Dispute.WITHDRAWN},
}
ATTRIBUTION_CATEGORIES = (Dispute.TO_ANOTHER_PARTNER, Dispute.TO_NO_ONE)
REGISTRATION_CATEGORIES = {Referral.REJECTED: Dispute.WRONGLY_REJECTED,
                           Referral.EXPIRED: Dispute.WRONGLY_EXPIRED}
VENDOR_CATEGORIES = (Dispute.WRONG_PARTNER, Dispute.NOT_A_REFERRAL_DEAL, Dispute.OTHER)
CATEGORY_LABELS = dict(Dispute.CATEGORIES)


def dispute_url(dispute) -> str:
    return reverse("attribution:dispute_detail", args=[dispute.public_id])


def add_business_days(start: datetime, days: int) -> datetime:
    """`days` working days (Monday to Friday) after `start`, at the same time of day."""
    moment, left = timezone.localtime(start), days
    while left > 0:
        moment += timedelta(days=1)
        if moment.weekday() < 5:
            left -= 1
    return moment


# --- Evidence -------------------------------------------------------------------------------

_ZIP = b"PK\x03\x04"
_BINARY_MAGIC = (b"%PDF-", b"\x89PNG", b"\xff\xd8\xff", _ZIP, b"MZ", b"\x7fELF",
                 b"\xca\xfe\xba\xbe", b"GIF8", b"\x1f\x8b", b"Rar!", b"7z\xbc\xaf")
_HEADER_LINE = re.compile(rb"^[!-9;-~]+:")  # an RFC 5322 header field name and its colon


def _is_text(head: bytes) -> bool:
    if b"\x00" in head or head.startswith(_BINARY_MAGIC):
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:  # a multi-byte character cut by the sample is fine
        if exc.start < len(head) - 3:
            return not any(b < 32 and b not in b"\t\n\r\f" for b in head)  # a legacy charset
    return True


def _is_ooxml(part: str):
    def check(head: bytes, upload) -> bool:
        if not head.startswith(_ZIP):
            return False
        try:
            upload.seek(0)
            names = set(zipfile.ZipFile(upload).namelist())
        except (zipfile.BadZipFile, OSError, EOFError):
            return False
        finally:
            upload.seek(0)
        return "[Content_Types].xml" in names and part in names

    return check


@dataclass(frozen=True)
class _FileType:
    content_type: str
    check: object  # (first bytes, upload) -> bool


def _text(head: bytes, upload) -> bool:
    return _is_text(head)


EVIDENCE_TYPES = {
    ".pdf": _FileType("application/pdf", lambda head, upload: head.startswith(b"%PDF-")),
    ".png": _FileType("image/png", lambda head, upload: head.startswith(b"\x89PNG\r\n\x1a\n")),
    ".jpg": _FileType("image/jpeg", lambda head, upload: head.startswith(b"\xff\xd8\xff")),
    ".jpeg": _FileType("image/jpeg", lambda head, upload: head.startswith(b"\xff\xd8\xff")),
    ".csv": _FileType("text/csv", _text),
    ".txt": _FileType("text/plain", _text),
    ".eml": _FileType("message/rfc822",
                      lambda head, upload: _is_text(head) and bool(_HEADER_LINE.match(head))),
    ".xlsx": _FileType("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                       _is_ooxml("xl/workbook.xml")),
    ".docx": _FileType("application/vnd.openxmlformats-officedocument.wordprocessingml.document",
                       _is_ooxml("word/document.xml")),
}
EVIDENCE_HELP = "PDF, PNG, JPEG, CSV, text, email (.eml), Excel (.xlsx) or Word (.docx); " \
                "up to 10 MB each."


@dataclass(frozen=True)
class CheckedFile:
    upload: object
    name: str
    extension: str
    content_type: str
    size: int


def check_evidence(upload) -> CheckedFile:
    """Accept a file only when its extension is allowed, its first bytes say it really is that
    kind of file, and it is at most 10 MB. The content type stored is ours, not the client's."""
    name = os.path.basename((upload.name or "").replace("\\", "/")).strip()[:200] or "file"
    extension = os.path.splitext(name)[1].lower()
    kind = EVIDENCE_TYPES.get(extension)
    if kind is None:
        raise ServiceError(f"{name}: this type of file is not accepted. Attach {EVIDENCE_HELP}",
                           field="files")
    if upload.size > MAX_EVIDENCE_BYTES:
        raise ServiceError(f"{name} is larger than 10 MB.", field="files")
    if upload.size == 0:
        raise ServiceError(f"{name} is empty.", field="files")
    upload.seek(0)
    head = upload.read(8192)
    upload.seek(0)
    if not kind.check(head, upload):
        raise ServiceError(f"{name} is not a real {extension[1:].upper()} file (its content "
                           "does not match its name).", field="files")
    return CheckedFile(upload, name, extension, kind.content_type, upload.size)


def check_evidence_files(files) -> list[CheckedFile]:
    files = list(files or [])
    if len(files) > MAX_EVIDENCE_FILES:
        raise ServiceError(f"Attach at most {MAX_EVIDENCE_FILES} files at a time.",
                           field="files")
    return [check_evidence(f) for f in files]


def _attach(dispute, actor, checked: list[CheckedFile], message=None) -> list[DisputeEvidence]:
    saved = []
    for f in checked:
        evidence = DisputeEvidence(dispute=dispute, message=message,
                                   organization_id=actor.organization_id,
                                   uploaded_by=actor.user, name=f.name, size=f.size,
                                   content_type=f.content_type)
        # Stored under a random name: the original name is data, never a path.
        evidence.file.save(f"{uuid.uuid4().hex}{f.extension}", f.upload, save=False)
        evidence.save()
        saved.append(evidence)
    return saved


# --- What a partner may dispute -----------------------------------------------------------

@dataclass(frozen=True)
class Subject:
    """Something a partner's referral could be disputed about, and whether it still can."""

    attribution: Attribution | None  # None: the rejection or expiry of the registration
    categories: tuple
    deadline: datetime
    blocked: str = ""  # why it cannot be disputed (window closed, already disputed)

    @property
    def open(self) -> bool:
        return not self.blocked


def attributed_at(attribution: Attribution) -> datetime:
    """When the current answer was given: the attribution, or a person's later decision."""
    return max(attribution.created_at, attribution.decided_at or attribution.created_at)


def _window(program) -> timedelta:
    return timedelta(days=program.dispute_window_days if program else 30)


def program_of(attribution: Attribution):
    """The program whose terms govern a deal: the credited referral's, else the vendor's
    oldest open one (else its oldest)."""
    if attribution.referral_id:
        return attribution.referral.program
    open_first = Case(When(status=Program.ACTIVE, then=0), default=1)
    return (Program.objects.filter(vendor_id=attribution.vendor_id)
            .order_by(open_first, "created_at").first())


def dispute_deadline(attribution: Attribution, program=None) -> datetime:
    """Until when the attribution can be disputed: the program's dispute window after the
    attribution (or after a person's later decision on it). Partners' disputes count with
    their own referral's program."""
    return attributed_at(attribution) + _window(program or program_of(attribution))


def _closed(deadline, now) -> str:
    return "" if now <= deadline else \
        f"The dispute window closed on {timezone.localtime(deadline):%-d %B %Y}."


def partner_subjects(referral: Referral, now=None) -> list[Subject]:
    """The attributions this referral lost (to another partner or to nobody), newest first,
    then its rejection or expiry, each with its deadline and whether it is still open."""
    now = now or timezone.now()
    taken_ids = set(Dispute.objects.filter(referral=referral, side=Dispute.PARTNER)
                    .exclude(status=Dispute.WITHDRAWN).values_list("attribution_id", flat=True))
    subjects = []
    lost = (Attribution.objects.filter(candidates__referral=referral)
            .exclude(partner_id=referral.partner_id).order_by("-created_at", "-pk"))
    for attribution in lost:
        deadline = dispute_deadline(attribution, referral.program)
        category = Dispute.TO_NO_ONE if attribution.referral_id is None \
            else Dispute.TO_ANOTHER_PARTNER
        blocked = ("This attribution is already disputed."
                   if attribution.pk in taken_ids else _closed(deadline, now))
        subjects.append(Subject(attribution, (category, Dispute.OTHER), deadline, blocked))
    category = REGISTRATION_CATEGORIES.get(referral.status)
    when = referral.decided_at if referral.status == Referral.REJECTED else referral.closed_at
    if category and when:
        deadline = when + _window(referral.program)
        blocked = ("This registration is already disputed."
                   if None in taken_ids else _closed(deadline, now))
        subjects.append(Subject(None, (category, Dispute.OTHER), deadline, blocked))
    return subjects


def _pick_subject(subjects, category, attribution) -> Subject:
    if attribution is not None:
        matching = [s for s in subjects if s.attribution and s.attribution.pk == attribution.pk]
    elif category in REGISTRATION_CATEGORIES.values():
        matching = [s for s in subjects if s.attribution is None]
    else:
        matching = [s for s in subjects if category in s.categories]
    matching = [s for s in matching if category in s.categories]
    if not matching:
        raise ServiceError("There is nothing of this kind to dispute on this referral.",
                           field="category")
    usable = [s for s in matching if s.open]
    if not usable:
        raise ServiceError(matching[0].blocked, field="category")
    return usable[0]


# --- Who hears about it --------------------------------------------------------------------

def _people(org_id, kind, permissions, scope=None):
    names = [r.name for r in roles.roles_of_kind(kind)
             if permissions & r.permissions and (scope is None or r.scope == scope)]
    return [m.user for m in Membership.objects.filter(
        organization_id=org_id, status=Membership.ACTIVE, role__in=names).select_related("user")]


def _partner_people(org_id, referral=None, extra=None):
    """Who speaks for a partner about a referral: its owners and managers, the referral's
    submitter, and (for a dispute) the person who opened it."""
    users = _people(org_id, roles.PARTNER, {roles.DISPUTE_OPEN}, roles.ORGANIZATION)
    if referral is not None:
        users.append(referral.submitted_by)
    if extra is not None:
        users.append(extra)
    return users


def _vendor_people(dispute):
    return _people(dispute.vendor_id, roles.VENDOR,
                   {roles.DISPUTE_RESPOND, roles.REFERRAL_ACCEPT})


def _resolvers(dispute):
    """The assigned channel manager; else those whose portfolio covers the vendor or the
    partner; else the network's resolvers (admins)."""
    if dispute.assigned_to_id:
        return [dispute.assigned_to.user]
    names = roles.role_names_with(roles.OPERATOR, roles.DISPUTE_RESOLVE)
    members = list(Membership.objects.filter(
        organization__network_id=dispute.network_id, organization__kind=roles.OPERATOR,
        organization__status="active", status=Membership.ACTIVE, role__in=names)
        .select_related("user", "organization"))
    orgs = [pk for pk in (dispute.vendor_id, dispute.partner_id) if pk]
    covering = set(OrganizationPortfolioGrant.objects.filter(
        user_id__in=[m.user_id for m in members], permission__codename="in_portfolio",
        content_object_id__in=orgs).values_list("user_id", flat=True))
    portfolio = [m.user for m in members
                 if m.role_def.scope == roles.PORTFOLIO and m.user_id in covering]
    return portfolio or [m.user for m in members if m.role_def.scope == roles.NETWORK]


def _disputing_people(dispute):
    if dispute.side == Dispute.PARTNER:
        return _partner_people(dispute.opened_by_org_id, dispute.referral, dispute.opened_by)
    return _vendor_people(dispute)


def _participants(dispute):
    users = _disputing_people(dispute) + _resolvers(dispute)
    if dispute.side == Dispute.PARTNER:
        users += _vendor_people(dispute)
    return users


def _notify(users, kind, dispute, title, body="", exclude=None):
    notify(users, kind, network_id=dispute.network_id, title=title, body=body[:2000],
           url=dispute_url(dispute), exclude_user=exclude)


def _subject_name(dispute) -> str:
    if dispute.referral_id:
        return dispute.referral.company_name
    return dispute.attribution.snapshot.account_name or dispute.attribution.external_deal_id


# --- Keeping partners apart ----------------------------------------------------------------

def _partner_names(dispute) -> set[str]:
    """Other partners of the deal (or of the conflicting registration): never named in what
    the disputing partner reads."""
    names = set()
    if dispute.attribution_id:
        names |= set(AttributionCandidate.objects.filter(attribution_id=dispute.attribution_id)
                     .values_list("partner__name", flat=True))
    if dispute.referral_id and dispute.referral.conflict_with_id:
        names.add(dispute.referral.conflict_with.partner.name)
    if dispute.side == Dispute.PARTNER:
        names.discard(dispute.opened_by_org.name)
    return {n for n in names if len(n) >= 3}


def _check_no_names(text, names, field):
    for name in names:
        if re.search(rf"(?<!\w){re.escape(name)}(?!\w)", text, re.IGNORECASE):
            raise ServiceError("Partners read this text: leave out the names of other partners "
                               "(write “another partner”).", field=field)


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
    subject = _pick_subject(partner_subjects(referral, now), category, attribution)
    dispute = _create(actor, network_id=referral.network_id, vendor_id=referral.vendor_id,
                      partner_id=referral.partner_id, attribution=subject.attribution,
                      referral=referral, side=Dispute.PARTNER, category=category, text=text)
    _attach(dispute, actor, checked)
    _audit("dispute.opened", dispute, actor, after={
        "side": dispute.side, "category": category, "referral": str(referral.public_id),
        "attribution": str(subject.attribution.public_id) if subject.attribution else None,
        "evidence": [f.name for f in checked]})
    _timeline(referral, actor, f"Dispute opened: {CATEGORY_LABELS[category]}.")
    title = f"{referral.partner.name} disputes {referral.company_name}"
    _notify(_vendor_people(dispute) + _resolvers(dispute), "dispute_opened", dispute, title,
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
    closed = _closed(dispute_deadline(attribution), now or timezone.now())
    if closed:
        raise ServiceError(closed)
    if Dispute.objects.filter(attribution=attribution, side=Dispute.VENDOR) \
            .exclude(status=Dispute.WITHDRAWN).exists():
        raise ServiceError("This attribution is already disputed.")
    dispute = _create(actor, network_id=attribution.network_id, vendor_id=attribution.vendor_id,
                      partner_id=attribution.partner_id, attribution=attribution,
                      referral=attribution.referral, side=Dispute.VENDOR, category=category,
                      text=text)
    _attach(dispute, actor, checked)
    _audit("dispute.opened", dispute, actor, after={
        "side": dispute.side, "category": category,
        "attribution": str(attribution.public_id), "evidence": [f.name for f in checked]})
    _timeline(attribution.referral, actor,
              f"The vendor disputes this deal's attribution: {CATEGORY_LABELS[category]}.",
              vendor_only=True)
    _notify(_vendor_people(dispute) + _resolvers(dispute), "dispute_opened", dispute,
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
    _check_no_names(text, _partner_names(dispute), "text")
    checked = check_evidence_files(files)
    from_status = _move(dispute, Dispute.VENDOR_RESPONDED)
    dispute.save(update_fields=["status", "updated_at"])
    entry = _entry(dispute, actor, text, Dispute.VENDOR_RESPONDED)
    _attach(dispute, actor, checked, entry)
    _audit("dispute.responded", dispute, actor, {"status": from_status},
           {"status": dispute.status})
    _timeline(dispute.referral, actor, "The vendor responded to the dispute.")
    _notify(_disputing_people(dispute) + _resolvers(dispute), "dispute_updated", dispute,
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
        _check_no_names(body, _partner_names(dispute), "body")
    checked = check_evidence_files(files)
    entry = _entry(dispute, actor, body)
    _attach(dispute, actor, checked, entry)
    Dispute.objects.filter(pk=dispute.pk).update(updated_at=timezone.now())
    _audit("dispute.message", dispute, actor,
           after={"message": str(entry.public_id), "evidence": [f.name for f in checked]})
    _notify(_participants(dispute), "dispute_message", dispute,
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
    users = _disputing_people(dispute)
    if dispute.side == Dispute.PARTNER:
        users += _vendor_people(dispute)
    _notify(users, "dispute_updated", dispute,
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
    _notify([channel_manager.user], "dispute_updated", dispute,
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
        _check_no_names(resolution, _partner_names(dispute),
                        "resolution")
    previous = new = None
    if dispute.attribution_id:
        previous, new = _decide_attribution(actor, dispute, outcome, resolution,
                                            new_referral_public_id)
    elif outcome == Dispute.UPHELD:
        _reinstate(actor, dispute, resolution)
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
    users = _disputing_people(dispute)
    if dispute.side == Dispute.PARTNER:
        users += _vendor_people(dispute)
    _notify(users, "dispute_decided", dispute,
            f"Dispute about {_subject_name(dispute)} {verdict}", resolution,
            exclude=actor.user)
    if dispute.attribution_id and previous != new:
        _tell_partners_attribution_changed(dispute, actor, previous, new)
    return dispute


def _decide_attribution(actor, dispute, outcome, resolution, new_referral_public_id):
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


def _tell_partners_attribution_changed(dispute, actor, previous, new):
    """The partner that lost the deal learns that it changed, never who disputed or why; the
    one that gained it (unless it is the disputer, who has the decision) that it is theirs."""
    if previous is not None:
        _timeline(previous, actor, "After a review by the network, this deal is no longer "
                                   "credited to this referral.")
        notify(_partner_people(previous.partner_id, previous), "attribution_changed",
               network_id=dispute.network_id,
               title=f"{previous.company_name}: the deal is no longer credited to your referral",
               body="The network reviewed the deal's attribution.",
               url=reverse("referrals:detail", args=[previous.public_id]))
    disputer = dispute.referral if dispute.side == Dispute.PARTNER else None
    if new is not None and new != disputer:
        _timeline(new, actor, "After a review by the network, this deal is credited to this "
                              "referral.")
        notify(_partner_people(new.partner_id, new), "attribution_changed",
               network_id=dispute.network_id,
               title=f"{new.company_name}: the deal is now credited to your referral",
               body="The network reviewed the deal's attribution.",
               url=reverse("referrals:detail", args=[new.public_id]))


def _reinstate(actor, dispute, resolution):
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
    held = [m.referral for m in check.matches if m.referral.status == Referral.ACCEPTED]
    if held:
        raise ServiceError(
            "Another partner's registration of this account is accepted (protected until "
            f"{held[0].protected_until:%-d %B %Y}), and one account is protected for one "
            "partner at a time: it has to be withdrawn or expire before this one can be "
            "reinstated.")


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
    users = _resolvers(dispute)
    if dispute.side == Dispute.PARTNER:
        users += _vendor_people(dispute)
    _notify(users, "dispute_updated", dispute,
            f"The dispute about {_subject_name(dispute)} was withdrawn", reason,
            exclude=actor.user)
    return dispute
