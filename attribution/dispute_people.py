"""Who takes part in a dispute and hears about it: the disputing side, the vendor and the
operators in scope; and the other partners of the deal, whom what a partner reads never names."""

from django.urls import reverse

from accounts import roles
from accounts.models import Membership, OrganizationPortfolioGrant
from accounts.notifications import notify
from attribution.models import AttributionCandidate, Dispute
from referrals.other_partners import OtherPartner, check_no_other_partner, other_partners_of


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

def partner_names(dispute) -> list[OtherPartner]:
    """Other partners of the deal (or of the conflicting registration, or that registered the
    same account): never named in what the disputing partner reads."""
    partners = {}
    if dispute.attribution_id:
        for name, domain in (AttributionCandidate.objects
                             .filter(attribution_id=dispute.attribution_id)
                             .values_list("partner__name", "partner__website_domain")):
            partners[name] = OtherPartner(name, domain or "")
    if dispute.referral_id:
        for other in other_partners_of(dispute.referral):
            partners[other.name] = other
    if dispute.side == Dispute.PARTNER:
        partners.pop(dispute.opened_by_org.name, None)
    return list(partners.values())


def check_no_names(text, partners, field, dispute=None):
    """Refuse a text the disputing partner reads when it names another partner (by the
    distinctive words of its name or its domain: referrals.other_partners)."""
    readers = ()
    if dispute is not None:
        readers = [dispute.vendor.name]
        if dispute.side == Dispute.PARTNER:
            readers.append(dispute.opened_by_org.name)
        if dispute.referral_id:
            readers.append(dispute.referral.company_name)
    check_no_other_partner(text, partners, field, readers_may_see=readers)
