"""`visible_to(membership)` for programs, enrolments and referrals (see accounts.querysets)."""

from django.apps import apps
from django.db import models
from django.db.models import Exists, OuterRef, Q

from accounts import roles
from accounts.permissions import permissions_of
from accounts.querysets import in_portfolio


def _usable(membership):
    return (membership is not None and membership.status == "active"
            and membership.organization.status == "active")


def _network_id(membership):
    return membership.organization.network_id


class ProgramQuerySet(models.QuerySet):
    def visible_to(self, membership):
        if not _usable(membership):
            return self.none()
        kind, role = membership.organization.kind, membership.role_def
        if kind == roles.VENDOR:
            return self.filter(vendor_id=membership.organization_id)
        in_network = self.filter(vendor__network_id=_network_id(membership))
        if kind == roles.PARTNER:
            enrolled = apps.get_model("referrals", "Enrolment").objects.filter(
                program_id=OuterRef("pk"), partner_id=membership.organization_id)
            return in_network.filter(
                Q(status="active", vendor__status="active") | Exists(enrolled))
        if role.scope == roles.PORTFOLIO:
            return in_network.filter(in_portfolio(membership, "vendor_id"))
        return in_network

    def open_for_referrals(self):
        return self.filter(status="active", vendor__status="active")

    def enrolled_for(self, membership) -> list:
        """The open programs the member's organization may refer to, vendor first."""
        return list(
            self.visible_to(membership).open_for_referrals()
            .filter(enrolments__partner_id=membership.organization_id,
                    enrolments__status="active")
            .select_related("vendor").order_by("vendor__name", "name"))


class EnrolmentQuerySet(models.QuerySet):
    def visible_to(self, membership):
        if not _usable(membership):
            return self.none()
        kind, role = membership.organization.kind, membership.role_def
        if kind == roles.PARTNER:
            return self.filter(partner_id=membership.organization_id)
        if kind == roles.VENDOR:
            return self.filter(program__vendor_id=membership.organization_id)
        in_network = self.filter(partner__network_id=_network_id(membership))
        if role.scope == roles.PORTFOLIO:
            return in_network.filter(in_portfolio(membership, "partner_id")
                                     | in_portfolio(membership, "program__vendor_id"))
        return in_network


class ReferralQuerySet(models.QuerySet):
    def visible_to(self, membership):
        """Partners see their organization's (or, as reps, their own) referrals including
        drafts; vendors their inbound ones (sales reps: the assigned ones); operators the
        network's or their portfolio's. Drafts never leave the partner."""
        if roles.REFERRAL_VIEW not in permissions_of(membership):
            return self.none()
        kind, scope = membership.organization.kind, membership.role_def.scope
        org_id = membership.organization_id
        if kind == roles.PARTNER:
            mine = self.filter(partner_id=org_id)
            return mine.filter(submitted_by_id=membership.user_id) if scope == roles.OWN \
                else mine
        submitted = self.exclude(status="draft")
        if kind == roles.VENDOR:
            inbound = submitted.filter(vendor_id=org_id)
            if scope == roles.ASSIGNED:
                return inbound.filter(assigned_to(membership))
            return inbound
        in_network = submitted.filter(network_id=_network_id(membership))
        if scope == roles.PORTFOLIO:
            return in_network.filter(in_portfolio(membership, "vendor_id")
                                     | in_portfolio(membership, "partner_id"))
        return in_network

    def active_registrations(self):
        return self.filter(status__in=("submitted", "accepted"))


def assigned_to(membership):
    """EXISTS(): the referral is assigned to this member (guardian direct-FK grant)."""
    assignment = apps.get_model("referrals", "ReferralAssignment")
    return Exists(assignment.objects.filter(
        user_id=membership.user_id, permission__codename="work_referral",
        content_object=OuterRef("pk")))
