"""Who sees which money. Partners see their own (owner and finance: the roles with money);
vendors see the commissions they owe, never payouts (a payout mixes several vendors'
commissions); operators with money permissions see their network. Everyone else: nothing."""

from django.db import models

from accounts import roles
from accounts.permissions import permissions_of


def _partner_or_network(queryset, membership, permission, partner_field="partner_id"):
    if permission not in permissions_of(membership):
        return queryset.none()
    org = membership.organization
    if org.kind == roles.PARTNER:
        return queryset.filter(**{partner_field: org.pk})
    if org.kind == roles.OPERATOR:
        return queryset.filter(network_id=org.network_id)
    return queryset.none()


class CommissionQuerySet(models.QuerySet):
    def visible_to(self, membership):
        if roles.COMMISSION_VIEW not in permissions_of(membership):
            return self.none()
        org = membership.organization
        if org.kind == roles.VENDOR:
            return self.filter(vendor_id=org.pk)
        return _partner_or_network(self, membership, roles.COMMISSION_VIEW)


class LedgerQuerySet(models.QuerySet):
    def visible_to(self, membership):
        return _partner_or_network(self, membership, roles.COMMISSION_VIEW)


class PayoutQuerySet(models.QuerySet):
    def visible_to(self, membership):
        return _partner_or_network(self, membership, roles.PAYOUT_VIEW)


class BatchQuerySet(models.QuerySet):
    def visible_to(self, membership):
        if membership.organization.kind != roles.OPERATOR:
            return self.none()
        return _partner_or_network(self, membership, roles.PAYOUT_VIEW)


class PartnerMoneyQuerySet(models.QuerySet):
    """Balances, payout accounts and tax profiles: the partner's owner and finance, and the
    operator's finance people (and read-only auditor)."""

    def visible_to(self, membership):
        perms = permissions_of(membership)
        if membership.organization.kind == roles.PARTNER and roles.TAX_PROFILE_MANAGE in perms:
            return self.filter(partner_id=membership.organization_id)
        return _partner_or_network(self, membership, roles.PAYOUT_VIEW)
