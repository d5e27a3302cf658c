"""The attribution list's filters: the filter form each side gets (a vendor picks a partner, a
partner a vendor and its own outcome, an operator a vendor and a partner by id) and the
attributions it selects, never more than the viewer may see."""

from datetime import datetime, time, timedelta

from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from accounts import roles
from accounts.models import Organization
from attribution.attribution_forms import AttributionFilterForm
from attribution.metrics import dispute_model, needed_review
from attribution.models import Attribution
from attribution.partner_rows import own_candidates
from referrals.models import Enrolment, Program


def _filter_form(request):
    membership = request.membership
    side = membership.organization.kind
    vendors = Organization.objects.filter(
        pk__in=Program.objects.visible_to(membership).values("vendor_id")).order_by("name")
    if side == roles.VENDOR:
        partners = Organization.objects.filter(pk__in=Enrolment.objects.filter(
            program__vendor_id=membership.organization_id).values("partner_id")).order_by("name")
        return AttributionFilterForm(request.GET or None, partners=partners,
                                     disputes=dispute_model() is not None)
    if side == roles.PARTNER:
        return AttributionFilterForm(request.GET or None, vendors=vendors, outcome=True)
    return AttributionFilterForm(request.GET or None, vendors=vendors, partner_by_id=True,
                                 disputes=dispute_model() is not None)


def _day_start(day):
    return datetime.combine(day, time.min, timezone.get_current_timezone())


def filtered_attributions(request):
    """The list's filter form and the attributions it selects (a review queue oldest first,
    else newest first); an unreadable filter selects none, never more."""
    membership = request.membership
    form = _filter_form(request)
    queryset = Attribution.objects.visible_to(membership)
    if form.is_bound and not form.is_valid():
        return form, queryset.none()  # an unreadable filter never widens the list
    d = form.cleaned_data if form.is_bound else {}
    if d.get("q"):
        q = d["q"].strip()
        if membership.organization.kind == roles.PARTNER:
            # A partner searches its own registrations: the deal's name may be another's.
            queryset = queryset.filter(Exists(own_candidates(membership).filter(
                Q(referral__company_name__icontains=q)
                | Q(referral__domain__startswith=q.lower()), attribution_id=OuterRef("pk"))))
        else:
            queryset = queryset.filter(Q(snapshot__account_name__icontains=q)
                                       | Q(snapshot__account_domain__startswith=q.lower()))
    for name in ("status", "match"):
        if d.get(name):
            queryset = queryset.filter(**{name: d[name]})
    if d.get("vendor"):
        queryset = queryset.filter(vendor__public_id=d["vendor"])
    if d.get("partner"):
        queryset = queryset.filter(partner__public_id=d["partner"])
    outcome = d.get("outcome")
    if outcome == "you":
        queryset = queryset.filter(partner_id=membership.organization_id)
    elif outcome == "other":
        queryset = queryset.exclude(partner_id=membership.organization_id) \
            .filter(partner__isnull=False)
    elif outcome == "none":
        queryset = queryset.filter(partner__isnull=True)
    if d.get("disputed"):
        disputed = Exists(dispute_model().objects.visible_to(membership)
                          .filter(attribution_id=OuterRef("pk")))
        queryset = queryset.filter(disputed if d["disputed"] == "yes" else ~disputed)
    if d.get("reviewed"):
        queryset = queryset.filter(needed_review())
    if d.get("closed_from"):
        queryset = queryset.filter(snapshot__closed_at__gte=_day_start(d["closed_from"]))
    if d.get("closed_to"):
        queryset = queryset.filter(
            snapshot__closed_at__lt=_day_start(d["closed_to"] + timedelta(days=1)))
    if d.get("attributed_from"):
        queryset = queryset.filter(created_at__gte=_day_start(d["attributed_from"]))
    if d.get("attributed_to"):
        queryset = queryset.filter(
            created_at__lt=_day_start(d["attributed_to"] + timedelta(days=1)))
    if d.get("status") == Attribution.NEEDS_REVIEW:
        queryset = queryset.order_by("created_at", "pk")  # a queue: oldest first
    else:
        queryset = queryset.order_by("-created_at", "-pk")
    return form, queryset


def partner_chip(membership, form):
    """The partner an operator filters by (it comes from a link), to show and clear."""
    if not form.is_bound or not form.is_valid() or not form.cleaned_data.get("partner"):
        return None
    return (Organization.objects.visible_to(membership)
            .filter(public_id=form.cleaned_data["partner"]).first())
