"""The pull side of CRM sync: deal changes (from webhooks or polling) become snapshots."""

from django.db import transaction
from django.utils import timezone

from attribution.services import record_snapshot
from integrations.models import CrmConnection, SyncRecord
from integrations.providers.base import CrmError
from integrations.registry import connector_for
from referrals.models import Referral


def _referral_for(connection, change) -> Referral | None:
    referrals = Referral.objects.filter(vendor_id=connection.vendor_id)
    if change.referral_id:
        try:
            found = referrals.filter(public_id=change.referral_id).first()
        except Exception:  # not a UUID: the field holds something else
            found = None
        if found:
            return found
    record = (SyncRecord.objects.filter(connection=connection,
                                        external_ids__deal=str(change.external_deal_id))
              .select_related("referral").first())
    return record.referral if record else None


def ingest_change(connection: CrmConnection, change, *, actor=None, source: str = ""):
    """Record one deal change; returns the new snapshot or None if already known. `actor` and
    `source` name who moved the deal when it was a person (the built-in pipeline)."""
    referral = _referral_for(connection, change)
    outcome = connection.outcome_for_stage(change.stage)
    return record_snapshot(vendor_id=connection.vendor_id, provider=connection.provider,
                           change=change, referral=referral, outcome=outcome, actor=actor,
                           source=source)


def poll_connection(connection_id: int) -> int:
    """Fetch changes since the stored cursor, record them, then advance the cursor. A crash
    before the cursor moves re-reads the same changes next time; snapshots are stored once
    per deal version, so that costs nothing but the reads."""
    connection = CrmConnection.objects.select_related("vendor").get(pk=connection_id)
    if connection.status == CrmConnection.DISABLED:
        return 0
    connector = connector_for(connection)
    try:
        changes, cursor = connector.changes_since(connection.poll_cursor)
    except CrmError as exc:
        if exc.auth:  # for Salesforce, polling is where a revoked app shows first
            from integrations.connections import mark_connection_error

            mark_connection_error(connection, exc.message)
        raise
    stored = 0
    for change in changes:
        with transaction.atomic():
            if ingest_change(connection, change) is not None:
                stored += 1
    CrmConnection.objects.filter(pk=connection.pk).update(
        poll_cursor=cursor, last_polled_at=timezone.now())
    return stored


def fetch_and_ingest(connection_id: int, external_deal_id: str):
    """For webhooks that only name the deal (HubSpot): read it, then record it."""
    connection = CrmConnection.objects.get(pk=connection_id)
    change = connector_for(connection).deal(external_deal_id)
    with transaction.atomic():
        return ingest_change(connection, change)
