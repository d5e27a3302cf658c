"""Bulk CSV import in the browser: upload, preview with per-row errors, confirm, progress."""

from django import forms
from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseClientRedirect

from accounts import roles
from accounts.decorators import require_permission
from accounts.errors import ServiceError
from accounts.permissions import get_object_for
from referrals import imports
from referrals.models import ImportJob, Program

PREVIEW_LIMIT = 1000  # rows drawn on the preview page; rows with problems come first
FIELD_LABELS = {"program": "Program", "company_name": "Company", "website": "Website",
                "country": "Country", "contact_name": "Contact name",
                "contact_email": "Contact email", "contact_phone": "Contact phone",
                "contact_title": "Contact title", "amount": "Amount", "currency": "Currency",
                "expected_close": "Expected close", "notes": "Notes",
                "conflict": "Already registered"}
# What the upload page says about each column.
COLUMN_HELP = [
    ("program", "Program name or id. Leave empty if you are enrolled in one program only."),
    ("company_name", "Required. The customer's company."),
    ("website", "Required. e.g. acme.com"),
    ("country", "Required. Two-letter code (US, DE) or the country's English name."),
    ("contact_name", "Required."),
    ("contact_email", "Required."),
    ("contact_phone", "With the country code unless in the customer's country."),
    ("contact_title", ""),
    ("amount", "Estimated deal value, e.g. 25000 or 25000.50."),
    ("currency", "ISO code, e.g. USD. Must be one the program accepts."),
    ("expected_close", "Month as YYYY-MM, e.g. 2027-03."),
    ("notes", ""),
]


class UploadForm(forms.Form):
    file = forms.FileField(label="CSV file", widget=forms.ClearableFileInput(
        attrs={"accept": ".csv,text/csv"}))


def get_import(request, public_id) -> ImportJob:
    return get_object_for(request.membership, ImportJob, public_id,
                          action=roles.REFERRAL_SUBMIT)


def _labelled(rows):
    for row in rows:
        for error in row["errors"]:
            error["label"] = FIELD_LABELS.get(error["field"], "")
    return rows


def _shown(rows, limit=PREVIEW_LIMIT):
    """Rows with problems first (all of them, up to the limit), then clean rows; in file
    order."""
    problems = [r for r in rows if r["errors"]][:limit]
    clean = [r for r in rows if not r["errors"]][:max(0, limit - len(problems))]
    return sorted(problems + clean, key=lambda r: r["number"])


@require_permission(roles.REFERRAL_SUBMIT)
def import_upload(request):
    membership = request.membership
    if not Program.objects.enrolled_for(membership):
        return render(request, "referrals/no_programs.html")
    form = UploadForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        upload = form.cleaned_data["file"]
        try:
            job = imports.create_import(membership, upload.name,
                                        upload.read(imports.MAX_BYTES + 1))
        except ServiceError as exc:
            form.add_error("file", exc.message)
        else:
            return redirect("referrals:import_detail", job.public_id)
    recent = ImportJob.objects.visible_to(membership).order_by("-created_at") \
        .only("public_id", "file_name", "status", "total_rows", "imported_rows",
              "created_at")[:5]
    return render(request, "referrals/import_upload.html", {
        "form": form, "columns": COLUMN_HELP, "recent": recent,
        "max_rows": f"{imports.MAX_ROWS:,}"})


@require_permission(roles.REFERRAL_SUBMIT)
def import_template(request):
    response = HttpResponse("\ufeff" + ",".join(imports.COLUMNS) + "\r\n",
                            content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="referrals-import-template.csv"'
    return response


def _progress_context(job):
    today = timezone.localdate()
    context = {"job": job, "today": today}
    if not job.is_in_progress:
        rows = imports.preview_rows(job) if job.status in (ImportJob.DONE, ImportJob.FAILED) \
            else []
        context["problems"] = _labelled(
            [r for r in rows if r["errors"]][:PREVIEW_LIMIT])
        context["skipped"] = sum(1 for r in rows if r["skipped"])
        context["job_errors"] = [e for e in job.errors
                                 if e["row"] == imports.HEADER_ROW and not e.get("warning")]
    return context


@require_permission(roles.REFERRAL_SUBMIT)
def import_detail(request, public_id):
    job = get_import(request, public_id)
    if job.status != ImportJob.VALIDATED:
        return render(request, "referrals/import_detail.html", _progress_context(job))
    rows = _labelled(imports.preview_rows(job))
    return render(request, "referrals/import_detail.html", {
        "job": job, "rows": _shown(rows), "hidden_rows": max(0, len(rows) - PREVIEW_LIMIT),
        "invalid_rows": job.total_rows - job.valid_rows,
        "has_program_column": any(r["values"].get("program") for r in rows),
        "warnings": [e for e in job.errors if e.get("warning")]})


@require_permission(roles.REFERRAL_SUBMIT)
@require_POST
def import_confirm(request, public_id):
    job = get_import(request, public_id)
    try:
        job = imports.confirm_import(request.membership, job)
    except ServiceError as exc:
        messages.error(request, exc.message)
    return redirect("referrals:import_detail", job.public_id)


@require_permission(roles.REFERRAL_SUBMIT)
def import_progress(request, public_id):
    """The progress partial; it polls itself while the job runs (htmx)."""
    job = get_import(request, public_id)
    if not request.htmx:
        return redirect("referrals:import_detail", job.public_id)
    if job.status == ImportJob.VALIDATED:  # nothing to follow yet: back to the preview
        return HttpResponseClientRedirect(reverse("referrals:import_detail",
                                                  args=[job.public_id]))
    return render(request, "referrals/partials/import_progress.html", _progress_context(job))
