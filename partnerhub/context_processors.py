from django.utils.functional import SimpleLazyObject

from accounts import roles
from accounts.notifications import unread_count
from accounts.permissions import permissions_of

# Navigation: (label, url name, required permission). Shown when the role grants it.
NAV = [
    ("Dashboard", "home", roles.DASHBOARD_VIEW),
    ("Referrals", "referrals:list", roles.REFERRAL_VIEW),
    ("Attributions", "attribution:list", roles.REFERRAL_VIEW),
    ("Programs", "referrals:programs", roles.DASHBOARD_VIEW),
    ("Applications", "accounts:application_queue", roles.APPLICATIONS_REVIEW),
    ("Organizations", "accounts:organizations", roles.ORGANIZATION_VIEW),
    ("User lookup", "accounts:user_lookup", roles.USERS_LOOKUP),
    ("Disputes", "attribution:dispute_queue", roles.DISPUTE_RESOLVE),
    ("Audit log", "accounts:audit_log", roles.AUDIT_VIEW),
    ("Team", "accounts:team", roles.MEMBERS_VIEW),
    ("CRM", "integrations:connection", roles.CRM_MANAGE),
    ("Network settings", "accounts:network_settings", roles.NETWORK_MANAGE),
]
# Money pages differ per side: (label, url name, permission, organization kind).
MONEY_NAV = [
    ("Earnings", "payouts:earnings", roles.COMMISSION_VIEW, roles.PARTNER),
    ("Payout account", "payouts:payout_account", roles.PAYOUT_VIEW, roles.PARTNER),
    ("Tax profile", "payouts:tax_profile", roles.TAX_PROFILE_MANAGE, roles.PARTNER),
    ("Commissions", "payouts:commissions", roles.COMMISSION_VIEW, roles.VENDOR),
    ("Commissions", "payouts:commissions", roles.COMMISSION_VIEW, roles.OPERATOR),
    ("Payout batches", "payouts:batch_list", roles.PAYOUT_VIEW, roles.OPERATOR),
    ("Clawbacks", "payouts:clawbacks", roles.PAYOUT_VIEW, roles.OPERATOR),
    ("Tax report", "payouts:tax_report", roles.TAX_REPORT, roles.OPERATOR),
]


def nav_for(membership, perms) -> list[tuple[str, str]]:
    items = [(label, url) for label, url, perm in NAV if perm in perms]
    kind = membership.organization.kind if membership is not None else None
    items += [(label, url) for label, url, perm, side in MONEY_NAV
              if perm in perms and side == kind]
    return items


def tenancy(request):
    membership = getattr(request, "membership", None)
    perms = permissions_of(membership)
    return {
        "network": getattr(request, "network", None),
        "membership": membership,
        "memberships": getattr(request, "memberships", []),
        "nav": nav_for(membership, perms),
        "perms": perms,
        "unread_notifications": _unread_notifications(request, membership),
    }


def _unread_notifications(request, membership):
    """The bell's count: one COUNT, run only when a template shows it (htmx partials don't)."""
    if membership is None or not request.user.is_authenticated:
        return 0
    return SimpleLazyObject(lambda: unread_count(request.user, membership.network_id))
