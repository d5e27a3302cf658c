from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.db.models import BooleanField, Count, Exists, ExpressionWrapper, OuterRef, Q
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from accounts import roles, services
from accounts.decorators import require_permission
from accounts.errors import ServiceError
from accounts.forms import ApplicationForm, RejectForm
from accounts.models import Membership, Organization, normalize_email
from accounts.permissions import get_object_for
from accounts.services.onboarding import Application
from partnerhub.domains import email_domain, is_free_mail
from partnerhub.pagination import paginate

APPLY_KINDS = {"partner": roles.PARTNER, "vendor": roles.VENDOR}


def apply(request, kind):
    if kind not in APPLY_KINDS:
        raise Http404
    if request.network is None:
        raise Http404
    form = ApplicationForm(request.POST or None, kind=kind)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            org = services.apply_for_organization(
                request.network,
                Application(
                    kind=kind,
                    company_name=data["company_name"],
                    website=data["website"],
                    country=data["country"],
                    partner_type=data.get("partner_type", ""),
                    full_name=data["full_name"],
                    email=data["email"],
                    password=data["password"],
                ),
            )
        except ServiceError as exc:
            form.add_error(exc.field, exc.message)
        else:
            # The same answer whether or not the email or the domain was already known (then
            # `org` is None and the news went by email): nobody is logged in here. The
            # verification link logs the applicant in, in this browser only.
            request.session["applied_email"] = normalize_email(data["email"])
            request.session["applied_user"] = (
                str(org.memberships.get().user.public_id) if org is not None else "")
            return redirect("accounts:apply_done")
    return render(request, "accounts/apply.html", {"form": form, "kind": kind})


def apply_done(request):
    return render(request, "accounts/apply_done.html",
                  {"email": request.session.get("applied_email", "")})


def verify_email(request, token):
    try:
        user = services.verify_email(token)
    except ServiceError as exc:
        return render(request, "accounts/verify_failed.html", {"error": exc.message}, status=400)
    applied = request.session.get("applied_user")
    if not request.user.is_authenticated and applied and applied == str(user.public_id):
        # The browser that applied follows its own link: the link proves the mailbox, the
        # session proves it is the applicant (the link alone never logs anyone in).
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        request.session.pop("applied_user", None)
    messages.success(request, f"Thanks, {user.get_short_name()}: your email is verified.")
    return redirect("home" if request.user.is_authenticated else "login")


@login_required
@require_POST
def resend_verification(request):
    from accounts.services.onboarding import resend_verification as resend

    if resend(request.user):
        messages.success(request, f"We sent a new verification link to {request.user.email}.")
    else:
        messages.warning(request, "A link was sent less than a minute ago, or there is nothing "
                                  "left to verify. Check your inbox and spam folder.")
    return redirect("home")


def _applications(membership):
    return Organization.objects.visible_to(membership).exclude(kind=roles.OPERATOR)


def _with_evidence(queryset):
    """Annotate what a reviewer needs to judge an application, in the same query."""
    same_domain = Organization.objects.filter(
        network_id=OuterRef("network_id"), website_domain=OuterRef("website_domain")
    ).exclude(pk=OuterRef("pk")).exclude(website_domain="")
    return queryset.annotate(duplicate_domain=Exists(same_domain)).select_related("network")


def _owner_of(org):
    owner = next((m for m in org.owner_memberships if m.role == roles.OWNER_ROLE[org.kind]), None)
    return owner.user if owner else None


def _attach_owner(orgs):
    for org in orgs:
        org.applicant = _owner_of(org)
        email = org.applicant.email if org.applicant else ""
        org.email_domain = email_domain(email)
        org.free_mail = is_free_mail(email)
        org.domain_matches = bool(email) and org.email_domain == org.website_domain
    return orgs


def _prefetch_owners(queryset):
    from django.db.models import Prefetch

    return queryset.prefetch_related(
        Prefetch(
            "memberships",
            queryset=Membership.objects.filter(role__in=set(roles.OWNER_ROLE.values()))
            .select_related("user").order_by("pk"),
            to_attr="owner_memberships",
        )
    )


@require_permission(roles.APPLICATIONS_REVIEW)
def application_queue(request):
    view = request.GET.get("view", "pending")
    base = _applications(request.membership)
    if view == "auto":
        queryset = base.filter(auto_approved=True, auto_approval_reviewed_at__isnull=True)
        queryset = queryset.order_by("-approved_at")
    elif view == "decided":
        queryset = base.filter(status__in=[Organization.ACTIVE, Organization.REJECTED],
                               applied_at__isnull=False).order_by("-approved_at", "-rejected_at")
    else:
        view = "pending"
        # Verified applications first (they can be decided now), oldest first.
        queryset = base.filter(status=Organization.PENDING).annotate(
            unverified=ExpressionWrapper(Q(verified_at__isnull=True),
                                         output_field=BooleanField())
        ).order_by("unverified", "applied_at")
    page = paginate(request, _prefetch_owners(_with_evidence(queryset)))
    _attach_owner(page.object_list)
    counts = base.aggregate(
        pending=Count("pk", filter=Q(status=Organization.PENDING)),
        auto=Count("pk", filter=Q(auto_approved=True, auto_approval_reviewed_at__isnull=True)),
    )
    return render(request, "accounts/application_queue.html",
                  {"page": page, "view": view, "counts": counts})


@require_permission(roles.APPLICATIONS_REVIEW)
def application_detail(request, public_id):
    queryset = _prefetch_owners(_with_evidence(_applications(request.membership)))
    org = get_object_for(request.membership, queryset, public_id)
    _attach_owner([org])
    return render(request, "accounts/application_detail.html", {
        "org": org, "duplicates": _duplicates(request.membership, org),
        "reject_form": RejectForm(),
    })


def _duplicates(membership, org):
    return (
        Organization.objects.visible_to(membership)
        .filter(Q(website_domain=org.website_domain) | Q(name__iexact=org.name))
        .exclude(pk=org.pk).exclude(website_domain="")[:10]
    )


def _review_action(request, public_id, action):
    org = get_object_for(request.membership, _applications(request.membership), public_id)
    try:
        action(org)
    except ServiceError as exc:
        messages.error(request, exc.message)
        return None
    return org


@require_permission(roles.APPLICATIONS_REVIEW)
@require_POST
def application_approve(request, public_id):
    org = _review_action(request, public_id,
                         lambda o: services.approve_application(request.membership, o))
    if org:
        messages.success(request, f"{org.name} is approved and has been told by email.")
        return redirect("accounts:application_queue")
    return redirect("accounts:application_detail", public_id)


@require_permission(roles.APPLICATIONS_REVIEW)
@require_POST
def application_reject(request, public_id):
    form = RejectForm(request.POST)
    if not form.is_valid():
        queryset = _prefetch_owners(_with_evidence(_applications(request.membership)))
        org = get_object_for(request.membership, queryset, public_id)
        _attach_owner([org])
        return render(request, "accounts/application_detail.html",
                      {"org": org, "duplicates": _duplicates(request.membership, org),
                       "reject_form": form}, status=400)
    org = _review_action(
        request, public_id,
        lambda o: services.reject_application(request.membership, o, form.reason_text()))
    if org:
        messages.success(request, f"{org.name} was rejected; the applicant has been told why.")
        return redirect("accounts:application_queue")
    return redirect("accounts:application_detail", public_id)


@require_permission(roles.APPLICATIONS_REVIEW)
@require_POST
def application_confirm(request, public_id):
    org = _review_action(request, public_id,
                         lambda o: services.confirm_auto_approval(request.membership, o))
    if org:
        messages.success(request, f"Auto-approval of {org.name} confirmed.")
    return redirect(reverse("accounts:application_queue") + "?view=auto")
