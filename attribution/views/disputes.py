"""Dispute pages: the queue (/disputes/), one dispute with its thread, evidence and the actions
each role may take there, the partner's form (from a referral) and the vendor's (from an
attribution), the referral page's dispute panel, and evidence downloads — only through a view
that checks the dispute is visible, never a public media URL.

What partners read is built here as plain values (`Row`, `credited_line`), so no template can
reach another partner's name."""

from dataclasses import dataclass
from datetime import datetime

from django.contrib import messages
from django.core.exceptions import ObjectDoesNotExist, ValidationError
from django.http import FileResponse, Http404
from django.shortcuts import redirect, render
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from accounts import roles
from accounts.decorators import membership_required, require_permission
from accounts.errors import PermissionDenied, ServiceError
from accounts.models import Membership, Organization
from accounts.permissions import can, get_object_for, permissions_of
from attribution import dispute_subjects, disputes
from attribution.forms import (
    DisputeFilterForm,
    MessageForm,
    PartnerDisputeForm,
    ReassignForm,
    ResolveForm,
    ResponseForm,
    VendorDisputeForm,
    WithdrawForm,
)
from attribution.models import Attribution, AttributionCandidate, Dispute
from attribution.querysets import dispute_scope
from partnerhub.pagination import paginate, querystring_without_page
from referrals.models import Enrolment, Referral

COUNT_AHEAD = 1000
_RELATED = ("vendor", "partner", "opened_by_org", "opened_by", "referral",
            "referral__program", "referral__submitted_by", "attribution",
            "attribution__snapshot", "attribution__referral", "attribution__partner",
            "assigned_to__user", "decided_by")
CATEGORY_LABELS = dict(Dispute.CATEGORIES)
STATUS_LABELS = dict(Dispute.STATUSES)


def get_dispute(request, public_id) -> Dispute:
    queryset = Dispute.objects.select_related(*_RELATED)
    return get_object_for(request.membership, queryset, public_id)


def _subject(dispute) -> str:
    if dispute.referral_id:
        return dispute.referral.company_name
    snapshot = dispute.attribution.snapshot
    return snapshot.account_name or dispute.attribution.external_deal_id


def credited_line(membership, dispute) -> str | None:
    """Who the deal is credited to now, in words this viewer may read."""
    attribution = dispute.attribution
    if attribution is None:
        return None
    if membership.organization.kind == roles.PARTNER:
        if attribution.referral_id and attribution.referral_id == dispute.referral_id:
            return "Your referral"
        if attribution.partner_id == membership.organization_id:
            return "Another registration of your organization"
        return "Another partner" if attribution.partner_id else "No one"
    if not attribution.partner_id:
        return "No one"
    referral = attribution.referral
    return f"{attribution.partner.name}" + (f" · {referral.company_name}" if referral else "")


def attribution_url(attribution) -> str | None:
    if attribution is None:
        return None
    try:
        return reverse("attribution:detail", args=[attribution.public_id])
    except NoReverseMatch:  # the attribution pages are not installed
        return None


# --- the queue -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Row:
    public_id: str
    subject: str
    vendor_name: str
    partner_name: str  # empty for partner viewers
    side: str
    category: str
    status: str
    status_label: str
    opened_at: datetime
    sla_due_at: datetime
    overdue: bool
    assigned_to: str


def _row(membership, d: Dispute, now) -> Row:
    partner_view = membership.organization.kind == roles.PARTNER
    return Row(
        public_id=str(d.public_id), subject=_subject(d), vendor_name=d.vendor.name,
        partner_name="" if partner_view else (d.partner.name if d.partner_id else "–"),
        side=d.get_side_display(), category=CATEGORY_LABELS[d.category], status=d.status,
        status_label=d.get_status_display(), opened_at=d.created_at, sla_due_at=d.sla_due_at,
        overdue=d.is_pending and d.sla_due_at < now,
        assigned_to=d.assigned_to.user.get_full_name() if d.assigned_to_id else "")


def _vendor_choices(membership):
    kind = membership.organization.kind
    if kind == roles.VENDOR:
        return None
    if kind == roles.PARTNER:
        vendor_ids = Enrolment.objects.filter(partner_id=membership.organization_id) \
            .values("program__vendor_id")
        return Organization.objects.filter(pk__in=vendor_ids).order_by("name")
    return Organization.objects.visible_to(membership).filter(kind=roles.VENDOR) \
        .order_by("name")


@membership_required
@require_GET
def dispute_queue(request):
    """The disputes in the viewer's scope, soonest due first: the channel manager's queue,
    and each participant's own list."""
    membership = request.membership
    if dispute_scope(membership) is None:
        raise Http404
    resolver = roles.DISPUTE_RESOLVE in permissions_of(membership)
    form = DisputeFilterForm(request.GET or None, vendors=_vendor_choices(membership),
                             assignable=resolver)
    queryset = Dispute.objects.visible_to(membership)
    if form.is_bound and not form.is_valid():
        queryset = queryset.none()  # an unreadable filter never widens the list
    else:
        d = form.cleaned_data if form.is_bound else {}
        status = d.get("status", "")
        if status == "":
            queryset = queryset.pending()
        elif status != "all":
            queryset = queryset.filter(status=status)
        if d.get("vendor"):
            queryset = queryset.filter(vendor__public_id=d["vendor"])
        if d.get("overdue"):
            queryset = queryset.overdue()
        if d.get("mine"):
            queryset = queryset.filter(assigned_to=membership)
    queryset = (queryset.select_related("vendor", "partner", "referral", "attribution__snapshot",
                                        "assigned_to__user")
                .order_by("sla_due_at", "pk"))
    page = paginate(request, queryset, count_ahead=COUNT_AHEAD)
    now = timezone.now()
    return render(request, "attribution/disputes/queue.html", {
        "form": form, "page": page, "rows": [_row(membership, d, now) for d in page],
        "querystring": querystring_without_page(request),
        "kind": membership.organization.kind, "resolver": resolver,
        "sla_days": disputes.SLA_BUSINESS_DAYS,
    })


# --- one dispute ---------------------------------------------------------------------------

def _actions(membership, dispute) -> dict:
    """What this member may do here. The dispute came through visible_to, so a permission of
    the role is a permission on this dispute."""
    perms = permissions_of(membership)
    pending = dispute.is_pending
    resolver = roles.DISPUTE_RESOLVE in perms
    participant = disputes.participant_permission(membership, dispute)
    return {
        "respond": (dispute.side == Dispute.PARTNER and dispute.status == Dispute.OPEN
                    and roles.DISPUTE_RESPOND in perms),
        "post": pending and participant is not None and participant in perms,
        "review": (dispute.status in (Dispute.OPEN, Dispute.VENDOR_RESPONDED) and resolver
                   and disputes.may_take_over(membership, dispute)),
        "resolve": (dispute.status == Dispute.UNDER_REVIEW and resolver
                    and disputes.may_take_over(membership, dispute)),
        "reassign": pending and resolver and roles.PORTFOLIO_MANAGE in perms,
        "withdraw": (pending and disputes.is_disputing_side(membership, dispute)
                     and (roles.DISPUTE_OPEN if dispute.side == Dispute.PARTNER
                          else roles.DISPUTE_RESPOND) in perms),
    }


def _candidates(dispute):
    rows = (AttributionCandidate.objects.filter(attribution_id=dispute.attribution_id)
            .select_related("referral", "partner").order_by("partner__name", "pk"))
    return [(str(c.referral.public_id),
             f"{c.partner.name} · {c.referral.company_name} ({c.match}: {c.reason})")
            for c in rows]


def _managers(dispute):
    """Channel managers (and admins) of the network who could decide this dispute."""
    names = roles.role_names_with(roles.OPERATOR, roles.DISPUTE_RESOLVE)
    members = (Membership.objects.filter(
        organization__network_id=dispute.network_id, organization__kind=roles.OPERATOR,
        status=Membership.ACTIVE, role__in=names)
        .select_related("user", "organization").order_by("user__full_name"))
    return [m for m in members if can(m, roles.DISPUTE_RESOLVE, dispute)]


def _detail(request, dispute, status=200, **forms):
    membership = request.membership
    actions = _actions(membership, dispute)
    if actions["resolve"] and "resolve_form" not in forms:
        vendor_claim = dispute.side == Dispute.VENDOR and dispute.attribution_id
        forms["resolve_form"] = ResolveForm(
            candidates=_candidates(dispute) if vendor_claim else None)
    if actions["reassign"] and "reassign_form" not in forms:
        forms["reassign_form"] = ReassignForm(managers=_managers(dispute))
    context = {
        "dispute": dispute, "kind": membership.organization.kind, "actions": actions,
        "subject": _subject(dispute), "category": CATEGORY_LABELS[dispute.category],
        "credited": credited_line(membership, dispute),
        "attribution_url": attribution_url(dispute.attribution),
        "thread": dispute.messages.select_related("author", "author_organization"),
        "evidence": dispute.evidence.select_related("organization", "uploaded_by"),
        "response_form": forms.get("response_form") or ResponseForm(),
        "message_form": forms.get("message_form") or MessageForm(),
        "withdraw_form": WithdrawForm(),
        "resolve_form": forms.get("resolve_form"),
        "reassign_form": forms.get("reassign_form"),
        "is_disputer": disputes.is_disputing_side(membership, dispute),
    }
    return render(request, "attribution/disputes/detail.html", context, status=status)


@membership_required
@require_GET
def dispute_detail(request, public_id):
    return _detail(request, get_dispute(request, public_id))


def _act(request, dispute, action, success, form=None, form_name=None):
    """Run one service; field errors go back to the form on the page, others to a flash."""
    try:
        action()
    except PermissionDenied:
        raise Http404 from None
    except ServiceError as exc:
        if form is not None and exc.field and exc.field in form.fields:
            form.add_error(exc.field, exc.message)
            return _detail(request, dispute, status=400, **{form_name: form})
        messages.error(request, exc.message)
    else:
        messages.success(request, success)
    return redirect("attribution:dispute_detail", dispute.public_id)


def _require(request, dispute, permission):
    """The dispute is visible (it came through visible_to); the role must also grant the
    action, or the page does not exist for it."""
    if permission is None or permission not in permissions_of(request.membership):
        raise Http404


def _invalid(request, dispute, form_name, form):
    return _detail(request, dispute, status=400, **{form_name: form})


@membership_required
@require_POST
def dispute_respond(request, public_id):
    dispute = get_dispute(request, public_id)
    _require(request, dispute, roles.DISPUTE_RESPOND)
    form = ResponseForm(request.POST, request.FILES)
    if not form.is_valid():
        return _invalid(request, dispute, "response_form", form)
    return _act(request, dispute, lambda: disputes.vendor_respond(
        request.membership, dispute, form.cleaned_data["text"], form.cleaned_data["files"]),
        "Response sent.", form, "response_form")


@membership_required
@require_POST
def dispute_message(request, public_id):
    dispute = get_dispute(request, public_id)
    _require(request, dispute, disputes.participant_permission(request.membership, dispute))
    form = MessageForm(request.POST, request.FILES)
    if not form.is_valid():
        return _invalid(request, dispute, "message_form", form)
    return _act(request, dispute, lambda: disputes.post_message(
        request.membership, dispute, form.cleaned_data["body"], form.cleaned_data["files"]),
        "Message sent.", form, "message_form")


@membership_required
@require_POST
def dispute_review(request, public_id):
    dispute = get_dispute(request, public_id)
    _require(request, dispute, roles.DISPUTE_RESOLVE)
    return _act(request, dispute,
                lambda: disputes.take_under_review(request.membership, dispute),
                "The dispute is under your review.")


@membership_required
@require_POST
def dispute_reassign(request, public_id):
    dispute = get_dispute(request, public_id)
    _require(request, dispute, roles.DISPUTE_RESOLVE)
    _require(request, dispute, roles.PORTFOLIO_MANAGE)
    managers = _managers(dispute)
    form = ReassignForm(request.POST, managers=managers)
    if not form.is_valid():
        return _invalid(request, dispute, "reassign_form", form)
    chosen = next(m for m in managers if str(m.public_id) == form.cleaned_data["channel_manager"])
    return _act(request, dispute, lambda: disputes.reassign(request.membership, dispute, chosen),
                f"Assigned to {chosen.user.get_full_name()}.", form, "reassign_form")


@membership_required
@require_POST
def dispute_resolve(request, public_id):
    dispute = get_dispute(request, public_id)
    _require(request, dispute, roles.DISPUTE_RESOLVE)
    vendor_claim = dispute.side == Dispute.VENDOR and dispute.attribution_id
    form = ResolveForm(request.POST, candidates=_candidates(dispute) if vendor_claim else None)
    if not form.is_valid():
        return _invalid(request, dispute, "resolve_form", form)
    d = form.cleaned_data
    outcome = d["outcome"]
    return _act(request, dispute, lambda: disputes.resolve(
        request.membership, dispute, outcome, d["resolution"], d.get("new_referral") or None),
        "Upheld." if outcome == Dispute.UPHELD else "Overturned: the outcome stands.",
        form, "resolve_form")


@membership_required
@require_POST
def dispute_withdraw(request, public_id):
    dispute = get_dispute(request, public_id)
    if not disputes.is_disputing_side(request.membership, dispute):
        raise Http404
    _require(request, dispute, roles.DISPUTE_OPEN if dispute.side == Dispute.PARTNER
             else roles.DISPUTE_RESPOND)
    form = WithdrawForm(request.POST)
    if not form.is_valid():  # the reason is part of the record: never withdraw without it
        messages.error(request, "Not withdrawn: " + " ".join(form.errors["reason"]))
        return redirect("attribution:dispute_detail", dispute.public_id)
    return _act(request, dispute, lambda: disputes.withdraw(
        request.membership, dispute, form.cleaned_data["reason"]), "Withdrawn.")


@membership_required
@require_GET
def dispute_evidence(request, public_id, evidence_id):
    """A file of a dispute the viewer may see, as a download (never rendered inline)."""
    dispute = get_dispute(request, public_id)
    try:
        evidence = dispute.evidence.get(public_id=evidence_id)
        handle = evidence.file.open("rb")
    except (ObjectDoesNotExist, ValidationError, FileNotFoundError):
        raise Http404 from None
    response = FileResponse(handle, as_attachment=True, filename=evidence.name,
                            content_type=evidence.content_type)
    response["Cache-Control"] = "private, no-store"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return response


# --- opening one ---------------------------------------------------------------------------

def _opened(request, dispute):
    due = timezone.localtime(dispute.sla_due_at)
    messages.success(request, f"Your dispute is open. The network aims to decide it by "
                              f"{due:%-d %B %Y}.")
    return redirect("attribution:dispute_detail", dispute.public_id)


@require_permission(roles.DISPUTE_OPEN)
def dispute_open_partner(request, public_id):
    """"Dispute this" from a referral: the attributions it lost and its rejection or expiry,
    whichever are still inside the dispute window."""
    membership = request.membership
    referral = get_object_for(
        membership, Referral.objects.select_related("program", "vendor", "partner"), public_id,
        action=roles.DISPUTE_OPEN)
    subjects = dispute_subjects.partner_subjects(referral)
    form = PartnerDisputeForm(request.POST or None, request.FILES or None, subjects=subjects)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            attribution, category = form.chosen()
            try:
                dispute = disputes.open_partner_dispute(
                    membership, referral, category, form.cleaned_data["text"],
                    form.cleaned_data["files"], attribution=attribution)
            except PermissionDenied:
                raise Http404 from None
            except ServiceError as exc:
                field = exc.field if exc.field in form.fields else None
                form.add_error(field if field != "category" else "subject", exc.message)
            else:
                return _opened(request, dispute)
        status = 400
    return render(request, "attribution/disputes/open_partner.html", {
        "referral": referral, "form": form, "blocked": [s for s in subjects if not s.open],
        "can_open": bool(form.fields["subject"].choices),
        "disputes": Dispute.objects.visible_to(membership).filter(referral=referral)
        .order_by("-created_at")[:20],
    }, status=status)


@require_permission(roles.DISPUTE_RESPOND)
def dispute_open_vendor(request, public_id):
    """The vendor disputes an automatic attribution of its deal."""
    membership = request.membership
    attribution = get_object_for(
        membership, Attribution.objects.select_related("snapshot", "referral", "partner",
                                                       "referral__program"),
        public_id, action=roles.DISPUTE_RESPOND)
    if membership.organization_id != attribution.vendor_id:
        raise Http404
    form = VendorDisputeForm(request.POST or None, request.FILES or None)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            d = form.cleaned_data
            try:
                dispute = disputes.open_vendor_dispute(membership, attribution, d["category"],
                                                       d["text"], d["files"])
            except PermissionDenied:
                raise Http404 from None
            except ServiceError as exc:
                form.add_error(exc.field if exc.field in form.fields else None, exc.message)
            else:
                return _opened(request, dispute)
        status = 400
    deadline = dispute_subjects.dispute_deadline(attribution)
    return render(request, "attribution/disputes/open_vendor.html", {
        "attribution": attribution, "form": form, "deadline": deadline,
        "window_open": timezone.now() <= deadline,
        "decided": attribution.status in Attribution.HUMAN_DECIDED,
        "attribution_url": attribution_url(attribution),
    }, status=status)


@require_permission(roles.REFERRAL_VIEW)
@require_GET
def referral_disputes(request, public_id):
    """The referral page's dispute panel (an htmx partial): this referral's disputes the
    viewer may see, and "Dispute this" while something can still be disputed."""
    membership = request.membership
    referral = get_object_for(membership, Referral.objects.select_related("program"),
                              public_id, action=roles.REFERRAL_VIEW)
    rows = list(Dispute.objects.visible_to(membership).filter(referral=referral)
                .select_related("vendor", "partner", "referral", "attribution__snapshot",
                                "assigned_to__user").order_by("-created_at")[:20])
    may_open = can(membership, roles.DISPUTE_OPEN, referral)
    subjects = dispute_subjects.partner_subjects(referral) if may_open else []
    now = timezone.now()
    return render(request, "attribution/disputes/partials/referral_panel.html", {
        "referral": referral, "rows": [_row(membership, d, now) for d in rows],
        "can_open": any(s.open for s in subjects),
        "deadline": min((s.deadline for s in subjects if s.open), default=None),
    })
