from django.contrib import messages
from django.contrib.auth import login
from django.db import transaction
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from accounts import roles, services, twofactor
from accounts.decorators import require_permission
from accounts.errors import ServiceError
from accounts.forms import InviteForm, RoleForm, SignupForInvitationForm
from accounts.models import Invitation, Membership, User
from accounts.permissions import can, get_object_for
from accounts.services.members import check_invitation_usable, find_invitation
from partnerhub.pagination import paginate


@require_permission(roles.MEMBERS_VIEW)
def team(request):
    membership = request.membership
    org = membership.organization
    members = (
        Membership.objects.visible_to(membership)
        .filter(organization=org)
        .select_related("user", "organization")
        .order_by("status", "user__full_name")
    )
    may_manage = can(membership, roles.MEMBERS_MANAGE, org)
    invite_form = InviteForm(request.POST or None, kind=org.kind)
    if request.method == "POST":
        if not may_manage:
            return redirect("accounts:team")
        if invite_form.is_valid():
            try:
                services.invite_member(membership, invite_form.cleaned_data["email"],
                                       invite_form.cleaned_data["role"])
            except ServiceError as exc:
                invite_form.add_error(exc.field, exc.message)
            else:
                messages.success(request,
                                 f"Invitation sent to {invite_form.cleaned_data['email']}.")
                return redirect("accounts:team")
    invitations = (
        Invitation.objects.visible_to(membership).open().select_related("invited_by")
        .order_by("-created_at")
    )
    page = paginate(request, members)
    if may_manage:
        _mark_two_factor(page.object_list, request.membership)
    return render(request, "accounts/team.html", {
        "page": page,
        "invitations": invitations if may_manage else [],
        "may_manage": may_manage,
        "invite_form": invite_form,
        "role_choices": roles.role_choices(org.kind),
        "roles_of_kind": roles.roles_of_kind(org.kind),
    })


def _mark_two_factor(memberships, actor):
    """Whether each listed member signs in with two factors, and whether `actor` may reset it
    (one query for the page)."""
    enrolled = twofactor.enrolled_user_ids(m.user_id for m in memberships)
    for m in memberships:
        m.two_factor_on = m.user_id in enrolled
        m.two_factor_resettable = m.two_factor_on and m.user_id != actor.user_id


def _member_action(request, public_id, action, success):
    target = get_object_for(request.membership, Membership.objects.select_related(
        "organization", "user"), public_id, action=roles.MEMBERS_MANAGE)
    try:
        action(target)
    except ServiceError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, success.format(name=target.user.get_full_name()))
    return redirect("accounts:team")


@require_permission(roles.MEMBERS_MANAGE)
@require_POST
def member_role(request, public_id):
    form = RoleForm(request.POST, kind=request.membership.organization.kind)
    if not form.is_valid():
        messages.error(request, "Choose one of the roles offered.")
        return redirect("accounts:team")
    role = form.cleaned_data["role"]
    return _member_action(
        request, public_id,
        lambda target: services.change_role(request.membership, target, role),
        "{name} is now " + dict(roles.role_choices(request.membership.organization.kind))[role]
        + ".")


@require_permission(roles.MEMBERS_MANAGE)
@require_POST
def member_deactivate(request, public_id):
    return _member_action(
        request, public_id,
        lambda target: services.deactivate_member(request.membership, target),
        "{name} no longer has access.")


@require_permission(roles.MEMBERS_MANAGE)
@require_POST
def invitation_revoke(request, public_id):
    invitation = get_object_for(request.membership, Invitation, public_id)
    try:
        services.revoke_invitation(request.membership, invitation)
    except ServiceError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Invitation to {invitation.email} revoked.")
    return redirect("accounts:team")


def accept_invitation(request, token):
    """Open to anyone holding the link: logged-in invitees accept; new people sign up here;
    existing accounts are asked to log in first."""
    invitation = find_invitation(token)
    try:
        check_invitation_usable(invitation)
    except ServiceError as exc:
        return render(request, "accounts/invitation_invalid.html", {"error": exc.message},
                      status=400)
    has_account = User.objects.filter(email=invitation.email).exists()
    context = {"invitation": invitation,
               "role": roles.role_for(invitation.organization.kind, invitation.role),
               "has_account": has_account}
    if request.user.is_authenticated:
        if request.method == "POST":
            return _accept(request, token)
        return render(request, "accounts/invitation_accept.html", context)
    if has_account:
        return render(request, "accounts/invitation_accept.html", context)
    form = SignupForInvitationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            user = User.objects.create_user(email=invitation.email,
                                            password=form.cleaned_data["password"],
                                            full_name=form.cleaned_data["full_name"])
            try:
                membership = services.accept_invitation(user, token)
            except ServiceError as exc:
                transaction.set_rollback(True)
                return render(request, "accounts/invitation_invalid.html",
                              {"error": exc.message}, status=400)
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        request.session["active_membership"] = str(membership.public_id)
        messages.success(request, f"Welcome to {invitation.organization.name}.")
        return redirect("home")
    context["form"] = form
    return render(request, "accounts/invitation_accept.html", context)


def _accept(request, token):
    try:
        membership = services.accept_invitation(request.user, token)
    except ServiceError as exc:
        return render(request, "accounts/invitation_invalid.html", {"error": exc.message},
                      status=400)
    request.session["active_membership"] = str(membership.public_id)
    messages.success(request, f"You joined {membership.organization.name}.")
    return redirect("home")
