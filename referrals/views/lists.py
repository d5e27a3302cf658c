"""Referral lists: partners' "My referrals", vendors' "Inbound", operators' "In my scope", and
the CSV export of the same filtered list."""

import csv
import uuid
from datetime import datetime, time, timedelta

from django.db.models import F, Q
from django.http import StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone

from accounts import roles
from accounts.decorators import require_permission
from accounts.models import Organization
from partnerhub.csvutil import Echo, safe_cell
from partnerhub.money import format_money, to_minor
from partnerhub.pagination import paginate, querystring_without_page
from referrals.forms import ReferralFilterForm
from referrals.models import Enrolment, Program, Referral

EXPORT_LIMIT = 200_000
# Lists count rows only this far past the start of the page (40 pages of 25): a longer list
# says "Page N of many" instead of paying for a COUNT(*) over all of it.
COUNT_AHEAD = 1000


def list_title(membership) -> str:
    kind, scope = membership.organization.kind, membership.role_def.scope
    if kind == roles.PARTNER:
        return "My referrals" if scope == roles.OWN else "Our referrals"
    if kind == roles.VENDOR:
        return "Assigned to me" if scope == roles.ASSIGNED else "Inbound referrals"
    return "Referrals in my scope" if scope == roles.PORTFOLIO else "Referrals"


def _counterparts(membership):
    """The organizations the counterpart filter offers (bounded, indexed queries)."""
    kind = membership.organization.kind
    if kind == roles.VENDOR:
        partner_ids = Enrolment.objects.filter(program__vendor_id=membership.organization_id) \
            .values("partner_id")
        return "Partner", Organization.objects.filter(pk__in=partner_ids).order_by("name")
    vendor_ids = Program.objects.visible_to(membership).values("vendor_id")
    return "Vendor", Organization.objects.filter(pk__in=vendor_ids).order_by("name")


def filtered_referrals(request):
    membership = request.membership
    label, counterparts = _counterparts(membership)
    is_vendor = membership.organization.kind == roles.VENDOR
    form = ReferralFilterForm(request.GET or None, counterpart_label=label,
                              counterparts=counterparts, triage=is_vendor)
    queryset = Referral.objects.visible_to(membership)
    sort = "-created_at" if not is_vendor else None
    if form.is_bound and not form.is_valid():
        return form, queryset.none()  # an unreadable filter never widens the list
    if form.is_valid():
        d = form.cleaned_data
        if d["q"]:
            q = d["q"].strip()
            queryset = queryset.filter(Q(company_name__icontains=q)
                                       | Q(domain__startswith=q.lower()))
        if d["status"]:
            queryset = queryset.filter(status=d["status"])
        if d["counterpart"]:
            field = "partner__public_id" if label == "Partner" else "vendor__public_id"
            queryset = queryset.filter(**{field: d["counterpart"]})
        if d["conflict"]:
            queryset = queryset.filter(conflict=d["conflict"] == "yes")
        tz = timezone.get_current_timezone()
        if d["since"]:
            queryset = queryset.filter(
                submitted_at__gte=datetime.combine(d["since"], time.min, tz))
        if d["until"]:
            queryset = queryset.filter(submitted_at__lt=datetime.combine(
                d["until"] + timedelta(days=1), time.min, tz))
        if d["min_value"] is not None:
            queryset = queryset.filter(amount_minor__gte=to_minor(d["min_value"], "USD"))
        if d["max_value"] is not None:
            queryset = queryset.filter(amount_minor__lte=to_minor(d["max_value"], "USD"))
        sort = d["sort"] or sort
    if sort:
        name = sort.lstrip("-")
        field = F(name)
        # Unknown values go last only for the deal value (its indexes say NULLS LAST); a draft's
        # empty submission date sorts like PostgreSQL's indexes do, so they serve every order.
        nulls_last = True if name == "amount_minor" else None
        expr = field.desc(nulls_last=nulls_last) if sort.startswith("-") \
            else field.asc(nulls_last=nulls_last)
        queryset = queryset.order_by(expr, "-pk")
    else:
        # The vendor's triage order: conflicts first, then oldest first.
        queryset = queryset.order_by("-conflict", F("submitted_at").asc(nulls_last=True), "pk")
    return form, queryset


@require_permission(roles.REFERRAL_VIEW)
def referral_list(request):
    membership = request.membership
    form, queryset = filtered_referrals(request)
    queryset = queryset.select_related("vendor", "partner", "submitted_by", "program")
    if membership.organization.kind == roles.VENDOR:
        queryset = queryset.prefetch_related("assignments__user")
    page = paginate(request, queryset, count_ahead=COUNT_AHEAD)
    return render(request, "referrals/list.html", {
        "form": form, "page": page, "title": list_title(membership),
        "querystring": querystring_without_page(request),
        "kind": membership.organization.kind,
        "can_submit": roles.REFERRAL_SUBMIT in membership.role_def.permissions,
        "can_bulk": roles.REFERRAL_ACCEPT in membership.role_def.permissions,
        "reject_reasons": Referral.REJECTION_REASONS,
    })


def export_columns(membership):
    base = [
        ("id", lambda r: r.public_id), ("status", lambda r: r.status),
        ("company", lambda r: r.company_name), ("domain", lambda r: r.domain),
        ("country", lambda r: r.country.code if r.country else ""),
        ("vendor", lambda r: r.vendor.name), ("partner", lambda r: r.partner.name),
        ("program", lambda r: r.program.name),
        ("amount", lambda r: format_money(r.amount_minor, r.currency)
         if r.amount_minor is not None else ""),
        ("amount_minor", lambda r: r.amount_minor if r.amount_minor is not None else ""),
        ("currency", lambda r: r.currency),
        ("expected_close", lambda r: r.expected_close or ""),
        ("conflict", lambda r: "yes" if r.conflict else "no"),
        ("submitted_at", lambda r: r.submitted_at.isoformat() if r.submitted_at else ""),
        ("protected_until",
         lambda r: r.protected_until.isoformat() if r.protected_until else ""),
    ]
    if membership.role_def.contact_details:
        base += [("contact_name", lambda r: r.contact_name),
                 ("contact_email", lambda r: r.contact_email),
                 ("contact_phone", lambda r: r.contact_phone),
                 ("contact_title", lambda r: r.contact_title)]
    return base


@require_permission(roles.REFERRAL_VIEW)
def referral_export(request):
    _, queryset = filtered_referrals(request)
    queryset = queryset.select_related("vendor", "partner", "program")
    columns = export_columns(request.membership)
    writer = csv.writer(Echo())

    def rows():
        yield writer.writerow([name for name, _ in columns])
        for referral in queryset[:EXPORT_LIMIT].iterator(chunk_size=2000):
            yield writer.writerow([safe_cell(get(referral)) for _, get in columns])

    response = StreamingHttpResponse(rows(), content_type="text/csv")
    response["Content-Disposition"] = 'attachment; filename="referrals.csv"'
    return response


@require_permission(roles.REFERRAL_ACCEPT)
def referral_bulk(request):
    """Accept or reject several submitted referrals at once; each goes through the service
    (and its checks) on its own, so one stale row does not block the rest."""
    from django.contrib import messages
    from django.shortcuts import redirect

    from accounts.errors import ServiceError
    from referrals import services

    if request.method != "POST":
        return redirect("referrals:list")
    action = request.POST.get("action")
    ids = [value for value in request.POST.getlist("ids")[:200] if _is_uuid(value)]
    code = request.POST.get("code", "")
    if action not in ("accept", "reject") or not ids:
        messages.error(request, "Select referrals and an action.")
        return redirect("referrals:list")
    if action == "reject" and code not in dict(Referral.REJECTION_REASONS):
        messages.error(request, "Choose a reason to reject the selected referrals.")
        return redirect("referrals:list")
    done, failed = 0, []
    referrals = Referral.objects.visible_to(request.membership).filter(public_id__in=ids)
    for referral in referrals.select_related("program", "vendor", "partner"):
        try:
            if action == "accept":
                services.accept_referral(request.membership, referral)
            else:
                services.reject_referral(request.membership, referral, code, "")
            done += 1
        except ServiceError as exc:
            failed.append(f"{referral.company_name}: {exc.message}")
    verb = "Accepted" if action == "accept" else "Rejected"
    if done:
        messages.success(request, f"{verb} {done} referral{'s' if done != 1 else ''}.")
    for line in failed[:10]:
        messages.error(request, line)
    return redirect("referrals:list")


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except (ValueError, TypeError, AttributeError):
        return False
    return True
