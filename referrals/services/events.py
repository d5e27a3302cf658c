"""What every referral action leaves behind: an audit event, a timeline entry, notifications
and an analytics event (the last two after commit)."""

from django.urls import reverse

from accounts import audit, roles
from accounts.models import Membership
from accounts.notifications import notify
from integrations import analytics
from referrals.models import TimelineEntry

ANALYTICS_EVENTS = {
    "submitted": "Referral Submitted",
    "accepted": "Referral Accepted",
    "rejected": "Referral Rejected",
    "withdrawn": "Referral Withdrawn",
    "expired": "Referral Expired",
    "won": "Referral Won",
    "lost": "Referral Lost",
    "reopened": "Referral Reopened",
    "reinstated": "Referral Reinstated",
}


def referral_url(referral) -> str:
    return reverse("referrals:detail", args=[referral.public_id])


def record_transition(referral, actor, from_status: str, body: str = "", extra=None,
                      event: str = "") -> None:
    """Audit + timeline + analytics for a status change (actor None = the system). `event`
    names a move whose new status alone would mislead ("reopened" and "reinstated" both lead
    back to accepted)."""
    to_status = referral.status
    event = event or to_status
    audit.record(f"referral.{event}", referral, actor=actor,
                 before={"status": from_status}, after={"status": to_status, **(extra or {})},
                 network_id=referral.network_id)
    TimelineEntry.objects.create(
        referral=referral, kind=TimelineEntry.STATUS, from_status=from_status,
        to_status=to_status, body=body,
        author=actor.user if actor else None,
        author_organization_id=actor.organization_id if actor else None,
    )
    tracked = ANALYTICS_EVENTS.get(event)
    if tracked:
        analytics.track(tracked, user_id=actor.user.public_id if actor else None,
                        organization_id=referral.partner.public_id, properties={
                            "referral_id": str(referral.public_id),
                            "vendor_id": str(referral.vendor.public_id),
                            "partner_id": str(referral.partner.public_id),
                            "program_id": str(referral.program.public_id),
                            "amount_minor": referral.amount_minor,
                            "currency": referral.currency,
                            "conflict": referral.conflict,
                            "country": str(referral.country or ""),
                        })


def members_with(org_id: int, kind: str, permission: str):
    users = (
        Membership.objects.filter(organization_id=org_id, status=Membership.ACTIVE,
                                  role__in=roles.role_names_with(kind, permission))
        .select_related("user")
    )
    return [m.user for m in users]


def decision_subject(referral) -> str:
    """What a "new referral" notification asks the vendor's deciders for (notifications
    `resolve` it once someone accepts, rejects, or the partner withdraws)."""
    return f"referral:{referral.public_id}:decide"


def notify_vendor_deciders(referral, kind: str, title: str, body: str = "", exclude=None,
                           subject: str = ""):
    users = members_with(referral.vendor_id, roles.VENDOR, roles.REFERRAL_ACCEPT)
    # Assigned sales reps, while they are still active members of the vendor.
    active = Membership.objects.filter(organization_id=referral.vendor_id,
                                       status=Membership.ACTIVE).values("user_id")
    users += [a.user for a in referral.assignments.filter(user_id__in=active)
              .select_related("user")]
    notify(users, kind, network_id=referral.network_id, title=title, body=body,
           url=referral_url(referral), exclude_user=exclude, subject=subject)


def notify_submitter(referral, kind: str, title: str, body: str = "", exclude=None):
    notify([referral.submitted_by], kind, network_id=referral.network_id, title=title,
           body=body, url=referral_url(referral), exclude_user=exclude)
