"""A program's commission plan: its vendor admin writes new versions; everyone with money in
the program's scope reads the terms and their history."""

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import path
from django.views.decorators.http import require_POST

from accounts import roles
from accounts.decorators import membership_required
from accounts.errors import ServiceError
from accounts.permissions import can, get_object_for, permissions_of
from payouts.forms import PlanForm
from payouts.plans import TIERS, current_plan, describe, save_plan, set_partner_tier
from referrals.models import Enrolment, Program


@membership_required
def commission_plan(request, public_id):
    membership = request.membership
    perms = permissions_of(membership)
    if roles.PROGRAM_MANAGE not in perms and roles.COMMISSION_VIEW not in perms:
        raise Http404
    program = get_object_for(membership, Program, public_id)
    may_manage = can(membership, roles.PROGRAM_MANAGE, program)
    plan = current_plan(program)
    default_currency = (program.accepted_currencies or ["USD"])[0]
    form = None
    if may_manage:
        form = PlanForm(request.POST or None,
                        initial=PlanForm.initial_from(plan, default_currency))
        if request.method == "POST" and form.is_valid():
            try:
                saved = save_plan(membership, program, form.cleaned_data["terms"])
            except ServiceError as exc:
                field = {"rate_bp": "rate", "flat_minor": "flat", "cap_minor": "cap",
                         "payout_minimum_minor": "payout_minimum"}.get(exc.field, exc.field)
                form.add_error(field if field in form.fields else None, exc.message)
            else:
                messages.success(request, f"Plan version {saved.version} saved: it applies to "
                                          f"deals won from now on.")
                return redirect("payouts:commission_plan", program.public_id)
    elif request.method == "POST":
        raise Http404
    versions = program.commission_plans.select_related("created_by").order_by("-version")
    enrolments = None
    if may_manage:
        enrolments = (Enrolment.objects.visible_to(membership)
                      .filter(program=program, status=Enrolment.ACTIVE)
                      .select_related("partner").order_by("partner__name")[:200])
    return render(request, "payouts/commission_plan.html", {
        "program": program, "plan": plan, "form": form, "may_manage": may_manage,
        "versions": [(v, describe(v)) for v in versions[:50]],
        "plan_text": describe(plan) if plan else None, "enrolments": enrolments,
        "tiers": [(t, t.title()) for t in TIERS],
    }, status=400 if request.method == "POST" else 200)


@membership_required
@require_POST
def enrolment_tier(request, public_id):
    enrolment = get_object_for(request.membership,
                               Enrolment.objects.select_related("program", "partner"),
                               public_id, roles.PROGRAM_MANAGE)
    try:
        set_partner_tier(request.membership, enrolment, request.POST.get("tier", ""))
    except ServiceError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"{enrolment.partner.name} is now in the "
                                  f"{enrolment.tier.title()} tier.")
    return redirect("payouts:commission_plan", enrolment.program.public_id)


urlpatterns = [
    path("enrolments/<uuid:public_id>/tier/", enrolment_tier, name="enrolment_tier"),
    path("programs/<uuid:public_id>/commission-plan/", commission_plan, name="commission_plan"),
]
