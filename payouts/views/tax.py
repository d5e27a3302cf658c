"""Tax pages: the partner's tax profile (owner and finance), the yearly tax report and its CSV
for operator finance, and the partner's own annual statement with its CSV. Every other role
gets a 404: these pages do not exist for it."""

import csv

from django.contrib import messages
from django.http import Http404, HttpResponseBadRequest, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import path
from django.views.decorators.http import require_GET, require_http_methods

from accounts import roles
from accounts.decorators import require_permission
from accounts.errors import PermissionDenied, ServiceError
from partnerhub.csvutil import Echo, safe_cell
from partnerhub.money import exponent, from_minor
from partnerhub.pagination import paginate, querystring_without_page
from payouts import tax
from payouts.forms_tax import TaxProfileForm, TaxReportFilterForm
from payouts.models import LedgerEntry, TaxProfile

PER_PAGE = 50


def _amount(minor: int, currency: str) -> str:
    """1234.50 for a spreadsheet: the currency's decimals, no symbol or grouping."""
    return f"{from_minor(minor, currency):.{exponent(currency)}f}"


# --- The partner's tax profile ------------------------------------------------------------------

def _own_partner(request):
    organization = request.membership.organization
    if organization.kind != roles.PARTNER:
        raise Http404
    return organization


@require_permission(roles.TAX_PROFILE_MANAGE)
@require_http_methods(["GET", "POST"])
def tax_profile(request):
    membership = request.membership
    partner = _own_partner(request)
    profile = TaxProfile.objects.visible_to(membership).filter(partner=partner).first()
    if request.method == "POST":
        form = TaxProfileForm(request.POST)
        if form.is_valid():
            try:
                tax.save_tax_profile(membership, partner, form.cleaned_data)
            except PermissionDenied:
                raise Http404 from None
            except ServiceError as exc:
                form.add_error(exc.field if exc.field in form.fields else None, exc.message)
            else:
                messages.success(request, "Tax profile saved.")
                return redirect("payouts:tax_profile")
    else:
        form = TaxProfileForm(initial=TaxProfileForm.initial_from(profile))
    return render(request, "payouts/tax_profile.html", {
        "form": form, "profile": profile, "problems": tax.profile_problems(profile),
        "expires_on": tax.form_expires_on(profile) if profile else None,
        "years": tax.statement_years(partner),
    })


# --- The yearly report (operator finance) -------------------------------------------------------

def _report(request, year=None):
    """The report for the filters in the query string: (form, report), report None when a
    filter cannot be read (an unreadable filter never widens the report). `year`, from the
    CSV's URL, overrides the query string's; without either, last calendar year."""
    data = request.GET.copy()
    data.pop("page", None)
    if year is not None or not data.get("year"):
        data["year"] = str(year or TaxReportFilterForm.default_year())
    form = TaxReportFilterForm(data)
    if not form.is_valid():
        return form, None
    d = form.cleaned_data
    return form, tax.tax_report(request.network, d["year"], nec_only=d["nec_due"],
                                country=d["country"], search=d["q"])


@require_permission(roles.TAX_REPORT)
@require_GET
def tax_report(request):
    form, report = _report(request)
    page = paginate(request, report.payees if report else [], per_page=PER_PAGE)
    export = request.GET.copy()
    for name in ("page", "year"):
        export.pop(name, None)
    return render(request, "payouts/tax_report.html", {
        "form": form, "report": report, "page": page,
        "querystring": querystring_without_page(request), "export_query": export.urlencode(),
        "filtered": any(request.GET.get(k) for k in ("nec_due", "country", "q")),
    })


CSV_HEADER = ["year", "partner_id", "partner", "legal_name", "country", "entity_type",
              "us_person", "tax_form", "form_status", "form_signed_on", "currency", "net_paid",
              "payouts", "nec_1099_due", "nec_1099_reason", "nec_threshold_usd", "notes"]


def _report_lines(report):
    threshold = _amount(report.threshold_minor, tax.REPORT_CURRENCY)
    for p in report.payees:
        for currency, amount in p.totals.items():
            usd_line = currency == tax.REPORT_CURRENCY
            due = ("yes" if p.nec_due else "no") if usd_line else ""
            yield [report.year, p.public_id, p.name, p.legal_name, p.country, p.entity_label,
                   p.us_person_label, p.form_label, p.form_status,
                   p.form_signed_on.isoformat() if p.form_signed_on else "", currency,
                   _amount(amount, currency), p.payout_count, due,
                   p.nec_reason if usd_line else "", threshold,
                   " ".join(p.notes)]


@require_permission(roles.TAX_REPORT)
@require_GET
def tax_report_csv(request, year):
    """One line per payee and currency; no addresses or other contact details."""
    if not tax.valid_year(year):
        raise Http404
    _, report = _report(request, year)
    if report is None:
        return HttpResponseBadRequest("Unreadable filters.", content_type="text/plain")
    writer = csv.writer(Echo())

    def lines():
        yield writer.writerow(CSV_HEADER)
        for line in _report_lines(report):
            yield writer.writerow([safe_cell(v) for v in line])

    response = StreamingHttpResponse(lines(), content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="tax-report-{year}.csv"'
    return response


# --- The partner's annual statement -------------------------------------------------------------

def _statement(request, year):
    if not tax.valid_year(year):
        raise Http404
    return tax.annual_statement(_own_partner(request), year)


@require_permission(roles.TAX_PROFILE_MANAGE)
@require_GET
def annual_statement(request, year):
    statement = _statement(request, year)
    page = paginate(request, statement.entries, per_page=PER_PAGE)
    return render(request, "payouts/statement.html", {
        "statement": statement, "page": page,
        "rows": [(entry, tax.entry_source(entry)) for entry in page],
        "querystring": querystring_without_page(request),
        "kind_labels": dict(LedgerEntry.KINDS),
    })


STATEMENT_HEADER = ["date", "kind", "description", "vendor", "deal", "deal_id", "payout_id",
                    "currency", "amount"]


@require_permission(roles.TAX_PROFILE_MANAGE)
@require_GET
def annual_statement_csv(request, year):
    statement = _statement(request, year)
    writer = csv.writer(Echo())
    kinds = dict(LedgerEntry.KINDS)

    def lines():
        yield writer.writerow(STATEMENT_HEADER)
        for entry in statement.entries.iterator(chunk_size=2000):
            source = tax.entry_source(entry)
            yield writer.writerow([safe_cell(v) for v in (
                entry.created_at.date().isoformat(), kinds.get(entry.kind, entry.kind),
                entry.memo, source["vendor"], source["deal"], source["deal_id"],
                source["payout"], entry.currency, _amount(entry.amount_minor, entry.currency),
            )])

    response = StreamingHttpResponse(lines(), content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="statement-{year}.csv"'
    return response


urlpatterns = [
    path("tax-profile/", tax_profile, name="tax_profile"),
    path("tax-report/", tax_report, name="tax_report"),
    path("tax-report/<int:year>.csv", tax_report_csv, name="tax_report_csv"),
    path("statement/<int:year>/", annual_statement, name="annual_statement"),
    path("statement/<int:year>.csv", annual_statement_csv, name="annual_statement_csv"),
]
