"""A partner's money: what it earned (and from which deal), and the payouts it received."""

from collections import defaultdict

from django.db.models import Count, Sum
from django.http import Http404
from django.shortcuts import render
from django.urls import path
from django.views.decorators.http import require_GET

from accounts import roles
from accounts.decorators import membership_required, require_permission
from partnerhub.pagination import paginate, querystring_without_page
from payouts.dashboard import money_tile
from payouts.forms import CommissionFilterForm
from payouts.models import Balance, Commission, Payout
from payouts.tax import statement_years

# The four figures a partner asks about, per currency.
BUCKETS = {"pending": [Commission.PENDING], "payable": [Commission.PAYABLE, Commission.APPROVED],
           "paid": [Commission.PAID],
           "reversed": [Commission.CANCELLED, Commission.CLAWED_BACK, Commission.REJECTED]}


def _partner_only(request):
    if request.membership.organization.kind != roles.PARTNER:
        raise Http404


def summary_by_currency(commissions, balances) -> list[dict]:
    """Per currency: pending, payable (incl. approved), paid, reversed, and what the partner
    owes from clawbacks (unpaid commissions minus the ledger balance, when positive)."""
    rows = commissions.values("currency", "status").annotate(total=Sum("amount_minor"),
                                                             n=Count("pk"))
    by_currency = defaultdict(lambda: {name: 0 for name in BUCKETS})
    unpaid = defaultdict(int)
    for row in rows:
        for name, statuses in BUCKETS.items():
            if row["status"] in statuses:
                by_currency[row["currency"]][name] += row["total"]
        if row["status"] in Commission.UNPAID:
            unpaid[row["currency"]] += row["total"]
    for balance in balances:
        figures = by_currency[balance.currency]
        figures["owed"] = max(unpaid[balance.currency] - balance.amount_minor, 0)
    return [{"currency": c, **figures} for c, figures in sorted(by_currency.items())]


@require_permission(roles.COMMISSION_VIEW)
@require_GET
def earnings(request):
    _partner_only(request)
    membership = request.membership
    mine = Commission.objects.visible_to(membership)
    form = CommissionFilterForm(request.GET or None)
    listed = (form.apply(mine).select_related("vendor", "referral", "payout")
              .order_by("-earned_at", "-pk"))
    return render(request, "payouts/earnings.html", {
        "form": form, "page": paginate(request, listed),
        "querystring": querystring_without_page(request),
        "summary": summary_by_currency(mine, Balance.objects.visible_to(membership)),
        "statement_years": statement_years(membership.organization),
    })


@require_permission(roles.PAYOUT_VIEW)
@require_GET
def payout_history(request):
    _partner_only(request)
    payouts = (Payout.objects.visible_to(request.membership).select_related("batch")
               .order_by("-created_at", "-pk"))
    status = request.GET.get("status", "")
    if status in dict(Payout.STATUSES):
        payouts = payouts.filter(status=status)
    return render(request, "payouts/payout_history.html", {
        "page": paginate(request, payouts), "status": status,
        "statuses": Payout.STATUSES, "querystring": querystring_without_page(request)})


@membership_required
@require_GET
def money_tile_view(request):
    """The dashboard's money tile, loaded by htmx after the page."""
    tile = money_tile(request.membership)
    if tile is None:
        raise Http404
    return render(request, "payouts/partials/money_tile.html", {"money": tile})


urlpatterns = [
    path("dashboard/money/", money_tile_view, name="money_tile"),
    path("earnings/", earnings, name="earnings"),
    path("payouts/", payout_history, name="payout_history"),
]
