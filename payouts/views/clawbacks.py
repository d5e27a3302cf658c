"""What partners owe from clawbacks, for operator finance: netted off their next payouts while
they are active; recovered by reversing their transfers once they have left the network."""

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import path
from django.views.decorators.http import require_GET, require_POST

from accounts import roles
from accounts.decorators import require_permission
from accounts.errors import ServiceError
from accounts.models import Organization
from accounts.permissions import can, get_object_for
from partnerhub.money import format_money
from partnerhub.pagination import paginate
from payouts import recovery
from payouts.ledger import with_owed
from payouts.models import Balance


def owed_balances(membership):
    """The balances in scope whose partner owes money, largest debt first. One query."""
    return (with_owed(Balance.objects.visible_to(membership).filter(partner__kind=roles.PARTNER))
            .filter(owed__gt=0).select_related("partner").order_by("-owed", "pk"))


@require_permission(roles.PAYOUT_VIEW)
@require_GET
def clawbacks(request):
    membership = request.membership
    if membership.organization.kind != roles.OPERATOR:
        raise Http404
    page = paginate(request, owed_balances(membership))
    return render(request, "payouts/clawbacks.html", {
        "page": page, "may_recover": can(membership, roles.PAYOUT_MANAGE),
        "departed": (Organization.SUSPENDED, Organization.REJECTED)})


@require_permission(roles.PAYOUT_MANAGE)
@require_POST
def recover(request, public_id, currency):
    membership = request.membership
    partner = get_object_for(membership, Organization.objects.filter(kind=roles.PARTNER),
                             public_id)
    try:
        result = recovery.recover_by_reversal(membership, partner, currency)
    except ServiceError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Recovered {format_money(result.recovered_minor, currency)} "
                                  f"of {format_money(result.debt_minor, currency)} from "
                                  f"{partner.name} with {len(result.reversals)} transfer "
                                  f"reversal(s).")
    return redirect("payouts:clawbacks")


urlpatterns = [
    path("clawbacks/", clawbacks, name="clawbacks"),
    path("clawbacks/<uuid:public_id>/<str:currency>/recover/", recover, name="clawback_recover"),
]
