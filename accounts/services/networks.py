from django.db import transaction

from accounts import audit, roles
from accounts.models import Membership, Network
from accounts.services.guards import require


@transaction.atomic
def update_network_settings(actor: Membership, *, name: str,
                            auto_approve_matching_domains: bool) -> Network:
    require(actor, roles.NETWORK_MANAGE)
    network = Network.objects.select_for_update().get(pk=actor.organization.network_id)
    before = {"name": network.name,
              "auto_approve_matching_domains": network.auto_approve_matching_domains}
    network.name = name.strip()
    network.auto_approve_matching_domains = auto_approve_matching_domains
    network.save(update_fields=["name", "auto_approve_matching_domains"])
    after = {"name": network.name,
             "auto_approve_matching_domains": network.auto_approve_matching_domains}
    if before != after:
        audit.record("network.settings_changed", network, actor=actor, before=before, after=after)
    return network

