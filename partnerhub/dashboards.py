"""Dashboard tiles, chosen by what the active membership may do (never by role name).

Each tile is a small, bounded query: counts and the first few rows of a list, linking to the
full filtered list behind it.
"""

from datetime import timedelta
from statistics import median

from django.db.models import Count, Q
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode

from accounts import roles
from accounts.models import AuditEvent, Membership, Organization
from accounts.permissions import permissions_of
from payouts.dashboard import money_tile
from referrals.models import Referral


def _applications_tile(membership):
    orgs = Organization.objects.visible_to(membership).exclude(kind=roles.OPERATOR)
    counts = orgs.aggregate(
        pending=Count("pk", filter=Q(status=Organization.PENDING)),
        unverified=Count("pk", filter=Q(status=Organization.PENDING, verified_at__isnull=True)),
        auto=Count("pk", filter=Q(auto_approved=True, auto_approval_reviewed_at__isnull=True)),
    )
    oldest = list(orgs.filter(status=Organization.PENDING).order_by("applied_at")[:5])
    return {"counts": counts, "oldest": oldest}


def onboarding_days(network_id, since_days: int = 90) -> dict:
    """Median days from application to approval, and approval to first referral."""
    since = timezone.now() - timedelta(days=since_days)
    rows = Organization.objects.filter(
        network_id=network_id, approved_at__gte=since, applied_at__isnull=False
    ).values_list("applied_at", "approved_at", "first_referral_at")[:10_000]
    to_approval = [(b - a).total_seconds() / 86400 for a, b, _ in rows]
    to_first = [(c - b).total_seconds() / 86400 for _, b, c in rows if c]
    return {
        "approved": len(to_approval),
        "to_approval": round(median(to_approval), 1) if to_approval else None,
        "to_first_referral": round(median(to_first), 1) if to_first else None,
    }


def _network_tile(membership):
    network_id = membership.organization.network_id
    counts = Organization.objects.filter(network_id=network_id).aggregate(
        partners=Count("pk", filter=Q(kind=roles.PARTNER, status=Organization.ACTIVE)),
        vendors=Count("pk", filter=Q(kind=roles.VENDOR, status=Organization.ACTIVE)),
        pending=Count("pk", filter=Q(status=Organization.PENDING)),
    )
    return {"counts": counts, "onboarding": onboarding_days(network_id)}


def _portfolio_tile(membership):
    orgs = (
        Organization.objects.visible_to(membership)
        .exclude(pk=membership.organization_id)
        .order_by("kind", "name")
    )
    return {"count": orgs.count(), "first": list(orgs[:8])}


def _team_tile(membership):
    members = (
        Membership.objects.filter(organization_id=membership.organization_id,
                                  status=Membership.ACTIVE)
        .select_related("user", "organization").order_by("user__full_name")
    )
    return {"count": members.count(), "first": list(members[:6])}


def _audit_tile(membership):
    return {"events": list(
        AuditEvent.objects.visible_to(membership).order_by("-created_at", "-pk")[:8]
    )}


def _referrals_tile(membership, perms):
    """Referrals by status (each number links to the filtered list), what needs a decision,
    and protections about to run out."""
    visible = Referral.objects.visible_to(membership)
    counts = visible.aggregate(
        **{status: Count("pk", filter=Q(status=status)) for status, _ in Referral.STATUSES},
        conflicts=Count("pk", filter=Q(status=Referral.SUBMITTED, conflict=True)),
    )
    tile = {"counts": counts, "statuses": [
        (status, label, counts[status]) for status, label in Referral.STATUSES
        if counts[status] or status in (Referral.SUBMITTED, Referral.ACCEPTED)]}
    tile["decides"] = roles.REFERRAL_ACCEPT in perms
    if tile["decides"]:
        tile["to_decide"] = list(
            visible.filter(status=Referral.SUBMITTED).select_related("partner")
            .order_by("-conflict", "submitted_at")[:6])
    else:
        tile["recent"] = list(
            visible.exclude(status=Referral.DRAFT).select_related("vendor", "partner")
            .order_by("-updated_at")[:6])
    if roles.REFERRAL_SUBMIT in perms:
        soon = timezone.now() + timedelta(days=14)
        tile["expiring"] = list(
            visible.filter(status=Referral.ACCEPTED, protected_until__lte=soon)
            .select_related("vendor").order_by("protected_until")[:5])
    return tile


ATTRIBUTION_METRICS_DAYS = 90


def _pct(rate) -> str:
    return "–" if rate is None else f"{rate:.0%}"


def _attribution_kpis(metrics, since, **scope) -> list[tuple[str, str, str]]:
    """(value, label, link to the filtered attribution list) for each metric."""
    def link(**params):
        query = {**scope, "attributed_from": since.isoformat(), **params}
        return f"{reverse('attribution:list')}?{urlencode(query)}"

    days = metrics.median_days_to_resolve
    return [
        (str(metrics.attributions), "won deals attributed", link()),
        (_pct(metrics.automatic_rate), "attributed automatically",
         link(status="auto_confirmed")),
        (_pct(metrics.review_rate), "needed review", link(reviewed="yes")),
        (str(metrics.needs_review), "waiting for review", link(status="needs_review")),
        (_pct(metrics.dispute_rate), "disputed", link(disputed="yes")),
        ("–" if days is None else f"{days:g} d", "median time to resolve a dispute",
         link(disputed="yes")),
        (_pct(metrics.overturn_rate), "of decided disputes overturned",
         link(disputed="yes", status="overturned")),
    ]


def attribution_metrics_tile(membership, *, compute: bool = True):
    """Attribution health over the last 90 days: the network's (and its busiest vendors') for
    those who run the network, a vendor's own for those who run its program; None for others.

    The dashboard only places the tile (compute=False: no queries); its numbers load right
    after, from attribution:metrics_tile, so the dashboard's own cost does not grow."""
    perms = permissions_of(membership)
    org = membership.organization
    if roles.NETWORK_MANAGE in perms:
        tile = {"title": "Attribution across the network", "network": True}
    elif org.kind == roles.VENDOR and roles.PROGRAM_MANAGE in perms:
        tile = {"title": "Attribution of your deals", "network": False}
    else:
        return None
    tile["days"] = ATTRIBUTION_METRICS_DAYS
    if not compute:
        return tile
    from attribution.metrics import attribution_metrics, metrics_by_vendor

    since = timezone.now() - timedelta(days=ATTRIBUTION_METRICS_DAYS)
    day = timezone.localdate(since)
    if tile["network"]:
        metrics = attribution_metrics(org.network_id, since=since)
        tile["by_vendor"] = [
            {"vendor": vendor, "metrics": m,
             "automatic": _pct(m.automatic_rate), "review": _pct(m.review_rate),
             "dispute": _pct(m.dispute_rate), "overturn": _pct(m.overturn_rate),
             "link": f"{reverse('attribution:list')}?"
                     f"{urlencode({'vendor': vendor.public_id, 'attributed_from': day})}"}
            for vendor, m in metrics_by_vendor(org.network_id, since=since, limit=8)]
    else:
        metrics = attribution_metrics(org.network_id, vendor_ids=[org.pk], since=since)
    tile["kpis"] = _attribution_kpis(metrics, day)
    return tile


def dashboard_context(membership) -> dict:
    perms = permissions_of(membership)
    role = membership.role_def
    context = {"role": role, "tiles": []}
    if membership.organization.status != Organization.ACTIVE:
        context["pending"] = True
        return context
    if roles.REFERRAL_VIEW in perms:
        context["referrals"] = _referrals_tile(membership, perms)
        context["can_submit"] = roles.REFERRAL_SUBMIT in perms
    if roles.NETWORK_MANAGE in perms:
        context["network_kpis"] = _network_tile(membership)
    context["attribution_metrics"] = attribution_metrics_tile(membership, compute=False)
    context["money"] = money_tile(membership, compute=False)
    if roles.APPLICATIONS_REVIEW in perms:
        context["applications"] = _applications_tile(membership)
    if role.scope == roles.PORTFOLIO:
        context["portfolio"] = _portfolio_tile(membership)
    if roles.AUDIT_VIEW in perms:
        context["audit"] = _audit_tile(membership)
    if roles.USERS_LOOKUP in perms:
        context["lookup"] = True
    if roles.PAYOUT_ACCOUNT_MANAGE in perms or roles.MEMBERS_MANAGE in perms:
        context["team"] = _team_tile(membership)
        context["checklist"] = _checklist(membership, context["team"])
    return context


def _checklist(membership, team):
    org = membership.organization
    items = [
        ("Verify your email address", membership.user.email_verified_at is not None),
        ("Organization approved", org.status == Organization.ACTIVE),
        ("Invite your team", team["count"] > 1),
    ]
    return [{"label": label, "done": done} for label, done in items]
