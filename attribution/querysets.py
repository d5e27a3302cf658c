from django.apps import apps
from django.db import models
from django.db.models import Exists, OuterRef

from accounts import roles
from accounts.permissions import permissions_of
from accounts.querysets import in_portfolio


class AttributionQuerySet(models.QuerySet):
    def visible_to(self, membership):
        """Vendors see attributions of their deals; a partner sees those where one of its
        referrals was a candidate (reps: their own referrals); operators their network or
        portfolio. Everything else is out of scope."""
        if roles.REFERRAL_VIEW not in permissions_of(membership):
            return self.none()
        org = membership.organization
        scope = membership.role_def.scope
        if org.kind == roles.VENDOR:
            return self.filter(vendor_id=org.pk)
        if org.kind == roles.PARTNER:
            candidate = apps.get_model("attribution", "AttributionCandidate").objects.filter(
                attribution_id=OuterRef("pk"), partner_id=org.pk)
            if scope == roles.OWN:
                candidate = candidate.filter(referral__submitted_by_id=membership.user_id)
            return self.filter(Exists(candidate))
        in_network = self.filter(network_id=org.network_id)
        if scope == roles.PORTFOLIO:
            return in_network.filter(in_portfolio(membership, "vendor_id")
                                     | in_portfolio(membership, "partner_id"))
        return in_network
