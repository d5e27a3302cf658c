"""What can be disputed and until when: the subjects a partner's referral offers (attributions
it lost, its rejection or expiry), the categories each side may choose, and the dispute window
that closes them."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Case, When
from django.utils import timezone

from accounts.errors import ServiceError
from attribution.models import Attribution, Dispute
from referrals.models import Program, Referral

ATTRIBUTION_CATEGORIES = (Dispute.TO_ANOTHER_PARTNER, Dispute.TO_NO_ONE)
REGISTRATION_CATEGORIES = {Referral.REJECTED: Dispute.WRONGLY_REJECTED,
                           Referral.EXPIRED: Dispute.WRONGLY_EXPIRED}
VENDOR_CATEGORIES = (Dispute.WRONG_PARTNER, Dispute.NOT_A_REFERRAL_DEAL, Dispute.OTHER)


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


def closed(deadline, now) -> str:
    """Why nothing with this deadline can be disputed any more, or "" while it can."""
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
                   if attribution.pk in taken_ids else closed(deadline, now))
        subjects.append(Subject(attribution, (category, Dispute.OTHER), deadline, blocked))
    category = REGISTRATION_CATEGORIES.get(referral.status)
    when = referral.decided_at if referral.status == Referral.REJECTED else referral.closed_at
    if category and when:
        deadline = when + _window(referral.program)
        blocked = ("This registration is already disputed."
                   if None in taken_ids else closed(deadline, now))
        subjects.append(Subject(None, (category, Dispute.OTHER), deadline, blocked))
    return subjects


def pick_subject(subjects, category, attribution) -> Subject:
    """The open subject a partner's chosen category (and attribution) points to."""
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
