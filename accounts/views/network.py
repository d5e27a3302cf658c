"""Operator pages: organization directory, portfolios, user lookup, network settings."""

from django.contrib import messages
from django.db.models import Count, Q
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from accounts import roles, services, twofactor
from accounts.decorators import require_permission
from accounts.errors import ServiceError
from accounts.forms import (
    LookupForm,
    NetworkSettingsForm,
    OrganizationFilterForm,
    PortfolioAssignForm,
)
from accounts.models import Membership, Organization, OrganizationPortfolioGrant, User
from accounts.permissions import can, get_object_for
from accounts.services.portfolio import channel_managers
from partnerhub.pagination import paginate, querystring_without_page


@require_permission(roles.ORGANIZATION_VIEW)
def organizations(request):
    form = OrganizationFilterForm(request.GET or None)
    queryset = Organization.objects.visible_to(request.membership)
    if form.is_valid():
        data = form.cleaned_data
        if data["q"]:
            queryset = queryset.filter(Q(name__icontains=data["q"])
                                       | Q(website_domain__icontains=data["q"]))
        if data["kind"]:
            queryset = queryset.filter(kind=data["kind"])
        if data["status"]:
            queryset = queryset.filter(status=data["status"])
    queryset = queryset.annotate(
        member_count=Count("memberships", filter=Q(memberships__status=Membership.ACTIVE))
    ).order_by("kind", "name")
    return render(request, "accounts/organizations.html", {
        "form": form, "page": paginate(request, queryset),
        "querystring": querystring_without_page(request),
    })


@require_permission(roles.ORGANIZATION_VIEW)
def organization_detail(request, public_id):
    membership = request.membership
    org = get_object_for(membership, Organization, public_id)
    members = (
        Membership.objects.visible_to(membership).filter(organization=org)
        .select_related("user", "organization").order_by("status", "user__full_name")
    )
    context = {"org": org, "page": paginate(request, members)}
    if can(membership, roles.NETWORK_MANAGE):  # an operator admin may reset anyone's 2FA
        context["two_factor"] = True
        enrolled = twofactor.enrolled_user_ids(m.user_id for m in context["page"].object_list)
        for m in context["page"].object_list:
            m.two_factor_on = m.user_id in enrolled
            # Listed through visible_to, so within the admin's network: only oneself is out.
            m.two_factor_resettable = m.two_factor_on and m.user_id != membership.user_id
    if can(membership, roles.PORTFOLIO_MANAGE, org) and org.kind != roles.OPERATOR:
        managers = list(channel_managers(membership.organization.network_id))
        assigned_user_ids = set(
            OrganizationPortfolioGrant.objects.filter(content_object=org)
            .values_list("user_id", flat=True)
        )
        context["assigned_managers"] = [m for m in managers if m.user_id in assigned_user_ids]
        available = [m for m in managers if m.user_id not in assigned_user_ids]
        context["portfolio_form"] = PortfolioAssignForm(managers=available) if available else None
    return render(request, "accounts/organization_detail.html", context)


def _portfolio_change(request, public_id, change, verb):
    membership = request.membership
    org = get_object_for(membership, Organization, public_id)
    managers = channel_managers(membership.organization.network_id)
    manager = managers.filter(public_id=request.POST.get("channel_manager") or None).first() \
        if _is_uuid(request.POST.get("channel_manager")) else None
    if manager is None:
        messages.error(request, "Choose a channel manager.")
        return redirect("accounts:organization_detail", public_id)
    try:
        change(membership, manager, org)
    except ServiceError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"{org.name} {verb} {manager.user.get_full_name()}'s portfolio.")
    return redirect("accounts:organization_detail", public_id)


def _is_uuid(value) -> bool:
    import uuid

    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


@require_permission(roles.PORTFOLIO_MANAGE)
@require_POST
def portfolio_add(request, public_id):
    return _portfolio_change(request, public_id, services.add_to_portfolio, "added to")


@require_permission(roles.PORTFOLIO_MANAGE)
@require_POST
def portfolio_remove(request, public_id):
    return _portfolio_change(request, public_id, services.remove_from_portfolio, "removed from")


@require_permission(roles.USERS_LOOKUP)
def user_lookup(request):
    """Support's "why can't I see X?": users, their memberships and roles. No money, no
    customer contact details live here."""
    form = LookupForm(request.GET or None)
    q = form.cleaned_data["q"].strip() if form.is_valid() else ""
    memberships = Membership.objects.none()
    if q:
        memberships = (
            Membership.objects.visible_to(request.membership)
            .filter(Q(user__email__icontains=q) | Q(user__full_name__icontains=q)
                    | Q(organization__name__icontains=q))
            .select_related("user", "organization")
            .order_by("user__email", "organization__name")
        )
    page = paginate(request, memberships)
    for m in page.object_list:
        m.role_label = m.role_def.label
        m.role_description = m.role_def.description
        m.scope = m.role_def.scope
    return render(request, "accounts/user_lookup.html", {
        "form": form, "q": q, "page": page, "querystring": querystring_without_page(request),
        "user_count": User.objects.filter(
            memberships__organization__network=request.network).distinct().count() if not q
        else None,
    })


@require_permission(roles.NETWORK_MANAGE)
def network_settings(request):
    network = request.membership.organization.network
    form = NetworkSettingsForm(request.POST or None, initial={
        "name": network.name,
        "auto_approve_matching_domains": network.auto_approve_matching_domains,
        "two_factor_policy": network.two_factor_policy,
    })
    if request.method == "POST" and form.is_valid():
        services.update_network_settings(request.membership, **form.cleaned_data)
        messages.success(request, "Network settings saved.")
        return redirect("accounts:network_settings")
    return render(request, "accounts/network_settings.html", {"form": form, "network": network})
