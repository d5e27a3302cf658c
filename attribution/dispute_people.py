"""Who takes part in a dispute and hears about it: the disputing side, the vendor and the
operators in scope; and the other partners of the deal, whom what a partner reads never names."""

import re

from django.urls import reverse

from accounts import roles
from accounts.errors import ServiceError
from accounts.models import Membership, OrganizationPortfolioGrant
from accounts.notifications import notify
from attribution.models import AttributionCandidate, Dispute


def dispute_url(dispute) -> str:
    return reverse("attribution:dispute_detail", args=[dispute.public_id])


def _people(org_id, kind, permissions, scope=None):
    names = [r.name for r in roles.roles_of_kind(kind)
             if permissions & r.permissions and (scope is None or r.scope == scope)]
    return [m.user for m in Membership.objects.filter(
        organization_id=org_id, status=Membership.ACTIVE, role__in=names).select_related("user")]


def partner_people(org_id, referral=None, extra=None):
    """Who speaks for a partner about a referral: its owners and managers, the referral's
    submitter, and (for a dispute) the person who opened it."""
    users = _people(org_id, roles.PARTNER, {roles.DISPUTE_OPEN}, roles.ORGANIZATION)
    if referral is not None:
        users.append(referral.submitted_by)
    if extra is not None:
        users.append(extra)
    return users


def vendor_people(dispute):
    return _people(dispute.vendor_id, roles.VENDOR,
                   {roles.DISPUTE_RESPOND, roles.REFERRAL_ACCEPT})


def resolvers(dispute):
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


def disputing_people(dispute):
    if dispute.side == Dispute.PARTNER:
        return partner_people(dispute.opened_by_org_id, dispute.referral, dispute.opened_by)
    return vendor_people(dispute)


def participants(dispute):
    users = disputing_people(dispute) + resolvers(dispute)
    if dispute.side == Dispute.PARTNER:
        users += vendor_people(dispute)
    return users


def notify_about(users, kind, dispute, title, body="", exclude=None):
    """Tell these users about the dispute: a notification row now, an email after commit."""
    notify(users, kind, network_id=dispute.network_id, title=title, body=body[:2000],
           url=dispute_url(dispute), exclude_user=exclude)


# --- Keeping partners apart ----------------------------------------------------------------

def partner_names(dispute) -> set[str]:
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


def check_no_names(text, names, field):
    for name in names:
        if re.search(rf"(?<!\w){re.escape(name)}(?!\w)", text, re.IGNORECASE):
            raise ServiceError("Partners read this text: leave out the names of other partners "
                               "(write “another partner”).", field=field)
