from django.apps import apps
from django.db import models
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from accounts import roles
from accounts.permissions import permissions_of
from accounts.querysets import in_portfolio


class AttributionQuerySet(models.QuerySet):
    def visible_to(self, membership):
        """Vendors see attributions of their deals; a partner sees those where one of its
        referrals matched the deal (reps: their own referrals); operators their network or
        portfolio. Everything else is out of scope."""
        if roles.REFERRAL_VIEW not in permissions_of(membership):
            return self.none()
        org = membership.organization
        scope = membership.role_def.scope
        if org.kind == roles.VENDOR:
            mine = self.filter(vendor_id=org.pk)
            if scope == roles.ASSIGNED:  # sales reps: deals where an assigned referral counted
                assigned = apps.get_model("referrals", "ReferralAssignment").objects.filter(
                    user_id=membership.user_id, permission__codename="work_referral"
                ).values("content_object_id")
                candidate = apps.get_model("attribution", "AttributionCandidate").objects.filter(
                    attribution_id=OuterRef("pk"), referral_id__in=assigned)
                return mine.filter(Exists(candidate))
            return mine
        if org.kind == roles.PARTNER:
            # Only where its referral matched the deal: a name the engine scored and found not
            # similar enough says nothing about the partner's account, and the deal is not its
            # business.
            candidate = apps.get_model("attribution", "AttributionCandidate").objects.filter(
                attribution_id=OuterRef("pk"), partner_id=org.pk).exclude(match="none")
            if scope == roles.OWN:
                candidate = candidate.filter(referral__submitted_by_id=membership.user_id)
            return self.filter(Exists(candidate))
        in_network = self.filter(network_id=org.network_id)
        if scope == roles.PORTFOLIO:
            return in_network.filter(in_portfolio(membership, "vendor_id")
                                     | in_portfolio(membership, "partner_id"))
        return in_network


def dispute_scope(membership):
    """The rows of Dispute this membership may see, as a Q, or None when its role sees no
    disputes at all: the participants (the disputing partner — reps their own — and the
    vendor's deciders), the operators who resolve them (network or portfolio) and auditors."""
    perms = permissions_of(membership)
    if not perms:
        return None
    org = membership.organization
    if org.kind == roles.PARTNER:
        if roles.DISPUTE_OPEN not in perms:
            return None
        mine = Q(side="partner", opened_by_org_id=org.pk)
        if membership.role_def.scope == roles.OWN:
            mine &= Q(opened_by_id=membership.user_id) | Q(
                referral__submitted_by_id=membership.user_id)
        return mine
    if org.kind == roles.VENDOR:
        if roles.DISPUTE_RESPOND in perms or roles.REFERRAL_ACCEPT in perms:
            return Q(vendor_id=org.pk)
        return None
    in_network = Q(network_id=org.network_id)
    if roles.DISPUTE_RESOLVE in perms:
        if membership.role_def.scope == roles.PORTFOLIO:
            return in_network & (Q(in_portfolio(membership, "vendor_id"))
                                 | Q(in_portfolio(membership, "partner_id")))
        return in_network
    if roles.AUDIT_VIEW in perms and roles.REFERRAL_VIEW in perms:
        return in_network  # the auditor reads everything, changes nothing
    return None


class DisputeQuerySet(models.QuerySet):
    def visible_to(self, membership):
        scope = dispute_scope(membership)
        return self.none() if scope is None else self.filter(scope)

    def pending(self):
        return self.filter(status__in=("open", "vendor_responded", "under_review"))

    def overdue(self, now=None):
        """Waiting for a decision past the SLA due date (the partial index's rows)."""
        return self.pending().filter(sla_due_at__lt=now or timezone.now())
