"""The vendor admin's CRM pages (connect, test, map stages, read and retry the sync log), the
built-in pipeline's stage move on a referral, and closing a referral's deal by hand."""

from django.conf import settings
from django.contrib import messages
from django.db.models import Count
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from accounts import roles
from accounts.decorators import membership_required, require_permission
from accounts.errors import PermissionDenied, ServiceError
from accounts.permissions import get_object_for
from integrations import connections
from integrations.builtin.services import move_stage
from integrations.closing import CRM, close_deal, close_mode, outcomes_for
from integrations.crypto import CredentialsUnreadable
from integrations.deal_forms import CloseDealForm
from integrations.forms import CONNECT_FORMS, MappingForm, SyncFilterForm
from integrations.models import CrmConnection, SyncRecord
from integrations.providers.base import CrmError
from integrations.registry import connector_for
from integrations.sync import live_connection
from integrations.webhooks import WEBHOOK_PROVIDERS
from partnerhub.pagination import paginate, querystring_without_page
from referrals.views.detail import get_referral

PROVIDER_NOTES = {
    CrmConnection.HUBSPOT: "Companies, contacts and deals through a private app token; deal "
                           "changes come back by signed webhooks.",
    CrmConnection.SALESFORCE: "Leads, or accounts, contacts and opportunities, upserted by an "
                              "External ID field; changes are polled.",
    CrmConnection.PIPEDRIVE: "Organizations, people and deals (or leads) with an API token; "
                             "deal changes come back by webhooks.",
    CrmConnection.BUILTIN: "No CRM? Work accepted referrals through a simple pipeline right "
                           "here in PartnerHub.",
}
RETRYABLE = (SyncRecord.FAILED, SyncRecord.DEAD)


def _live(membership):
    """The vendor's live connection, through the one door."""
    return (CrmConnection.objects.visible_to(membership).live()
            .filter(vendor_id=membership.organization_id).select_related("created_by").first())


def _saved_credentials(connection) -> dict | None:
    """The stored credentials, or None when no configured key opens them."""
    try:
        return connection.credentials
    except CredentialsUnreadable:
        return None


def _credential_labels(connection, saved: dict) -> list[str]:
    form = CONNECT_FORMS[connection.provider]
    labels = {"auth": "Sign-in method", "domain": "Login domain"}
    return [str(form.base_fields[name].label) if name in form.base_fields else labels.get(
        name, name) for name in saved]


def _status_counts(records) -> list[tuple[str, str, int]]:
    counts = dict(records.order_by().values_list("status").annotate(n=Count("pk")))
    return [(status, label, counts.get(status, 0)) for status, label in SyncRecord.STATUSES]


def webhook_url(connection) -> str:
    return settings.SITE_URL + reverse("integrations:webhook",
                                       args=[connection.provider, connection.webhook_token])


@require_permission(roles.CRM_MANAGE)
def connection(request):
    membership = request.membership
    live = _live(membership)
    providers = [(key, label, PROVIDER_NOTES[key]) for key, label in CrmConnection.PROVIDERS]
    if live is None:
        return render(request, "integrations/connection.html", {"providers": providers})
    saved = _saved_credentials(live)
    records = SyncRecord.objects.visible_to(membership).filter(connection=live)
    stages = [(label, live.outcome_for_stage(stage_id))
              for stage_id, label in live.stages]
    return render(request, "integrations/connection.html", {
        "connection": live,
        "providers": [p for p in providers if p[0] != live.provider],
        "object_mode_label": dict(connections.OBJECT_MODES[live.provider]).get(
            live.object_mode, live.object_mode),
        "credentials_unreadable": saved is None,
        "credential_labels": _credential_labels(live, saved or {}),
        "webhook_url": webhook_url(live) if live.provider in WEBHOOK_PROVIDERS else "",
        "stages": stages,
        "mapped": "won" in live.stage_mapping.values(),
        "counts": _status_counts(records),
        "recent": records.select_related("referral").order_by("-updated_at", "-pk")[:5],
    })


@require_permission(roles.CRM_MANAGE)
def connect(request, provider):
    form_class = CONNECT_FORMS.get(provider)
    if form_class is None:
        raise Http404
    membership = request.membership
    live = _live(membership)
    same = live if live is not None and live.provider == provider else None
    initial = None
    if same is not None:
        initial = {"base_url": same.base_url, "object_mode": same.object_mode,
                   "referral_id_field": same.referral_id_field, "push_on": same.push_on}
    saved = (_saved_credentials(same) or {}) if same is not None else {}
    form = form_class(request.POST or None, initial=initial, saved=saved)
    if request.method == "POST" and form.is_valid():
        try:
            new = connections.connect(membership, provider=provider,
                                      credentials=form.credentials(), **form.settings())
        except ServiceError as exc:
            form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        else:
            messages.success(request, "The built-in pipeline is on: accepted referrals get a "
                                      "deal you move on their page." if provider == "builtin"
                             else f"Connected {new.get_provider_display()}. Test the "
                                  "connection, then map the pipeline's stages.")
            return redirect("integrations:connection")
    return render(request, "integrations/connect.html", {
        "form": form, "provider": provider,
        "provider_label": dict(CrmConnection.PROVIDERS)[provider],
        "live": live, "replacing": live is not None and same is None,
    })


def _connection_for(request, public_id) -> CrmConnection:
    return get_object_for(request.membership, CrmConnection.objects.live(), public_id,
                          action=roles.CRM_MANAGE)


@require_permission(roles.CRM_MANAGE)
@require_POST
def test(request, public_id):
    live = _connection_for(request, public_id)
    try:
        description = connections.test_connection(request.membership, live)
    except PermissionDenied:
        raise Http404 from None
    except ServiceError as exc:
        messages.error(request, exc.message)
    except CredentialsUnreadable:
        messages.error(request, "The saved credentials cannot be decrypted (was the "
                                "encryption key changed?). Connect again.")
    else:
        messages.success(request, f"The connection works: {description}.")
    return redirect("integrations:connection")


@require_permission(roles.CRM_MANAGE)
@require_POST
def disable(request, public_id):
    live = _connection_for(request, public_id)
    try:
        connections.disable(request.membership, live)
    except PermissionDenied:
        raise Http404 from None
    messages.success(request, f"{live.get_provider_display()} disconnected. Referrals are no "
                              "longer sent to it.")
    return redirect("integrations:connection")


def _load_pipelines(live):
    """The CRM's pipelines, or (None, a message for the admin)."""
    try:
        return connector_for(live).pipelines(), ""
    except CrmError as exc:
        if exc.auth:
            connections.mark_connection_error(live, exc.message)
        hint = (" Check the credentials." if exc.auth
                else " Try again in a minute." if exc.transient else "")
        return None, (f"{live.get_provider_display()} did not give us its pipelines: "
                      f"{exc.message}.{hint}")
    except CredentialsUnreadable:
        return None, "The saved credentials cannot be decrypted. Connect again."


@require_permission(roles.CRM_MANAGE)
def mapping(request):
    membership = request.membership
    live = _live(membership)
    if live is None:
        messages.info(request, "Connect a CRM first.")
        return redirect("integrations:connection")
    pipelines, error = _load_pipelines(live)
    if error or not pipelines:
        return render(request, "integrations/mapping.html", {
            "connection": live,
            "error": error or "The CRM has no deal pipelines to map."}, status=200)
    wanted = (request.POST.get("pipeline") if request.method == "POST"
              else request.GET.get("pipeline")) or live.pipeline_id
    pipeline = next((p for p in pipelines if str(p.id) == wanted), pipelines[0])
    form = MappingForm(request.POST or None, pipeline=pipeline, connection=live)
    if request.method == "POST" and form.is_valid():
        try:
            connections.save_mapping(membership, live, **form.mapping())
        except PermissionDenied:
            raise Http404 from None
        except ServiceError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, f"Stage mapping saved for {pipeline.label}.")
            return redirect("integrations:connection")
    return render(request, "integrations/mapping.html", {
        "connection": live, "pipelines": pipelines, "pipeline": pipeline, "form": form})


@require_permission(roles.CRM_MANAGE)
def sync_log(request):
    membership = request.membership
    live = _live(membership)
    if live is None:
        messages.info(request, "Connect a CRM first.")
        return redirect("integrations:connection")
    records = SyncRecord.objects.visible_to(membership).filter(connection=live)
    counts = [count for count in _status_counts(records) if count[2]]
    form = SyncFilterForm(request.GET or None)
    if form.is_valid() and form.cleaned_data["status"]:
        records = records.filter(status=form.cleaned_data["status"])
    records = records.select_related("referral", "referral__partner").order_by(
        "-updated_at", "-pk")
    return render(request, "integrations/sync_log.html", {
        "connection": live, "form": form, "counts": counts,
        "page": paginate(request, records), "retryable": RETRYABLE,
        "querystring": querystring_without_page(request),
    })


@require_permission(roles.CRM_MANAGE)
@require_POST
def sync_retry(request, public_id):
    record = get_object_for(request.membership,
                            SyncRecord.objects.select_related("connection", "referral"),
                            public_id, action=roles.CRM_MANAGE)
    try:
        connections.retry_sync(request.membership, record)
    except PermissionDenied:
        raise Http404 from None
    except ServiceError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"{record.referral.company_name} is queued for the CRM "
                                  "again.")
    status = request.POST.get("status", "")
    url = reverse("integrations:sync_log")
    if status in dict(SyncRecord.STATUSES):
        url += f"?status={status}"
    return redirect(url)


@membership_required
@require_POST
def builtin_stage(request, public_id):
    """Move a referral's deal in the built-in pipeline (vendor users who work deals)."""
    referral = get_referral(request, public_id, roles.REFERRAL_UPDATE_STAGE)
    stage = request.POST.get("stage", "")
    before = referral.status
    try:
        move_stage(request.membership, referral, stage)
    except PermissionDenied:
        raise Http404 from None
    except ServiceError as exc:
        messages.error(request, exc.message)
    else:
        live = live_connection(referral.vendor_id)
        label = live.stage_labels.get(stage, stage) if live else stage
        referral.refresh_from_db(fields=["status"])
        changed = (f" The referral is now {referral.get_status_display().lower()}."
                   if referral.status != before else "")
        messages.success(request, f"Deal moved to {label}.{changed}")
    return redirect("referrals:detail", referral.public_id)


@membership_required
def deal_close(request, public_id):
    """Close (or reopen) the referral's deal by hand: the vendor without a CRM, or a decider
    overriding the CRM with a reason. The referral's page carries the form; this page shows
    it again with what was wrong."""
    referral = get_referral(request, public_id, roles.REFERRAL_UPDATE_STAGE)
    mode = close_mode(referral.vendor_id)
    outcomes = outcomes_for(request.membership, referral, mode)
    if not outcomes:
        raise Http404  # nothing this member may record on this referral now
    form = CloseDealForm(request.POST or None, referral=referral, outcomes=outcomes,
                         reason_required=mode.kind == CRM)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            close_deal(request.membership, referral, data["outcome"],
                       closed_on=data["closed_on"], amount_minor=data["amount"],
                       reason=data["reason"])
        except PermissionDenied:
            raise Http404 from None
        except ServiceError as exc:
            form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        else:
            referral.refresh_from_db(fields=["status"])
            messages.success(request, f"Recorded. The referral is now "
                                      f"{referral.get_status_display().lower()}.")
            return redirect("referrals:detail", referral.public_id)
    return render(request, "integrations/close_deal.html",
                  {"referral": referral, "form": form, "mode": mode},
                  status=400 if request.method == "POST" else 200)
