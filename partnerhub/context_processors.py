from accounts import roles
from accounts.permissions import permissions_of

# Navigation: (label, url name, required permission). Shown when the role grants it.
NAV = [
    ("Dashboard", "home", roles.DASHBOARD_VIEW),
    ("Applications", "accounts:application_queue", roles.APPLICATIONS_REVIEW),
    ("Organizations", "accounts:organizations", roles.ORGANIZATION_VIEW),
    ("User lookup", "accounts:user_lookup", roles.USERS_LOOKUP),
    ("Audit log", "accounts:audit_log", roles.AUDIT_VIEW),
    ("Team", "accounts:team", roles.MEMBERS_VIEW),
    ("Network settings", "accounts:network_settings", roles.NETWORK_MANAGE),
]


def tenancy(request):
    membership = getattr(request, "membership", None)
    perms = permissions_of(membership)
    return {
        "network": getattr(request, "network", None),
        "membership": membership,
        "memberships": getattr(request, "memberships", []),
        "nav": [(label, url) for label, url, perm in NAV if perm in perms],
        "perms": perms,
    }
