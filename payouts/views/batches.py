"""Payout batch pages for the network's finance people: the list of batches with the "New
batch" form, one batch (totals, payouts by status, carried-over reasons, failures with Stripe's
message and a retry), the approve / cancel actions and a CSV of the batch. Admins and finance
act; the auditor reads everything and changes nothing; every other role gets a 404.

Building, cancelling and sending run in Celery: the pages only ask for them, then follow the
batch with a small htmx partial that polls itself while the batch is in progress. After
approving or retrying, the message says what happened: with eager Celery (the quickstart) the
transfers ran during the request, so it reads the batch afterwards; with a worker it says what
is under way."""

import csv
from datetime import UTC, date

from django import forms
from django.contrib import messages
from django.db.models import Count, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.http import Http404, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import path
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRefresh

from accounts import roles
from accounts.decorators import membership_required
from accounts.errors import PermissionDenied, ServiceError
from accounts.permissions import get_object_for, permissions_of
from partnerhub.csvutil import Echo, safe_cell
from partnerhub.forms import DateBetween, HardenedForm
from partnerhub.money import exponent, from_minor
from partnerhub.pagination import paginate, querystring_without_page
from payouts import batch_status, batches
from payouts.batch_status import as_sentence, failure_reason, payouts_text
from payouts.models import Payout, PayoutBatch
from payouts.tax import MIN_YEAR


class BatchFilterForm(forms.Form):
    status = forms.ChoiceField(choices=[("", "All"), *PayoutBatch.STATUSES], required=False)


class NewBatchForm(HardenedForm):
    period_end = forms.DateField(
        label="Period end", widget=forms.DateInput(attrs={"type": "date"}),
        # From the first year PartnerHub pays for; the service refuses a period in the future.
        validators=[DateBetween(date(MIN_YEAR, 1, 1), date.max,
                                f"Enter the period's last day (from {MIN_YEAR}).")],
        help_text="Commissions payable on or before the end of this day (UTC) are included.")


class PayoutFilterForm(forms.Form):
    status = forms.ChoiceField(choices=[("", "All"), *Payout.STATUSES], required=False)


def _require_batches(request, permission=roles.PAYOUT_VIEW):
    """Batches are the operator's: a partner owner also holds payout.view (for its own
    payouts), but these pages do not exist for it."""
    membership = request.membership
    if (membership.organization.kind != roles.OPERATOR
            or permission not in permissions_of(membership)):
        raise Http404


def _get_batch(request, public_id, permission=roles.PAYOUT_VIEW) -> PayoutBatch:
    _require_batches(request, permission)
    queryset = PayoutBatch.objects.select_related("created_by", "approved_by")
    return get_object_for(request.membership, queryset, public_id, action=permission)


def _get_payout(request, public_id) -> Payout:
    _require_batches(request, roles.PAYOUT_MANAGE)
    return get_object_for(request.membership, Payout.objects.select_related("batch"),
                          public_id, action=roles.PAYOUT_MANAGE)


def _act(request, action, success: str, back):
    try:
        action()
    except PermissionDenied:
        raise Http404 from None
    except ServiceError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, success)
    return back


# --- the list ------------------------------------------------------------------------------

def _list(request, new_form=None, status=200):
    membership = request.membership
    form = BatchFilterForm(request.GET or None)
    queryset = PayoutBatch.objects.visible_to(membership)
    if form.is_bound and not form.is_valid():
        queryset = queryset.none()  # an unreadable filter never widens the list
    elif form.is_bound and form.cleaned_data["status"]:
        queryset = queryset.filter(status=form.cleaned_data["status"])
    queryset = (_with_failed_count(queryset.select_related("created_by", "approved_by"))
                .order_by("-created_at", "-pk"))
    page = paginate(request, queryset)
    may_build = roles.PAYOUT_MANAGE in permissions_of(membership)
    if may_build and new_form is None:
        new_form = NewBatchForm(initial={"period_end": timezone.now().date()})
    return render(request, "payouts/batch_list.html", {
        "form": form, "page": page, "querystring": querystring_without_page(request),
        "new_form": new_form if may_build else None,
    }, status=status)


def _with_failed_count(queryset):
    """Failed payouts that wait for a person (no automatic attempt planned), per batch: one
    correlated COUNT, served by the payout (batch, status) index."""
    failed = Payout.objects.filter(batch=OuterRef("pk"), status=Payout.FAILED,
                                   next_attempt_at__isnull=True).order_by() \
        .values("batch").annotate(n=Count("pk")).values("n")[:1]
    return queryset.annotate(failed_count=Coalesce(Subquery(failed), 0))


@membership_required
@require_GET
def batch_list(request):
    _require_batches(request)
    return _list(request)


@membership_required
@require_POST
def batch_create(request):
    _require_batches(request, roles.PAYOUT_MANAGE)
    form = NewBatchForm(request.POST)
    if form.is_valid():
        try:
            batch = batches.request_batch(request.membership, form.cleaned_data["period_end"])
        except PermissionDenied:
            raise Http404 from None
        except ServiceError as exc:
            form.add_error("period_end" if exc.field == "period_end" else None, exc.message)
        else:
            batch.refresh_from_db()  # with eager Celery (quickstart) it was built on commit
            if batch.status == PayoutBatch.DRAFT:
                messages.success(request, f"Batch built: {batch.payout_count} payout(s) await a "
                                          f"second person's approval.")
            elif batch.status == PayoutBatch.BUILDING:
                messages.info(request, "Building the batch: this page updates itself when it "
                                       "is ready. You can leave it; the build carries on.")
            # build_failed: the batch page says why.
            return redirect("payouts:batch_detail", batch.public_id)
    return _list(request, new_form=form, status=400)


# --- one batch -----------------------------------------------------------------------------

@membership_required
@require_GET
def batch_detail(request, public_id):
    batch = _get_batch(request, public_id)
    membership = request.membership
    perms = permissions_of(membership)
    form = PayoutFilterForm(request.GET or None)
    payouts = Payout.objects.filter(batch=batch)
    if form.is_bound and not form.is_valid():
        payouts = payouts.none()
    elif form.is_bound and form.cleaned_data["status"]:
        payouts = payouts.filter(status=form.cleaned_data["status"])
    payouts = payouts.select_related("partner").order_by("partner__name", "currency", "pk")
    page = paginate(request, payouts)
    counts = dict(Payout.objects.filter(batch=batch).order_by().values_list("status")
                  .annotate(n=Count("pk")).values_list("status", "n"))
    draft = batch.status == PayoutBatch.DRAFT
    creator = batches.is_creator(membership, batch)
    return render(request, "payouts/batch_detail.html", {
        "batch": batch, "form": form, "page": page, "progress": _progress(batch),
        "querystring": querystring_without_page(request),
        "status_counts": [(s, label, counts[s]) for s, label in Payout.STATUSES if counts.get(s)],
        "reasons": batches.CARRY_REASONS,
        "may_approve": draft and not creator and roles.PAYOUT_APPROVE in perms,
        "awaiting_second": draft and creator and roles.PAYOUT_APPROVE in perms,
        "may_cancel": draft and roles.PAYOUT_MANAGE in perms,
        "may_fix_payouts": roles.PAYOUT_MANAGE in perms,
    })


@membership_required
@require_GET
def batch_progress(request, public_id):
    """The in-progress partial (htmx), polling itself while the batch builds, sends or
    cancels. On the list (`?on=list`, the default) it is the batch's row, which stops polling
    once the batch is done; on the batch page (`?on=detail`) the page reloads when it is."""
    batch = _get_batch(request, public_id)
    if not request.htmx:
        return redirect("payouts:batch_detail", batch.public_id)
    if request.GET.get("on") == "detail":
        if not batch.is_in_progress:
            return HttpResponseClientRefresh()
        return render(request, "payouts/partials/batch_progress.html",
                      {"batch": batch, "progress": _progress(batch)})
    row = _with_failed_count(PayoutBatch.objects.select_related("created_by", "approved_by")
                             .filter(pk=batch.pk)).get()
    return render(request, "payouts/partials/batch_row.html", {"b": row})


def _progress(batch):
    """The payouts' progress while the batch is being sent (None otherwise: no query)."""
    if batch.status not in (PayoutBatch.APPROVED, PayoutBatch.SENDING):
        return None
    return batch_status.batch_progress(batch.pk)


@membership_required
@require_POST
def batch_approve(request, public_id):
    batch = _get_batch(request, public_id, roles.PAYOUT_APPROVE)
    try:
        batches.approve_batch(request.membership, batch)
    except PermissionDenied:
        raise Http404 from None
    except ServiceError as exc:
        messages.error(request, exc.message)
    else:
        batch.refresh_from_db()  # with eager Celery (quickstart) the transfers ran on commit
        messages.add_message(request, *_after_approval(batch))
    return redirect("payouts:batch_detail", batch.public_id)


def _when(moment) -> str:
    return f"{moment.astimezone(UTC):%H:%M} UTC" if moment else "shortly"


def _after_approval(batch) -> tuple[int, str]:
    """(message level, words) for what happened to the transfers of a just-approved batch."""
    progress = batch_status.batch_progress(batch.pk)
    if batch.status == PayoutBatch.APPROVED or progress.under_way:
        waiting = progress.under_way or batch.payout_count
        return messages.INFO, (f"Approved: the transfers are on their way — "
                               f"{payouts_text(waiting)} {'is' if waiting == 1 else 'are'} "
                               f"being sent; this page updates itself.")
    paid, failed = progress.paid, progress.failed
    if batch.status == PayoutBatch.SENT:
        return messages.SUCCESS, f"Approved and sent: {payouts_text(paid)} paid."
    reason = failure_reason(batch.pk)
    if batch.status == PayoutBatch.FAILED:
        return messages.ERROR, (f"Approved, but no transfer went out: {payouts_text(failed)} "
                                f"failed — {reason} Retry below once the cause is fixed.")
    if batch.status == PayoutBatch.PARTLY_FAILED:
        return messages.WARNING, (f"Approved, but {failed} of {payouts_text(paid + failed)} "
                                  f"failed — {reason} The others were paid; retry or cancel "
                                  f"the failed ones below.")
    # Sending, every remaining payout waiting for its automatic retry.
    done = f" {payouts_text(paid)} paid." if paid else ""
    return messages.WARNING, (f"Approved, but {payouts_text(progress.retrying)} could not be "
                              f"sent yet — {reason} It is tried again automatically from "
                              f"{_when(progress.next_attempt_at)}.{done}")


@membership_required
@require_POST
def batch_cancel(request, public_id):
    batch = _get_batch(request, public_id, roles.PAYOUT_MANAGE)
    # Releasing the commissions runs in Celery; the batch can no longer be approved from now.
    return _act(request, lambda: batches.request_cancel(request.membership, batch),
                "Batch cancelled: its commissions go into the next batch.",
                redirect("payouts:batch_detail", batch.public_id))


@membership_required
@require_POST
def payout_retry(request, public_id):
    payout = _get_payout(request, public_id)
    from payouts import transfers  # the transfers work owns retries

    try:
        transfers.retry_payout(request.membership, payout)
    except PermissionDenied:
        raise Http404 from None
    except ServiceError as exc:
        messages.error(request, exc.message)
    else:
        payout.refresh_from_db()  # with eager Celery (quickstart) the attempt ran on commit
        messages.add_message(request, *_after_retry(payout))
    return redirect("payouts:batch_detail", payout.batch.public_id)


def _after_retry(payout) -> tuple[int, str]:
    message = as_sentence(payout.failure_message or "The transfer failed")
    if payout.status == Payout.PAID:
        return messages.SUCCESS, "Paid: the transfer went out."
    if payout.status == Payout.FAILED and payout.next_attempt_at:
        return messages.WARNING, (f"Stripe could not take the transfer yet — {message} It is "
                                  f"tried again automatically from "
                                  f"{_when(payout.next_attempt_at)}.")
    if payout.status == Payout.FAILED:
        return messages.ERROR, f"The payout failed again — {message}"
    return messages.INFO, "Sending again. This page updates itself."


@membership_required
@require_POST
def payout_cancel(request, public_id):
    payout = _get_payout(request, public_id)
    from payouts import transfers

    return _act(request, lambda: transfers.cancel_payout(request.membership, payout),
                "Payout cancelled: its commissions go into the next batch.",
                redirect("payouts:batch_detail", payout.batch.public_id))


# --- CSV -----------------------------------------------------------------------------------

def _amount(minor, currency):
    """Plain decimal with the currency's minor digits ("1000.00"), for spreadsheets."""
    return "" if minor is None else f"{from_minor(minor, currency):.{exponent(currency)}f}"


CSV_COLUMNS = [
    ("partner", lambda p: p.partner.name),
    ("partner_id", lambda p: p.partner.public_id),
    ("payout_id", lambda p: p.public_id),
    ("currency", lambda p: p.currency),
    ("gross", lambda p: _amount(p.gross_minor, p.currency)),
    ("offset", lambda p: _amount(p.offset_minor, p.currency)),
    ("amount", lambda p: _amount(p.amount_minor, p.currency)),
    ("amount_minor", lambda p: p.amount_minor),
    ("commissions", lambda p: p.commission_count),
    ("status", lambda p: p.status),
    ("carried_over_because", lambda p: batches.CARRY_REASONS.get(p.carry_reason, "")),
    ("stripe_account", lambda p: p.stripe_account_id),
    ("stripe_transfer", lambda p: p.stripe_transfer_id),
    ("failure_code", lambda p: p.failure_code),
    ("failure_message", lambda p: p.failure_message),
    ("attempts", lambda p: p.attempts),
    ("paid_at", lambda p: p.paid_at.isoformat() if p.paid_at else ""),
]


@membership_required
@require_GET
def batch_csv(request, public_id):
    batch = _get_batch(request, public_id)
    payouts = (Payout.objects.filter(batch=batch).select_related("partner")
               .order_by("partner__name", "currency", "pk"))
    writer = csv.writer(Echo())

    def rows():
        yield writer.writerow([name for name, _ in CSV_COLUMNS])
        for payout in payouts.iterator(chunk_size=2000):
            yield writer.writerow([safe_cell(get(payout)) for _, get in CSV_COLUMNS])

    response = StreamingHttpResponse(rows(), content_type="text/csv")
    response["Content-Disposition"] = (f'attachment; filename="payout-batch-{batch.period_end}-'
                                       f'{batch.public_id.hex[:8]}.csv"')
    return response


urlpatterns = [
    path("payout-batches/", batch_list, name="batch_list"),
    path("payout-batches/new/", batch_create, name="batch_create"),
    path("payout-batches/<uuid:public_id>/", batch_detail, name="batch_detail"),
    path("payout-batches/<uuid:public_id>.csv", batch_csv, name="batch_csv"),
    path("payout-batches/<uuid:public_id>/progress/", batch_progress, name="batch_progress"),
    path("payout-batches/<uuid:public_id>/approve/", batch_approve, name="batch_approve"),
    path("payout-batches/<uuid:public_id>/cancel/", batch_cancel, name="batch_cancel"),
    path("payout-batches/payouts/<uuid:public_id>/retry/", payout_retry, name="payout_retry"),
    path("payout-batches/payouts/<uuid:public_id>/cancel/", payout_cancel,
         name="payout_cancel"),
]
