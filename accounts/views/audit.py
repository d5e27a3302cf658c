import csv
from datetime import datetime, time, timedelta

from django.http import StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone

from accounts import roles
from accounts.decorators import require_permission
from accounts.forms import AuditFilterForm
from accounts.models import AuditEvent
from partnerhub.csvutil import Echo, safe_cell
from partnerhub.pagination import paginate, querystring_without_page

EXPORT_LIMIT = 100_000


def _filtered(request):
    form = AuditFilterForm(request.GET or None)
    events = AuditEvent.objects.visible_to(request.membership)
    if form.is_bound and not form.is_valid():
        # A filter we cannot read must never widen the result (or the export) to everything.
        return form, events.none()
    if form.is_valid():
        data = form.cleaned_data
        if data["actor"]:
            events = events.filter(actor_email__iexact=data["actor"].strip())
        if data["action"]:
            events = events.filter(action=data["action"].strip())
        if data["target_type"]:
            events = events.filter(target_type=data["target_type"].strip().lower())
        if data["target_id"]:
            events = events.filter(target_id=data["target_id"].strip())
        tz = timezone.get_current_timezone()
        if data["since"]:
            events = events.filter(created_at__gte=datetime.combine(data["since"], time.min, tz))
        if data["until"]:
            end = datetime.combine(data["until"] + timedelta(days=1), time.min, tz)
            events = events.filter(created_at__lt=end)
    return form, events.order_by("-created_at", "-pk")


@require_permission(roles.AUDIT_VIEW)
def audit_log(request):
    form, events = _filtered(request)
    actions = (
        AuditEvent.objects.visible_to(request.membership).order_by("action")
        .values_list("action", flat=True).distinct()
    )
    return render(request, "accounts/audit_log.html", {
        "form": form, "page": paginate(request, events, per_page=50),
        "querystring": querystring_without_page(request), "actions": list(actions),
    })


@require_permission(roles.AUDIT_VIEW)
def audit_export(request):
    _, events = _filtered(request)
    writer = csv.writer(Echo())
    header = ["time", "actor", "role", "action", "object_type", "object_id", "object",
              "before", "after", "ip", "user_agent"]

    def rows():
        yield writer.writerow(header)
        for e in events[:EXPORT_LIMIT].iterator(chunk_size=2000):
            yield writer.writerow([safe_cell(v) for v in (
                e.created_at.isoformat(), e.actor_email, e.role, e.action, e.target_type,
                e.target_id, e.target_label, e.before, e.after, e.ip, e.user_agent,
            )])

    response = StreamingHttpResponse(rows(), content_type="text/csv")
    response["Content-Disposition"] = 'attachment; filename="audit-log.csv"'
    return response
