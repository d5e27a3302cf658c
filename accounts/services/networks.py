from django.db import transaction

from accounts import audit, roles
from accounts.models import Membership, Network
from accounts.services.guards import require


@transaction.atomic
def update_network_settings(actor: Membership, *, name: str,
                            auto_approve_matching_domains: bool,
                            two_factor_policy: str | None = None) -> Network:
    require(actor, roles.NETWORK_MANAGE)
    network = Network.objects.select_for_update().get(pk=actor.organization.network_id)
    fields = ["name", "auto_approve_matching_domains", "two_factor_policy"]
    before = {f: getattr(network, f) for f in fields}
    network.name = name.strip()
    network.auto_approve_matching_domains = auto_approve_matching_domains
    if two_factor_policy is not None:
        if two_factor_policy not in dict(Network.TWO_FACTOR_POLICIES):
            raise ValueError(f"Unknown two-factor policy {two_factor_policy!r}")
        network.two_factor_policy = two_factor_policy
    network.save(update_fields=fields)
    after = {f: getattr(network, f) for f in fields}
    if before != after:
        audit.record("network.settings_changed", network, actor=actor, before=before, after=after)
    return network

