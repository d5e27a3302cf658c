"""The referral page's deal-and-commission card (an htmx partial, payouts.deal_money)."""

from django.shortcuts import render
from django.urls import path
from django.views.decorators.http import require_GET

from accounts import roles
from accounts.decorators import require_permission
from accounts.permissions import get_object_for
from payouts.deal_money import deals_of
from referrals.models import Referral


@require_permission(roles.REFERRAL_VIEW)
@require_GET
def referral_money(request, public_id):
    membership = request.membership
    referral = get_object_for(membership, Referral.objects.select_related("vendor"),
                              public_id, action=roles.REFERRAL_VIEW)
    return render(request, "payouts/partials/referral_money.html", {
        "referral": referral, "deals": deals_of(membership, referral)})


urlpatterns = [
    path("referrals/<uuid:public_id>/money/", referral_money, name="referral_money"),
]
