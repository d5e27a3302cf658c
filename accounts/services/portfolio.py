"""Channel-manager portfolios: guardian object grants on organizations."""

from django.db import transaction
from guardian.shortcuts import assign_perm, remove_perm

from accounts import audit, roles
from accounts.errors import ServiceError
from accounts.models import Membership, Organization
from accounts.services.guards import require

PORTFOLIO_PERM = "accounts.in_portfolio"


def channel_managers(network_id):
    return (
        Membership.objects.filter(
            organization__network_id=network_id,
            organization__kind=roles.OPERATOR,
            role="channel_manager",
            status=Membership.ACTIVE,
        )
        .select_related("user")
        .order_by("user__full_name")
    )


def _check_pair(actor, manager: Membership, org: Organization):
    require(actor, roles.PORTFOLIO_MANAGE, org)
    if not channel_managers(actor.organization.network_id).filter(pk=manager.pk).exists():
        raise ServiceError("Choose an active channel manager of this network.")
    if org.kind == roles.OPERATOR:
        raise ServiceError("Portfolios hold partner and vendor organizations.")


@transaction.atomic
def add_to_portfolio(actor: Membership, manager: Membership, org: Organization) -> None:
    _check_pair(actor, manager, org)
    assign_perm(PORTFOLIO_PERM, manager.user, org)
    audit.record("portfolio.added", org, actor=actor,
                 after={"channel_manager": manager.user.email})


@transaction.atomic
def remove_from_portfolio(actor: Membership, manager: Membership, org: Organization) -> None:
    _check_pair(actor, manager, org)
    remove_perm(PORTFOLIO_PERM, manager.user, org)
    audit.record("portfolio.removed", org, actor=actor,
                 before={"channel_manager": manager.user.email})
