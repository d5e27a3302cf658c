"""Attribution pages: the list and the detail with the "why", each side within its scope, and
a decider's confirm / reassign.

A partner sees attributions through its own candidate rows only: its referrals, how each was
matched and why it was kept or dropped, and a neutral outcome ("credited to another partner",
"credited to no one"). The partner side is rendered from plain rows built here (`PartnerRow`,
`OwnCandidate`), so its templates cannot reach another partner's name, referral or data.
"""

from dataclasses import dataclass
from datetime import datetime, time, timedelta

from django.contrib import messages
from django.db.models import Exists, OuterRef, Prefetch, Q
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from accounts import roles
from accounts.decorators import membership_required, require_permission
from accounts.errors import PermissionDenied, ServiceError
from accounts.models import Organization
from accounts.permissions import can, get_object_for
from attribution import decisions
from attribution.attribution_forms import (
    OUTCOMES,
    AttributionFilterForm,
    ConfirmAttributionForm,
    ReassignAttributionForm,
)
from attribution.metrics import dispute_model, needed_review
from attribution.models import Attribution, AttributionCandidate
from partnerhub.pagination import paginate, querystring_without_page
from referrals.models import Enrolment, Program

# Count rows only this far past the page (see partnerhub.pagination.CappedPaginator).
COUNT_AHEAD = 1000
OUTCOME_LABELS = {**dict(OUTCOMES),
                  "your_org": "Credited to another registration of your organization"}
NEUTRAL_LINES = {
    "other": "Credited to another partner's registration.",
    "none": "Credited to no one: no registration was eligible for this deal.",
    "your_org": "Credited to another registration of your organization.",
}
RULE_LABELS = dict(Program.ATTRIBUTION_RULES)
MATCH_LABELS = {"exact": "Exact: the deal carries the referral id",
                "domain": "Same registrable domain", "fuzzy": "Similar company name",
                "none": "No eligible registration"}
# Heavy JSON the pages never show from the list.
_LIST_DEFERRED = ("decision", "snapshot__raw")


def _side(membership) -> str:
    return membership.organization.kind  # partner | vendor | operator


# --- what a partner may see --------------------------------------------------------------------

@dataclass(frozen=True)
class OwnCandidate:
    referral_public_id: str
    company_name: str
    submitted_at: datetime | None
    match: str
    reason: str
    credited: bool


@dataclass(frozen=True)
class PartnerRow:
    """One attribution as a partner sees it: the deal, the vendor, and its own side."""

    public_id: str
    deal_details_hidden: bool
    account_name: str
    account_domain: str
    vendor_name: str
    amount_minor: int | None
    currency: str
    stage: str
    closed_at: datetime | None
    status: str
    status_label: str
    rule: str
    match: str
    confidence: int
    decided_at: datetime | None
    decided_by: str
    decision_note: str
    created_at: datetime
    outcome: str  # you | your_org | other | none
    own: tuple[OwnCandidate, ...]

    @property
    def outcome_label(self) -> str:
        return OUTCOME_LABELS[self.outcome]

    @property
    def neutral_line(self) -> str:
        return NEUTRAL_LINES.get(self.outcome, "")

    @property
    def title(self) -> str:
        if self.account_name:
            return self.account_name
        return f"Deal for {self.own[0].company_name}" if self.own else "Won deal"

    @property
    def rule_label(self) -> str:
        return RULE_LABELS.get(self.rule, self.rule)

    @property
    def match_label(self) -> str:
        return MATCH_LABELS.get(self.match, self.match)


def own_candidates(membership):
    """The viewer's candidate rows: its organization's referrals (a rep: the ones it
    submitted) that matched the deal, as in AttributionQuerySet.visible_to."""
    rows = AttributionCandidate.objects.filter(
        partner_id=membership.organization_id).exclude(match="none")
    if membership.role_def.scope == roles.OWN:
        rows = rows.filter(referral__submitted_by_id=membership.user_id)
    return rows.select_related("referral").order_by("referral__submitted_at", "pk")


def partner_outcome(membership, attribution, own) -> str:
    if attribution.partner_id is None:
        return "none"
    if attribution.partner_id != membership.organization_id:
        return "other"
    if any(c.referral_id == attribution.referral_id for c in own):
        return "you"
    return "your_org"  # a rep's colleague's registration won


def partner_row(membership, attribution, own) -> PartnerRow:
    snapshot = attribution.snapshot
    # A deal that carries another registration's id got its name, domain and amount from
    # that registration (the CRM push, the built-in pipeline): they are that partner's data.
    hidden = snapshot.referral_id is not None and snapshot.referral_id not in {
        c.referral_id for c in own}
    return PartnerRow(
        public_id=str(attribution.public_id), deal_details_hidden=hidden,
        account_name="" if hidden else snapshot.account_name,
        account_domain="" if hidden else snapshot.account_domain,
        vendor_name=attribution.vendor.name,
        amount_minor=None if hidden else snapshot.amount_minor,
        currency="" if hidden else snapshot.currency, stage=snapshot.stage,
        closed_at=snapshot.closed_at, status=attribution.status,
        status_label=attribution.get_status_display(), rule=attribution.rule,
        match=attribution.match, confidence=attribution.confidence,
        decided_at=attribution.decided_at,
        decided_by=attribution.decided_by.get_full_name() if attribution.decided_by else "",
        decision_note=attribution.decision_note, created_at=attribution.created_at,
        outcome=partner_outcome(membership, attribution, own),
        own=tuple(OwnCandidate(
            referral_public_id=str(c.referral.public_id), company_name=c.referral.company_name,
            submitted_at=c.referral.submitted_at, match=c.match, reason=c.reason,
            credited=c.referral_id == attribution.referral_id) for c in own))


# --- the list ----------------------------------------------------------------------------------

def _filter_form(request):
    membership = request.membership
    side = _side(membership)
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
    membership = request.membership
    form = _filter_form(request)
    queryset = Attribution.objects.visible_to(membership)
    if form.is_bound and not form.is_valid():
        return form, queryset.none()  # an unreadable filter never widens the list
    d = form.cleaned_data if form.is_bound else {}
    if d.get("q"):
        q = d["q"].strip()
        if _side(membership) == roles.PARTNER:
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


def _partner_chip(membership, form):
    """The partner an operator filters by (it comes from a link), to show and clear."""
    if not form.is_bound or not form.is_valid() or not form.cleaned_data.get("partner"):
        return None
    return (Organization.objects.visible_to(membership)
            .filter(public_id=form.cleaned_data["partner"]).first())


@require_permission(roles.REFERRAL_VIEW)
def attribution_list(request):
    membership = request.membership
    side = _side(membership)
    form, queryset = filtered_attributions(request)
    if side == roles.PARTNER:
        queryset = (queryset.select_related("snapshot", "vendor", "decided_by")
                    .defer(*_LIST_DEFERRED)
                    .prefetch_related(Prefetch("candidates", own_candidates(membership),
                                               to_attr="own")))
    else:
        queryset = (queryset.select_related("snapshot", "vendor", "partner", "referral")
                    .defer(*_LIST_DEFERRED))
    page = paginate(request, queryset, count_ahead=COUNT_AHEAD)
    if side == roles.PARTNER:
        page.object_list = [partner_row(membership, a, a.own) for a in page.object_list]
    context = {
        "form": form, "page": page, "side": side,
        "querystring": querystring_without_page(request),
        "status": request.GET.get("status", ""),
        "partner_chip": _partner_chip(membership, form) if side == roles.OPERATOR else None,
    }
    if side != roles.PARTNER:
        context["to_review"] = (Attribution.objects.visible_to(membership)
                                .filter(status=Attribution.NEEDS_REVIEW).count())
    return render(request, "attribution/attribution_list.html", context)


# --- the detail --------------------------------------------------------------------------------

def get_attribution(request, public_id):
    queryset = Attribution.objects.select_related("snapshot", "vendor", "partner", "referral",
                                                  "decided_by")
    return get_object_for(request.membership, queryset, public_id, action=roles.REFERRAL_VIEW)


def may_decide(membership, attribution) -> bool:
    """The same people decisions._require_decider lets through: the vendor's deciders, and
    operators who resolve disputes in whose scope the attribution falls."""
    kind = membership.organization.kind
    if kind == roles.VENDOR:
        return can(membership, roles.REFERRAL_ACCEPT, attribution)
    if kind == roles.OPERATOR:
        return can(membership, roles.DISPUTE_RESOLVE, attribution)
    return False


def dispute_window_ends(attribution, program=None):
    """The disputes module's deadline (the program's window after the current answer)."""
    from attribution.disputes import dispute_deadline

    return dispute_deadline(attribution, program)


def _vendor_dispute_url(membership, attribution, window_open: bool):
    """The vendor's "Dispute this attribution" link (for an automatic attribution), once the
    disputes pages exist."""
    if attribution.status in Attribution.HUMAN_DECIDED or not window_open:
        return None
    if not can(membership, roles.DISPUTE_RESPOND, attribution):
        return None
    try:
        return reverse("attribution:dispute_open_vendor", args=[attribution.public_id])
    except NoReverseMatch:
        return None


def _describe(change_side: dict | None, names: dict) -> str:
    if not change_side:
        return "–"
    if "engine_would_pick" in change_side:
        picked = change_side["engine_would_pick"]
        return f"the engine would now pick {names.get(picked, 'nobody') if picked else 'nobody'}"
    referral = change_side.get("referral")
    who = names.get(referral, "a referral no longer considered") if referral else "nobody"
    parts = [f"credited to {who}"]
    if change_side.get("status"):
        parts.append(dict(Attribution.STATUSES).get(change_side["status"],
                                                    change_side["status"]).lower())
    if change_side.get("match"):
        parts.append(f"{change_side['match']} match")
    return ", ".join(parts)


def history(attribution, candidates):
    names = {str(c.referral.public_id): f"{c.partner.name} ({c.referral.company_name})"
             for c in candidates}
    return [{"at": c.at, "actor": c.actor.get_full_name() if c.actor else "",
             "reason": c.reason, "before": _describe(c.before, names),
             "after": _describe(c.after, names)}
            for c in attribution.changes.select_related("actor")[:100]]


def _partner_dispute_url(referral_public_id):
    try:
        return reverse("attribution:dispute_open_partner", args=[referral_public_id])
    except NoReverseMatch:
        return None


def disputes_of(membership, attribution) -> list[tuple]:
    """[(dispute, its page)] the viewer may see about this attribution (a partner: its own)."""
    model = dispute_model()
    if model is None:
        return []
    rows = list(model.objects.visible_to(membership).filter(attribution=attribution)
                .order_by("-created_at", "-pk")[:20])
    try:
        return [(d, reverse("attribution:dispute_detail", args=[d.public_id])) for d in rows]
    except NoReverseMatch:
        return [(d, None) for d in rows]


def _detail_context(request, attribution, reassign_form=None):
    membership = request.membership
    context = {"side": _side(membership), "disputes": disputes_of(membership, attribution)}
    if context["side"] == roles.PARTNER:
        own = list(own_candidates(membership).filter(attribution=attribution)
                   .select_related("referral__program"))
        row = partner_row(membership, attribution, own)
        # Partners' disputes count with their own registration's program.
        window_ends = dispute_window_ends(attribution, own[0].referral.program if own else None)
        window_open = timezone.now() <= window_ends
        lost = row.outcome in ("other", "none")
        may_dispute = (lost and window_open
                       and roles.DISPUTE_OPEN in membership.role_def.permissions)
        context.update({
            "row": row, "window_ends": window_ends, "window_open": window_open, "lost": lost,
            "can_dispute": roles.DISPUTE_OPEN in membership.role_def.permissions,
            "dispute_links": [(c, _partner_dispute_url(c.referral_public_id))
                              for c in row.own] if may_dispute else [],
        })
        return context
    window_ends = dispute_window_ends(attribution)
    window_open = timezone.now() <= window_ends
    context.update({"window_ends": window_ends, "window_open": window_open})
    candidates = list(AttributionCandidate.objects.filter(attribution=attribution)
                      .select_related("referral", "partner")
                      .order_by("-kept", "partner__name", "referral__submitted_at", "pk"))
    decides = may_decide(membership, attribution)
    human = attribution.status in Attribution.HUMAN_DECIDED
    context.update({
        "attribution": attribution, "deal": attribution.snapshot,
        "rule_label": RULE_LABELS.get(attribution.rule, attribution.rule),
        "match_label": MATCH_LABELS.get(attribution.match, attribution.match),
        "candidates": candidates,
        "history": history(attribution, candidates),
        "can_confirm": decides and not human,
        # Once a person decided, a vendor changes it through a dispute; operators who resolve
        # disputes may still correct it.
        "can_reassign": decides and (not human or context["side"] == roles.OPERATOR),
        "dispute_url": _vendor_dispute_url(membership, attribution, window_open),
    })
    if context["can_confirm"]:
        context["confirm_form"] = ConfirmAttributionForm()
    if context["can_reassign"]:
        context["reassign_form"] = reassign_form or ReassignAttributionForm(
            candidates=candidates, initial={
                "referral": str(attribution.referral.public_id) if attribution.referral_id
                else None})
    return context


@require_permission(roles.REFERRAL_VIEW)
def attribution_detail(request, public_id):
    attribution = get_attribution(request, public_id)
    return render(request, "attribution/attribution_detail.html",
                  _detail_context(request, attribution))


# --- decisions ---------------------------------------------------------------------------------

def _decider_attribution(request, public_id):
    attribution = get_attribution(request, public_id)
    if not may_decide(request.membership, attribution):
        raise Http404
    return attribution


@membership_required
@require_POST
def attribution_confirm(request, public_id):
    attribution = _decider_attribution(request, public_id)
    form = ConfirmAttributionForm(request.POST)
    note = form.cleaned_data["note"] if form.is_valid() else ""
    try:
        decisions.confirm_attribution(request.membership, attribution, note)
    except PermissionDenied:
        raise Http404 from None
    except ServiceError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, "Confirmed. Re-runs of the engine will not change it.")
    return redirect("attribution:detail", attribution.public_id)


@membership_required
@require_POST
def attribution_reassign(request, public_id):
    attribution = _decider_attribution(request, public_id)
    candidates = list(AttributionCandidate.objects.filter(attribution=attribution)
                      .select_related("referral", "partner")
                      .order_by("-kept", "partner__name", "referral__submitted_at", "pk"))
    form = ReassignAttributionForm(request.POST, candidates=candidates)
    if form.is_valid():
        try:
            decisions.reassign_attribution(request.membership, attribution,
                                           form.referral_public_id(),
                                           form.cleaned_data["note"])
        except PermissionDenied:
            raise Http404 from None
        except ServiceError as exc:
            form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        else:
            messages.success(request, "Reassigned. The decision is recorded in the history.")
            return redirect("attribution:detail", attribution.public_id)
    context = _detail_context(request, attribution, reassign_form=form)
    context["reassign_open"] = True
    return render(request, "attribution/attribution_detail.html", context, status=400)


# --- the dashboard's metrics tile --------------------------------------------------------

@require_permission(roles.DASHBOARD_VIEW)
def attribution_metrics_tile(request):
    """The dashboard's attribution metrics, loaded after the page (htmx) so that the
    dashboard's own cost stays flat; 404 for roles that get no such tile."""
    from partnerhub.dashboards import attribution_metrics_tile as tile_for

    tile = tile_for(request.membership)
    if tile is None:
        raise Http404
    return render(request, "attribution/partials/metrics_tile.html", {"tile": tile})
