from django.db import models

from accounts import roles
from accounts.permissions import permissions_of
from accounts.querysets import in_portfolio


class CrmConnectionQuerySet(models.QuerySet):
    def visible_to(self, membership):
        """Vendor admins see their own connections; network operators (admin, auditor) see
        all for support, channel managers their portfolio's. Nobody else."""
        perms = permissions_of(membership)
        org = membership.organization if membership else None
        if org is None:
            return self.none()
        if org.kind == roles.VENDOR:
            return self.filter(vendor_id=org.pk) if roles.CRM_MANAGE in perms else self.none()
        if org.kind == roles.OPERATOR and roles.REFERRAL_VIEW in perms:
            in_network = self.filter(vendor__network_id=org.network_id)
            if membership.role_def.scope == roles.PORTFOLIO:
                return in_network.filter(in_portfolio(membership, "vendor_id"))
            return in_network
        return self.none()

    def live(self):
        return self.exclude(status="disabled")


class SyncRecordQuerySet(models.QuerySet):
    def visible_to(self, membership):
        from integrations.models import CrmConnection

        return self.filter(connection__in=CrmConnection.objects.visible_to(membership))
