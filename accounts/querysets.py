"""`visible_to(membership)`: the one door to tenant rows.

Each queryset narrows to the active membership's network first, then to its role's scope. An
inactive membership, or one whose organization is not active, sees nothing beyond its own
organization.
"""

from django.apps import apps
from django.db import models
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from accounts import roles


def _usable(membership) -> bool:
    return membership is not None and membership.status == "active"


def in_portfolio(membership, org_ref="pk"):
    """EXISTS(): the organization at `org_ref` is in the member's channel-manager portfolio."""
    grant = apps.get_model("accounts", "OrganizationPortfolioGrant")
    return Exists(
        grant.objects.filter(
            user_id=membership.user_id,
            permission__codename="in_portfolio",
            content_object=OuterRef(org_ref),
        )
    )


def _org_active(membership) -> bool:
    return membership.organization.status == "active"


class OrganizationQuerySet(models.QuerySet):
    def visible_to(self, membership):
        if not _usable(membership):
            return self.none()
        own = self.filter(pk=membership.organization_id)
        if not _org_active(membership):
            return own
        role = membership.role_def
        in_network = self.filter(network_id=membership.organization.network_id)
        if role.scope == roles.NETWORK:
            return in_network
        if role.scope == roles.PORTFOLIO:
            return in_network.filter(Q(pk=membership.organization_id) | in_portfolio(membership))
        return own


class MembershipQuerySet(models.QuerySet):
    def visible_to(self, membership):
        if not _usable(membership):
            return self.none()
        own_org = self.filter(organization_id=membership.organization_id)
        if not _org_active(membership):
            return own_org.filter(pk=membership.pk)
        role = membership.role_def
        in_network = self.filter(organization__network_id=membership.organization.network_id)
        if roles.USERS_LOOKUP in role.permissions:
            return in_network
        if role.scope == roles.PORTFOLIO:
            return in_network.filter(
                Q(organization_id=membership.organization_id)
                | in_portfolio(membership, "organization_id")
            )
        return own_org

    def active(self):
        return self.filter(status="active")


class InvitationQuerySet(models.QuerySet):
    def visible_to(self, membership):
        if not _usable(membership) or not _org_active(membership):
            return self.none()
        if roles.MEMBERS_MANAGE not in membership.role_def.permissions:
            return self.none()
        return self.filter(organization_id=membership.organization_id)

    def open(self):
        return self.filter(accepted_at__isnull=True, revoked_at__isnull=True)


class AuditEventQuerySet(models.QuerySet):
    def visible_to(self, membership):
        if not _usable(membership) or not _org_active(membership):
            return self.none()
        if roles.AUDIT_VIEW not in membership.role_def.permissions:
            return self.none()
        return self.filter(network_id=membership.organization.network_id)

    def update(self, **kwargs):
        raise _immutable()

    def delete(self):
        raise _immutable()


def _immutable():
    from accounts.models import AuditLogImmutable

    return AuditLogImmutable("Audit events are append-only.")


class NotificationQuerySet(models.QuerySet):
    def visible_to(self, membership):
        """A user's own notifications in the membership's network: notifications belong to the
        person, so roles and organization status do not narrow them further."""
        if not _usable(membership):
            return self.none()
        return self.filter(user_id=membership.user_id,
                           network_id=membership.organization.network_id)

    def unread(self):
        return self.filter(read_at__isnull=True)

    def mark_read(self) -> int:
        """Stamp the unread ones as read now; already-read rows keep their first read time."""
        return self.unread().update(read_at=timezone.now())
