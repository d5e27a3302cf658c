"""Managing a vendor's CRM connection: connect, test, map stages, disable, retry syncs."""

import secrets

from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from accounts import audit, roles
from accounts.errors import ServiceError
from accounts.models import Membership
from accounts.notifications import notify, resolve
from accounts.services.guards import require
from integrations.crypto import CredentialsUnreadable
from integrations.models import CrmConnection, SyncRecord
from integrations.providers.base import CrmError
from integrations.registry import connector_for
from referrals.services.events import members_with


def kick_after_commit(connection_id: int) -> None:
    from integrations.sync import kick_after_commit as kick

    kick(connection_id)

OBJECT_MODES = {
    CrmConnection.HUBSPOT: [("company_contact_deal", "Company, contact and deal")],
    CrmConnection.SALESFORCE: [("lead", "A lead"),
                               ("account_contact_opportunity",
                                "Account, contact and opportunity")],
    CrmConnection.PIPEDRIVE: [("deal", "Organization, person and deal"), ("lead", "A lead")],
    CrmConnection.BUILTIN: [("deal", "A deal in the built-in pipeline")],
}
# Where the referral id lives by default: a unique HubSpot property, a Salesforce External ID
# field (custom fields end in __c). Pipedrive needs the 40-character key of the vendor's own
# custom field, so there is no default.
DEFAULT_REFERRAL_ID_FIELD = {
    CrmConnection.HUBSPOT: "partnerhub_referral_id",
    CrmConnection.SALESFORCE: "PartnerHub_Referral_Id__c",
    CrmConnection.PIPEDRIVE: "",
    CrmConnection.BUILTIN: "",
}
BUILTIN_STAGES = {"new": "New", "qualified": "Qualified", "proposal": "Proposal",
                  "won": "Closed won", "lost": "Closed lost"}


@transaction.atomic
def connect(actor: Membership, *, provider: str, credentials: dict, base_url: str = "",
            object_mode: str = "", referral_id_field: str = "",
            push_on: str = "accepted") -> CrmConnection:
    """Create the vendor's connection; a previous live connection is disabled."""
    vendor = actor.organization
    require(actor, roles.CRM_MANAGE, vendor)
    if vendor.kind != roles.VENDOR:
        raise ServiceError("Only vendors connect a CRM.")
    modes = dict(OBJECT_MODES.get(provider, []))
    if not modes:
        raise ServiceError("Choose a CRM.", field="provider")
    object_mode = object_mode or next(iter(modes))
    if object_mode not in modes:
        raise ServiceError("Choose what to create in the CRM.", field="object_mode")
    referral_id_field = referral_id_field.strip() or DEFAULT_REFERRAL_ID_FIELD[provider]
    if not referral_id_field and provider == CrmConnection.PIPEDRIVE:
        raise ServiceError("Enter the API key of the deal field that holds our referral id.",
                           field="referral_id_field")
    previous = list(CrmConnection.objects.select_for_update().filter(vendor=vendor).live())
    for old_connection in previous:
        old_connection.status = CrmConnection.DISABLED
        old_connection.save(update_fields=["status"])
        audit.record("crm.disconnected", old_connection, actor=actor, after={"replaced": True})
    connection = CrmConnection(
        vendor=vendor, provider=provider, base_url=base_url.strip(), object_mode=object_mode,
        referral_id_field=referral_id_field,
        push_on=push_on, webhook_token=secrets.token_urlsafe(24), created_by=actor.user)
    connection.credentials = credentials
    if provider == CrmConnection.BUILTIN:
        connection.stage_labels = BUILTIN_STAGES
        connection.stage_order = list(BUILTIN_STAGES)
        connection.stage_mapping = {"won": "won", "lost": "lost"}
        connection.pipeline_id = "builtin"
    same = next((old for old in previous if old.provider == provider), None)
    if same is not None:
        # New credentials for the same CRM: keep the setup and the webhook URL it knows.
        for name in ("pipeline_id", "stage_mapping", "stage_labels", "stage_order",
                     "owner_mapping", "poll_cursor", "webhook_token"):
            setattr(connection, name, getattr(same, name))
    connection.save()
    _adopt_unfinished_rows(previous, connection)
    # Credentials never enter the audit log: only which fields were set.
    audit.record("crm.connected", connection, actor=actor, after={
        "provider": provider, "object_mode": object_mode, "base_url": connection.base_url,
        "credential_fields": sorted(credentials)})
    resolve(credentials_subject(vendor.pk))  # a new connection replaces the broken one
    return connection


def _adopt_unfinished_rows(previous, connection) -> None:
    """Referrals still waiting for (or failed on) the old connection go to the new one."""
    if not previous:
        return
    SyncRecord.objects.filter(connection__in=previous).exclude(status=SyncRecord.DONE).update(
        connection=connection, status=SyncRecord.PENDING, attempts=0,
        next_attempt_at=timezone.now(), last_error="")
    kick_after_commit(connection.pk)


def test_connection(actor: Membership, connection: CrmConnection) -> str:
    require(actor, roles.CRM_MANAGE, connection)
    try:
        description = connector_for(connection).test_connection()
    except CredentialsUnreadable:
        raise ServiceError("The saved credentials cannot be read with the configured "
                           "encryption keys. Connect again to enter them anew.") from None
    except CrmError as exc:
        if exc.auth:
            mark_connection_error(connection, exc.message)
        raise ServiceError(f"The CRM answered: {exc.message}") from None
    with transaction.atomic():
        CrmConnection.objects.filter(pk=connection.pk).update(
            status=CrmConnection.ACTIVE, last_error="", last_success_at=timezone.now())
        requeue_auth_failures(connection)
        resolve(credentials_subject(connection.vendor_id))
    return description


def requeue_auth_failures(connection: CrmConnection) -> int:
    """Rows refused for bad credentials go out again once the credentials work."""
    count = SyncRecord.objects.filter(
        connection=connection, status=SyncRecord.FAILED,
        log__http_status__in=(401, 403)).distinct().update(
        status=SyncRecord.PENDING, attempts=0, next_attempt_at=timezone.now(), last_error="")
    kick_after_commit(connection.pk)
    return count


@transaction.atomic
def save_mapping(actor: Membership, connection: CrmConnection, *, pipeline_id: str,
                 stage_mapping: dict, stage_labels: dict, owner_mapping: dict) -> CrmConnection:
    require(actor, roles.CRM_MANAGE, connection)
    bad = {v for v in stage_mapping.values()} - {"open", "won", "lost"}
    if bad:
        raise ServiceError("Each stage means open, won or lost.")
    if "won" not in stage_mapping.values():
        raise ServiceError("Mark at least one stage as won, so closed deals come back.")
    connection = CrmConnection.objects.select_for_update().get(pk=connection.pk)
    before = {"pipeline_id": connection.pipeline_id, "stage_mapping": connection.stage_mapping}
    connection.pipeline_id = pipeline_id
    connection.stage_mapping = {str(k): v for k, v in stage_mapping.items()}
    connection.stage_labels = {str(k): v for k, v in stage_labels.items()}
    connection.stage_order = [str(k) for k in stage_labels]  # the order the CRM gave
    connection.owner_mapping = owner_mapping
    connection.save(update_fields=["pipeline_id", "stage_mapping", "stage_labels", "stage_order",
                                   "owner_mapping"])
    audit.record("crm.mapping_changed", connection, actor=actor, before=before,
                 after={"pipeline_id": pipeline_id, "stage_mapping": connection.stage_mapping})
    return connection


@transaction.atomic
def disable(actor: Membership, connection: CrmConnection) -> None:
    require(actor, roles.CRM_MANAGE, connection)
    CrmConnection.objects.filter(pk=connection.pk).update(status=CrmConnection.DISABLED)
    audit.record("crm.disconnected", connection, actor=actor)


@transaction.atomic
def retry_sync(actor: Membership, record: SyncRecord) -> SyncRecord:
    require(actor, roles.CRM_MANAGE, record.connection)
    record = SyncRecord.objects.select_for_update().get(pk=record.pk)
    if record.status in (SyncRecord.PENDING, SyncRecord.RUNNING):
        raise ServiceError("This referral is already queued for the CRM.")
    record.status, record.attempts = SyncRecord.PENDING, 0
    record.next_attempt_at, record.last_error = timezone.now(), ""
    record.save(update_fields=["status", "attempts", "next_attempt_at", "last_error",
                               "updated_at"])
    audit.record("crm.sync_retried", record.referral, actor=actor)
    kick_after_commit(record.connection_id)
    return record


def mark_connection_error(connection: CrmConnection, message: str) -> None:
    """Authentication failed: stop treating the connection as healthy and tell the vendor's
    admins (once per incident, not once per failed row)."""
    with transaction.atomic():
        changed = CrmConnection.objects.filter(pk=connection.pk,
                                               status=CrmConnection.ACTIVE).update(
            status=CrmConnection.ERROR, last_error=message[:2000],
            last_error_at=timezone.now())
        if not changed:
            return
        notify(members_with(connection.vendor_id, roles.VENDOR, roles.CRM_MANAGE),
               "crm_connection_error", network_id=connection.vendor.network_id,
               title=f"{connection.get_provider_display()} rejected our credentials",
               body=f"The CRM answered: {message}\nReferrals wait until you reconnect.",
               url=reverse("integrations:connection"),
               subject=credentials_subject(connection.vendor_id))


def credentials_subject(vendor_id: int) -> str:
    """What a "CRM rejected our credentials" notification asks for: a working connection
    (resolved by a successful test or a new connection)."""
    return f"crm:{vendor_id}:credentials"
