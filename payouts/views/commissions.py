"""Commissions for vendor finance (approve, reject) and for everyone with money in scope."""

import uuid

from django.contrib import messages
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.views.decorators.http import require_GET, require_POST

from accounts import roles
from accounts.decorators import require_permission
from accounts.errors import ServiceError
from accounts.permissions import can, get_object_for
from partnerhub.pagination import paginate, querystring_without_page
from partnerhub.redirects import safe_next
from payouts.approvals import approve_commissions, reject_commission
from payouts.forms import CommissionFilterForm, RejectForm
from payouts.models import Commission, LedgerEntry
from payouts.plans import describe


@require_permission(roles.COMMISSION_VIEW)
@require_GET
def commission_list(request):
    membership = request.membership
    if membership.organization.kind == roles.PARTNER:
        return redirect("payouts:earnings")
    params = request.GET.copy()
    may_approve = can(membership, roles.COMMISSION_APPROVE)
    if may_approve and "status" not in params:
        params["status"] = Commission.PAYABLE  # finance comes here to work the queue
    form = CommissionFilterForm(params)
    listed = form.apply(Commission.objects.visible_to(membership))
    order = ("payable_at", "pk") if params.get("status") == Commission.PAYABLE else (
        "-earned_at", "-pk")
    listed = listed.select_related("partner", "vendor", "referral").order_by(*order)
    return render(request, "payouts/commission_list.html", {
        "form": form, "page": paginate(request, listed), "may_approve": may_approve,
        "side": membership.organization.kind,
        "querystring": querystring_without_page(request)})


@require_permission(roles.COMMISSION_APPROVE)
@require_POST
def commission_approve(request):
    ids = []
    for value in request.POST.getlist("selected"):
        try:
            ids.append(uuid.UUID(value))
        except ValueError:
            continue
    if not ids:
        messages.error(request, "Select the commissions to approve.")
    else:
        count = approve_commissions(request.membership, ids)
        skipped = len(ids) - count
        messages.success(request, f"{count} commission(s) approved." + (
            f" {skipped} could not be (no longer payable)." if skipped else ""))
    return redirect(safe_next(request, reverse("payouts:commissions")))


def _detail(request, commission, reject_form=None, status=200):
    membership = request.membership
    entries = (LedgerEntry.objects.visible_to(membership).filter(commission=commission)
               .order_by("created_at", "pk"))
    may_reject = (can(membership, roles.COMMISSION_APPROVE, commission)
                  and commission.status in (Commission.PENDING, Commission.PAYABLE,
                                            Commission.APPROVED)
                  and commission.payout_id is None)
    return render(request, "payouts/commission_detail.html", {
        "commission": commission, "entries": entries, "plan_text": describe(commission.plan),
        "side": membership.organization.kind, "may_reject": may_reject,
        "may_approve": can(membership, roles.COMMISSION_APPROVE, commission)
        and commission.status == Commission.PAYABLE,
        "reject_form": reject_form or RejectForm(),
        "show_referral": can(membership, roles.REFERRAL_VIEW, commission.referral)
        if commission.referral_id else False,
    }, status=status)


def _get(request, public_id):
    queryset = Commission.objects.select_related("partner", "vendor", "plan", "referral",
                                                 "payout", "payout__batch", "program")
    return get_object_for(request.membership, queryset, public_id, roles.COMMISSION_VIEW)


@require_permission(roles.COMMISSION_VIEW)
@require_GET
def commission_detail(request, public_id):
    return _detail(request, _get(request, public_id))


@require_permission(roles.COMMISSION_APPROVE)
@require_POST
def commission_reject(request, public_id):
    commission = _get(request, public_id)
    form = RejectForm(request.POST)
    if form.is_valid():
        try:
            reject_commission(request.membership, commission, form.cleaned_data["reason"])
        except ServiceError as exc:
            form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        else:
            messages.success(request, "Commission rejected; the partner was told why.")
            return redirect("payouts:commission_detail", commission.public_id)
    return _detail(request, commission, reject_form=form, status=400)


urlpatterns = [
    path("commissions/", commission_list, name="commissions"),
    path("commissions/approve/", commission_approve, name="commission_approve"),
    path("commissions/<uuid:public_id>/", commission_detail, name="commission_detail"),
    path("commissions/<uuid:public_id>/reject/", commission_reject, name="commission_reject"),
]
