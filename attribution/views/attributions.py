"""Attribution pages: the list and the detail with the "why", each side within its scope, and
a decider's confirm / reassign.

A partner sees attributions through its own candidate rows only: its referrals, how each was
matched and why it was kept or dropped, and a neutral outcome ("credited to another partner",
"credited to no one"). The partner side is rendered from plain rows (`PartnerRow`,
`OwnCandidate`, built in attribution.partner_rows), so its templates cannot reach another
partner's name, referral or data. The list's filters live in attribution.listing.
"""

from django.contrib import messages
from django.db.models import Prefetch
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from accounts import roles
from accounts.decorators import membership_required, require_permission
from accounts.errors import PermissionDenied, ServiceError
from accounts.permissions import can, get_object_for
from attribution import decisions
from attribution.attribution_forms import ConfirmAttributionForm, ReassignAttributionForm
from attribution.dispute_subjects import dispute_deadline
from attribution.listing import filtered_attributions, partner_chip
from attribution.metrics import dispute_model
from attribution.models import Attribution, AttributionCandidate
from attribution.partner_rows import MATCH_LABELS, RULE_LABELS, own_candidates, partner_row
from partnerhub.pagination import paginate, querystring_without_page

# Count rows only this far past the page (see partnerhub.pagination.CappedPaginator).
COUNT_AHEAD = 1000
# Heavy JSON the pages never show from the list.
_LIST_DEFERRED = ("decision", "snapshot__raw")


def _side(membership) -> str:
    return membership.organization.kind  # partner | vendor | operator


# --- the list ----------------------------------------------------------------------------------

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
        "partner_chip": partner_chip(membership, form) if side == roles.OPERATOR else None,
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
    """The dispute deadline (the program's window after the current answer)."""
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
    if not form.is_valid():  # a note we cannot keep stops the confirmation, never drops it
        context = _detail_context(request, attribution)
        context["confirm_form"] = form
        return render(request, "attribution/attribution_detail.html", context, status=400)
    try:
        decisions.confirm_attribution(request.membership, attribution,
                                      form.cleaned_data["note"])
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
