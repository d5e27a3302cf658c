from django.contrib import messages
from django.db.models import Count, Q
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from accounts import roles
from accounts.decorators import membership_required
from accounts.errors import ServiceError
from accounts.permissions import can, get_object_for
from partnerhub.pagination import paginate
from referrals import services
from referrals.forms import ProgramForm
from referrals.models import Enrolment, Program


def _programs(membership):
    return Program.objects.visible_to(membership).select_related("vendor")


@membership_required
def program_list(request):
    membership = request.membership
    programs = _programs(membership).annotate(
        partner_count=Count("enrolments", filter=Q(enrolments__status="active")))
    if membership.organization.kind == roles.PARTNER:
        mine = {e.program_id: e for e in Enrolment.objects.visible_to(membership)}
    else:
        mine = {}
    page = paginate(request, programs.order_by("vendor__name", "name"))
    for program in page.object_list:
        program.my_enrolment = mine.get(program.pk)
    return render(request, "referrals/programs.html", {
        "page": page,
        "can_create": can(membership, roles.PROGRAM_MANAGE, membership.organization)
        and membership.organization.kind == roles.VENDOR,
        "is_partner": membership.organization.kind == roles.PARTNER,
    })


@membership_required
def program_detail(request, public_id):
    membership = request.membership
    program = get_object_for(membership, _programs(membership), public_id)
    may_manage = can(membership, roles.PROGRAM_MANAGE, program)
    context = {"program": program, "may_manage": may_manage,
               "may_enrol": can(membership, roles.PROGRAM_ENROL, program),
               "is_partner": membership.organization.kind == roles.PARTNER}
    if membership.organization.kind == roles.PARTNER:
        context["enrolment"] = Enrolment.objects.visible_to(membership).filter(
            program=program).first()
    if may_manage or membership.organization.kind == roles.OPERATOR:
        enrolments = (Enrolment.objects.visible_to(membership).filter(program=program)
                      .select_related("partner", "requested_by").order_by("status", "-created_at"))
        context["enrolments"] = paginate(request, enrolments)
    return render(request, "referrals/program_detail.html", context)


def _program_form_view(request, program=None):
    membership = request.membership
    initial = ProgramForm.initial_from(program) if program else None
    form = ProgramForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            program = services.save_program(membership, program, **form.cleaned_data)
        except ServiceError as exc:
            form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        else:
            messages.success(request, f"{program.name} saved.")
            return redirect("referrals:program_detail", program.public_id)
    return render(request, "referrals/program_form.html", {"form": form, "program": program})


@membership_required
def program_new(request):
    membership = request.membership
    if not (can(membership, roles.PROGRAM_MANAGE, membership.organization)
            and membership.organization.kind == roles.VENDOR):
        from django.http import Http404

        raise Http404
    return _program_form_view(request)


@membership_required
def program_edit(request, public_id):
    program = get_object_for(request.membership, _programs(request.membership), public_id,
                             action=roles.PROGRAM_MANAGE)
    return _program_form_view(request, program)


@membership_required
@require_POST
def program_enrol(request, public_id):
    program = get_object_for(request.membership, _programs(request.membership), public_id,
                             action=roles.PROGRAM_ENROL)
    try:
        enrolment = services.request_enrolment(request.membership, program)
    except ServiceError as exc:
        messages.error(request, exc.message)
    else:
        if enrolment.status == Enrolment.ACTIVE:
            messages.success(request, f"You are enrolled in {program.name}: refer away.")
        else:
            messages.success(request, f"Request sent. {program.vendor.name} reviews new "
                                      "partners; we will tell you when they decide.")
    return redirect("referrals:program_detail", program.public_id)


@membership_required
@require_POST
def enrolment_decide(request, public_id):
    enrolment = get_object_for(request.membership,
                               Enrolment.objects.select_related("program", "partner"),
                               public_id, action=roles.PROGRAM_MANAGE)
    approve = request.POST.get("decision") == "approve"
    try:
        services.decide_enrolment(request.membership, enrolment, approve)
    except ServiceError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"{enrolment.partner.name} "
                                  f"{'is enrolled' if approve else 'was declined'}.")
    return redirect("referrals:program_detail", enrolment.program.public_id)
