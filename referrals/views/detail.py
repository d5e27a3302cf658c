"""One referral: its facts (within the viewer's field rules), conflict, timeline and actions."""

from django.contrib import messages
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from accounts import roles
from accounts.decorators import membership_required, require_permission
from accounts.errors import PermissionDenied, ServiceError
from accounts.models import Membership
from accounts.permissions import can, get_object_for
from integrations.panels import crm_panel
from referrals import services
from referrals.forms import (
    AssignForm,
    ExtendForm,
    MessageForm,
    RejectReferralForm,
    WithdrawReferralForm,
)
from referrals.models import Referral, TimelineEntry
from referrals.services.lifecycle import EDITABLE, conflict_notice
from referrals.services.thread import may_post

_RELATED = ("vendor", "partner", "submitted_by", "program", "conflict_with",
            "conflict_with__partner")


def get_referral(request, public_id, action=roles.REFERRAL_VIEW):
    queryset = Referral.objects.select_related(*_RELATED)
    return get_object_for(request.membership, queryset, public_id, action=action)


def sales_team(referral):
    return (Membership.objects.filter(
        organization_id=referral.vendor_id, status=Membership.ACTIVE,
        role__in=roles.role_names_with(roles.VENDOR, roles.REFERRAL_UPDATE_STAGE))
        .select_related("user", "organization").order_by("user__full_name"))


def _timeline(membership, referral):
    entries = referral.timeline.select_related("author", "author_organization")
    if membership.organization_id != referral.vendor_id:
        entries = entries.filter(visibility=TimelineEntry.EVERYONE)
    return entries


def _actions(membership, referral) -> dict:
    def allowed(action, statuses):
        return referral.status in statuses and can(membership, action, referral)

    return {
        "edit": allowed(roles.REFERRAL_EDIT, EDITABLE),
        "submit": allowed(roles.REFERRAL_SUBMIT, (Referral.DRAFT,)),
        "withdraw": allowed(roles.REFERRAL_WITHDRAW, (Referral.SUBMITTED, Referral.ACCEPTED)),
        "accept": allowed(roles.REFERRAL_ACCEPT, (Referral.SUBMITTED,)),
        "reject": allowed(roles.REFERRAL_REJECT, (Referral.SUBMITTED,)),
        "assign": allowed(roles.REFERRAL_ASSIGN, (Referral.SUBMITTED, Referral.ACCEPTED)),
        "extend": allowed(roles.REFERRAL_ACCEPT, (Referral.ACCEPTED,)),
        "post": may_post(membership, referral),
    }


@require_permission(roles.REFERRAL_VIEW)
def referral_detail(request, public_id):
    return _render_detail(request, get_referral(request, public_id))


def _render_detail(request, referral, status=200, **forms):
    membership = request.membership
    is_vendor = membership.organization_id == referral.vendor_id
    actions = _actions(membership, referral)
    context = {
        "referral": referral,
        "role": membership.role_def,
        "is_vendor": is_vendor,
        "is_partner": membership.organization_id == referral.partner_id,
        "timeline": _timeline(membership, referral),
        "actions": actions,
        "message_form": forms.get("message_form") or MessageForm(),
        "reject_form": forms.get("reject_form") or RejectReferralForm(),
        "extend_form": ExtendForm(),
        "assignees": [a.user for a in referral.assignments.select_related("user")],
        "conflict_notice": conflict_notice(referral),
        "crm": crm_panel(membership, referral),
    }
    if actions["assign"]:
        context["assign_form"] = AssignForm(members=sales_team(referral))
    if is_vendor and referral.conflict_with_id:
        # The vendor decides with both registrations side by side.
        context["conflicting"] = referral.conflict_with
    if is_vendor:
        context["later_conflicts"] = list(
            Referral.objects.visible_to(membership).filter(conflict_with=referral)
            .select_related("partner")[:10])
    return render(request, "referrals/detail.html", context, status=status)


def _run(request, referral, action, success, form=None, form_name=None):
    """Run one service; an error about a field of `form` goes back to that form on the page
    (with what was typed), others to a flash."""
    try:
        action()
    except PermissionDenied:
        from django.http import Http404

        raise Http404 from None
    except ServiceError as exc:
        if form is not None and exc.field and exc.field in form.fields:
            form.add_error(exc.field, exc.message)
            return _render_detail(request, referral, status=400, **{form_name: form})
        messages.error(request, exc.message)
    else:
        messages.success(request, success)
    return redirect("referrals:detail", referral.public_id)


@membership_required
@require_POST
def referral_accept(request, public_id):
    referral = get_referral(request, public_id, roles.REFERRAL_ACCEPT)
    return _run(request, referral,
                lambda: services.accept_referral(request.membership, referral),
                f"Accepted. {referral.partner.name} has been told.")


@membership_required
@require_POST
def referral_reject(request, public_id):
    referral = get_referral(request, public_id, roles.REFERRAL_REJECT)
    form = RejectReferralForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose a reason for the rejection.")
        return redirect("referrals:detail", referral.public_id)
    return _run(request, referral, lambda: services.reject_referral(
        request.membership, referral, form.cleaned_data["code"], form.cleaned_data["text"]),
        "Rejected. The partner has been told why.", form, "reject_form")


@membership_required
@require_POST
def referral_withdraw(request, public_id):
    referral = get_referral(request, public_id, roles.REFERRAL_WITHDRAW)
    form = WithdrawReferralForm(request.POST)
    if not form.is_valid():  # never withdraw without the reason that was typed
        messages.error(request, "Not withdrawn: " + " ".join(form.errors["reason"]))
        return redirect("referrals:detail", referral.public_id)
    return _run(request, referral,
                lambda: services.withdraw_referral(request.membership, referral,
                                                   form.cleaned_data["reason"]),
                "Withdrawn.")


@membership_required
@require_POST
def referral_assign(request, public_id):
    referral = get_referral(request, public_id, roles.REFERRAL_ASSIGN)
    team = sales_team(referral)
    form = AssignForm(request.POST, members=team)
    if not form.is_valid():
        messages.error(request, "Choose someone from your sales team.")
        return redirect("referrals:detail", referral.public_id)
    assignee = team.get(public_id=form.cleaned_data["assignee"])
    return _run(request, referral,
                lambda: services.assign_referral(request.membership, referral, assignee),
                f"Assigned to {assignee.user.get_full_name()}.")


@membership_required
@require_POST
def referral_extend(request, public_id):
    referral = get_referral(request, public_id, roles.REFERRAL_ACCEPT)
    form = ExtendForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Extend by 1 to 365 days.")
        return redirect("referrals:detail", referral.public_id)
    return _run(request, referral, lambda: services.extend_protection(
        request.membership, referral, form.cleaned_data["days"]), "Protection extended.")


@membership_required
@require_POST
def referral_message(request, public_id):
    referral = get_referral(request, public_id)
    form = MessageForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Write a message (up to 5,000 characters).")
        return redirect("referrals:detail", referral.public_id)
    internal = form.cleaned_data["internal"]
    return _run(request, referral, lambda: services.post_message(
        request.membership, referral, form.cleaned_data["body"], internal=internal),
        "Note saved." if internal else "Message sent.", form, "message_form")


def detail_url(referral):
    return reverse("referrals:detail", args=[referral.public_id])
