"""Registering a deal in the browser: new, edit, save as draft, submit."""

from django.contrib import messages
from django.shortcuts import redirect, render

from accounts import roles
from accounts.decorators import require_permission
from accounts.errors import ServiceError
from accounts.permissions import can
from referrals import services
from referrals.forms import ReferralForm
from referrals.models import Program, Referral
from referrals.services.lifecycle import EDITABLE, ConflictBlocked
from referrals.views.detail import get_referral


def _handle(request, form, referral=None):
    """Run the chosen action; returns a redirect, or None with errors added to the form."""
    membership = request.membership
    data = form.to_data()
    program = form.cleaned_data["program_obj"]
    try:
        if request.POST.get("action") == "draft":
            if referral is None:
                referral = services.save_draft(membership, program, data)
            else:
                referral = services.update_referral(membership, referral, data)
            messages.success(request, "Draft saved. Submit it when you are ready.")
        elif referral is not None and referral.status != Referral.DRAFT:
            referral = services.update_referral(membership, referral, data)
            messages.success(request, "Changes saved.")
        else:
            referral = services.submit_referral(membership, program, data, draft=referral)
            # A conflict is explained on the referral page itself, once.
            verb = "is submitted to" if referral.conflict else "is registered with"
            messages.success(request, f"{referral.company_name} {verb} "
                                      f"{referral.vendor.name}.")
    except ConflictBlocked as exc:
        form.add_error(None, exc.message)
        # Link to the existing registration only when this member may open it (a rep does
        # not see a colleague's referrals).
        if can(membership, roles.REFERRAL_VIEW, exc.existing):
            form.existing = exc.existing
        return None
    except ServiceError as exc:
        form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        return None
    return redirect("referrals:detail", referral.public_id)


@require_permission(roles.REFERRAL_SUBMIT)
def referral_new(request):
    programs = Program.objects.enrolled_for(request.membership)
    if not programs:
        return render(request, "referrals/no_programs.html")
    draft = request.method == "POST" and request.POST.get("action") == "draft"
    initial = {"program": request.GET.get("program", "")}
    if len(programs) == 1:
        initial["program"] = str(programs[0].public_id)
    form = ReferralForm(request.POST or None, programs=programs, draft=draft, initial=initial)
    if request.method == "POST" and form.is_valid():
        response = _handle(request, form)
        if response:
            return response
    return render(request, "referrals/form.html", {"form": form, "programs": programs})


@require_permission(roles.REFERRAL_EDIT)
def referral_edit(request, public_id):
    referral = get_referral(request, public_id, roles.REFERRAL_EDIT)
    if referral.status not in EDITABLE:
        messages.error(request, "Only drafts and submitted referrals can be edited.")
        return redirect("referrals:detail", referral.public_id)
    programs = [referral.program]
    draft = referral.status == Referral.DRAFT and request.POST.get("action") == "draft"
    form = ReferralForm(request.POST or None, programs=programs, draft=draft,
                        initial=ReferralForm.initial_from(referral))
    if request.method == "POST" and form.is_valid():
        response = _handle(request, form, referral)
        if response:
            return response
    return render(request, "referrals/form.html",
                  {"form": form, "programs": programs, "referral": referral})
