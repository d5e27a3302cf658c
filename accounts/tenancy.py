"""Resolving the tenant (network) and the active membership for a request."""

from django.conf import settings

from accounts.models import Membership, Network, Organization

SESSION_KEY = "active_membership"


def _host_without_port(host: str) -> str:
    host = (host or "").lower()
    if host.startswith("["):  # IPv6 literal
        return host.split("]")[0] + "]"
    return host.rsplit(":", 1)[0] if ":" in host else host


def network_for_host(host: str) -> Network | None:
    """Custom domain first, then `<slug>.<PARTNERHUB_BASE_DOMAIN>`, then the default network."""
    host = _host_without_port(host)
    base = settings.PARTNERHUB_BASE_DOMAIN.lower()
    slug = None
    if base and host.endswith("." + base):
        slug = host[: -len(base) - 1]
    candidates = Network.objects.filter(domain=host)
    if slug:
        candidates = candidates | Network.objects.filter(slug=slug)
    candidates = candidates | Network.objects.filter(is_default=True)
    # Custom domain beats subdomain beats default.
    best = None
    for network in candidates:
        rank = 0 if network.domain == host else 1 if network.slug == slug else 2
        if best is None or rank < best[0]:
            best = (rank, network)
    return best[1] if best else None


def memberships_in_network(user, network) -> list[Membership]:
    """The user's usable memberships in this network, for the header switcher."""
    if network is None or not user.is_authenticated:
        return []
    return list(
        Membership.objects.filter(
            user=user,
            status=Membership.ACTIVE,
            organization__network=network,
            organization__status__in=[Organization.ACTIVE, Organization.PENDING],
        )
        .select_related("organization", "organization__network", "user")
        .order_by("organization__kind", "organization__name")
    )


def choose_membership(request) -> Membership | None:
    memberships = request.memberships
    if not memberships:
        return None
    wanted = request.session.get(SESSION_KEY)
    for membership in memberships:
        if str(membership.public_id) == wanted:
            return membership
    chosen = memberships[0]
    request.session[SESSION_KEY] = str(chosen.public_id)
    return chosen


def switch_membership(request, public_id: str) -> bool:
    for membership in request.memberships:
        if str(membership.public_id) == public_id:
            request.session[SESSION_KEY] = str(membership.public_id)
            request.membership = membership
            return True
    return False
