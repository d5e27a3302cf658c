"""How well attribution works: how much the engine settles alone, how much needs people, how
often its answers are disputed and overturned, and how long disputes take.

Everything is counted over a scope of attributions: a network, optionally some vendors, and a
period by `Attribution.created_at` (when the deal was first attributed). Definitions:

- automatic rate: attributions still `auto_confirmed` (the engine's answer, untouched by
  anyone) / all attributions.
- review rate: attributions that needed a person's review / all. "Needed review" means the
  status is `needs_review` now, or the history shows it was once (an `AttributionChange` whose
  `after.status` is `needs_review`: a fuzzy match, or a deal reopened or lost after it was
  attributed), whatever a person decided since. A vendor confirming an automatic attribution
  is not a review, so the two rates need not add up to 100%.
- dispute rate: disputes about attributions in scope / attributions in scope (disputes about a
  rejected or expired referral have no attribution and are not counted).
- median time to resolve: median of `decided_at - created_at` over decided disputes (upheld or
  overturned; a withdrawn dispute was not resolved by anyone).
- overturn rate: overturned disputes / decided disputes.

Every function runs a fixed number of queries, whatever the number of rows (aggregates, and on
PostgreSQL the median too).
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from statistics import median

from django.apps import apps
from django.db import connection
from django.db.models import (
    Aggregate,
    Count,
    DurationField,
    Exists,
    ExpressionWrapper,
    F,
    OuterRef,
    Q,
    QuerySet,
)

from attribution.models import Attribution, AttributionChange

UPHELD, OVERTURNED, WITHDRAWN = "upheld", "overturned", "withdrawn"
DECIDED = (UPHELD, OVERTURNED)
# Without PostgreSQL's percentile_cont the median is computed from at most this many rows.
PORTABLE_MEDIAN_ROWS = 10_000


@dataclass(frozen=True)
class AttributionMetrics:
    attributions: int = 0
    auto_confirmed: int = 0
    needs_review: int = 0  # waiting for a person now
    reviewed: int = 0  # needed review at some point (including those waiting now)
    disputes: int = 0
    disputes_decided: int = 0
    disputes_overturned: int = 0
    median_time_to_resolve: timedelta | None = None

    @property
    def automatic_rate(self) -> float | None:
        return _ratio(self.auto_confirmed, self.attributions)

    @property
    def review_rate(self) -> float | None:
        return _ratio(self.reviewed, self.attributions)

    @property
    def dispute_rate(self) -> float | None:
        return _ratio(self.disputes, self.attributions)

    @property
    def overturn_rate(self) -> float | None:
        return _ratio(self.disputes_overturned, self.disputes_decided)

    @property
    def median_days_to_resolve(self) -> float | None:
        if self.median_time_to_resolve is None:
            return None
        return round(self.median_time_to_resolve.total_seconds() / 86400, 1)


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def dispute_model():
    """The Dispute model, or None while it does not exist (it lives in attribution.models)."""
    try:
        return apps.get_model("attribution", "Dispute")
    except LookupError:
        return None


def attribution_scope(network_id: int, *, vendor_ids=None, since: datetime | None = None,
                      until: datetime | None = None) -> QuerySet:
    """Attributions of a network (optionally of some vendors), made in [since, until)."""
    scope = Attribution.objects.filter(network_id=network_id)
    if vendor_ids is not None:
        scope = scope.filter(vendor_id__in=list(vendor_ids))
    if since is not None:
        scope = scope.filter(created_at__gte=since)
    if until is not None:
        scope = scope.filter(created_at__lt=until)
    return scope


def needed_review() -> Q:
    """Attributions that needed a person's review: waiting now, or once (see the history)."""
    return Q(status=Attribution.NEEDS_REVIEW) | Q(Exists(AttributionChange.objects.filter(
        attribution_id=OuterRef("pk"), after__status=Attribution.NEEDS_REVIEW)))


def _attribution_counts():
    return {
        "attributions": Count("pk"),
        "auto_confirmed": Count("pk", filter=Q(status=Attribution.AUTO_CONFIRMED)),
        "needs_review": Count("pk", filter=Q(status=Attribution.NEEDS_REVIEW)),
        "reviewed": Count("pk", filter=needed_review()),
    }


class _Median(Aggregate):
    """PostgreSQL's exact median of an interval."""

    function = "PERCENTILE_CONT"
    template = "%(function)s(0.5) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = DurationField()


def _time_to_resolve():
    return ExpressionWrapper(F("decided_at") - F("created_at"), output_field=DurationField())


def _disputes_of(scope: QuerySet):
    model = dispute_model()
    if model is None:
        return None
    return model.objects.filter(attribution_id__in=scope.order_by().values("pk"))


def _exact_median() -> bool:
    """PostgreSQL computes the median in the aggregate query; elsewhere Python does."""
    return connection.vendor == "postgresql"


def _dispute_counts():
    return {
        "disputes": Count("pk"),
        "disputes_decided": Count("pk", filter=Q(status__in=DECIDED)),
        "disputes_overturned": Count("pk", filter=Q(status=OVERTURNED)),
    }


def _portable_medians(disputes, group: str | None) -> dict:
    """{group value or None: median timedelta} computed in Python (SQLite quickstart)."""
    fields = ["created_at", "decided_at"] + ([group] if group else [])
    rows = (disputes.filter(status__in=DECIDED, decided_at__isnull=False)
            .order_by("-decided_at").values_list(*fields)[:PORTABLE_MEDIAN_ROWS])
    spans: dict = {}
    for row in rows:
        spans.setdefault(row[2] if group else None, []).append(row[1] - row[0])
    return {key: median(values) for key, values in spans.items()}


def summarize(scope: QuerySet) -> AttributionMetrics:
    """The metrics of any queryset of attributions (e.g. `attribution_scope(...)`, or what a
    membership may see). Two queries (one without a Dispute model)."""
    counts = scope.order_by().aggregate(**_attribution_counts())
    disputes = _disputes_of(scope)
    if disputes is not None:
        on_pg = _exact_median()
        extra = {"median_time_to_resolve": _Median(
            _time_to_resolve(), filter=Q(status__in=DECIDED, decided_at__isnull=False))} \
            if on_pg else {}
        counts.update(disputes.order_by().aggregate(**_dispute_counts(), **extra))
        if not on_pg:
            counts["median_time_to_resolve"] = _portable_medians(disputes, None).get(None)
    return AttributionMetrics(**counts)


def attribution_metrics(network_id: int, *, vendor_ids=None, since=None,
                        until=None) -> AttributionMetrics:
    """The network's (or some vendors') metrics for attributions made in [since, until)."""
    return summarize(attribution_scope(network_id, vendor_ids=vendor_ids, since=since,
                                       until=until))


def metrics_by_vendor(network_id: int, *, vendor_ids=None, since=None, until=None,
                      limit: int | None = None) -> list[tuple]:
    """[(vendor Organization, AttributionMetrics)], the vendors with most attributions first.
    Three queries (four without PostgreSQL), whatever the number of vendors."""
    from accounts.models import Organization

    scope = attribution_scope(network_id, vendor_ids=vendor_ids, since=since, until=until)
    grouped = (scope.order_by().values("vendor_id").annotate(**_attribution_counts())
               .order_by("-attributions", "vendor_id"))
    rows = list(grouped[:limit] if limit is not None else grouped)
    if not rows:
        return []
    per_vendor = {row.pop("vendor_id"): row for row in rows}
    disputes = _disputes_of(scope.filter(vendor_id__in=list(per_vendor)))
    if disputes is not None:
        on_pg = _exact_median()
        extra = {"median_time_to_resolve": _Median(
            _time_to_resolve(), filter=Q(status__in=DECIDED, decided_at__isnull=False))} \
            if on_pg else {}
        grouped = (disputes.order_by().values("attribution__vendor_id")
                   .annotate(**_dispute_counts(), **extra))
        for row in grouped:
            per_vendor[row.pop("attribution__vendor_id")].update(row)
        if not on_pg:
            for vendor_id, value in _portable_medians(disputes,
                                                      "attribution__vendor_id").items():
                per_vendor[vendor_id]["median_time_to_resolve"] = value
    vendors = Organization.objects.in_bulk(list(per_vendor))
    return [(vendors[vendor_id], AttributionMetrics(**counts))
            for vendor_id, counts in per_vendor.items() if vendor_id in vendors]
